//! The API served on a real unix socket by an in-process daemon: routes,
//! errors, op ids, the OpenAPI document, and a property test that no input
//! gets a 5xx or crashes the daemon.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "integration tests: each file is a test crate of its own"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::{ErrorBody, ErrorCode, OP_ID_HEADER, Ping, ShutdownRequest, VmSummary};
use banger_config::Layout;
use banger_daemon::{Daemon, DaemonError, DaemonOptions, openapi};
use banger_testutil::{RawResponse, raw_request};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct TestDaemon {
    _dir: tempfile::TempDir,
    layout: Layout,
    socket: PathBuf,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<banger_daemon::Stopped, DaemonError>>,
}

impl TestDaemon {
    async fn start() -> Self {
        Self::start_with(DaemonOptions::default()).await
    }

    /// A daemon with nothing in its catalog: no request can start a build.
    async fn start_inert() -> Self {
        Self::start_with(DaemonOptions {
            catalog: banger_artifacts::catalog::Catalog {
                kernels: Vec::new(),
                images: Vec::new(),
            },
            ..DaemonOptions::default()
        })
        .await
    }

    async fn start_with(options: DaemonOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        let bound = Daemon::bind(&layout, options).await.unwrap();
        let socket = bound.socket_path().to_owned();
        let stop = bound.shutdown_handle();
        let task = tokio::spawn(bound.serve(std::future::pending()));
        Self {
            _dir: dir,
            layout,
            socket,
            stop,
            task,
        }
    }

    async fn get(&self, target: &str) -> RawResponse {
        raw_request(&self.socket, "GET", target, &[], "")
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        self.task.await.unwrap().unwrap();
        assert!(!self.socket.exists(), "socket must be removed on shutdown");
    }
}

/// Checks an error response: JSON body with the expected code and the same
/// op id as the header.
fn assert_error(resp: &RawResponse, status: u16, code: ErrorCode) -> ErrorBody {
    assert_eq!(resp.status.as_u16(), status, "{:?}", resp.body);
    assert_eq!(resp.headers["content-type"], "application/json");
    let body: ErrorBody = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body.code, code, "{body:?}");
    assert_eq!(body.op_id, resp.headers[OP_ID_HEADER].to_str().unwrap());
    assert!(!body.message.is_empty());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_pulls_are_checked_before_anything_starts() {
    let d = TestDaemon::start().await;
    let json = [("content-type", "application/json")];
    for (body, words) in [
        (
            r#"{"name":"127.0.0.1:5000/x y:latest"}"#,
            "is not an image reference",
        ),
        (
            r#"{"name":"127.0.0.1:5000/UPPER:latest"}"#,
            "is not an image reference",
        ),
        (
            r#"{"name":"127.0.0.1:5000/x:latest","image_name":"Bad Name"}"#,
            "image name",
        ),
        (
            r#"{"name":"127.0.0.1:5000/x:latest","kernel":"nope"}"#,
            "no kernel \"nope\"",
        ),
        (
            r#"{"name":"debian-bookworm","kernel":"generic-6.1"}"#,
            "apply only to a registry reference",
        ),
        (
            r#"{"name":"127.0.0.1:5000/x:latest","insecure":"yes"}"#,
            "insecure",
        ),
    ] {
        let resp = raw_request(&d.socket, "POST", "/v1/images/pull", &json, body)
            .await
            .unwrap();
        let err = assert_error(&resp, 400, ErrorCode::InvalidArgument);
        assert!(err.message.contains(words), "{body}: {}", err.message);
    }
    // Nothing was started, so nothing is listed.
    let images: serde_json::Value =
        serde_json::from_slice(&d.get("/v1/images").await.body).unwrap();
    assert_eq!(images, serde_json::json!([]));
    let resp = raw_request(
        &d.socket,
        "POST",
        "/v1/images/cache/prune",
        &json,
        r#"{"dry_run":true}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status.as_u16(), 200, "{:?}", resp.body);
    let report: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(
        report,
        serde_json::json!({ "blobs": 0, "bytes": 0, "dry_run": true })
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reports_identity_and_op_id_header() {
    let d = TestDaemon::start().await;
    let resp = d.get("/v1/ping").await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.headers[OP_ID_HEADER]
            .to_str()
            .unwrap()
            .starts_with("op-")
    );
    let ping: Ping = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(ping.pid, std::process::id());
    assert_eq!(ping.version, banger_buildinfo::VERSION);
    assert_eq!(ping.commit, banger_buildinfo::COMMIT);
    assert_eq!(ping.schema_version, banger_store::SCHEMA_VERSION);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_list_is_empty_on_a_new_store_and_shows_rows() {
    let d = TestDaemon::start().await;
    let resp = d.get("/v1/vms").await;
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body[..], b"[]");
    // A second store handle on the same file, as a later daemon would have.
    let store = banger_store::Store::open(&d.layout.db_path()).unwrap();
    store
        .insert_vm(&banger_testutil::stopped_vm(
            "7f3a",
            "web",
            "debian-bookworm",
        ))
        .unwrap();
    let vms: Vec<VmSummary> = serde_json::from_slice(&d.get("/v1/vms").await.body).unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].name, "web");
    assert_eq!(vms[0].state, banger_api::VmState::Stopped);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_json_errors_naming_the_problem() {
    let d = TestDaemon::start().await;
    let s = &d.socket;

    let body = assert_error(&d.get("/v1/nope").await, 404, ErrorCode::NotFound);
    assert!(body.message.contains("/v1/nope"), "{body:?}");

    let resp = raw_request(s, "DELETE", "/v1/vms", &[], "").await.unwrap();
    let body = assert_error(&resp, 405, ErrorCode::MethodNotAllowed);
    assert!(body.message.contains("DELETE"), "{body:?}");

    let body = assert_error(
        &d.get("/v1/vms?colour=red").await,
        400,
        ErrorCode::InvalidArgument,
    );
    assert!(body.message.contains("colour"), "{body:?}");

    let json = [("content-type", "application/json")];
    let resp = raw_request(s, "POST", "/v1/shutdown", &json, "{\"force\":true}")
        .await
        .unwrap();
    let body = assert_error(&resp, 400, ErrorCode::InvalidArgument);
    assert!(body.message.contains("unknown field `force`"), "{body:?}");

    let resp = raw_request(s, "POST", "/v1/shutdown", &json, "{")
        .await
        .unwrap();
    assert_error(&resp, 400, ErrorCode::InvalidArgument);

    let resp = raw_request(s, "POST", "/v1/shutdown", &json, "\"stop\"")
        .await
        .unwrap();
    let body = assert_error(&resp, 400, ErrorCode::InvalidArgument);
    assert!(
        body.message
            .contains("expected a JSON object, got a string"),
        "{body:?}"
    );

    let text = [("content-type", "text/plain")];
    let resp = raw_request(s, "POST", "/v1/shutdown", &text, "{}")
        .await
        .unwrap();
    assert_error(&resp, 415, ErrorCode::UnsupportedMediaType);

    let big = vec![b' '; banger_daemon::routes::MAX_BODY_BYTES + 1];
    let resp = raw_request(s, "POST", "/v1/shutdown", &json, big)
        .await
        .unwrap();
    assert_error(&resp, 413, ErrorCode::PayloadTooLarge);

    // Still serving after all that.
    assert_eq!(d.get("/v1/ping").await.status, 200);
    d.stop().await;
}

/// The store rows a test daemon serves, written through a second handle
/// as a later daemon would see them.
fn insert_vms(d: &TestDaemon, vms: &[(&str, &str)]) {
    let store = banger_store::Store::open(&d.layout.db_path()).unwrap();
    for (i, (id, name)) in vms.iter().enumerate() {
        store
            .insert_vm(&banger_store::VmRecord {
                ip: std::net::Ipv4Addr::new(10, 77, 0, u8::try_from(i + 2).unwrap()),
                tap: format!("bgt{i}"),
                ..banger_testutil::stopped_vm(id, name, "debian-bookworm")
            })
            .unwrap();
    }
}

/// Long-polls operation `id` until it ends (60 s at most).
async fn wait_ended(d: &TestDaemon, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let resp = d.get(&format!("/v1/operations/{id}?wait_ms=5000")).await;
        let op: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        if op["state"] != "running" || std::time::Instant::now() > deadline {
            return op;
        }
    }
}

async fn listed_operations(d: &TestDaemon) -> Vec<serde_json::Value> {
    serde_json::from_slice(&d.get("/v1/operations").await.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_take_an_exact_name_or_full_id_never_a_prefix() {
    let d = TestDaemon::start_inert().await;
    insert_vms(&d, &[("0a1b2c3d4e5f6071", "web-prod")]);
    for (method, target) in [
        ("DELETE", "/v1/vms/web?force=true"),
        ("DELETE", "/v1/vms/0a1b2c3d?force=true"),
        ("POST", "/v1/vms/web/start"),
        ("POST", "/v1/vms/web/stop"),
        ("POST", "/v1/vms/web/kill"),
        ("POST", "/v1/vms/web/restart"),
    ] {
        let resp = raw_request(&d.socket, method, target, &[], "")
            .await
            .unwrap();
        let err = assert_error(&resp, 404, ErrorCode::NotFound);
        assert!(
            err.message.contains("exact name or full id"),
            "{target}: {err:?}"
        );
    }
    let json = [("content-type", "application/json")];
    let resp = raw_request(&d.socket, "PATCH", "/v1/vms/web", &json, r#"{"vcpus":2}"#)
        .await
        .unwrap();
    assert_error(&resp, 404, ErrorCode::NotFound);
    // web-prod is untouched, and views still take an id prefix.
    let resp = d.get("/v1/vms/0a1b2c3d").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let vm: banger_api::Vm = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(
        (vm.name.as_str(), vm.state),
        ("web-prod", banger_api::VmState::Stopped)
    );
    assert_error(&d.get("/v1/vms/web").await, 404, ErrorCode::NotFound);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_shaped_like_an_id_is_refused_and_cannot_shadow_one() {
    let d = TestDaemon::start_inert().await;
    let json = [("content-type", "application/json")];
    let resp = raw_request(
        &d.socket,
        "POST",
        "/v1/vms",
        &json,
        r#"{"name":"0a1b2c3d4e5f6071","no_start":true}"#,
    )
    .await
    .unwrap();
    let err = assert_error(&resp, 400, ErrorCode::InvalidArgument);
    assert!(err.message.contains("shaped like a vm id"), "{err:?}");
    // A row left by an older daemon with such a name: the reference is the
    // other VM's id, and only that VM answers to it.
    insert_vms(
        &d,
        &[
            ("0a1b2c3d4e5f6071", "web"),
            ("1111222233334444", "0a1b2c3d4e5f6071"),
        ],
    );
    let vm: banger_api::Vm =
        serde_json::from_slice(&d.get("/v1/vms/0a1b2c3d4e5f6071").await.body).unwrap();
    assert_eq!(vm.name, "web");
    assert!(listed_operations(&d).await.is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_a_json_object_is_refused_before_anything_starts() {
    let d = TestDaemon::start_inert().await;
    let json = [("content-type", "application/json")];
    for (target, body) in [
        ("/v1/vms", "[]"),
        ("/v1/vms", "[null, null]"),
        ("/v1/images/import", r#"["name","/path"]"#),
        ("/v1/images/pull", r#"["debian-bookworm"]"#),
        ("/v1/kernels/pull", "null"),
        ("/v1/shutdown", "[]"),
    ] {
        let resp = raw_request(&d.socket, "POST", target, &json, body)
            .await
            .unwrap();
        let err = assert_error(&resp, 400, ErrorCode::InvalidArgument);
        assert!(
            err.message.contains("expected a JSON object"),
            "{target} {body}: {err:?}"
        );
    }
    assert!(listed_operations(&d).await.is_empty());
    assert_eq!(d.get("/v1/ping").await.status, 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_op_id_is_refused_and_the_first_operation_kept() {
    let d = TestDaemon::start().await;
    // A tar archive: the import starts (whether it then builds is not the
    // point; its operation is).
    let file = d.layout.state_dir.join("rootfs.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&file).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(3);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "etc/hostname", &b"vm\n"[..])
        .unwrap();
    tar.finish().unwrap();
    let body = format!(r#"{{"name":"imported","path":"{}"}}"#, file.display());
    let headers = [
        ("content-type", "application/json"),
        (OP_ID_HEADER, "mine-1"),
    ];
    let first = raw_request(
        &d.socket,
        "POST",
        "/v1/images/import",
        &headers,
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(first.status, 202, "{:?}", first.body);
    let body2 = body.replace("imported", "other");
    let again = raw_request(&d.socket, "POST", "/v1/images/import", &headers, body2)
        .await
        .unwrap();
    let err = assert_error(&again, 409, ErrorCode::Conflict);
    assert!(err.message.contains("already in use"), "{err:?}");
    let op: serde_json::Value =
        serde_json::from_slice(&d.get("/v1/operations/mine-1").await.body).unwrap();
    assert_eq!(op["target"], "imported");
    d.stop().await;
}

/// A create whose image must be pulled first: the pull's operation has an
/// id of its own that fits the id rules, even under a 64-character op id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_under_the_longest_op_id_pulls_under_a_valid_id() {
    let d = TestDaemon::start_with(DaemonOptions {
        catalog: banger_artifacts::catalog::Catalog {
            kernels: Vec::new(),
            images: vec![banger_artifacts::catalog::ImageEntry {
                name: "unreachable".into(),
                description: "a bundle nobody serves".into(),
                source: banger_artifacts::catalog::ImageOrigin::Bundle {
                    // Port 1 on loopback: refused at once.
                    download: banger_artifacts::catalog::Download {
                        url: "http://127.0.0.1:1/rootfs.tar".into(),
                        sha256: "0".repeat(64),
                    },
                    kernel: "generic-6.1".into(),
                },
            }],
        },
        ..DaemonOptions::default()
    })
    .await;
    let long = "x".repeat(64);
    let headers = [
        ("content-type", "application/json"),
        (OP_ID_HEADER, long.as_str()),
    ];
    let resp = raw_request(
        &d.socket,
        "POST",
        "/v1/vms",
        &headers,
        r#"{"name":"web","image":"unreachable","no_start":true}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 202, "{:?}", resp.body);
    let op = wait_ended(&d, &long).await;
    assert_eq!(op["state"], "failed", "{op}");
    let ops = listed_operations(&d).await;
    assert_eq!(ops.len(), 2, "{ops:?}");
    for op in ops {
        let id = op["id"].as_str().unwrap();
        assert!(id.len() <= 64, "{id}");
        let got = d.get(&format!("/v1/operations/{id}")).await;
        assert_eq!(got.status, 200, "{id}: {:?}", got.body);
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_the_host_has_no_room_for_is_refused_before_anything_is_stored() {
    let d = TestDaemon::start_inert().await;
    std::fs::create_dir_all(d.layout.state_dir.join("vms")).unwrap();
    let room = banger_sys::host::room(&d.layout.state_dir.join("vms")).unwrap();
    let json = [("content-type", "application/json")];
    let too_big_disk = (room.free_disk_bytes + (1 << 30)).div_ceil(1 << 20) << 20;
    let too_much_memory = room.memory_mib + 1;
    for (body, says) in [
        (
            format!(r#"{{"name":"huge","disk_bytes":{too_big_disk},"no_start":true}}"#),
            "free for VMs",
        ),
        (
            format!(r#"{{"name":"huge","memory_mib":{too_much_memory},"no_start":true}}"#),
            "MiB of memory asked for",
        ),
    ] {
        let resp = raw_request(&d.socket, "POST", "/v1/vms", &json, body.clone())
            .await
            .unwrap();
        let err = assert_error(&resp, 409, ErrorCode::Conflict);
        assert!(err.message.contains(says), "{body}: {err:?}");
    }
    assert!(listed_operations(&d).await.is_empty());
    assert_eq!(&d.get("/v1/vms").await.body[..], b"[]");
    d.stop().await;
}

/// The console endpoint takes any u64 offset: one past the end is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_offset_past_the_end_is_a_400() {
    let d = TestDaemon::start_inert().await;
    insert_vms(&d, &[("0a1b2c3d4e5f6071", "web")]);
    let dir = d.layout.state_dir.join("vms/0a1b2c3d4e5f6071");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("console.log"), "boot\n\u{1b}]0;title\u{7}login:").unwrap();
    for offset in [u64::MAX, 1 << 63, 100] {
        let resp = d.get(&format!("/v1/vms/web/console?offset={offset}")).await;
        let err = assert_error(&resp, 400, ErrorCode::InvalidArgument);
        assert!(
            err.message.contains("past the end of the console log"),
            "{err:?}"
        );
    }
    let chunk: banger_api::ConsoleChunk =
        serde_json::from_slice(&d.get("/v1/vms/web/console?offset=5").await.body).unwrap();
    // The API hands back the guest's bytes; the CLI strips them for a terminal.
    assert_eq!(chunk.data, "\u{1b}]0;title\u{7}login:");
    d.stop().await;
}

/// A workspace prepare or export names its problem in a 4xx before any
/// stream goes anywhere: a bad query value, an unknown VM, a VM that is
/// not running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_request_the_daemon_cannot_serve_is_a_4xx() {
    let d = TestDaemon::start_inert().await;
    insert_vms(&d, &[("0a1b2c3d4e5f6071", "web")]);
    let fp = "f".repeat(64);
    let put = |target: String| {
        let socket = d.socket.clone();
        async move {
            raw_request(
                &socket,
                "PUT",
                &target,
                &[("content-type", "application/x-tar")],
                "tar",
            )
            .await
            .unwrap()
        }
    };
    let ok = format!("host_path=%2Fhome%2Fdev%2Frepo&fingerprint={fp}");
    for (query, says) in [
        (format!("host_path=relative&fingerprint={fp}"), "host_path"),
        (format!("{ok}&commit=HEAD"), "commit"),
        (format!("{ok}&branch=-x"), "branch"),
        ("host_path=%2Fx&fingerprint=short".to_owned(), "fingerprint"),
        (format!("{ok}&bogus=1"), "bogus"),
    ] {
        let resp = put(format!("/v1/vms/web/workspace?{query}")).await;
        let err = assert_error(&resp, 400, ErrorCode::InvalidArgument);
        assert!(err.message.contains(says), "{query}: {err:?}");
    }
    let resp = put(format!("/v1/vms/nope/workspace?{ok}")).await;
    assert_error(&resp, 404, ErrorCode::NotFound);
    let resp = put(format!("/v1/vms/web/workspace?{ok}")).await;
    let err = assert_error(&resp, 409, ErrorCode::NotRunning);
    assert!(err.message.contains("not running"), "{err:?}");
    let resp = d.get("/v1/vms/web/workspace/export").await;
    assert_error(&resp, 409, ErrorCode::NotRunning);
    d.stop().await;
}

/// A daemon with tight connection bounds, and nothing in its catalog.
async fn start_limited(max_connections: usize) -> TestDaemon {
    TestDaemon::start_with(DaemonOptions {
        catalog: banger_artifacts::catalog::Catalog::default(),
        http: banger_daemon::http::HttpLimits {
            header_timeout: std::time::Duration::from_secs(1),
            max_connections,
            ..banger_daemon::http::HttpLimits::default()
        },
        ..DaemonOptions::default()
    })
    .await
}

/// Reads until the daemon closes the connection (10 s at most); returns
/// what it sent.
async fn read_to_close(stream: &mut tokio::net::UnixStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut all),
    );
    assert!(read.await.is_ok(), "the daemon kept the connection open");
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_or_an_idle_connection_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let d = start_limited(256).await;
    let mut idle = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    let mut slow = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    slow.write_all(b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    read_to_close(&mut slow).await;
    read_to_close(&mut idle).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // A keep-alive connection that answered once is closed when idle too.
    let mut kept = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    kept.write_all(b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = read_to_close(&mut kept).await;
    assert!(
        answered.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answered)
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_get_a_json_503_and_idle_ones_make_room_again() {
    use tokio::io::AsyncWriteExt;
    let d = start_limited(4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::UnixStream::connect(&d.socket).await.unwrap());
    }
    // Connections are accepted in the order they were made: the fifth
    // finds no room.
    let mut extra = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    extra
        .write_all(b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let reply = String::from_utf8(read_to_close(&mut extra).await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    let body: ErrorBody = serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body.code, ErrorCode::Unavailable);
    assert!(body.message.contains("too many connections"), "{body:?}");
    // The held ones send nothing: after the header timeout they are
    // closed and the daemon answers again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if d.get("/v1/ping").await.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ping never answered again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(held);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_a_json_408() {
    use tokio::io::AsyncWriteExt;
    let d = TestDaemon::start_with(DaemonOptions {
        catalog: banger_artifacts::catalog::Catalog::default(),
        http: banger_daemon::http::HttpLimits {
            body_timeout: std::time::Duration::from_secs(1),
            ..banger_daemon::http::HttpLimits::default()
        },
        ..DaemonOptions::default()
    })
    .await;
    let mut slow = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    slow.write_all(
        b"POST /v1/images/cache/prune HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let reply = String::from_utf8(read_to_close(&mut slow).await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    let body: ErrorBody = serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body.code, ErrorCode::RequestTimeout);
    d.stop().await;
}

/// A client that stops reading a large response loses its connection, and
/// with it the connection permit it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_frees_its_permit() {
    use tokio::io::AsyncWriteExt;
    let d = TestDaemon::start_with(DaemonOptions {
        catalog: banger_artifacts::catalog::Catalog::default(),
        http: banger_daemon::http::HttpLimits {
            max_connections: 1,
            write_timeout: std::time::Duration::from_secs(1),
            ..banger_daemon::http::HttpLimits::default()
        },
        ..DaemonOptions::default()
    })
    .await;
    insert_vms(&d, &[("0a1b2c3d4e5f6071", "web")]);
    let dir = d.layout.state_dir.join("vms/0a1b2c3d4e5f6071");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("console.log"), "x".repeat(1 << 20)).unwrap();
    let mut stalled = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    stalled
        .write_all(b"GET /v1/vms/web/console HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read: the 1 MiB answer fills the socket and the write stalls.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if d.get("/v1/ping").await.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled connection kept its permit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(stalled);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_target_or_large_head_gets_a_json_414_or_431() {
    let d = TestDaemon::start_inert().await;
    let long = format!("/v1/ping?pad={}", "a".repeat(10 * 1024));
    let body = assert_error(&d.get(&long).await, 414, ErrorCode::UriTooLong);
    assert!(body.message.contains("request target"), "{body:?}");
    let big = "b".repeat(40 * 1024);
    let resp = raw_request(&d.socket, "GET", "/v1/ping", &[("x-pad", big.as_str())], "")
        .await
        .unwrap();
    let body = assert_error(&resp, 431, ErrorCode::HeadersTooLarge);
    assert!(body.message.contains("bytes, more than"), "{body:?}");
    let names: Vec<String> = (0..150).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let resp = raw_request(&d.socket, "GET", "/v1/ping", &many, "")
        .await
        .unwrap();
    let body = assert_error(&resp, 431, ErrorCode::HeadersTooLarge);
    assert!(body.message.contains("header fields"), "{body:?}");
    assert_eq!(d.get("/v1/ping").await.status, 200);
    d.stop().await;
}

/// Imports of a FIFO (which a blocking open would wait on forever) are
/// refused at once and the API keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_fifo_is_refused_without_stalling_the_api() {
    let d = TestDaemon::start().await;
    let fifo = d.layout.state_dir.join("rootfs.tar");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path in the test's own directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let body = format!(r#"{{"name":"from-fifo","path":"{}"}}"#, fifo.display());
    let json = [("content-type", "application/json")];
    let imports: Vec<_> = (0..3)
        .map(|_| {
            let (socket, body) = (d.socket.clone(), body.clone());
            tokio::spawn(async move {
                raw_request(&socket, "POST", "/v1/images/import", &json, body).await
            })
        })
        .collect();
    for import in imports {
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), import)
            .await
            .expect("an import of a FIFO hung")
            .unwrap()
            .unwrap();
        let err = assert_error(&resp, 400, ErrorCode::InvalidArgument);
        assert!(err.message.contains("is a FIFO"), "{err:?}");
    }
    assert_eq!(d.get("/v1/ping").await.status, 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_caller_op_id_is_adopted_and_bad_one_replaced() {
    let d = TestDaemon::start().await;
    let resp = raw_request(
        &d.socket,
        "GET",
        "/v1/nope",
        &[(OP_ID_HEADER, "cli-42")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(resp.headers[OP_ID_HEADER], "cli-42");
    assert_eq!(
        assert_error(&resp, 404, ErrorCode::NotFound).op_id,
        "cli-42"
    );
    let resp = raw_request(&d.socket, "GET", "/v1/ping", &[(OP_ID_HEADER, "a b;c")], "")
        .await
        .unwrap();
    assert_ne!(resp.headers[OP_ID_HEADER], "a b;c");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_over_the_api_stops_and_removes_the_socket() {
    let d = TestDaemon::start().await;
    let resp = raw_request(&d.socket, "POST", "/v1/shutdown", &[], "")
        .await
        .unwrap();
    assert_eq!(resp.status, 202);
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["pid"], std::process::id());
    d.task.await.unwrap().unwrap();
    assert!(!d.socket.exists());
    // The lock is free again: a new daemon binds the same layout.
    let again = Daemon::bind(&d.layout, DaemonOptions::default())
        .await
        .unwrap();
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_daemon_refuses_and_leaves_the_first_serving() {
    let d = TestDaemon::start().await;
    let err = Daemon::bind(&d.layout, DaemonOptions::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DaemonError::AlreadyRunning { .. }), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    assert!(text.contains("already serving"), "{text}");
    assert_eq!(d.get("/v1/ping").await.status, 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_from_a_dead_daemon_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    layout.ensure().unwrap();
    // A socket file nobody listens on, as a SIGKILLed daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(layout.socket_path()).unwrap());
    assert!(layout.socket_path().exists());
    let bound = Daemon::bind(&layout, DaemonOptions::default())
        .await
        .unwrap();
    let stop = bound.shutdown_handle();
    let task = tokio::spawn(bound.serve(std::future::pending()));
    let resp = raw_request(&layout.socket_path(), "GET", "/v1/ping", &[], "")
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    stop.send_replace(true);
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_stops_startup_and_leaves_no_socket() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    layout.ensure().unwrap();
    {
        let conn = rusqlite::Connection::open(layout.db_path()).unwrap();
        conn.execute_batch("PRAGMA user_version = 1000;").unwrap();
    }
    let err = Daemon::bind(&layout, DaemonOptions::default())
        .await
        .unwrap_err();
    let chain = banger_daemon::error::error_chain(&err);
    assert!(chain.contains("schema version 1000"), "{chain}");
    assert!(!layout.socket_path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_private_to_the_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = TestDaemon::start().await;
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), banger_sys::euid());
    d.stop().await;
}

/// With the socket's permissions loosened (as a leaked descriptor or a
/// careless chmod would), SO_PEERCRED still refuses another user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_that_is_neither_root_nor_owner_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    if !banger_testutil::have_root("peer_that_is_neither_root_nor_owner_is_refused") {
        return;
    }
    let d = TestDaemon::start().await;
    let mut dir = d.socket.parent();
    while let Some(p) = dir {
        if p == Path::new("/tmp") || p == Path::new("/") {
            break;
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir = p.parent();
    }
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let socket = d.socket.clone();
    let out = tokio::task::spawn_blocking(move || curl_as_nobody(&socket))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("403"),
        "curl said: {stdout} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("permission_denied"), "{stdout}");
    assert!(
        stdout.contains("uid 65534 may not use this daemon"),
        "{stdout}"
    );
    // Root still gets in.
    assert_eq!(d.get("/v1/ping").await.status, 200);
    d.stop().await;
}

#[allow(
    clippy::disallowed_methods,
    reason = "the test needs a process running as another uid"
)]
fn curl_as_nobody(socket: &Path) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\\n%{http_code}", "--unix-socket"])
        .arg(socket)
        .arg("http://x/v1/ping")
        .uid(65534)
        .gid(65534)
        .output()
        .map(|mut out| {
            // Put the status code first for the assertion.
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
            out.stdout = format!("{code} {body}").into_bytes();
            out
        })
        .expect("run curl (apt-get install curl)")
}

#[test]
fn openapi_document_matches_committed_copy() {
    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let generated = openapi::document_json();
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    // Blessing writes the new document and still fails this once, so a
    // human sees that it changed and reviews the diff before committing.
    if committed != generated && std::env::var_os("BANGER_BLESS").is_some() {
        std::fs::write(committed_path, &generated).unwrap();
        panic!(
            "docs/openapi.json was out of date and has been rewritten: review `git diff docs/openapi.json`, then rerun"
        );
    }
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run `BANGER_BLESS=1 cargo test -p banger-daemon --test api openapi`, review the diff and commit it"
    );
}

/// Every documented operation, as (method, path).
fn documented_operations() -> Vec<(String, String)> {
    let doc = serde_json::to_value(openapi::document()).unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((method.to_uppercase(), path.clone()));
        }
    }
    ops.sort();
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_is_openapi_3_and_lists_every_route() {
    let d = TestDaemon::start().await;
    let resp = d.get("/v1/openapi.json").await;
    assert_eq!(resp.status, 200);
    let served: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert!(
        served["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        served["openapi"]
    );
    assert_eq!(served, serde_json::to_value(openapi::document()).unwrap());
    let ops = documented_operations();
    for expected in [
        ("GET", "/v1/ping"),
        ("GET", "/v1/vms"),
        ("POST", "/v1/shutdown"),
        ("GET", "/v1/openapi.json"),
        ("POST", "/v1/kernels/pull"),
        ("POST", "/v1/images/pull"),
        ("POST", "/v1/images/import"),
        ("GET", "/v1/operations/{id}"),
        ("DELETE", "/v1/operations/{id}"),
    ] {
        assert!(
            ops.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} undocumented"
        );
    }
    // Each documented operation is routed: asked with placeholder values it
    // never meets the "no route" or "method" fallbacks. Shutdown goes last.
    let json = [("content-type", "application/json")];
    for (method, path) in ops.iter().filter(|(_, p)| p != "/v1/shutdown") {
        let target = path
            .replace("{name}", "nonexistent")
            .replace("{id}", "op-0");
        let body = if method == "POST" {
            r#"{"name":"nonexistent","path":"/nonexistent"}"#
        } else {
            ""
        };
        let resp = raw_request(&d.socket, method, &target, &json, body)
            .await
            .unwrap();
        if resp.status.is_success() {
            continue;
        }
        let err: ErrorBody = serde_json::from_slice(&resp.body).unwrap();
        assert!(
            err.code != ErrorCode::MethodNotAllowed && !err.message.starts_with("no route"),
            "{method} {path} is documented but not routed: {err:?}"
        );
    }
    let resp = raw_request(&d.socket, "POST", "/v1/shutdown", &[], "")
        .await
        .unwrap();
    assert_eq!(resp.status, 202);
    d.task.await.unwrap().unwrap();
}

/// Whether a fuzz case is a valid shutdown request (which would end the run).
fn is_valid_shutdown(method: &str, target: &str, content_type: Option<&str>, body: &[u8]) -> bool {
    let path = target.split('?').next().unwrap_or("");
    let ct_ok = content_type.is_none_or(|c| c.starts_with("application/json"));
    method == "POST"
        && path == "/v1/shutdown"
        && ct_ok
        && (body.iter().all(u8::is_ascii_whitespace)
            || serde_json::from_slice::<ShutdownRequest>(body).is_ok())
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    target: String,
    content_type: Option<String>,
    op_id: Option<&'static str>,
    body: Vec<u8>,
}

/// What a `{vm}`, `{name}` or `{id}` in a documented path becomes: a VM
/// the fuzzed daemon holds (`web`, for views only: a change would try to
/// boot it), one it does not, an id, an id prefix, a bad name.
fn fill(path: &str, method: &str, pick: prop::sample::Index) -> String {
    let vms: &[&str] = if method == "GET" {
        &["web", "0a1b2c3d4e5f6071", "0a1b", "nope", "Bad%20Name"]
    } else {
        &["nope", "1111222233334444", "1111", "Bad%20Name"]
    };
    let names = ["debian-bookworm", "nope", "a..b"];
    let long = "x".repeat(80);
    let ids = ["fuzz-1", "fuzz-2", "op-0000000000000000", long.as_str()];
    let vm = *pick.get::<&str>(vms);
    let name = *pick.get::<&str>(&names);
    let id = *pick.get::<&str>(&ids);
    path.replace("{vm}", vm)
        .replace("{name}", name)
        .replace("{id}", id)
}

fn case(ops: Vec<(String, String)>) -> impl Strategy<Value = Case> {
    let methods = prop_oneof![
        4 => Just("GET"),
        4 => Just("POST"),
        1 => Just("PUT"),
        1 => Just("DELETE"),
        1 => Just("PATCH"),
        1 => Just("OPTIONS"),
        1 => Just("HEAD"),
        1 => Just("BREW"),
    ];
    let paths = prop::sample::select(ops.into_iter().map(|(_, p)| p).collect::<Vec<_>>());
    let suffix = prop_oneof![
        6 => Just(String::new()),
        2 => "\\?[a-z0-9_=&%+.-]{0,24}",
        // Offsets and waits up to and past u64.
        1 => "\\?offset=[0-9]{1,25}",
        1 => "\\?wait_ms=[0-9]{1,25}",
        1 => "/[a-z0-9._-]{0,12}",
        1 => "/\\.\\./[a-z]{1,6}",
    ];
    let content_type = prop_oneof![
        Just(None),
        Just(Some("application/json".to_owned())),
        Just(Some("application/json; charset=utf-8".to_owned())),
        Just(Some("text/plain".to_owned())),
        "[a-z/+;= -]{0,20}".prop_map(Some),
    ];
    let body = prop_oneof![
        2 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        // Arrays where objects belong (serde would read them by position).
        1 => prop::collection::vec(json_value(), 0..3)
            .prop_map(|v| serde_json::to_vec(&serde_json::Value::Array(v)).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..128),
        1 => "\\{\"[a-z_]{1,8}\":[0-9a-z\"]{0,6}\\}".prop_map(String::into_bytes),
        1 => Just(Vec::new()),
    ];
    // A few op ids, so some are reused while their operation is known.
    let op_id = prop::option::of(prop::sample::select(vec!["fuzz-1", "fuzz-2", "fuzz-3"]));
    (
        methods,
        paths,
        suffix,
        content_type,
        op_id,
        body,
        any::<prop::sample::Index>(),
    )
        .prop_map(
            |(method, path, suffix, content_type, op_id, body, pick)| Case {
                method,
                target: fill(&path, method, pick) + &suffix,
                content_type,
                op_id,
                body,
            },
        )
}

/// The schema-driven fuzzer: random methods, query strings, content types
/// and bodies against every documented route. None may get a 5xx or break
/// the daemon; every error is the JSON error body with the header's op id.
#[test]
fn no_input_to_any_documented_route_gets_a_5xx() {
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    // A POST /v1/vms of `{}` is valid and would pull the default image.
    let d = rt.block_on(TestDaemon::start_inert());
    insert_vms(&d, &[("0a1b2c3d4e5f6071", "web")]);
    let console = d.layout.state_dir.join("vms/0a1b2c3d4e5f6071/console.log");
    std::fs::create_dir_all(console.parent().unwrap()).unwrap();
    std::fs::write(&console, "boot\n\u{1b}[31mred\u{1b}[0m\n").unwrap();
    let cases: u32 = std::env::var("BANGER_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let socket = d.socket.clone();
    let rt2 = rt.clone();
    runner
        .run(&case(documented_operations()), move |c| {
            if is_valid_shutdown(c.method, &c.target, c.content_type.as_deref(), &c.body) {
                return Err(TestCaseError::reject("valid shutdown"));
            }
            let mut headers = Vec::new();
            if let Some(ct) = &c.content_type {
                headers.push(("content-type", ct.as_str()));
            }
            if let Some(id) = c.op_id {
                headers.push((OP_ID_HEADER, id));
            }
            let resp = match rt2.block_on(raw_request(
                &socket,
                c.method,
                &c.target,
                &headers,
                c.body.clone(),
            )) {
                Ok(r) => r,
                // The client refused to build the request (e.g. a header
                // value it will not send): nothing reached the daemon.
                Err(e) if e.to_string().contains("invalid") => return Ok(()),
                Err(e) => return Err(TestCaseError::fail(format!("{c:?}: {e}"))),
            };
            prop_assert!(
                resp.status.as_u16() < 500,
                "{:?} got {} {:?}",
                c,
                resp.status,
                resp.body
            );
            if resp.status.as_u16() >= 400 && c.method != "HEAD" {
                let body: ErrorBody = serde_json::from_slice(&resp.body).map_err(|e| {
                    TestCaseError::fail(format!("{c:?}: error body not JSON: {e}: {:?}", resp.body))
                })?;
                prop_assert_eq!(
                    body.op_id.as_str(),
                    resp.headers[OP_ID_HEADER].to_str().unwrap()
                );
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(async {
        assert_eq!(
            d.get("/v1/ping").await.status,
            200,
            "daemon must survive the fuzzing"
        );
        d.stop().await;
    });
}

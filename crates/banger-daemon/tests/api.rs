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
    task: JoinHandle<Result<(), DaemonError>>,
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
    assert!(body.message.contains("invalid type"), "{body:?}");

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
    // SAFETY: geteuid cannot fail.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
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
    if std::env::var_os("BANGER_BLESS").is_some() {
        std::fs::write(committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run `BANGER_BLESS=1 cargo test -p banger-daemon --test api openapi` and commit it"
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
    body: Vec<u8>,
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
        1 => prop::collection::vec(any::<u8>(), 0..128),
        1 => "\\{\"[a-z_]{1,8}\":[0-9a-z\"]{0,6}\\}".prop_map(String::into_bytes),
        1 => Just(Vec::new()),
    ];
    (methods, paths, suffix, content_type, body).prop_map(
        |(method, path, suffix, content_type, body)| Case {
            method,
            target: path + &suffix,
            content_type,
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

//! The artifact service through the API, with a fake build runner: one
//! build for concurrent pulls, cancellation, failures, deletes that must
//! wait, and nothing half-published.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "integration tests: each file is a test crate of its own"
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_api::{ErrorBody, ErrorCode, Image, Operation, OperationState};
use banger_config::Layout;
use banger_daemon::{Daemon, DaemonOptions};
use banger_sys::{Cancel, Cmd, RunError, Runner};
use banger_testutil::{RawResponse, raw_request};

/// Plays mmdebstrap and mke2fs: mmdebstrap blocks until the gate opens
/// (or the build is cancelled), then writes a small real tarball.
#[derive(Debug, Default)]
struct FakeBuilder {
    open: Mutex<bool>,
    calls: Mutex<Vec<String>>,
    fail_mkfs: bool,
    /// How long a cancelled mmdebstrap takes to clean up.
    cleanup: Duration,
    /// Set when a cancel was seen.
    cancelled: Mutex<bool>,
}

impl FakeBuilder {
    fn open_gate(&self) {
        *self.open.lock().unwrap() = true;
    }

    fn bootstraps(&self) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.starts_with("mmdebstrap"))
            .count()
    }
}

impl Runner for FakeBuilder {
    fn run(&self, cmd: &Cmd, log: &Path, cancel: &Cancel) -> Result<(), RunError> {
        let line = cmd.display();
        self.calls.lock().unwrap().push(line.clone());
        std::fs::write(log, format!("ran {line}\n")).unwrap();
        let args: Vec<PathBuf> = cmd.args.iter().map(PathBuf::from).collect();
        if line.starts_with("mmdebstrap") {
            while !*self.open.lock().unwrap() {
                if cancel.is_cancelled() {
                    *self.cancelled.lock().unwrap() = true;
                    std::thread::sleep(self.cleanup);
                    return Err(RunError::Cancelled);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            write_rootfs_tar(&args[args.len() - 2]);
        } else if line.starts_with("mke2fs") {
            if self.fail_mkfs {
                return Err(RunError::Failed {
                    command: line,
                    status: std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
                    log: log.to_owned(),
                });
            }
            std::fs::write(&args[args.len() - 2], b"ext4").unwrap();
        }
        Ok(())
    }
}

fn write_rootfs_tar(path: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in [
        ("./etc/hostname", &b"x\n"[..]),
        ("./root/.bashrc", b"PS1=x\n"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    b.into_inner().unwrap();
}

struct Harness {
    _dir: tempfile::TempDir,
    layout: Layout,
    socket: PathBuf,
    runner: Arc<FakeBuilder>,
    stop: tokio::sync::watch::Sender<bool>,
    /// The serving daemon, for a test that waits for it to stop.
    task:
        Option<tokio::task::JoinHandle<Result<banger_daemon::Stopped, banger_daemon::DaemonError>>>,
}

impl Harness {
    async fn start(runner: FakeBuilder) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::under(dir.path());
        let runner = Arc::new(runner);
        let options = DaemonOptions {
            debian_mirror: "http://mirror.invalid/debian".into(),
            runner: runner.clone(),
            catalog: banger_artifacts::catalog::Catalog::embedded(),
            ..DaemonOptions::default()
        };
        let bound = Daemon::bind(&layout, options).await.unwrap();
        let socket = bound.socket_path().to_owned();
        let stop = bound.shutdown_handle();
        let task = Some(tokio::spawn(bound.serve(std::future::pending())));
        Self {
            _dir: dir,
            layout,
            socket,
            runner,
            stop,
            task,
        }
    }

    async fn call(&self, method: &str, target: &str, body: &str) -> RawResponse {
        let json = [("content-type", "application/json")];
        raw_request(&self.socket, method, target, &json, body.to_owned())
            .await
            .unwrap()
    }

    async fn pull(&self) -> Operation {
        let resp = self
            .call("POST", "/v1/images/pull", r#"{"name":"debian-bookworm"}"#)
            .await;
        assert_eq!(resp.status, 202, "{:?}", resp.body);
        serde_json::from_slice(&resp.body).unwrap()
    }

    async fn wait(&self, id: &str) -> Operation {
        for _ in 0..1000 {
            let op: Operation = serde_json::from_slice(
                &self
                    .call("GET", &format!("/v1/operations/{id}"), "")
                    .await
                    .body,
            )
            .unwrap();
            if op.state.is_terminal() {
                return op;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("operation {id} did not end");
    }

    async fn open_gate_and_wait_for(&self, id: &str) {
        self.runner.open_gate();
        self.wait(id).await;
    }

    async fn images(&self) -> Vec<Image> {
        serde_json::from_slice(&self.call("GET", "/v1/images", "").await.body).unwrap()
    }

    /// Entries of the images directory that are not published images.
    fn debris(&self) -> Vec<String> {
        let dir = self.layout.cache_dir.join("images");
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_share_one_build_and_both_succeed() {
    let h = Harness::start(FakeBuilder::default()).await;
    let first = h.pull().await;
    let second = h.pull().await;
    assert_eq!(first.id, second.id, "the second pull joins the first");
    assert_eq!(first.state, OperationState::Running);

    // While it runs, the name is busy: delete waits for nobody.
    let resp = h.call("DELETE", "/v1/images/debian-bookworm", "").await;
    let err: ErrorBody = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(err.code, ErrorCode::Conflict, "{err:?}");
    assert!(err.message.contains(&first.id), "{err:?}");

    h.runner.open_gate();
    let done = h.wait(&first.id).await;
    assert_eq!(done.state, OperationState::Succeeded, "{done:?}");
    assert_eq!(h.runner.bootstraps(), 1);
    assert!(
        done.log
            .unwrap()
            .ends_with("logs/image-debian-bookworm.log")
    );

    let images = h.images().await;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].name, "debian-bookworm");
    assert!(Path::new(&images[0].dir).join("rootfs.ext4").is_file());
    assert!(Path::new(&images[0].dir).join("work-seed.ext4").is_file());
    assert!(h.debris().is_empty(), "{:?}", h.debris());

    // Present now: a new pull succeeds at once without building.
    let again = h.pull().await;
    assert_eq!(again.state, OperationState::Succeeded);
    assert_eq!(
        again.message.as_deref(),
        Some("debian-bookworm is already present")
    );
    assert_eq!(h.runner.bootstraps(), 1);

    // A VM made from the image pins it.
    let store = banger_store::Store::open(&h.layout.db_path()).unwrap();
    let vm = banger_testutil::stopped_vm("vm1", "web", "debian-bookworm");
    store.insert_vm(&vm).unwrap();
    let resp = h.call("DELETE", "/v1/images/debian-bookworm", "").await;
    let err: ErrorBody = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(err.message.contains("used by VM(s) web"), "{err:?}");
    // And the kernel is pinned by the image.
    let resp = h.call("DELETE", "/v1/kernels/generic-6.1", "").await;
    let err: ErrorBody = serde_json::from_slice(&resp.body).unwrap();
    assert!(
        err.message.contains("used by image(s) debian-bookworm"),
        "{err:?}"
    );
    store.delete_vm("vm1").unwrap();

    let resp = h.call("DELETE", "/v1/images/debian-bookworm", "").await;
    assert_eq!(resp.status, 204);
    assert!(h.images().await.is_empty());
    assert!(!h.layout.cache_dir.join("images/debian-bookworm").exists());
}

/// `vm create` pulls a missing catalog image itself, shows the pull in its
/// own stages, and when a later step fails (here the kernel, which the fake
/// cannot build) leaves no VM behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_create_pulls_the_missing_image_and_stores_nothing_when_it_fails() {
    let h = Harness::start(FakeBuilder::default()).await;
    let resp = h
        .call("POST", "/v1/vms", r#"{"name":"auto","no_start":true}"#)
        .await;
    assert_eq!(resp.status, 202, "{:?}", resp.body);
    let op: Operation = serde_json::from_slice(&resp.body).unwrap();
    // The create's stage names the pull while it waits on mmdebstrap.
    let mut seen = String::new();
    for _ in 0..500 {
        let now: Operation = serde_json::from_slice(
            &h.call("GET", &format!("/v1/operations/{}", op.id), "")
                .await
                .body,
        )
        .unwrap();
        if let Some(stage) = now.stage {
            seen = stage.name;
            if seen.contains("pulling debian-bookworm") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen.contains("pulling debian-bookworm"), "{seen}");
    h.open_gate_and_wait_for(&op.id).await;
    let done = h.wait(&op.id).await;
    assert_eq!(done.state, OperationState::Failed);
    let why = done.error.unwrap().message;
    assert!(why.contains("pull generic-6.1 failed"), "{why}");
    assert_eq!(h.runner.bootstraps(), 1);
    assert_eq!(h.images().await.len(), 1, "the image was pulled and kept");
    assert_eq!(&h.call("GET", "/v1/vms", "").await.body[..], b"[]");
}

/// A long poll (`wait_ms`) answers when the operation changes stage or
/// ends, not when its wait runs out: following a whole pull with 30 s
/// polls ends within the liveness bound, in about one poll per stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_answer_on_each_change() {
    let h = Harness::start(FakeBuilder::default()).await;
    let op = h.pull().await;
    let too_long = h
        .call(
            "GET",
            &format!("/v1/operations/{}?wait_ms=30001", op.id),
            "",
        )
        .await;
    assert_eq!(too_long.status, 400, "{:?}", too_long.body);
    let unknown = h
        .call("GET", &format!("/v1/operations/{}?wait=1", op.id), "")
        .await;
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);

    h.runner.open_gate();
    let target = format!("/v1/operations/{}?wait_ms=30000", op.id);
    let follow = async {
        let mut polls = 0;
        loop {
            polls += 1;
            let now: Operation =
                serde_json::from_slice(&h.call("GET", &target, "").await.body).unwrap();
            if now.state.is_terminal() {
                return (now, polls);
            }
        }
    };
    let (done, polls) = tokio::time::timeout(Duration::from_secs(20), follow)
        .await
        .expect("a long poll waited out its 30 s instead of answering the change");
    assert_eq!(done.state, OperationState::Succeeded, "{done:?}");
    let stages = done.stage.map_or(0, |s| s.total);
    assert!(polls <= stages + 1, "{polls} polls for {stages} stages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_pull_publishes_nothing_and_leaves_no_staging() {
    let h = Harness::start(FakeBuilder::default()).await;
    let op = h.pull().await;
    let resp = h
        .call("DELETE", &format!("/v1/operations/{}", op.id), "")
        .await;
    assert_eq!(resp.status, 200);
    let done = h.wait(&op.id).await;
    assert_eq!(done.state, OperationState::Cancelled, "{done:?}");
    assert!(h.images().await.is_empty());
    assert!(h.debris().is_empty(), "{:?}", h.debris());
    // The name is free again: a new pull builds.
    h.runner.open_gate();
    let op = h.pull().await;
    assert_eq!(h.wait(&op.id).await.state, OperationState::Succeeded);
    assert_eq!(h.runner.bootstraps(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_build_reports_the_step_and_log_and_publishes_nothing() {
    let h = Harness::start(FakeBuilder {
        fail_mkfs: true,
        ..FakeBuilder::default()
    })
    .await;
    h.runner.open_gate();
    let op = h.pull().await;
    let done = h.wait(&op.id).await;
    assert_eq!(done.state, OperationState::Failed);
    let err = done.error.unwrap();
    assert_eq!(err.code, ErrorCode::OperationFailed);
    assert!(err.message.contains("`mke2fs"), "{err:?}");
    assert!(err.message.contains("image-debian-bookworm.log"), "{err:?}");
    assert_eq!(err.op_id, op.id);
    assert!(h.images().await.is_empty());
    assert!(h.debris().is_empty(), "{:?}", h.debris());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debris_of_a_killed_daemon_is_swept_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    let staging = layout
        .cache_dir
        .join("images/.staging-debian-bookworm-0123456789abcdef");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("rootfs.tar"), b"half").unwrap();
    // What a killed daemon's build leaves running: a process group whose
    // leader died (so only the record tells it), recorded in the staging
    // directory; beside it a user's own process naming that directory.
    let record = staging.join(banger_artifacts::store::BUILD_GROUP);
    let (r, log) = (record.clone(), dir.path().join("build.log"));
    let build = std::thread::spawn(move || {
        banger_sys::HostRunner.run(
            &Cmd::new("/bin/sh")
                .args(["-c", "sleep 60 & wait"])
                .record_group(&r),
            &log,
            &Cancel::new(),
        )
    });
    while banger_sys::GroupRecord::read(&record).is_none() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let group = banger_sys::GroupRecord::read(&record).unwrap();
    #[allow(
        clippy::disallowed_methods,
        reason = "a bystander process of the user's"
    )]
    let mut bystander = std::process::Command::new("/bin/sh")
        .args(["-c", "sleep 60"])
        .arg(&staging)
        .spawn()
        .unwrap();
    let bound = Daemon::bind(&layout, DaemonOptions::default())
        .await
        .unwrap();
    assert!(!staging.exists());
    assert!(
        group.members(Path::new("/proc")).is_empty(),
        "the build survived"
    );
    assert!(build.join().unwrap().is_err());
    assert!(
        matches!(bystander.try_wait(), Ok(None)),
        "the user's process was killed"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
    drop(bound);
}

/// A shutdown with a build running: the build is cancelled and cleans up,
/// and until it has, the daemon keeps its instance lock (a second daemon
/// on the same state directory is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_a_build_and_keeps_the_lock_until_it_cleaned_up() {
    let mut h = Harness::start(FakeBuilder {
        cleanup: Duration::from_millis(1500),
        ..FakeBuilder::default()
    })
    .await;
    h.pull().await;
    while h.runner.bootstraps() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resp = h.call("POST", "/v1/shutdown", "").await;
    assert_eq!(resp.status, 202);
    // The build is still cleaning up: the state directory is not free.
    let err = Daemon::bind(&h.layout, DaemonOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, banger_daemon::DaemonError::AlreadyRunning { .. }),
        "{err}"
    );
    let stopped = h.task.take().unwrap().await.unwrap().unwrap();
    assert!(
        *h.runner.cancelled.lock().unwrap(),
        "the build was cut off, not cancelled"
    );
    let staging: Vec<_> = std::fs::read_dir(h.layout.cache_dir.join("images"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(staging.is_empty(), "{staging:?}");
    drop(stopped);
    let again = Daemon::bind(&h.layout, DaemonOptions::default())
        .await
        .unwrap();
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_and_unknown_entries_are_4xx() {
    let h = Harness::start(FakeBuilder::default()).await;
    for (method, target, body, code) in [
        (
            "POST",
            "/v1/images/pull",
            r#"{"name":"../evil"}"#,
            ErrorCode::InvalidArgument,
        ),
        (
            "POST",
            "/v1/images/pull",
            r#"{"name":"nope"}"#,
            ErrorCode::NotFound,
        ),
        (
            "POST",
            "/v1/kernels/pull",
            r#"{"name":"generic-9.9"}"#,
            ErrorCode::NotFound,
        ),
        (
            "GET",
            "/v1/images/.staging-x",
            "",
            ErrorCode::InvalidArgument,
        ),
        ("GET", "/v1/images/absent", "", ErrorCode::NotFound),
        ("DELETE", "/v1/kernels/absent", "", ErrorCode::NotFound),
        ("GET", "/v1/operations/op-nope", "", ErrorCode::NotFound),
        (
            "POST",
            "/v1/images/import",
            r#"{"name":"x","path":"relative.tar"}"#,
            ErrorCode::InvalidArgument,
        ),
        (
            "POST",
            "/v1/images/import",
            r#"{"name":"x","path":"/nonexistent.tar"}"#,
            ErrorCode::InvalidArgument,
        ),
        (
            "POST",
            "/v1/images/import",
            r#"{"name":"x","path":"/etc/hostname","kernel":"nope"}"#,
            ErrorCode::InvalidArgument,
        ),
    ] {
        let resp = h.call(method, target, body).await;
        let err: ErrorBody = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(err.code, code, "{method} {target} {body}: {err:?}");
        assert!(resp.status.is_client_error());
    }
    assert_eq!(h.runner.bootstraps(), 0);
}

/// A web server on loopback serving `dir` (Python's http.server), stopped
/// on drop.
struct WebServer {
    child: std::process::Child,
    port: u16,
}

impl WebServer {
    #[allow(
        clippy::disallowed_methods,
        reason = "a real HTTP server for download tests"
    )]
    fn serve(dir: &Path) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start python3 -m http.server (apt-get install python3)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 43567 (http://127.0.0.1:43567/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Self { child, port }
    }

    fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Download entries for real: curl against a web server on loopback. A
/// good checksum publishes; a bad one publishes nothing and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_entries_are_verified_before_publishing() {
    use banger_artifacts::catalog::{
        Catalog, Download, ImageEntry, ImageOrigin, KernelEntry, KernelSource,
    };
    let served = tempfile::tempdir().unwrap();
    let kernel_sha = banger_testutil::tar_of(
        &served.path().join("k.tar"),
        &[("vmlinux", b"\x7fELF"), ("bzImage", b"bz")],
    )
    .unwrap();
    let image_sha =
        banger_testutil::tar_of(&served.path().join("i.tar"), &[("rootfs.ext4", b"ext4")]).unwrap();
    let web = WebServer::serve(served.path());
    let kernel = |name: &str, sha256: &str| KernelEntry {
        name: name.into(),
        description: "downloaded".into(),
        source: KernelSource::Download(Download {
            url: web.url("k.tar"),
            sha256: sha256.into(),
        }),
    };
    let catalog = Catalog {
        kernels: vec![
            kernel("dl-good", &kernel_sha),
            kernel("dl-bad", &"0".repeat(64)),
        ],
        images: vec![ImageEntry {
            name: "bundled".into(),
            description: "a bundle".into(),
            source: ImageOrigin::Bundle {
                download: Download {
                    url: web.url("i.tar"),
                    sha256: image_sha,
                },
                kernel: "dl-good".into(),
            },
        }],
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    let options = DaemonOptions {
        debian_mirror: "http://mirror.invalid/debian".into(),
        runner: Arc::new(banger_sys::HostRunner),
        catalog,
        ..DaemonOptions::default()
    };
    let bound = Daemon::bind(&layout, options).await.unwrap();
    let socket = bound.socket_path().to_owned();
    let stop = bound.shutdown_handle();
    tokio::spawn(bound.serve(std::future::pending()));
    let json = [("content-type", "application/json")];
    let pull = |route: &'static str, name: &'static str| {
        let socket = socket.clone();
        async move {
            let body = format!("{{\"name\":\"{name}\"}}");
            let resp = raw_request(&socket, "POST", route, &json, body)
                .await
                .unwrap();
            let op: Operation = serde_json::from_slice(&resp.body).unwrap();
            for _ in 0..1000 {
                let resp = raw_request(
                    &socket,
                    "GET",
                    &format!("/v1/operations/{}", op.id),
                    &[],
                    "",
                )
                .await
                .unwrap();
                let now: Operation = serde_json::from_slice(&resp.body).unwrap();
                if now.state.is_terminal() {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("pull of {name} did not end");
        }
    };

    let good = pull("/v1/kernels/pull", "dl-good").await;
    assert_eq!(good.state, OperationState::Succeeded, "{good:?}");
    let kdir = layout.cache_dir.join("kernels/dl-good");
    assert_eq!(std::fs::read(kdir.join("bzImage")).unwrap(), b"bz");

    let bad = pull("/v1/kernels/pull", "dl-bad").await;
    assert_eq!(bad.state, OperationState::Failed);
    let msg = bad.error.unwrap().message;
    assert!(
        msg.contains(&"0".repeat(64)) && msg.contains("nothing was published"),
        "{msg}"
    );
    assert!(!layout.cache_dir.join("kernels/dl-bad").exists());

    let image = pull("/v1/images/pull", "bundled").await;
    assert_eq!(image.state, OperationState::Succeeded, "{image:?}");
    let idir = layout.cache_dir.join("images/bundled");
    assert_eq!(std::fs::read(idir.join("rootfs.ext4")).unwrap(), b"ext4");
    assert!(
        idir.join("work-seed.ext4").is_file(),
        "an empty work seed is made"
    );
    stop.send_replace(true);
}

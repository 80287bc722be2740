//! The API contract checked by a tool nobody here wrote: schemathesis
//! generates requests from `docs/openapi.json` (valid ones, which must not
//! be refused, and invalid ones, which must be) and checks every response
//! against the document, in its coverage, fuzzing and stateful phases,
//! against a live in-process daemon.
//!
//! schemathesis speaks TCP, the daemon a unix socket: a small forwarder on
//! loopback joins them. The daemon's catalog is empty, so a schema-valid
//! create or kernel pull starts nothing that builds or boots. Left out:
//! `POST /v1/images/pull` (a generated reference would name a registry
//! off this machine), `POST /v1/images/import` (it reads host paths) and
//! `POST /v1/shutdown` (it ends the run) and `PUT /v1/vms/{vm}/workspace`
//! (its body is a tar stream, which schemathesis has no generator for);
//! `api.rs` covers their input checks.
//!
//! Two checks are off. `use_after_free` takes `DELETE /v1/operations/{id}`
//! for a removal, while it is a cancel that leaves the operation readable.
//! `ensure_resource_availability` expects the VM a `POST /v1/vms` (202)
//! names to exist at once; a create is an operation, and its VM exists
//! only once the operation has reserved it (here, with no catalog, never).
//!
//! schemathesis comes from PyPI: `scripts/test` installs it into a venv
//! under `~/.cache/banger-test/` and names its `st` in
//! `BANGER_SCHEMATHESIS`. Without it the test is skipped with a message,
//! and fails when `CI` is set.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "integration tests: each file is a test crate of its own"
)]

use std::path::{Path, PathBuf};

use banger_config::Layout;
use banger_daemon::{Daemon, DaemonOptions};

/// The `st` binary, if installed.
fn schemathesis() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("BANGER_SCHEMATHESIS")?);
    path.is_file().then_some(path)
}

/// Forwards every TCP connection on `listener` to the unix socket.
async fn forward(listener: tokio::net::TcpListener, socket: PathBuf) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let socket = socket.clone();
        tokio::spawn(async move {
            if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_api_honours_its_openapi_document() {
    let Some(st) = schemathesis() else {
        banger_testutil::skip(
            "the_live_api_honours_its_openapi_document",
            "needs schemathesis (BANGER_SCHEMATHESIS; scripts/test installs it)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::under(dir.path());
    let options = DaemonOptions {
        catalog: banger_artifacts::catalog::Catalog::default(),
        ..DaemonOptions::default()
    };
    let bound = Daemon::bind(&layout, options).await.unwrap();
    let socket = bound.socket_path().to_owned();
    let stop = bound.shutdown_handle();
    let daemon = tokio::spawn(bound.serve(std::future::pending()));
    // Loopback only: nothing the run sends leaves this machine.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let forwarder = tokio::spawn(forward(listener, socket));

    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let url = format!("http://127.0.0.1:{port}");
    // Defaults keep the suite fast and reproducible; a deeper or different
    // run: BANGER_SCHEMATHESIS_EXAMPLES=200 BANGER_SCHEMATHESIS_SEED=7.
    let knob = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let examples = knob("BANGER_SCHEMATHESIS_EXAMPLES", "25");
    let seed = knob("BANGER_SCHEMATHESIS_SEED", "20261130");
    let args: Vec<String> = [
        "run",
        spec.to_str().unwrap(),
        "--url",
        &url,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--checks",
        "all",
        // See the module doc for why these two are off.
        "--exclude-checks",
        "use_after_free,ensure_resource_availability",
        "--max-examples",
        &examples,
        // Reproducible: the same cases every run.
        "--seed",
        &seed,
        "--exclude-operation-id",
        "pull_image",
        "--exclude-operation-id",
        "import_image",
        "--exclude-operation-id",
        "shutdown",
        "--exclude-operation-id",
        "prepare_workspace",
        "--no-color",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let run = tokio::task::spawn_blocking(move || {
        #[allow(clippy::disallowed_methods, reason = "the test drives an outside tool")]
        std::process::Command::new(&st)
            .args(&args)
            .env("SCHEMATHESIS_HOOKS", "")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "schemathesis found failures:\n{report}"
    );
    assert!(
        report.contains("Tested:"),
        "schemathesis tested nothing:\n{report}"
    );
    forwarder.abort();
    stop.send_replace(true);
    drop(daemon.await.unwrap().unwrap());
}

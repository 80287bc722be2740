//! Binding the socket, serving until told to stop, and cleaning up.
//!
//! Exactly one daemon serves a runtime directory: the instance lock is taken
//! before anything else is touched, so a second `bangerd` refuses without
//! disturbing the first, and a socket left by a killed daemon (whose lock
//! the kernel released) is replaced.

mod bind;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use banger_config::LayoutError;
use banger_store::StoreError;
use banger_sys::{InstanceLock, LockError};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::auth::PeerCredListener;
use crate::state::AppState;

/// How long in-flight requests get to finish after a shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long cancelled operations (builds, creates) get to clean up.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors starting or running the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The directories could not be prepared.
    #[error("prepare directories")]
    Layout(#[from] LayoutError),
    /// Another daemon already serves this runtime directory.
    #[error(
        "another bangerd (pid {}) is already serving {}; stop it with `banger daemon stop` first",
        pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
        socket.display()
    )]
    AlreadyRunning {
        /// The running daemon's pid, when known.
        pid: Option<u32>,
        /// Its socket.
        socket: PathBuf,
    },
    /// The instance lock could not be taken for another reason.
    #[error("take the daemon lock")]
    Lock(#[source] LockError),
    /// Something that is not a socket sits where the socket goes.
    #[error("{} exists and is not a socket; remove it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The socket could not be created.
    #[error("listen on {}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("open the store")]
    Store(#[from] StoreError),
    /// The server failed while serving.
    #[error("serve the API")]
    Serve(#[source] std::io::Error),
}

/// Entry point; see [`Daemon::bind`].
#[derive(Debug)]
pub struct Daemon;

/// What the daemon is configured with beyond its directories.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The Debian mirror image builds use.
    pub debian_mirror: String,
    /// Runs build commands (a fake in tests of the code above it).
    pub runner: Arc<dyn banger_sys::Runner>,
    /// What `kernel pull` and `image pull` can produce.
    pub catalog: banger_artifacts::catalog::Catalog,
    /// Bridge, accel, timeouts, binaries.
    pub vm: crate::vms::VmSettings,
    /// The VMM driver; QEMU when `None`.
    pub vmm: Option<Arc<dyn banger_vmm::Vmm>>,
    /// Host networking; `ip` and `iptables` when `None`.
    pub net: Option<Arc<dyn banger_net::Network>>,
    /// Connection and request-head bounds.
    pub http: crate::http::HttpLimits,
    /// What one registry pull may unpack.
    pub unpack: banger_artifacts::oci::limits::UnpackLimits,
}

impl DaemonOptions {
    /// Options from a loaded config, with the host runner.
    pub fn from_config(config: &banger_config::Config) -> Self {
        Self {
            debian_mirror: config.debian_mirror_or_apt(Path::new("/etc/apt")),
            runner: Arc::new(banger_sys::HostRunner),
            catalog: banger_artifacts::catalog::Catalog::embedded(),
            vm: crate::vms::VmSettings {
                bridge: config.bridge.clone(),
                subnet: config.subnet().unwrap_or_default(),
                accel: config.accel,
                boot_timeout: Duration::from_secs(config.boot_timeout_secs),
                stop_timeout: Duration::from_secs(config.stop_timeout_secs),
                qemu: PathBuf::from("qemu-system-x86_64"),
                vmm: config.vmm,
                firecracker: PathBuf::from(&config.firecracker_bin),
                jailer: (!config.jailer_bin.is_empty()).then(|| PathBuf::from(&config.jailer_bin)),
                init_bin: crate::vms::find_init_bin(),
                workspace_guest_path: config.workspace_guest_path.clone(),
                file_sync: config.file_sync.clone(),
                owner_home: std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .filter(|h| h.is_absolute()),
            },
            vmm: None,
            net: None,
            http: crate::http::HttpLimits::default(),
            unpack: banger_artifacts::oci::limits::UnpackLimits {
                max_bytes: config.image_max_unpacked_gib << 30,
                max_entries: config.image_max_entries,
                ..banger_artifacts::oci::limits::UnpackLimits::default()
            },
        }
    }
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self::from_config(&banger_config::Config::default())
    }
}

/// A daemon that holds the lock, listens and has its store open, but does
/// not serve yet.
#[derive(Debug)]
pub struct BoundDaemon {
    listener: UnixListener,
    socket_path: PathBuf,
    state: AppState,
    shutdown_rx: watch::Receiver<bool>,
    // Held for the daemon's lifetime; dropped last.
    lock: InstanceLock,
}

impl BoundDaemon {
    /// The socket clients connect to.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// A handle that stops the daemon when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.state.shutdown.clone()
    }

    /// Serves until `/v1/shutdown`, the shutdown handle, or `stop` fires;
    /// then cancels running operations and boots, lets requests drain and
    /// operations clean up (both bounded), and removes the socket. The
    /// instance lock comes back in [`Stopped`]: the caller holds it until
    /// the process has stopped touching state, so no second daemon starts
    /// on this state directory while this one still works in it.
    pub async fn serve(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Stopped, DaemonError> {
        let owner_uid = banger_sys::euid();
        let Self {
            listener,
            socket_path,
            state,
            mut shutdown_rx,
            lock,
        } = self;
        tracing::info!(
            socket = %socket_path.display(),
            pid = std::process::id(),
            version = banger_buildinfo::VERSION,
            commit = banger_buildinfo::COMMIT,
            schema_version = state.schema_version,
            "bangerd serving"
        );
        let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
        let (vms, ops) = (state.vms.clone(), state.ops.clone());
        let signal = async move {
            tokio::select! {
                () = stop => {}
                _ = shutdown_rx.wait_for(|stop| *stop) => {}
            }
            // Work in flight is asked to stop and clean up, not cut off.
            vms.begin_shutdown();
            let cancelled = ops.cancel_running();
            tracing::info!(cancelled_operations = cancelled, "shutting down");
            let _ = began_tx.send(());
        };
        let reaper = tokio::spawn(reap_forever(state.vms.clone()));
        let ops = state.ops.clone();
        let limits = state.http;
        let app = crate::routes::router(state);
        let server = crate::http::serve(
            PeerCredListener::new(listener, owner_uid),
            app,
            limits,
            signal,
        );
        let drain_deadline = async {
            if began_rx.await.is_ok() {
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            () = server => Ok(()),
            () = drain_deadline => {
                tracing::warn!(timeout_secs = DRAIN_TIMEOUT.as_secs(), "in-flight requests did not finish; stopping anyway");
                Ok(())
            }
        };
        reaper.abort();
        if !ops.all_ended(CANCEL_TIMEOUT).await {
            tracing::warn!(
                timeout_secs = CANCEL_TIMEOUT.as_secs(),
                "cancelled operations did not end; stopping anyway"
            );
        }
        let _ = std::fs::remove_file(&socket_path);
        tracing::info!("bangerd stopped");
        result.map(|()| Stopped { _lock: lock })
    }
}

/// A daemon that has stopped serving. It still holds the instance lock:
/// drop it when nothing of this process touches state any more (bangerd
/// does, after its runtime's blocking threads are shut down).
#[derive(Debug)]
pub struct Stopped {
    _lock: InstanceLock,
}

/// Every second, cleans up after VMs that powered off by themselves.
async fn reap_forever(vms: Arc<crate::vms::Vms>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let vms = vms.clone();
        let _ = tokio::task::spawn_blocking(move || vms.reap()).await;
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!(
            "cannot install signal handlers; stop the daemon with `banger daemon stop`"
        );
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

//! `Daemon::bind`: the instance lock, the socket, the store, and the
//! services wired over them, in that order.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use banger_config::Layout;
use banger_store::Store;
use banger_sys::{InstanceLock, LockError};
use tokio::net::UnixListener;
use tokio::sync::watch;

use super::{BoundDaemon, Daemon, DaemonError, DaemonOptions};
use crate::artifacts::Artifacts;
use crate::operations::Operations;
use crate::state::AppState;
use crate::vms::Vms;

impl Daemon {
    /// Takes the instance lock, replaces a stale socket, listens (0600) and
    /// opens the store, in that order.
    pub async fn bind(layout: &Layout, options: DaemonOptions) -> Result<BoundDaemon, DaemonError> {
        layout.ensure()?;
        let (lock, socket_path, listener) = listen(layout)?;
        let store = match open_store(layout).await {
            Ok(store) => store,
            Err(err) => {
                // Leave no socket that answers nothing.
                if let Err(e) = std::fs::remove_file(&socket_path) {
                    tracing::warn!(socket = %socket_path.display(), error = %e, "cannot remove the socket");
                }
                return Err(err);
            }
        };
        let schema_version = store.schema_version()?;
        let store = Arc::new(store);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let http = options.http;
        let (ops, artifacts, vms) = services(layout, &store, options);
        // VMMs outlive daemons: find the ones still running before serving.
        {
            let vms = vms.clone();
            tokio::task::spawn_blocking(move || vms.adopt())
                .await
                .map_err(|e| DaemonError::Serve(std::io::Error::other(e)))?;
        }
        let state = AppState {
            store,
            started: Instant::now(),
            shutdown,
            schema_version,
            ops,
            artifacts,
            vms,
            http,
        };
        Ok(BoundDaemon {
            listener,
            socket_path,
            state,
            shutdown_rx,
            lock,
        })
    }
}

/// The instance lock, then the socket (a stale one replaced), 0600.
fn listen(layout: &Layout) -> Result<(InstanceLock, PathBuf, UnixListener), DaemonError> {
    let socket_path = layout.socket_path();
    let lock = InstanceLock::acquire(&layout.lock_path()).map_err(|e| match e {
        LockError::Held { pid, .. } => DaemonError::AlreadyRunning {
            pid,
            socket: socket_path.clone(),
        },
        other => DaemonError::Lock(other),
    })?;
    remove_stale_socket(&socket_path)?;
    let bind_err = |source| DaemonError::Bind {
        path: socket_path.clone(),
        source,
    };
    let listener = UnixListener::bind(&socket_path).map_err(bind_err)?;
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
        .map_err(bind_err)?;
    Ok((lock, socket_path, listener))
}

/// Opens (and migrates) the store off the runtime's threads.
async fn open_store(layout: &Layout) -> Result<Store, DaemonError> {
    let db_path = layout.db_path();
    tokio::task::spawn_blocking(move || Store::open(&db_path))
        .await
        .map_err(|e| DaemonError::Serve(std::io::Error::other(e)))?
        .map_err(DaemonError::from)
}

/// The operations, artifact and VM services, with the artifact store swept
/// of what a killed daemon left half-built.
fn services(
    layout: &Layout,
    store: &Arc<Store>,
    options: DaemonOptions,
) -> (Arc<Operations>, Arc<Artifacts>, Arc<Vms>) {
    let ops = Arc::new(Operations::default());
    let artifacts = Arc::new(
        Artifacts::new(
            &layout.cache_dir,
            store.clone(),
            ops.clone(),
            options.runner.clone(),
            options.debian_mirror,
            options.catalog,
        )
        .with_unpack_limits(options.unpack),
    );
    // Holding the instance lock, no other build can be running.
    artifacts.sweep();
    artifacts.register_cached_images();
    let runner = options.runner;
    let (vmm, other_vmms) = match options.vmm {
        Some(vmm) => (vmm, Vec::new()),
        None => crate::vms::choose_vmm(&options.vm, layout),
    };
    tracing::info!(
        vmm = vmm.name(),
        config = options.vm.vmm.as_str(),
        "VMM driver chosen"
    );
    let net = options
        .net
        .unwrap_or_else(|| host_network(&runner, &layout.state_dir));
    let parts = crate::vms::Parts {
        db: store,
        ops: &ops,
        artifacts: &artifacts,
        cache_dir: &layout.cache_dir,
        state_dir: &layout.state_dir,
    };
    let vms = Arc::new(Vms::new(parts, runner, vmm, net, options.vm).with_other_vmms(other_vmms));
    (ops, artifacts, vms)
}

/// Root changes the host network itself; anyone else goes through the
/// root helper (`bangerd-root`), whose absence a VM start reports.
fn host_network(
    runner: &Arc<dyn banger_sys::Runner>,
    state_dir: &Path,
) -> Arc<dyn banger_net::Network> {
    if banger_sys::euid() == 0 {
        Arc::new(banger_net::HostNetwork::new(
            runner.clone(),
            state_dir.join("net.log"),
        ))
    } else {
        let helper = banger_helper::HelperNetwork::new(banger_helper::socket_path());
        tracing::info!(socket = %helper.socket().display(), "host network through the root helper");
        Arc::new(helper)
    }
}

/// Removes a socket left by a daemon that died without cleaning up. Only
/// called with the instance lock held, so no live daemon owns it.
fn remove_stale_socket(path: &Path) -> Result<(), DaemonError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            tracing::info!(socket = %path.display(), "replacing stale socket");
            std::fs::remove_file(path).map_err(|source| DaemonError::Bind {
                path: path.to_owned(),
                source,
            })
        }
        Ok(_) => Err(DaemonError::NotASocket {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DaemonError::Bind {
            path: path.to_owned(),
            source,
        }),
    }
}

//! The kernel and image service: catalogs, the local store, and pulls and
//! imports as operations.
//!
//! Per-name exclusivity is the in-flight map: a pull of a name that is
//! already being pulled joins that operation instead of building again
//! (the waiter takes the peer's result), a delete of it is refused, and
//! different names build in parallel. The map's lock is held only to look
//! up and insert; the build runs on its own thread with no lock held.
//!
//! [`pull`] (catalog), [`oci`] (registries), [`import`] (local files) and
//! [`delete`] each add their requests; [`views`] shows what is there.

mod delete;
mod error;
mod import;
mod oci;
mod pull;
mod views;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use banger_api::{ErrorCode, Operation, OperationKind};
use banger_artifacts::catalog::Catalog;
use banger_artifacts::image::ImageManifest;
use banger_artifacts::kernel::{BuildEnv, BuildError};
use banger_artifacts::oci::{BlobCache, BlobsInUse, limits::UnpackLimits};
use banger_artifacts::store::{ArtifactStore, Kind};
use banger_store::Store;
use banger_sys::Runner;

pub use error::ArtifactError;

use crate::error::error_chain;
use crate::operations::{OpHandle, Operations};

/// Default kernel of imported images.
pub const DEFAULT_KERNEL: &str = "generic-6.1";

/// The service. Shared by every request.
#[derive(Debug)]
pub struct Artifacts {
    store: ArtifactStore,
    db: Arc<Store>,
    ops: Arc<Operations>,
    runner: Arc<dyn Runner>,
    mirror: String,
    jobs: usize,
    logs_dir: PathBuf,
    catalog: Catalog,
    inflight: Mutex<HashMap<(KindKey, String), Arc<OpHandle>>>,
    /// Layer blobs shared by registry pulls.
    blobs: BlobCache,
    /// Digests running pulls hold: a cache prune leaves them alone.
    blobs_in_use: BlobsInUse,
    /// What one registry pull may unpack.
    unpack: UnpackLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KindKey {
    Kernel,
    Image,
}

impl From<KindKey> for Kind {
    fn from(k: KindKey) -> Self {
        match k {
            KindKey::Kernel => Kind::Kernel,
            KindKey::Image => Kind::Image,
        }
    }
}

type Work = Box<dyn FnOnce(&Artifacts, &Path, BuildEnv<'_>) -> Result<Done, BuildError> + Send>;

/// What a finished build publishes.
enum Done {
    Kernel,
    Image(Box<ImageManifest>),
}

impl Artifacts {
    /// A service over the cache directory `cache_dir`.
    pub fn new(
        cache_dir: &Path,
        db: Arc<Store>,
        ops: Arc<Operations>,
        runner: Arc<dyn Runner>,
        mirror: String,
        catalog: Catalog,
    ) -> Self {
        let jobs = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            store: ArtifactStore::new(cache_dir),
            db,
            ops,
            runner,
            mirror,
            jobs,
            logs_dir: cache_dir.join("logs"),
            catalog,
            inflight: Mutex::new(HashMap::new()),
            blobs: BlobCache::new(cache_dir),
            blobs_in_use: BlobsInUse::default(),
            unpack: UnpackLimits::default(),
        }
    }

    /// Holds registry pulls to `limits`.
    #[must_use]
    pub fn with_unpack_limits(mut self, limits: UnpackLimits) -> Self {
        self.unpack = limits;
        self
    }

    fn inflight(&self) -> MutexGuard<'_, HashMap<(KindKey, String), Arc<OpHandle>>> {
        banger_sys::wait::lock(&self.inflight)
    }

    /// Removes what an interrupted build left. Called at daemon start,
    /// before any request.
    pub fn sweep(&self) {
        match self.store.sweep() {
            Ok(removed) => {
                for path in removed {
                    tracing::info!(path = %path.display(), "removed debris of an interrupted build");
                }
            }
            Err(err) => {
                tracing::warn!(error = error_chain(&err), "cannot sweep the artifact store")
            }
        }
    }

    /// Records images whose files are in the cache but not in the store
    /// (a new state directory over an existing cache): the cache is the
    /// truth for what is built. Called at daemon start.
    pub fn register_cached_images(&self) {
        let manifests = match self.store.list::<ImageManifest>(Kind::Image) {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(error = error_chain(&err), "cannot list cached images");
                return;
            }
        };
        for m in manifests {
            if matches!(self.db.get_image(&m.name), Ok(None)) {
                tracing::info!(image = %m.name, "registering an image found in the cache");
                if let Err(err) = self.db.upsert_image(&views::image_record(m)) {
                    tracing::warn!(error = error_chain(&err), "cannot register a cached image");
                }
            }
        }
    }

    fn start(
        self: &Arc<Self>,
        op_id: &str,
        key: KindKey,
        kind: OperationKind,
        name: &str,
        present: bool,
        work: Work,
    ) -> Result<Operation, ArtifactError> {
        let mut inflight = self.inflight();
        if let Some(peer) = inflight.get(&(key, name.to_owned())) {
            tracing::info!(name, peer = %peer.snapshot().id, "joining the running pull");
            return Ok(peer.snapshot());
        }
        let handle = self.ops.begin(op_id, kind, name)?;
        if present {
            handle.succeed(format!("{name} is already present"));
            return Ok(handle.snapshot());
        }
        inflight.insert((key, name.to_owned()), handle.clone());
        drop(inflight);

        let svc = self.clone();
        let name = name.to_owned();
        let spawned = std::thread::Builder::new()
            .name(format!("build-{name}"))
            .spawn({
                let handle = handle.clone();
                move || svc.run(key, &name, &handle, work)
            });
        if let Err(err) = spawned {
            self.inflight().remove(&(key, handle.snapshot().target));
            handle.fail(
                ErrorCode::Internal,
                format!("cannot start a build thread: {err}"),
            );
        }
        Ok(handle.snapshot())
    }

    fn run(&self, key: KindKey, name: &str, handle: &Arc<OpHandle>, work: Work) {
        let result = self.build_and_publish(key, name, handle, work);
        // Publish happened (or failed) before the name is released, so a
        // pull arriving now either joins this one or sees the result.
        self.inflight().remove(&(key, name.to_owned()));
        match result {
            Ok(message) => {
                tracing::info!(name, "{message}");
                handle.succeed(message);
            }
            Err(err) => {
                let err = crate::error::ApiError::from(err);
                tracing::warn!(name, error = err.message, "build failed");
                handle.fail(err.code, err.message);
            }
        }
    }

    fn build_and_publish(
        &self,
        key: KindKey,
        name: &str,
        handle: &Arc<OpHandle>,
        work: Work,
    ) -> Result<String, ArtifactError> {
        let kind: Kind = key.into();
        let prefix = match key {
            KindKey::Kernel => "kernel",
            KindKey::Image => "image",
        };
        std::fs::create_dir_all(&self.logs_dir).map_err(io("create", &self.logs_dir))?;
        let log = self.logs_dir.join(format!("{prefix}-{name}.log"));
        std::fs::write(&log, b"").map_err(io("truncate", &log))?;
        handle.set_log(&log);
        let staging = self
            .store
            .stage(kind, name)
            .map_err(|source| ArtifactError::Stage {
                name: name.to_owned(),
                source,
            })?;
        let runner =
            banger_artifacts::store::StagedRunner::new(self.runner.as_ref(), staging.path());
        let env = BuildEnv {
            runner: &runner,
            progress: handle.as_ref(),
            cancel: &handle.cancel,
            log: &log,
        };
        let done = work(self, staging.path(), env)?;
        if handle.cancel.is_cancelled() {
            return Err(BuildError::Run(banger_sys::RunError::Cancelled).into());
        }
        self.store
            .publish(kind, name, staging)
            .map_err(|source| ArtifactError::Publish {
                name: name.to_owned(),
                source,
            })?;
        let mut caveat = String::new();
        if let Done::Image(m) = done {
            if let Some(oci) = &m.oci {
                if let Some(why) = oci.cannot_boot() {
                    caveat = format!(", but VMs cannot boot it: {why}");
                } else if let Some(what) = oci.installs_at_first_boot() {
                    caveat = format!("; {what}");
                }
            }
            self.db
                .upsert_image(&views::image_record(*m))
                .map_err(|source| {
                    // The files are published but unrecorded: take them back.
                    if let Err(e) = self.store.delete(kind, name) {
                        tracing::warn!(
                            name,
                            error = error_chain(&e),
                            "cannot take back the files of an unrecorded image"
                        );
                    }
                    ArtifactError::Record {
                        name: name.to_owned(),
                        source: Box::new(source),
                    }
                })?;
        }
        Ok(format!("{prefix} {name} is ready{caveat}"))
    }
}

fn busy(
    inflight: &HashMap<(KindKey, String), Arc<OpHandle>>,
    key: KindKey,
    name: &str,
) -> Result<(), ArtifactError> {
    match inflight.get(&(key, name.to_owned())) {
        Some(op) => Err(ArtifactError::Busy {
            name: name.to_owned(),
            op: op.snapshot().id,
        }),
        None => Ok(()),
    }
}

fn not_found(kind: &'static str, name: &str) -> ArtifactError {
    ArtifactError::NoSuch {
        kind,
        name: name.to_owned(),
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_owned();
    move |e| banger_sys::io_at(what, &path)(e).into()
}

/// The image name a staging directory was made for (`.staging-<name>-<hex>`).
fn out_name(out: &Path) -> String {
    let dir = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest = dir.trim_start_matches(".staging-");
    rest.rsplit_once('-').map_or(rest, |(n, _)| n).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_name_recovers_the_image_name() {
        assert_eq!(
            out_name(Path::new("/c/images/.staging-my-img-00ff00ff00ff00ff")),
            "my-img"
        );
    }
}

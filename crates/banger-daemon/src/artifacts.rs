//! The kernel and image service: catalogs, the local store, and pulls and
//! imports as operations.
//!
//! Per-name exclusivity is the in-flight map: a pull of a name that is
//! already being pulled joins that operation instead of building again
//! (the waiter takes the peer's result), a delete of it is refused, and
//! different names build in parallel. The map's lock is held only to look
//! up and insert; the build runs on its own thread with no lock held.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use banger_api::{
    CachePruneReport, CatalogEntry, ErrorCode, Image, ImagePullRequest, Kernel, Operation,
    OperationKind,
};
use banger_artifacts::catalog::Catalog;
use banger_artifacts::image::{self, ImageManifest, ImageSource};
use banger_artifacts::kernel::{self, BuildEnv, BuildError, KernelManifest};
use banger_artifacts::oci::{self, BlobCache};
use banger_artifacts::store::{ArtifactStore, Kind};
use banger_store::{ImageRecord, Store};
use banger_sys::Runner;

use crate::error::{ApiError, error_chain};
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
    /// Digests running pulls use, with how many use each: a cache prune
    /// leaves them alone.
    blobs_in_use: Mutex<HashMap<String, usize>>,
    /// What one registry pull may unpack.
    unpack: oci::limits::UnpackLimits,
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
            blobs_in_use: Mutex::new(HashMap::new()),
            unpack: oci::limits::UnpackLimits::default(),
        }
    }

    /// Holds registry pulls to `limits`.
    #[must_use]
    pub fn with_unpack_limits(mut self, limits: oci::limits::UnpackLimits) -> Self {
        self.unpack = limits;
        self
    }

    fn blobs_in_use(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        banger_sys::wait::lock(&self.blobs_in_use)
    }

    /// Starts (or joins) the pull of the registry image `req.name` (a
    /// reference) as image `req.image_name` (default from the reference).
    pub fn pull_oci(
        self: &Arc<Self>,
        op_id: &str,
        req: &ImagePullRequest,
    ) -> Result<Operation, ApiError> {
        let reference = req.name.trim();
        if reference.len() > 512
            || reference
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ApiError::invalid(format!(
                "{reference:?} is not an image reference: it holds whitespace or control characters, or is over 512 bytes"
            )));
        }
        let parsed = oci::registry::parse_reference(reference)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let name = match &req.image_name {
            Some(n) => n.clone(),
            None => oci::default_name(reference),
        };
        banger_api::names::validate_artifact_name("image", &name)
            .map_err(|e| ApiError::invalid(format!("{e}; give the image a name with --name")))?;
        let kernel = req
            .kernel
            .clone()
            .unwrap_or_else(|| DEFAULT_KERNEL.to_owned());
        if self.catalog.kernel(&kernel).is_none() {
            return Err(ApiError::invalid(format!(
                "no kernel {kernel:?} in the catalog; see `banger kernel catalog`"
            )));
        }
        if self.db.get_image(&name)?.is_some() {
            // Pulling a reference again refreshes its image; any other
            // image of that name is not replaced.
            let same = self
                .store
                .manifest::<ImageManifest>(Kind::Image, &name)
                .ok()
                .flatten()
                .and_then(|m| m.oci)
                .is_some_and(|o| o.reference == parsed.whole());
            if !same {
                return Err(ApiError::new(
                    ErrorCode::AlreadyExists,
                    format!(
                        "image {name:?} exists and was not pulled from {}; pick another name with --name",
                        parsed.whole()
                    ),
                ));
            }
            self.refuse_if_used(&name)?;
        }
        let options = oci::PullOptions {
            insecure: req.insecure,
            docker_config: docker_config(),
            limits: self.unpack,
        };
        let reference = reference.to_owned();
        self.start(
            op_id,
            KindKey::Image,
            OperationKind::ImagePull,
            &name,
            false,
            Box::new(move |svc, out, env| {
                let name = out_name(out);
                let mine = Mutex::new(Vec::new());
                let in_use = |digest: &str| {
                    *svc.blobs_in_use().entry(digest.to_owned()).or_default() += 1;
                    banger_sys::wait::lock(&mine).push(digest.to_owned());
                };
                let pulled = oci::pull(
                    &name, &reference, &kernel, &options, &svc.blobs, &in_use, out, env,
                );
                let mut used = svc.blobs_in_use();
                for digest in mine
                    .into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                {
                    if let Some(n) = used.get_mut(&digest) {
                        *n -= 1;
                        if *n == 0 {
                            used.remove(&digest);
                        }
                    }
                }
                pulled.map(|m| Done::Image(Box::new(m)))
            }),
        )
    }

    /// Removes cached layer blobs no running pull uses.
    pub fn prune_blobs(&self, dry_run: bool) -> Result<CachePruneReport, ApiError> {
        let in_use: std::collections::HashSet<String> =
            self.blobs_in_use().keys().cloned().collect();
        let pruned = self
            .blobs
            .prune(&in_use, dry_run)
            .map_err(|e| ApiError::internal(format!("prune the blob cache: {e}")))?;
        tracing::info!(
            blobs = pruned.blobs,
            bytes = pruned.bytes,
            dry_run,
            "blob cache pruned"
        );
        Ok(CachePruneReport {
            blobs: pruned.blobs,
            bytes: pruned.bytes,
            dry_run,
        })
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
                if let Err(err) = self.db.upsert_image(&image_record(m)) {
                    tracing::warn!(error = error_chain(&err), "cannot register a cached image");
                }
            }
        }
    }

    fn kernel_manifest(&self, name: &str) -> Option<KernelManifest> {
        self.store.manifest(Kind::Kernel, name).ok().flatten()
    }

    /// `kernel catalog`.
    pub fn kernel_catalog(&self) -> Vec<CatalogEntry> {
        self.catalog
            .kernels
            .iter()
            .map(|k| CatalogEntry {
                name: k.name.clone(),
                description: k.description.clone(),
                recipe_hash: k.recipe_hash(),
                present: self
                    .kernel_manifest(&k.name)
                    .is_some_and(|m| m.recipe_hash == k.recipe_hash()),
            })
            .collect()
    }

    /// `image catalog`.
    pub fn image_catalog(&self) -> Result<Vec<CatalogEntry>, ApiError> {
        self.catalog
            .images
            .iter()
            .map(|i| {
                Ok(CatalogEntry {
                    name: i.name.clone(),
                    description: i.description.clone(),
                    recipe_hash: i.recipe_hash(),
                    present: self
                        .db
                        .get_image(&i.name)?
                        .is_some_and(|r| r.recipe_hash.as_deref() == Some(&i.recipe_hash())),
                })
            })
            .collect()
    }

    fn kernel_view(&self, m: KernelManifest) -> Kernel {
        Kernel {
            dir: self.store.dir(Kind::Kernel, &m.name).display().to_string(),
            name: m.name,
            recipe_hash: m.recipe_hash,
            source_package: m.source_package,
            size_bytes: m.size_bytes,
            created_at: m.built_at,
        }
    }

    fn image_view(&self, r: ImageRecord) -> Image {
        let oci = self
            .store
            .manifest::<ImageManifest>(Kind::Image, &r.name)
            .ok()
            .flatten()
            .and_then(|m| m.oci)
            .map(|o| banger_api::OciImage {
                cannot_boot: o.cannot_boot(),
                installs_at_first_boot: o.installs_at_first_boot(),
                reference: o.reference,
                manifest_digest: o.manifest_digest,
                env: o.env,
                working_dir: o.working_dir,
                user: o.user,
            });
        Image {
            oci,
            dir: self.store.dir(Kind::Image, &r.name).display().to_string(),
            name: r.name,
            source: r.source,
            recipe_hash: r.recipe_hash,
            kernel: r.kernel,
            size_bytes: r.size_bytes,
            created_at: r.created_at,
        }
    }

    /// Kernels in the store.
    pub fn list_kernels(&self) -> Result<Vec<Kernel>, ApiError> {
        let manifests = self
            .store
            .list::<KernelManifest>(Kind::Kernel)
            .map_err(|e| ApiError::internal(error_chain(&e)))?;
        Ok(manifests.into_iter().map(|m| self.kernel_view(m)).collect())
    }

    /// One kernel.
    pub fn get_kernel(&self, name: &str) -> Result<Kernel, ApiError> {
        self.kernel_manifest(name)
            .map(|m| self.kernel_view(m))
            .ok_or_else(|| not_found("kernel", name))
    }

    /// Images in the store.
    pub fn list_images(&self) -> Result<Vec<Image>, ApiError> {
        Ok(self
            .db
            .list_images()?
            .into_iter()
            .map(|r| self.image_view(r))
            .collect())
    }

    /// One image.
    pub fn get_image(&self, name: &str) -> Result<Image, ApiError> {
        self.db
            .get_image(name)?
            .map(|r| self.image_view(r))
            .ok_or_else(|| not_found("image", name))
    }

    /// Starts (or joins) the pull of catalog kernel `name`.
    pub fn pull_kernel(self: &Arc<Self>, op_id: &str, name: &str) -> Result<Operation, ApiError> {
        let entry = self.catalog.kernel(name).cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no kernel {name:?} in the catalog; see `banger kernel catalog`"),
            )
        })?;
        let hash = entry.recipe_hash();
        let present = self
            .kernel_manifest(name)
            .is_some_and(|m| m.recipe_hash == hash);
        let jobs = self.jobs;
        self.start(
            op_id,
            KindKey::Kernel,
            OperationKind::KernelPull,
            name,
            present,
            Box::new(move |_, out, env| {
                kernel::build(&entry, out, jobs, env).map(|_| Done::Kernel)
            }),
        )
    }

    /// Starts (or joins) the pull of catalog image `name`.
    pub fn pull_image(self: &Arc<Self>, op_id: &str, name: &str) -> Result<Operation, ApiError> {
        let entry = self.catalog.image(name).cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no image {name:?} in the catalog; see `banger image catalog`"),
            )
        })?;
        let hash = entry.recipe_hash();
        let existing = self.db.get_image(name)?;
        let present = existing
            .as_ref()
            .is_some_and(|r| r.recipe_hash.as_deref() == Some(&hash));
        if existing.is_some() && !present {
            self.refuse_if_used(name)?;
        }
        self.start(
            op_id,
            KindKey::Image,
            OperationKind::ImagePull,
            name,
            present,
            Box::new(move |svc, out, env| {
                image::build(&entry, &svc.mirror, out, env).map(|m| Done::Image(Box::new(m)))
            }),
        )
    }

    /// Starts the import of a tarball or ext4 file as image `name`.
    pub fn import_image(
        self: &Arc<Self>,
        op_id: &str,
        name: &str,
        path: &Path,
        kernel: Option<&str>,
    ) -> Result<Operation, ApiError> {
        let kernel = kernel.unwrap_or(DEFAULT_KERNEL).to_owned();
        if self.catalog.kernel(&kernel).is_none() {
            return Err(ApiError::invalid(format!(
                "no kernel {kernel:?} in the catalog; see `banger kernel catalog`"
            )));
        }
        let (opened, format) = open_import(path)?;
        if self.db.get_image(name)?.is_some()
            || self
                .inflight()
                .contains_key(&(KindKey::Image, name.to_owned()))
        {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("image {name:?} already exists; delete it first or pick another name"),
            ));
        }
        let opened = Mutex::new(opened);
        self.start(
            op_id,
            KindKey::Image,
            OperationKind::ImageImport,
            name,
            false,
            Box::new(move |_, out, env| {
                let name = out_name(out);
                let mut opened = banger_sys::wait::lock(&opened);
                match format {
                    Format::Ext4 => image::import_ext4(&name, &kernel, &mut opened, out, env),
                    Format::Tar => image::import_tar(&name, &kernel, &mut opened, out, env),
                }
                .map(|m| Done::Image(Box::new(m)))
            }),
        )
    }

    fn start(
        self: &Arc<Self>,
        op_id: &str,
        key: KindKey,
        kind: OperationKind,
        name: &str,
        present: bool,
        work: Work,
    ) -> Result<Operation, ApiError> {
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
                let message = error_chain(&err);
                tracing::warn!(name, error = message, "build failed");
                handle.fail(ErrorCode::OperationFailed, message);
            }
        }
    }

    fn build_and_publish(
        &self,
        key: KindKey,
        name: &str,
        handle: &Arc<OpHandle>,
        work: Work,
    ) -> Result<String, BuildError> {
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
            .map_err(|e| BuildError::Recipe(error_chain(&e)))?;
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
            return Err(BuildError::Run(banger_sys::RunError::Cancelled));
        }
        self.store
            .publish(kind, name, staging)
            .map_err(|e| BuildError::Recipe(error_chain(&e)))?;
        let mut caveat = String::new();
        if let Done::Image(m) = done {
            if let Some(oci) = &m.oci {
                if let Some(why) = oci.cannot_boot() {
                    caveat = format!(", but VMs cannot boot it: {why}");
                } else if let Some(what) = oci.installs_at_first_boot() {
                    caveat = format!("; {what}");
                }
            }
            self.db.upsert_image(&image_record(*m)).map_err(|e| {
                // The files are published but unrecorded: take them back.
                let _ = self.store.delete(kind, name);
                BuildError::Recipe(error_chain(&e))
            })?;
        }
        Ok(format!("{prefix} {name} is ready{caveat}"))
    }

    /// Deletes kernel `name`, unless an image boots it or a pull runs.
    pub fn delete_kernel(&self, name: &str) -> Result<(), ApiError> {
        let inflight = self.inflight();
        busy(&inflight, KindKey::Kernel, name)?;
        let users = self.db.images_using_kernel(name)?;
        if !users.is_empty() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "kernel {name:?} is used by image(s) {}; delete them first",
                    users.join(", ")
                ),
            ));
        }
        if !self
            .store
            .delete(Kind::Kernel, name)
            .map_err(|e| ApiError::internal(error_chain(&e)))?
        {
            return Err(not_found("kernel", name));
        }
        Ok(())
    }

    /// Deletes image `name`, unless a VM uses it or a pull runs.
    pub fn delete_image(&self, name: &str) -> Result<(), ApiError> {
        let inflight = self.inflight();
        busy(&inflight, KindKey::Image, name)?;
        self.refuse_if_used(name)?;
        // The row goes first: an image without a row is invisible, while a
        // row without files would be a broken entry.
        let had_row = self.db.delete_image(name)?;
        let had_files = self
            .store
            .delete(Kind::Image, name)
            .map_err(|e| ApiError::internal(error_chain(&e)))?;
        if !had_row && !had_files {
            return Err(not_found("image", name));
        }
        Ok(())
    }

    fn refuse_if_used(&self, name: &str) -> Result<(), ApiError> {
        let vms = self.db.vms_using_image(name)?;
        if vms.is_empty() {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "image {name:?} is used by VM(s) {}; delete them first",
                vms.join(", ")
            ),
        ))
    }
}

/// Docker's credentials file: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
fn docker_config() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"))
}

fn image_record(m: ImageManifest) -> ImageRecord {
    let source = match m.source {
        ImageSource::Build => "build",
        ImageSource::Import => "import",
        ImageSource::Oci => "oci",
    };
    ImageRecord {
        name: m.name,
        source: source.to_owned(),
        kernel: m.kernel,
        recipe_hash: m.recipe_hash,
        size_bytes: m.size_bytes,
        created_at: m.built_at,
    }
}

fn busy(
    inflight: &HashMap<(KindKey, String), Arc<OpHandle>>,
    key: KindKey,
    name: &str,
) -> Result<(), ApiError> {
    match inflight.get(&(key, name.to_owned())) {
        Some(op) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "{name:?} is being pulled (operation {}); wait or cancel it first",
                op.snapshot().id
            ),
        )),
        None => Ok(()),
    }
}

fn not_found(what: &str, name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no {what} {name:?}"))
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_owned();
    move |source| BuildError::Io { what, path, source }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Tar,
    Ext4,
}

/// Decides what an import file is from its first bytes.
/// Opens the file to import once and judges that open file: the path is
/// never looked up again, so it cannot be swapped (for a FIFO that would
/// hang the import, or a symlink to a file the user may not read) between
/// the check and the copy. `O_NOFOLLOW` refuses a symlink in the last
/// component and `O_NONBLOCK` keeps the open of a FIFO or device from
/// blocking, so the check can refuse it.
fn open_import(path: &Path) -> Result<(image::Opened, Format), ApiError> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    if !path.is_absolute() {
        return Err(ApiError::invalid(format!(
            "import path {} must be absolute",
            path.display()
        )));
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                ApiError::invalid(format!(
                    "{} is a symbolic link; give the path of the file itself",
                    path.display()
                ))
            } else {
                ApiError::invalid(format!("cannot open {}: {e}", path.display()))
            }
        })?;
    let kind = file
        .metadata()
        .map_err(|e| ApiError::invalid(format!("cannot read {}: {e}", path.display())))?
        .file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_block_device() || kind.is_char_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(ApiError::invalid(format!(
            "{} is {what}; banger imports a regular file (a plain tar or an ext4 file)",
            path.display()
        )));
    }
    let mut head = [0u8; 512];
    let n = file.read(&mut head).unwrap_or(0);
    let head = &head[..n];
    for (magic, what) in [
        (&[0x1f, 0x8b][..], "gzip"),
        (&[0xfd, b'7', b'z', b'X', b'Z'][..], "xz"),
        (&[0x28, 0xb5, 0x2f, 0xfd][..], "zstd"),
        (&[b'B', b'Z', b'h'][..], "bzip2"),
    ] {
        if head.starts_with(magic) {
            return Err(ApiError::invalid(format!(
                "{} is {what}-compressed; decompress it first (banger imports a plain tar or an ext4 file)",
                path.display()
            )));
        }
    }
    let mut magic = [0u8; 2];
    let format = if file.seek(SeekFrom::Start(1080)).is_ok()
        && file.read_exact(&mut magic).is_ok()
        && magic == [0x53, 0xef]
    {
        Format::Ext4
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Format::Tar
    } else {
        return Err(ApiError::invalid(format!(
            "{} is neither a tar archive nor an ext4 file system",
            path.display()
        )));
    };
    let opened = image::Opened {
        file,
        path: path.to_owned(),
    };
    Ok((opened, format))
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

    #[test]
    fn open_import_refuses_a_fifo_without_blocking_and_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path of our own temp dir.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Nobody writes to it: a blocking open would never return.
        let err = open_import(&fifo).unwrap_err();
        assert!(err.message.contains("is a FIFO"), "{}", err.message);
        let target = dir.path().join("t.tar");
        std::fs::write(&target, b"x").unwrap();
        let link = dir.path().join("link.tar");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_import(&link).unwrap_err();
        assert!(
            err.message.contains("is a symbolic link"),
            "{}",
            err.message
        );
    }

    #[test]
    fn open_import_tells_tar_ext4_and_compressed_apart() {
        let dir = tempfile::tempdir().unwrap();
        let tar_path = dir.path().join("t.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, "a", &b""[..]).unwrap();
        b.into_inner().unwrap();
        assert_eq!(open_import(&tar_path).unwrap().1, Format::Tar);

        let gz = dir.path().join("t.tar.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(
            open_import(&gz)
                .unwrap_err()
                .message
                .contains("gzip-compressed")
        );

        let ext4 = dir.path().join("fs.ext4");
        let mut bytes = vec![0u8; 2048];
        bytes[1080] = 0x53;
        bytes[1081] = 0xef;
        std::fs::write(&ext4, bytes).unwrap();
        assert_eq!(open_import(&ext4).unwrap().1, Format::Ext4);

        assert!(
            open_import(Path::new("rel.tar"))
                .unwrap_err()
                .message
                .contains("absolute")
        );
        assert!(
            open_import(dir.path())
                .unwrap_err()
                .message
                .contains("is a directory")
        );
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"hello").unwrap();
        assert!(open_import(&junk).unwrap_err().message.contains("neither"));
    }
}

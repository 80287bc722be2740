//! The VM service: create, start, stop, kill, delete, resize, and the
//! reconciliation of recorded state with the host.
//!
//! Locking: a short global reservation (`reserve`) covers only the name
//! check, the address allocation and the row insert; every lifecycle step
//! of one VM runs under that VM's own lock, so slow work (disks, boots,
//! graceful stops) on different VMs overlaps. Each start is a list of
//! named steps with undo actions ([`undo::Undo`], rolled back on drop); a
//! failure rolls back what was done and records the error on the VM.
//!
//! One module per concern: `create/`, `start/`, `stop`, `delete`,
//! `resize`, `reconcile/` (adopt and reap), `lookup` (which VM a reference
//! means), `views`, `dir` (every path of a VM's directory),
//! `boot_assets` (initramfs, KVM verdict), `choice` (which VMM),
//! `rehearsal` (the doctor's Firecracker proof), `error`
//! ([`VmError`], the service's only error type).
//!
//! Everything here blocks; routes call it on blocking threads.

mod boot_assets;
mod choice;
pub mod console;
mod create;
mod delete;
mod dir;
pub mod disks;
mod error;
mod file_sync;
pub mod firewall;
pub mod handles;
mod host_facts;
mod lookup;
mod mux;
mod reconcile;
mod rehearsal;
mod resize;
pub mod ssh;
mod start;
mod stop;
#[cfg(test)]
mod testkit;
mod undo;
mod views;
pub mod workspace;

pub use boot_assets::find_init_bin;
pub use choice::choose_vmm;
pub use create::DEFAULT_IMAGE;
pub use error::VmError;
pub use lookup::{Lookup, resolve_in};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_artifacts::store::ArtifactStore;
use banger_config::Accel as AccelChoice;
use banger_net::{Network, Subnet};
use banger_store::{Store, VmRecord};
use banger_sys::Runner;
use banger_sys::wait::lock;
use banger_vmm::{VmFiles, Vmm};

use crate::artifacts::Artifacts;
use crate::operations::Operations;
use boot_assets::BootAssets;
use dir::VmDir;
use handles::Handles;
use ssh::SshFiles;

/// What the VM service is configured with.
#[derive(Debug, Clone)]
pub struct VmSettings {
    /// The bridge taps join.
    pub bridge: String,
    /// Its subnet.
    pub subnet: Subnet,
    /// KVM, TCG or probe.
    pub accel: AccelChoice,
    /// How long a start waits for sshd.
    pub boot_timeout: Duration,
    /// How long each stop phase waits.
    pub stop_timeout: Duration,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Which VMM the config asks for.
    pub vmm: banger_config::VmmChoice,
    /// The Firecracker binary.
    pub firecracker: PathBuf,
    /// The jailer binary, when Firecracker runs jailed.
    pub jailer: Option<PathBuf>,
    /// The static banger-init binary, if one was found.
    pub init_bin: Option<PathBuf>,
    /// Where workspaces go in guests (checked by the config).
    pub workspace_guest_path: String,
    /// `[[file_sync]]` entries, copied onto each new work disk.
    pub file_sync: Vec<banger_config::FileSync>,
    /// The owner's home, the only place file_sync may copy from.
    pub owner_home: Option<PathBuf>,
}

/// The VM service.
#[derive(Debug)]
pub struct Vms {
    db: Arc<Store>,
    ops: Arc<Operations>,
    artifacts: Arc<Artifacts>,
    art_store: ArtifactStore,
    cache_dir: PathBuf,
    vms_dir: PathBuf,
    runner: Arc<dyn Runner>,
    vmm: Arc<dyn Vmm>,
    /// The other drivers, for VMs a previous daemon started under another
    /// VMM (the config's `vmm` changed, or `auto` decided otherwise).
    other_vmms: Vec<Arc<dyn Vmm>>,
    net: Arc<dyn Network>,
    /// The running guests' isolation.
    firewall: Arc<firewall::Firewall>,
    settings: VmSettings,
    ssh: SshFiles,
    reserve: Mutex<()>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Per-VM workspace locks, apart from the lifecycle ones.
    workspace_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Per-VM locks on opening and closing its SSH control master.
    mux_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Shell sessions in guests, for workspaces.
    guest: Arc<dyn workspace::guest::GuestShell>,
    /// Shared with undo actions, which forget a VM whose start failed.
    running: Arc<Mutex<HashMap<String, Handles>>>,
    boot: BootAssets,
    /// Set when the daemon begins to stop: boots waiting for their guest
    /// give up and roll back instead of holding the daemon (and its lock).
    stopping: banger_sys::Cancel,
    /// Console rotation and reads, so a reader never sees a rotation half
    /// done (both are short: at most one segment's copy).
    console_lock: Mutex<()>,
    /// One doctor's Firecracker rehearsal at a time: they share a tap and
    /// a scratch directory.
    rehearsal_lock: Mutex<()>,
}

fn failed(message: impl Into<String>) -> VmError {
    VmError::Failed(message.into())
}

/// A lifecycle step failed because of `err`: its whole chain is the
/// message.
fn failed_by(err: &dyn std::error::Error) -> VmError {
    failed(crate::error::error_chain(err))
}

/// Removes a temporary file a step made, logging (not failing on) a
/// failure: the step's own result is what its caller needs.
fn remove_temp(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a temporary file");
    }
}

/// Everything a VM is given by the service.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// The durable store.
    pub db: &'a Arc<Store>,
    /// Operations.
    pub ops: &'a Arc<Operations>,
    /// Kernels and images.
    pub artifacts: &'a Arc<Artifacts>,
    /// The cache directory.
    pub cache_dir: &'a Path,
    /// The state directory.
    pub state_dir: &'a Path,
}

impl Vms {
    /// Also knows `others`, so a VM running under one of them is stopped,
    /// adopted and cleaned up by its own driver.
    pub fn with_other_vmms(mut self, others: Vec<Arc<dyn Vmm>>) -> Self {
        self.other_vmms = others
            .into_iter()
            .filter(|d| d.name() != self.vmm.name())
            .collect();
        self
    }

    /// Runs guest shell sessions through `guest` (a fake, in tests).
    pub fn with_guest_shell(mut self, guest: Arc<dyn workspace::guest::GuestShell>) -> Self {
        self.guest = guest;
        self
    }

    /// The driver called `name` (as recorded in a VM's handles), else the
    /// one new starts use.
    fn driver(&self, name: &str) -> Arc<dyn Vmm> {
        self.drivers()
            .find(|d| d.name() == name)
            .unwrap_or(&self.vmm)
            .clone()
    }

    /// Every driver, the one new starts use first.
    fn drivers(&self) -> impl Iterator<Item = &Arc<dyn Vmm>> {
        std::iter::once(&self.vmm).chain(&self.other_vmms)
    }

    /// The service over `parts`, driving `vmm` and `net`.
    pub fn new(
        parts: Parts<'_>,
        runner: Arc<dyn Runner>,
        vmm: Arc<dyn Vmm>,
        net: Arc<dyn Network>,
        settings: VmSettings,
    ) -> Self {
        let boot = BootAssets::new(parts.cache_dir, &settings, runner.clone());
        Self {
            db: parts.db.clone(),
            ops: parts.ops.clone(),
            artifacts: parts.artifacts.clone(),
            art_store: ArtifactStore::new(parts.cache_dir),
            cache_dir: parts.cache_dir.to_owned(),
            vms_dir: parts.state_dir.join("vms"),
            runner,
            vmm,
            other_vmms: Vec::new(),
            firewall: Arc::new(firewall::Firewall::new(
                net.clone(),
                settings.bridge.clone(),
                settings.subnet,
            )),
            net,
            settings,
            ssh: SshFiles::new(parts.state_dir.join("ssh")),
            reserve: Mutex::new(()),
            locks: Mutex::new(HashMap::new()),
            workspace_locks: Mutex::new(HashMap::new()),
            mux_locks: Mutex::new(HashMap::new()),
            guest: Arc::new(workspace::guest::SshShell),
            running: Arc::new(Mutex::new(HashMap::new())),
            boot,
            stopping: banger_sys::Cancel::new(),
            console_lock: Mutex::new(()),
            rehearsal_lock: Mutex::new(()),
        }
    }

    /// What the host has room for, measured now.
    fn room(&self) -> Result<banger_sys::host::Room, VmError> {
        std::fs::create_dir_all(&self.vms_dir)
            .map_err(|e| VmError::Internal(format!("create {}: {e}", self.vms_dir.display())))?;
        banger_sys::host::room(&self.vms_dir)
            .map_err(|e| VmError::Internal(format!("measure the host's room for VMs: {e}")))
    }

    /// Memory held by running VMs other than `except`.
    fn running_memory_mib(&self, except: &str) -> Result<u64, VmError> {
        let running: Vec<String> = lock(&self.running).keys().cloned().collect();
        Ok(self
            .db
            .list_vms()?
            .iter()
            .filter(|v| v.id != except && running.contains(&v.id))
            .map(|v| u64::from(v.memory_mib))
            .sum())
    }

    /// The daemon is stopping: starts waiting for a guest roll back.
    pub fn begin_shutdown(&self) {
        self.stopping.cancel();
    }

    /// The VM `id`'s directory and every path in it.
    fn dir(&self, id: &str) -> VmDir {
        VmDir::new(self.vms_dir.join(id))
    }

    fn files(&self, id: &str) -> VmFiles {
        self.dir(id).vmm()
    }

    fn vm_lock(&self, id: &str) -> Arc<Mutex<()>> {
        lock(&self.locks)
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    /// Runs `step` on the VM `reference` under that VM's lock, with its
    /// row re-read once the lock is held (a step that ran meanwhile may
    /// have changed it).
    fn locked<T>(
        &self,
        reference: &str,
        step: impl FnOnce(VmRecord) -> Result<T, VmError>,
    ) -> Result<T, VmError> {
        let id = self.resolve_exact(reference)?.id;
        let vm_lock = self.vm_lock(&id);
        let _guard = lock(&vm_lock);
        step(self.reload(&id)?)
    }

    fn reload(&self, id: &str) -> Result<VmRecord, VmError> {
        self.db
            .get_vm(id)?
            .ok_or_else(|| VmError::Deleted(id.to_owned()))
    }

    fn handles(&self, id: &str) -> Option<Handles> {
        lock(&self.running).get(id).cloned()
    }
}

fn not_running(vm: &VmRecord) -> VmError {
    VmError::NotRunning {
        name: vm.name.clone(),
        state: vm.state,
    }
}

//! The VM service: create, start, stop, kill, delete, resize, and the
//! reconciliation of recorded state with the host.
//!
//! Locking: a short global reservation (`reserve`) covers only the name
//! check, the address allocation and the row insert; every lifecycle step
//! of one VM runs under that VM's own lock, so slow work (disks, boots,
//! graceful stops) on different VMs overlaps. Each start is a list of
//! steps with undo actions ([`Undo`]); a failure rolls back what was done
//! and records the error on the VM.
//!
//! Everything here blocks; routes call it on blocking threads.

mod accel;
mod choice;
pub mod console;
mod create;
pub mod disks;
mod doctor;
mod halt;
pub mod handles;
mod reconcile;
pub mod ssh;
mod start;
mod undo;

pub use accel::find_init_bin;
pub use choice::choose_vmm;
pub use create::DEFAULT_IMAGE;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use banger_sys::wait::{lock, poll_until};
use std::time::Duration;

use banger_api::{ConsoleChunk, ErrorCode, SshTarget, Vm, VmState, VmSummary};
use banger_artifacts::store::ArtifactStore;
use banger_config::Accel as AccelChoice;
use banger_net::{Network, Subnet};
use banger_store::{Store, VmRecord};
use banger_sys::Runner;
use banger_vmm::probe::KvmVerdict;
use banger_vmm::{VmFiles, Vmm};

use crate::artifacts::Artifacts;
use crate::error::ApiError;
use crate::operations::Operations;
use console::{ConsoleError, ConsoleLog};
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
    settings: VmSettings,
    ssh: SshFiles,
    reserve: Mutex<()>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    running: Mutex<HashMap<String, Handles>>,
    kvm: Mutex<Option<KvmVerdict>>,
    initramfs: Mutex<Option<PathBuf>>,
    /// Set when the daemon begins to stop: boots waiting for their guest
    /// give up and roll back instead of holding the daemon (and its lock).
    stopping: banger_sys::Cancel,
    /// Console rotation and reads, so a reader never sees a rotation half
    /// done (both are short: at most one segment's copy).
    console_lock: Mutex<()>,
}

fn failed(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::OperationFailed, message)
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
            net,
            settings,
            ssh: SshFiles::new(parts.state_dir.join("ssh")),
            reserve: Mutex::new(()),
            locks: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            kvm: Mutex::new(None),
            initramfs: Mutex::new(None),
            stopping: banger_sys::Cancel::new(),
            console_lock: Mutex::new(()),
        }
    }

    /// What the host has room for, measured now.
    fn room(&self) -> Result<banger_sys::host::Room, ApiError> {
        std::fs::create_dir_all(&self.vms_dir)
            .map_err(|e| ApiError::internal(format!("create {}: {e}", self.vms_dir.display())))?;
        banger_sys::host::room(&self.vms_dir)
            .map_err(|e| ApiError::internal(format!("measure the host's room for VMs: {e}")))
    }

    /// Memory held by running VMs other than `except`.
    fn running_memory_mib(&self, except: &str) -> Result<u64, ApiError> {
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

    fn vm_dir(&self, id: &str) -> PathBuf {
        self.vms_dir.join(id)
    }

    fn files(&self, id: &str) -> VmFiles {
        VmFiles::new(self.vm_dir(id))
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
        step: impl FnOnce(VmRecord) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let id = self.resolve_exact(reference)?.id;
        let vm_lock = self.vm_lock(&id);
        let _guard = lock(&vm_lock);
        step(self.reload(&id)?)
    }

    fn reload(&self, id: &str) -> Result<VmRecord, ApiError> {
        self.db
            .get_vm(id)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("vm {id} was deleted")))
    }

    fn handles(&self, id: &str) -> Option<Handles> {
        lock(&self.running).get(id).cloned()
    }

    // ---- views ------------------------------------------------------------

    fn view(&self, r: VmRecord) -> Result<Vm, ApiError> {
        let state = parse_state(&r)?;
        let h = self.handles(&r.id);
        Ok(Vm {
            console_log: self.files(&r.id).console().display().to_string(),
            pid: h.as_ref().map(|h| h.pid),
            accel: h.map(|h| h.accel),
            id: r.id,
            name: r.name,
            state,
            image: r.image,
            kernel: r.kernel,
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            disk_bytes: r.disk_bytes,
            nat: r.nat,
            ip: r.ip,
            tap: r.tap,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }

    /// Every VM, oldest first.
    pub fn list(&self) -> Result<Vec<VmSummary>, ApiError> {
        self.db
            .list_vms()?
            .into_iter()
            .map(|r| {
                Ok(VmSummary {
                    state: parse_state(&r)?,
                    id: r.id,
                    name: r.name,
                    image: r.image,
                    ip: r.ip,
                    created_at: r.created_at,
                })
            })
            .collect()
    }

    /// Finds a VM for a read-only request: see [`resolve_in`].
    pub fn resolve(&self, reference: &str) -> Result<VmRecord, ApiError> {
        resolve_in(&self.db.list_vms()?, reference, Lookup::ReadOnly)
    }

    /// Finds a VM for a request that changes or destroys it: an exact name
    /// or an exact full id, never a prefix.
    pub fn resolve_exact(&self, reference: &str) -> Result<VmRecord, ApiError> {
        resolve_in(&self.db.list_vms()?, reference, Lookup::Exact)
    }

    /// One VM.
    pub fn get(&self, reference: &str) -> Result<Vm, ApiError> {
        self.view(self.resolve(reference)?)
    }

    /// How to reach a running VM over SSH.
    pub fn ssh_target(&self, reference: &str) -> Result<SshTarget, ApiError> {
        let vm = self.resolve(reference)?;
        if self.handles(&vm.id).is_none() {
            return Err(not_running(&vm));
        }
        Ok(self.target(&vm))
    }

    fn target(&self, vm: &VmRecord) -> SshTarget {
        SshTarget {
            name: vm.name.clone(),
            user: "root".to_owned(),
            host: vm.ip.clone(),
            port: 22,
            identity_file: self.ssh.identity().display().to_string(),
            known_hosts_file: self.ssh.known_hosts().display().to_string(),
        }
    }

    /// The console log from `offset`, at most 1 MiB at a time.
    pub fn console(&self, reference: &str, offset: u64) -> Result<ConsoleChunk, ApiError> {
        let vm = self.resolve(reference)?;
        let _one = lock(&self.console_lock);
        let chunk = ConsoleLog::new(self.files(&vm.id).console())
            .read(offset, 1 << 20)
            .map_err(|e| match e {
                ConsoleError::PastEnd { .. } => ApiError::invalid(e.to_string()),
                ConsoleError::Io { .. } => ApiError::internal(crate::error::error_chain(&e)),
            })?;
        Ok(ConsoleChunk {
            data: String::from_utf8_lossy(&chunk.data).into_owned(),
            next_offset: chunk.next_offset,
        })
    }
}

/// How much of a reference may be left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// An exact name or an exact full id: for anything that changes a VM,
    /// so a mistyped `web` can never stop or delete `web-prod`.
    Exact,
    /// Also an unambiguous prefix of an id (never of a name): for views.
    ReadOnly,
}

/// Finds `reference` among `all`. Ids and names live apart: a reference
/// shaped like a full id ([`banger_api::names::is_vm_id`]) is looked up
/// only as an id, anything else only as a name (names of that shape are
/// refused at create, so no name can stand for another VM's id).
pub fn resolve_in(all: &[VmRecord], reference: &str, lookup: Lookup) -> Result<VmRecord, ApiError> {
    let is_id = banger_api::names::is_vm_id(reference);
    let exact = if is_id {
        all.iter().find(|v| v.id == reference)
    } else {
        all.iter().find(|v| v.name == reference)
    };
    if let Some(vm) = exact {
        return Ok(vm.clone());
    }
    let prefix_allowed = lookup == Lookup::ReadOnly
        && !is_id
        && reference.len() >= MIN_ID_PREFIX
        && reference.bytes().all(|b| b.is_ascii_hexdigit());
    let matches: Vec<&VmRecord> = if prefix_allowed {
        all.iter().filter(|v| v.id.starts_with(reference)).collect()
    } else {
        Vec::new()
    };
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] if lookup == Lookup::Exact => Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no vm has the name or id {reference:?} (changes take an exact name or full id)"
            ),
        )),
        [] => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no vm has the name or id {reference:?} (or an id starting with it)"),
        )),
        many => Err(ApiError::invalid(format!(
            "{reference:?} is ambiguous: it starts the ids of {}; give more of the id",
            many.iter()
                .map(|v| format!("{} ({})", v.name, v.id))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The shortest id prefix a read-only request may use.
const MIN_ID_PREFIX: usize = 4;

fn parse_state(r: &VmRecord) -> Result<VmState, ApiError> {
    VmState::parse(&r.state).ok_or_else(|| {
        ApiError::internal(format!(
            "vm {:?} has unknown state {:?} in the store",
            r.name, r.state
        ))
    })
}

fn not_running(vm: &VmRecord) -> ApiError {
    ApiError::new(
        ErrorCode::NotRunning,
        format!("vm {} is not running (it is {})", vm.name, vm.state),
    )
}

/// Kills `pid` if it is still this VM's VMM and waits (bounded) for it to go.
fn stop_pid(vmm: &dyn Vmm, files: &VmFiles, pid: u32) {
    if vmm.is_running(files, pid) {
        vmm.kill(pid);
        let gone = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
            !vmm.is_running(files, pid)
        });
        if !gone {
            tracing::warn!(pid, "the VMM survived SIGKILL for 10 s");
            return;
        }
    }
    // A killed VMM leaves its sockets and pidfile (and a jail).
    if let Err(e) = vmm.release(files) {
        tracing::warn!(dir = %files.dir().display(), error = %crate::error::error_chain(&e), "cannot remove what the VMM left");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_testutil::stopped_vm;

    fn vms() -> Vec<VmRecord> {
        vec![
            stopped_vm("0a1b2c3d4e5f6071", "web-prod", "img"),
            stopped_vm("0a1b99999999aaaa", "db", "img"),
            stopped_vm("f00dfeedf00dfeed", "cafe", "img"),
        ]
    }

    #[test]
    fn a_change_never_acts_on_a_name_prefix() {
        let err = resolve_in(&vms(), "web", Lookup::Exact).unwrap_err();
        assert_eq!(err.code, ErrorCode::NotFound);
        assert!(
            err.message.contains("exact name or full id"),
            "{}",
            err.message
        );
        // Nor does a view: names are never matched by prefix.
        let err = resolve_in(&vms(), "web", Lookup::ReadOnly).unwrap_err();
        assert_eq!(err.code, ErrorCode::NotFound);
    }

    #[test]
    fn a_change_never_acts_on_an_id_prefix() {
        let err = resolve_in(&vms(), "f00dfeed", Lookup::Exact).unwrap_err();
        assert_eq!(err.code, ErrorCode::NotFound);
        let found = resolve_in(&vms(), "f00dfeed", Lookup::ReadOnly).unwrap();
        assert_eq!(found.name, "cafe");
    }

    #[test]
    fn exact_names_and_full_ids_resolve_for_changes() {
        assert_eq!(
            resolve_in(&vms(), "db", Lookup::Exact).unwrap().id,
            "0a1b99999999aaaa"
        );
        assert_eq!(
            resolve_in(&vms(), "0a1b2c3d4e5f6071", Lookup::Exact)
                .unwrap()
                .name,
            "web-prod"
        );
    }

    #[test]
    fn a_name_shaped_like_an_id_never_reaches_another_vm() {
        // A row from before names of that shape were refused: its name is
        // never looked up as an id, and a reference of that shape is only
        // ever an id.
        let mut all = vms();
        all.push(stopped_vm("1111222233334444", "0a1b2c3d4e5f6071", "img"));
        let found = resolve_in(&all, "0a1b2c3d4e5f6071", Lookup::Exact).unwrap();
        assert_eq!(found.id, "0a1b2c3d4e5f6071");
        assert_eq!(found.name, "web-prod");
    }

    #[test]
    fn a_hex_name_wins_over_an_id_prefix_and_short_prefixes_are_refused() {
        // "cafe" is a name and a hex string: the name is found first.
        assert_eq!(
            resolve_in(&vms(), "cafe", Lookup::ReadOnly).unwrap().id,
            "f00dfeedf00dfeed"
        );
        // Under four digits a prefix is too likely to be a typo.
        assert!(resolve_in(&vms(), "f00", Lookup::ReadOnly).is_err());
        let err = resolve_in(&vms(), "0a1b", Lookup::ReadOnly).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.contains("ambiguous"), "{}", err.message);
    }
}

//! What the API shows of VMs: rows and running handles turned into the
//! wire types, the SSH target and the console log.

use banger_api::{ConsoleChunk, SshTarget, Vm, VmSummary};
use banger_store::VmRecord;
use banger_sys::wait::lock;

use super::console::{ConsoleError, ConsoleLog};
use super::lookup::{Lookup, resolve_in};
use super::{Vms, not_running};
use crate::vms::VmError;

impl Vms {
    pub(super) fn view(&self, r: VmRecord) -> Result<Vm, VmError> {
        let h = self.handles(&r.id);
        Ok(Vm {
            workspace: self.db.get_workspace(&r.id)?,
            console_log: self.files(&r.id).console().display().to_string(),
            pid: h.as_ref().map(|h| h.pid),
            accel: h.map(|h| h.accel),
            id: r.id,
            name: r.name.into(),
            state: r.state,
            image: r.image.into(),
            kernel: r.kernel.into(),
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            disk_bytes: r.disk_bytes,
            nat: r.nat,
            ip: r.ip.to_string(),
            tap: r.tap,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }

    /// Every VM, oldest first.
    pub fn list(&self) -> Result<Vec<VmSummary>, VmError> {
        let mut workspaces = self.db.workspace_paths()?;
        self.db
            .list_vms()?
            .into_iter()
            .map(|r| {
                Ok(VmSummary {
                    workspace: workspaces.remove(&r.id),
                    state: r.state,
                    id: r.id,
                    name: r.name.into(),
                    image: r.image.into(),
                    ip: r.ip.to_string(),
                    created_at: r.created_at,
                })
            })
            .collect()
    }

    /// Finds a VM for a read-only request: see [`resolve_in`].
    pub fn resolve(&self, reference: &str) -> Result<VmRecord, VmError> {
        resolve_in(&self.db.list_vms()?, reference, Lookup::ReadOnly)
    }

    /// Finds a VM for a request that changes or destroys it: an exact name
    /// or an exact full id, never a prefix.
    pub fn resolve_exact(&self, reference: &str) -> Result<VmRecord, VmError> {
        resolve_in(&self.db.list_vms()?, reference, Lookup::Exact)
    }

    /// One VM.
    pub fn get(&self, reference: &str) -> Result<Vm, VmError> {
        self.view(self.resolve(reference)?)
    }

    /// How to reach a running VM over SSH.
    pub fn ssh_target(&self, reference: &str) -> Result<SshTarget, VmError> {
        let vm = self.resolve(reference)?;
        if self.handles(&vm.id).is_none() {
            return Err(not_running(&vm));
        }
        Ok(self.mux_target(&vm))
    }

    pub(super) fn target(&self, vm: &VmRecord) -> SshTarget {
        SshTarget {
            name: vm.name.to_string(),
            user: "root".to_owned(),
            host: vm.ip.to_string(),
            port: 22,
            identity_file: self.ssh.identity().display().to_string(),
            known_hosts_file: self.ssh.known_hosts().display().to_string(),
            control_path: None,
        }
    }

    /// The console log from `offset`, at most 1 MiB at a time.
    pub fn console(&self, reference: &str, offset: u64) -> Result<ConsoleChunk, VmError> {
        let vm = self.resolve(reference)?;
        let _one = lock(&self.console_lock);
        let chunk = ConsoleLog::new(self.files(&vm.id).console())
            .read(offset, 1 << 20)
            .map_err(|e| match e {
                ConsoleError::PastEnd { .. } => VmError::Invalid(e.to_string()),
                ConsoleError::Io { .. } => VmError::Internal(crate::error::error_chain(&e)),
            })?;
        Ok(ConsoleChunk {
            data: String::from_utf8_lossy(&chunk.data).into_owned(),
            next_offset: chunk.next_offset,
        })
    }
}

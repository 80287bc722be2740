//! Resizing a stopped VM: vCPUs, memory, and growing its work disk.

use banger_api::{SetVmRequest, Vm};
use banger_artifacts::store::now_rfc3339;

use super::create::Size;
use super::disks;
use super::{Vms, failed_by};
use crate::vms::VmError;

impl Vms {
    /// Resizes a stopped VM.
    pub fn set(&self, reference: &str, req: &SetVmRequest) -> Result<Vm, VmError> {
        self.locked(reference, |vm| {
            if self.handles(&vm.id).is_some() {
                return Err(VmError::Running {
                    name: vm.name,
                    hint: "stop it before resizing",
                });
            }
            let size = Size::checked(
                req.vcpus.or(Some(vm.vcpus)),
                req.memory_mib.or(Some(vm.memory_mib)),
                req.disk_bytes.or(Some(vm.disk_bytes)),
                Some(vm.disk_bytes),
            )?;
            size.check_room(&self.room()?, size.disk_bytes - vm.disk_bytes, 0)?;
            if size.disk_bytes > vm.disk_bytes {
                let work = self.dir(&vm.id).disks().work;
                disks::grow_work(&work, size.disk_bytes).map_err(|e| failed_by(&e))?;
            }
            self.db.set_vm_size(
                &vm.id,
                size.vcpus,
                size.memory_mib,
                size.disk_bytes,
                &now_rfc3339(),
            )?;
            self.view(self.reload(&vm.id)?)
        })
    }
}

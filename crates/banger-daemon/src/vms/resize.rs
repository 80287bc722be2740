//! Resizing a stopped VM: vCPUs, memory, and growing its work disk (and
//! its workspace disk, by as much).

use banger_api::{SetVmRequest, Vm};
use banger_artifacts::store::now_rfc3339;

use super::create::Size;
use super::disks;
use super::{Vms, failed, failed_by};
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
            let files = self.dir(&vm.id).disks();
            // A workspace disk, when the VM has one, grows by as much: it
            // was made as large as its content plus the work disk's size.
            let repo_len = match std::fs::symlink_metadata(&files.repo) {
                Ok(meta) => Some(meta.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(failed(format!("stat {}: {e}", files.repo.display()))),
            };
            let growth = size.disk_bytes - vm.disk_bytes;
            let disks_grown = if repo_len.is_some() { 2 } else { 1 };
            size.check_room(&self.room()?, growth * disks_grown, 0)?;
            if growth > 0 {
                disks::grow_work(&files.work, size.disk_bytes).map_err(|e| failed_by(&e))?;
                if let Some(len) = repo_len {
                    disks::grow_work(&files.repo, len + growth).map_err(|e| failed_by(&e))?;
                }
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

#[cfg(test)]
mod tests {
    use banger_api::SetVmRequest;

    use crate::vms::testkit::kit;

    fn len(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    #[test]
    fn growing_a_vm_grows_its_workspace_disk_by_as_much() {
        let kit = kit("");
        let files = kit.vms.dir(&kit.vm.id).disks();
        std::fs::create_dir_all(files.work.parent().unwrap()).unwrap();
        std::fs::File::create(&files.work).unwrap();
        std::fs::File::create(&files.repo)
            .unwrap()
            .set_len(5 << 20)
            .unwrap();
        let grown = kit.vm.disk_bytes + (64 << 20);
        let req = SetVmRequest {
            vcpus: None,
            memory_mib: None,
            disk_bytes: Some(grown),
        };
        kit.vms.set("web", &req).unwrap();
        assert_eq!(len(&files.work), grown);
        assert_eq!(len(&files.repo), (5 << 20) + (64 << 20));
        assert_eq!(kit.stored(&kit.vm.id).disk_bytes, grown);

        // Without a workspace disk none is made.
        std::fs::remove_file(&files.repo).unwrap();
        let req = SetVmRequest {
            disk_bytes: Some(grown + (64 << 20)),
            ..req
        };
        kit.vms.set("web", &req).unwrap();
        assert_eq!(len(&files.work), grown + (64 << 20));
        assert!(!files.repo.exists());
    }
}

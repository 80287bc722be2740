//! Deleting a VM: its running pieces, its network, its files and its row.

use super::Vms;
use crate::vms::VmError;

impl Vms {
    /// Deletes a VM; a running one only with `force` (it is killed).
    pub fn delete(&self, reference: &str, force: bool) -> Result<(), VmError> {
        self.locked(reference, |vm| {
            if let Some(h) = self.handles(&vm.id) {
                if !force {
                    return Err(VmError::Running {
                        name: vm.name,
                        hint: "stop it first, or delete with force",
                    });
                }
                self.after_exit(&vm, Some(&h));
            }
            self.release_network(&vm);
            self.discard(&vm);
            tracing::info!(vm = %vm.name, id = %vm.id, "vm deleted");
            Ok(())
        })
    }
}

//! Deleting a VM: its running pieces, its network, its files and its row.

use banger_api::ErrorCode;

use super::Vms;
use crate::error::ApiError;

impl Vms {
    /// Deletes a VM; a running one only with `force` (it is killed).
    pub fn delete(&self, reference: &str, force: bool) -> Result<(), ApiError> {
        self.locked(reference, |vm| {
            if let Some(h) = self.handles(&vm.id) {
                if !force {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        format!(
                            "vm {} is running; stop it first, or delete with force",
                            vm.name
                        ),
                    ));
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

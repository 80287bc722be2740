//! Deleting kernels and images, refused while something uses them.

use banger_artifacts::store::Kind;

use super::ArtifactError;
use super::{Artifacts, KindKey, busy, not_found};
use crate::error::error_chain;

impl Artifacts {
    /// Deletes kernel `name`, unless an image boots it or a pull runs.
    pub fn delete_kernel(&self, name: &str) -> Result<(), ArtifactError> {
        let inflight = self.inflight();
        busy(&inflight, KindKey::Kernel, name)?;
        let users = self.db.images_using_kernel(name)?;
        if !users.is_empty() {
            return Err(ArtifactError::InUse {
                kind: "kernel",
                name: name.to_owned(),
                users_kind: "image",
                users: users.join(", "),
            });
        }
        if !self
            .store
            .delete(Kind::Kernel, name)
            .map_err(|e| ArtifactError::Internal(error_chain(&e)))?
        {
            return Err(not_found("kernel", name));
        }
        Ok(())
    }

    /// Deletes image `name`, unless a VM uses it or a pull runs.
    pub fn delete_image(&self, name: &str) -> Result<(), ArtifactError> {
        let inflight = self.inflight();
        busy(&inflight, KindKey::Image, name)?;
        self.refuse_if_used(name)?;
        // The row goes first: an image without a row is invisible, while a
        // row without files would be a broken entry.
        let had_row = self.db.delete_image(name)?;
        let had_files = self
            .store
            .delete(Kind::Image, name)
            .map_err(|e| ArtifactError::Internal(error_chain(&e)))?;
        if !had_row && !had_files {
            return Err(not_found("image", name));
        }
        Ok(())
    }

    pub(super) fn refuse_if_used(&self, name: &str) -> Result<(), ArtifactError> {
        let vms = self.db.vms_using_image(name)?;
        if vms.is_empty() {
            return Ok(());
        }
        Err(ArtifactError::InUse {
            kind: "image",
            name: name.to_owned(),
            users_kind: "VM",
            users: vms.join(", "),
        })
    }
}

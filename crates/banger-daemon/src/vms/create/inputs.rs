//! What a create needs before anything is allocated: its image and kernel
//! (pulled when missing, the create mirroring the pull's stages) and an
//! image that can boot as a VM.

use std::sync::Arc;
use std::time::Duration;

use banger_api::names::ArtifactName;
use banger_api::{Operation, OperationState};
use banger_artifacts::store::Kind;
use banger_artifacts::{Progress, Stage};

use super::super::{Vms, failed};
use crate::operations::OpHandle;
use crate::vms::VmError;

impl Vms {
    /// Refuses an image pulled from a registry that lacks what a VM boots
    /// with, before anything is allocated for the VM.
    pub(super) fn check_image_can_boot(&self, image: &str, nat: bool) -> Result<(), VmError> {
        let Some(origin) = self
            .art_store
            .manifest::<banger_artifacts::image::ImageManifest>(Kind::Image, image)
            .ok()
            .flatten()
            .and_then(|m| m.oci)
        else {
            return Ok(());
        };
        if let Some(why) = origin.cannot_boot() {
            return Err(failed(format!(
                "image {image} (pulled from {}) cannot boot as a VM: {why}",
                origin.reference
            )));
        }
        match origin.installs_at_first_boot() {
            Some(what) if !nat => Err(failed(format!(
                "image {image} (pulled from {}) needs --nat: {what}",
                origin.reference
            ))),
            _ => Ok(()),
        }
    }

    /// The image and kernel directories, pulling catalog entries that are
    /// missing (joining a pull already running).
    pub(super) fn resolve_artifacts(
        &self,
        op: &Arc<OpHandle>,
        image: &ArtifactName,
        kernel: Option<&ArtifactName>,
    ) -> Result<(ArtifactName, ArtifactName), VmError> {
        let image_name = image;
        let image = image.as_str();
        if self.db.get_image(image)?.is_none() {
            let pull = self
                .artifacts
                .pull_image(crate::op_id::OpId::mint().as_str(), image)?;
            tracing::info!(op = %op.id(), pull = %pull.id, image, "the create waits on a pull");
            self.wait_for(op, pull)?;
        }
        let record = self
            .db
            .get_image(image)?
            .ok_or_else(|| VmError::NoImage(image.to_owned()))?;
        let kernel = match kernel {
            Some(kernel) => kernel.clone(),
            None => ArtifactName::new(record.kernel)
                .map_err(|e| VmError::Internal(format!("image {image:?} in the store: {e}")))?,
        };
        let bz = self
            .art_store
            .dir(Kind::Kernel, &kernel)
            .join(banger_artifacts::kernel::BZIMAGE);
        if !bz.is_file() {
            let pull = self
                .artifacts
                .pull_kernel(crate::op_id::OpId::mint().as_str(), &kernel)?;
            tracing::info!(op = %op.id(), pull = %pull.id, kernel = %kernel, "the create waits on a pull");
            self.wait_for(op, pull)?;
        }
        Ok((image_name.clone(), kernel))
    }

    /// Waits for a pull, mirroring its stages into `op`.
    pub(super) fn wait_for(&self, op: &Arc<OpHandle>, pull: Operation) -> Result<(), VmError> {
        let Some(handle) = self.ops.get(&pull.id) else {
            return Ok(());
        };
        loop {
            let snap = handle.snapshot();
            if let Some(s) = &snap.stage {
                op.stage(Stage {
                    index: 1,
                    total: 5,
                    name: format!(
                        "pulling {} ({}/{} {})",
                        snap.target, s.index, s.total, s.name
                    ),
                });
            }
            match snap.state {
                OperationState::Succeeded => return Ok(()),
                OperationState::Running => {}
                _ => {
                    let why = snap.error.map_or_else(String::new, |e| e.message);
                    return Err(failed(format!("pull {} failed: {why}", snap.target)));
                }
            }
            if op.cancel.is_cancelled() {
                return Err(failed("cancelled"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

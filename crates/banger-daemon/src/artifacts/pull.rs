//! Catalog pulls: a kernel or image built from its recipe (or fetched),
//! skipped when the same recipe is already present.

use std::sync::Arc;

use banger_api::{Operation, OperationKind};
use banger_artifacts::{image, kernel};

use super::ArtifactError;
use super::{Artifacts, Done, KindKey};

impl Artifacts {
    /// Starts (or joins) the pull of catalog kernel `name`.
    pub fn pull_kernel(
        self: &Arc<Self>,
        op_id: &str,
        name: &str,
    ) -> Result<Operation, ArtifactError> {
        let entry = (self.catalog.kernel(name).cloned()).ok_or_else(|| missing("kernel", name))?;
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
    pub fn pull_image(
        self: &Arc<Self>,
        op_id: &str,
        name: &str,
    ) -> Result<Operation, ArtifactError> {
        let entry = (self.catalog.image(name).cloned()).ok_or_else(|| missing("image", name))?;
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
}

fn missing(kind: &'static str, name: &str) -> ArtifactError {
    ArtifactError::NotInCatalog {
        kind,
        name: name.to_owned(),
    }
}

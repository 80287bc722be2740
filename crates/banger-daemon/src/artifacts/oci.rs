//! Registry pulls: an OCI or Docker image by reference, its layers shared
//! through the blob cache, and the prune that leaves running pulls' blobs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use banger_api::{CachePruneReport, ImagePullRequest, Operation, OperationKind};
use banger_artifacts::image::ImageManifest;
use banger_artifacts::oci;
use banger_artifacts::store::Kind;
use banger_sys::wait::lock;

use super::ArtifactError;
use super::{Artifacts, DEFAULT_KERNEL, Done, KindKey, out_name};

impl Artifacts {
    /// Starts (or joins) the pull of the registry image `req.name` (a
    /// reference) as image `req.image_name` (default from the reference).
    pub fn pull_oci(
        self: &Arc<Self>,
        op_id: &str,
        req: &ImagePullRequest,
    ) -> Result<Operation, ArtifactError> {
        let reference = req.name.trim();
        if reference.len() > 512
            || reference
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ArtifactError::Invalid(format!(
                "{reference:?} is not an image reference: it holds whitespace or control characters, or is over 512 bytes"
            )));
        }
        let parsed = oci::registry::parse_reference(reference)
            .map_err(|e| ArtifactError::Invalid(e.to_string()))?;
        let name = match &req.image_name {
            Some(n) => n.clone(),
            None => oci::default_name(reference),
        };
        banger_api::names::validate_artifact_name("image", &name).map_err(|e| {
            ArtifactError::Invalid(format!("{e}; give the image a name with --name"))
        })?;
        let kernel = req
            .kernel
            .clone()
            .unwrap_or_else(|| DEFAULT_KERNEL.to_owned());
        if self.catalog.kernel(&kernel).is_none() {
            return Err(ArtifactError::UnknownKernel(kernel));
        }
        if self.db.get_image(&name)?.is_some() {
            // Pulling a reference again refreshes its image; any other
            // image of that name is not replaced.
            let same = self
                .store
                .manifest::<ImageManifest>(Kind::Image, &name)
                .ok()
                .flatten()
                .and_then(|m| m.oci)
                .is_some_and(|o| o.reference == parsed.whole());
            if !same {
                return Err(ArtifactError::Exists(format!(
                    "image {name:?} exists and was not pulled from {}; pick another name with --name",
                    parsed.whole()
                )));
            }
            self.refuse_if_used(&name)?;
        }
        let options = oci::PullOptions {
            insecure: req.insecure,
            docker_config: docker_config(),
            limits: self.unpack,
        };
        let reference = reference.to_owned();
        self.start(
            op_id,
            KindKey::Image,
            OperationKind::ImagePull,
            &name,
            false,
            Box::new(move |svc, out, env| {
                let name = out_name(out);
                // Released when this closure returns, however the pull ends.
                let holds = Mutex::new(Vec::new());
                let in_use = |digest: &str| lock(&holds).push(svc.blobs_in_use.hold(digest));
                oci::pull(
                    &name, &reference, &kernel, &options, &svc.blobs, &in_use, out, env,
                )
                .map(|m| Done::Image(Box::new(m)))
            }),
        )
    }

    /// Removes cached layer blobs no running pull uses.
    pub fn prune_blobs(&self, dry_run: bool) -> Result<CachePruneReport, ArtifactError> {
        let in_use = self.blobs_in_use.held();
        let pruned = self
            .blobs
            .prune(&in_use, dry_run)
            .map_err(|e| ArtifactError::Internal(format!("prune the blob cache: {e}")))?;
        tracing::info!(
            blobs = pruned.blobs,
            bytes = pruned.bytes,
            dry_run,
            "blob cache pruned"
        );
        Ok(CachePruneReport {
            blobs: pruned.blobs,
            bytes: pruned.bytes,
            dry_run,
        })
    }
}

/// Docker's credentials file: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
fn docker_config() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"))
}

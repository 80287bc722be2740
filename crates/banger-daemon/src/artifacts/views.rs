//! What the API shows of kernels and images: catalogs, lists, single
//! entries.

use banger_api::{CatalogEntry, Image, Kernel};
use banger_artifacts::image::{ImageManifest, ImageSource};
use banger_artifacts::kernel::KernelManifest;
use banger_artifacts::store::Kind;
use banger_store::ImageRecord;

use super::ArtifactError;
use super::{Artifacts, not_found};
use crate::error::error_chain;

impl Artifacts {
    pub(super) fn kernel_manifest(&self, name: &str) -> Option<KernelManifest> {
        self.store.manifest(Kind::Kernel, name).ok().flatten()
    }

    /// `kernel catalog`.
    pub fn kernel_catalog(&self) -> Vec<CatalogEntry> {
        self.catalog
            .kernels
            .iter()
            .map(|k| CatalogEntry {
                name: k.name.clone(),
                description: k.description.clone(),
                recipe_hash: k.recipe_hash(),
                present: self
                    .kernel_manifest(&k.name)
                    .is_some_and(|m| m.recipe_hash == k.recipe_hash()),
            })
            .collect()
    }

    /// `image catalog`.
    pub fn image_catalog(&self) -> Result<Vec<CatalogEntry>, ArtifactError> {
        self.catalog
            .images
            .iter()
            .map(|i| {
                Ok(CatalogEntry {
                    name: i.name.clone(),
                    description: i.description.clone(),
                    recipe_hash: i.recipe_hash(),
                    present: self
                        .db
                        .get_image(&i.name)?
                        .is_some_and(|r| r.recipe_hash.as_deref() == Some(&i.recipe_hash())),
                })
            })
            .collect()
    }

    fn kernel_view(&self, m: KernelManifest) -> Kernel {
        Kernel {
            dir: self.store.dir(Kind::Kernel, &m.name).display().to_string(),
            name: m.name,
            recipe_hash: m.recipe_hash,
            source_package: m.source_package,
            size_bytes: m.size_bytes,
            created_at: m.built_at,
        }
    }

    fn image_view(&self, r: ImageRecord) -> Image {
        let oci = self
            .store
            .manifest::<ImageManifest>(Kind::Image, &r.name)
            .ok()
            .flatten()
            .and_then(|m| m.oci)
            .map(|o| banger_api::OciImage {
                cannot_boot: o.cannot_boot(),
                installs_at_first_boot: o.installs_at_first_boot(),
                reference: o.reference,
                manifest_digest: o.manifest_digest,
                env: o.env,
                working_dir: o.working_dir,
                user: o.user,
            });
        Image {
            oci,
            dir: self.store.dir(Kind::Image, &r.name).display().to_string(),
            name: r.name,
            source: r.source,
            recipe_hash: r.recipe_hash,
            kernel: r.kernel,
            size_bytes: r.size_bytes,
            created_at: r.created_at,
        }
    }

    /// Kernels in the store.
    pub fn list_kernels(&self) -> Result<Vec<Kernel>, ArtifactError> {
        let manifests = self
            .store
            .list::<KernelManifest>(Kind::Kernel)
            .map_err(|e| ArtifactError::Internal(error_chain(&e)))?;
        Ok(manifests.into_iter().map(|m| self.kernel_view(m)).collect())
    }

    /// One kernel.
    pub fn get_kernel(&self, name: &str) -> Result<Kernel, ArtifactError> {
        self.kernel_manifest(name)
            .map(|m| self.kernel_view(m))
            .ok_or_else(|| not_found("kernel", name))
    }

    /// Images in the store.
    pub fn list_images(&self) -> Result<Vec<Image>, ArtifactError> {
        Ok(self
            .db
            .list_images()?
            .into_iter()
            .map(|r| self.image_view(r))
            .collect())
    }

    /// One image.
    pub fn get_image(&self, name: &str) -> Result<Image, ArtifactError> {
        self.db
            .get_image(name)?
            .map(|r| self.image_view(r))
            .ok_or_else(|| not_found("image", name))
    }
}

pub(super) fn image_record(m: ImageManifest) -> ImageRecord {
    let source = match m.source {
        ImageSource::Build => "build",
        ImageSource::Import => "import",
        ImageSource::Oci => "oci",
    };
    ImageRecord {
        name: m.name,
        source: source.to_owned(),
        kernel: m.kernel,
        recipe_hash: m.recipe_hash,
        size_bytes: m.size_bytes,
        created_at: m.built_at,
    }
}

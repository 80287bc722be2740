//! The embedded catalogs. Each entry's recipe lives in the repository
//! (`kernels/`, `images/`) and is compiled in; its hash names the artifact,
//! so a changed recipe gives a new artifact.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Bumped when the kernel build steps change in a way that changes the output.
const KERNEL_BUILDER_VERSION: &str = "1";
/// Bumped when the image build steps change in a way that changes the
/// output (2: host hostname and resolv.conf no longer leak in).
const IMAGE_BUILDER_VERSION: &str = "2";

/// A kernel the catalog knows how to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEntry {
    /// Catalog name, e.g. `generic-6.1`.
    pub name: &'static str,
    /// One line for `kernel catalog`.
    pub description: &'static str,
    /// How to make it.
    pub recipe: KernelRecipe,
}

/// A kernel built from a Debian `linux-source-*` package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRecipe {
    /// The Debian package providing the source tarball.
    pub source_package: &'static str,
    /// Where that package puts the tarball.
    pub source_tarball: &'static str,
    /// Kconfig fragment applied on top of `allnoconfig`.
    pub config_fragment: &'static str,
}

/// An image the catalog knows how to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Catalog name, e.g. `debian-bookworm`.
    pub name: &'static str,
    /// One line for `image catalog`.
    pub description: &'static str,
    /// The recipe text (TOML), as committed.
    pub recipe_text: &'static str,
}

/// A parsed image recipe: an mmdebstrap build.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecipe {
    /// Debian suite.
    pub suite: String,
    /// mmdebstrap variant.
    pub variant: String,
    /// The catalog kernel this image boots with.
    pub kernel: String,
    /// Packages on top of the variant.
    pub packages: Vec<String>,
    /// Free space left in the root file system.
    pub headroom_mib: u64,
}

/// Every kernel in the catalog.
pub const KERNELS: &[KernelEntry] = &[KernelEntry {
    name: "generic-6.1",
    description: "Linux 6.1 from Debian's linux-source-6.1, all built in, for QEMU microvm and Firecracker",
    recipe: KernelRecipe {
        source_package: "linux-source-6.1",
        source_tarball: "/usr/src/linux-source-6.1.tar.xz",
        config_fragment: include_str!("../../../kernels/generic-6.1/config.fragment"),
    },
}];

/// Every image in the catalog.
pub const IMAGES: &[ImageEntry] = &[ImageEntry {
    name: "debian-bookworm",
    description: "Debian 12 with systemd, sshd, git and curl, built with mmdebstrap",
    recipe_text: include_str!("../../../images/debian-bookworm/recipe.toml"),
}];

/// Looks up a kernel by name.
pub fn kernel(name: &str) -> Option<&'static KernelEntry> {
    KERNELS.iter().find(|k| k.name == name)
}

/// Looks up an image by name.
pub fn image(name: &str) -> Option<&'static ImageEntry> {
    IMAGES.iter().find(|i| i.name == name)
}

impl KernelEntry {
    /// Hash of everything that decides the output.
    pub fn recipe_hash(&self) -> String {
        hash(&[
            KERNEL_BUILDER_VERSION,
            "kernel",
            self.name,
            self.recipe.source_package,
            self.recipe.config_fragment,
        ])
    }
}

impl ImageEntry {
    /// Hash of everything that decides the output.
    pub fn recipe_hash(&self) -> String {
        hash(&[IMAGE_BUILDER_VERSION, "image", self.name, self.recipe_text])
    }

    /// The parsed recipe. The embedded recipes are checked by a test, so
    /// this only fails for a broken build of banger.
    pub fn recipe(&self) -> Result<ImageRecipe, toml::de::Error> {
        toml::from_str(self.recipe_text)
    }
}

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_recipes_parse_and_name_catalog_kernels() {
        for image in IMAGES {
            let recipe = image.recipe().unwrap();
            assert!(
                kernel(&recipe.kernel).is_some(),
                "{} names {}",
                image.name,
                recipe.kernel
            );
            assert!(recipe.packages.iter().any(|p| p == "openssh-server"));
        }
    }

    #[test]
    fn recipe_hash_changes_with_the_recipe() {
        let entry = IMAGES[0].clone();
        let mut changed = entry.clone();
        changed.recipe_text = "suite = \"trixie\"";
        assert_ne!(entry.recipe_hash(), changed.recipe_hash());
        assert_eq!(entry.recipe_hash(), IMAGES[0].recipe_hash());
        assert_eq!(entry.recipe_hash().len(), 64);
    }

    #[test]
    fn kernel_fragment_has_what_the_issue_requires() {
        let frag = KERNELS[0].recipe.config_fragment;
        for sym in [
            "VIRTIO_MMIO_CMDLINE_DEVICES",
            "VIRTIO_BLK",
            "VIRTIO_NET",
            "VIRTIO_CONSOLE",
            "HW_RANDOM_VIRTIO",
            "VIRTIO_VSOCKETS",
            "EXT4_FS",
            "OVERLAY_FS",
            "TMPFS",
            "DEVTMPFS",
            "IP_PNP",
            "SERIAL_8250_CONSOLE",
            "ACPI",
            "NAMESPACES",
            "CGROUPS",
            "SECCOMP",
            "SYSCTL",
        ] {
            assert!(frag.contains(&format!("CONFIG_{sym}=y")), "{sym}");
        }
        assert!(!frag.contains("CONFIG_MODULES=y"));
    }
}

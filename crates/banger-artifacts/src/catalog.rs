//! The catalogs: what `kernel pull NAME` and `image pull NAME` mean.
//!
//! An entry is a build (its recipe lives in the repository, under
//! `kernels/` and `images/`, and is compiled in) or a download (a URL and
//! the SHA-256 the file must have). The recipe hash names the artifact: a
//! changed recipe, or a download with another checksum, gives a new one.
//! The daemon uses [`Catalog::embedded`]; tests hand it their own.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Bumped when the kernel build steps change in a way that changes the output.
const KERNEL_BUILDER_VERSION: &str = "1";
/// Bumped when the image build steps change in a way that changes the
/// output (2: host hostname and resolv.conf no longer leak in).
const IMAGE_BUILDER_VERSION: &str = "2";

/// A file to download, and the SHA-256 it must have before anything made
/// from it is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// `https://`, `http://` or `file://` URL.
    pub url: String,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

/// A kernel the catalog knows how to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEntry {
    /// Catalog name, e.g. `generic-6.1`.
    pub name: String,
    /// One line for `kernel catalog`.
    pub description: String,
    /// How to make it.
    pub source: KernelSource,
}

/// Where a kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// Built from a Debian `linux-source-*` package.
    Build(KernelRecipe),
    /// A tarball holding `vmlinux` and `bzImage` (and optionally `config`).
    Download(Download),
}

/// A kernel built from a Debian `linux-source-*` package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRecipe {
    /// The Debian package providing the source tarball.
    pub source_package: String,
    /// Where that package puts the tarball.
    pub source_tarball: String,
    /// Kconfig fragment applied on top of `allnoconfig`.
    pub config_fragment: String,
}

/// An image the catalog knows how to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Catalog name, e.g. `debian-bookworm`.
    pub name: String,
    /// One line for `image catalog`.
    pub description: String,
    /// How to make it.
    pub source: ImageOrigin,
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageOrigin {
    /// An mmdebstrap build; the recipe text (TOML), as committed.
    Build {
        /// The recipe.
        recipe_text: String,
    },
    /// A tarball holding `rootfs.ext4` (and optionally `work-seed.ext4`).
    Bundle {
        /// The tarball.
        download: Download,
        /// The catalog kernel its VMs boot.
        kernel: String,
    },
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

/// A set of kernels and images.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catalog {
    /// Kernels, by name.
    pub kernels: Vec<KernelEntry>,
    /// Images, by name.
    pub images: Vec<ImageEntry>,
}

impl Catalog {
    /// The catalog compiled into banger.
    pub fn embedded() -> Self {
        Self {
            kernels: vec![KernelEntry {
                name: "generic-6.1".into(),
                description: "Linux 6.1 from Debian's linux-source-6.1, all built in, for QEMU microvm and Firecracker".into(),
                source: KernelSource::Build(KernelRecipe {
                    source_package: "linux-source-6.1".into(),
                    source_tarball: "/usr/src/linux-source-6.1.tar.xz".into(),
                    config_fragment: include_str!("../../../kernels/generic-6.1/config.fragment").into(),
                }),
            }],
            images: vec![ImageEntry {
                name: "debian-bookworm".into(),
                description: "Debian 12 with systemd, sshd, git and curl, built with mmdebstrap".into(),
                source: ImageOrigin::Build {
                    recipe_text: include_str!("../../../images/debian-bookworm/recipe.toml").into(),
                },
            }],
        }
    }

    /// Looks up a kernel by name.
    pub fn kernel(&self, name: &str) -> Option<&KernelEntry> {
        self.kernels.iter().find(|k| k.name == name)
    }

    /// Looks up an image by name.
    pub fn image(&self, name: &str) -> Option<&ImageEntry> {
        self.images.iter().find(|i| i.name == name)
    }
}

impl KernelEntry {
    /// Hash of everything that decides the output.
    pub fn recipe_hash(&self) -> String {
        match &self.source {
            KernelSource::Build(r) => hash(&[
                KERNEL_BUILDER_VERSION,
                "kernel",
                &self.name,
                &r.source_package,
                &r.config_fragment,
            ]),
            KernelSource::Download(d) => hash(&["kernel-download", &self.name, &d.sha256]),
        }
    }
}

impl ImageEntry {
    /// Hash of everything that decides the output.
    pub fn recipe_hash(&self) -> String {
        match &self.source {
            ImageOrigin::Build { recipe_text } => {
                hash(&[IMAGE_BUILDER_VERSION, "image", &self.name, recipe_text])
            }
            ImageOrigin::Bundle { download, kernel } => {
                hash(&["image-bundle", &self.name, &download.sha256, kernel])
            }
        }
    }

    /// The kernel the image boots with.
    pub fn kernel(&self) -> Result<String, toml::de::Error> {
        match &self.source {
            ImageOrigin::Build { recipe_text } => {
                toml::from_str::<ImageRecipe>(recipe_text).map(|r| r.kernel)
            }
            ImageOrigin::Bundle { kernel, .. } => Ok(kernel.clone()),
        }
    }
}

/// Parses an image recipe.
pub fn parse_recipe(text: &str) -> Result<ImageRecipe, toml::de::Error> {
    toml::from_str(text)
}

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_recipes_parse_and_name_catalog_kernels() {
        let catalog = Catalog::embedded();
        for image in &catalog.images {
            let ImageOrigin::Build { recipe_text } = &image.source else {
                panic!("embedded images are builds");
            };
            let recipe = parse_recipe(recipe_text).unwrap();
            assert!(
                catalog.kernel(&recipe.kernel).is_some(),
                "{} names {}",
                image.name,
                recipe.kernel
            );
            assert!(recipe.packages.iter().any(|p| p == "openssh-server"));
            assert!(
                recipe.packages.iter().any(|p| p == "udev"),
                "without udev systemd waits for dev-ttyS0"
            );
        }
    }

    #[test]
    fn recipe_hash_changes_with_the_recipe_or_checksum() {
        let entry = Catalog::embedded().images[0].clone();
        let mut changed = entry.clone();
        changed.source = ImageOrigin::Build {
            recipe_text: "suite = \"trixie\"".into(),
        };
        assert_ne!(entry.recipe_hash(), changed.recipe_hash());
        assert_eq!(
            entry.recipe_hash(),
            Catalog::embedded().images[0].recipe_hash()
        );
        assert_eq!(entry.recipe_hash().len(), 64);

        let bundle = |sha: &str| ImageEntry {
            name: "b".into(),
            description: String::new(),
            source: ImageOrigin::Bundle {
                download: Download {
                    url: "https://example.invalid/b.tar".into(),
                    sha256: sha.into(),
                },
                kernel: "generic-6.1".into(),
            },
        };
        assert_ne!(bundle("aa").recipe_hash(), bundle("bb").recipe_hash());
    }

    #[test]
    fn kernel_fragment_has_what_the_issue_requires() {
        let KernelSource::Build(recipe) = &Catalog::embedded().kernels[0].source else {
            panic!("generic-6.1 is a build");
        };
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
            "PCI",
        ] {
            assert!(
                recipe.config_fragment.contains(&format!("CONFIG_{sym}=y")),
                "{sym}"
            );
        }
        assert!(!recipe.config_fragment.contains("CONFIG_MODULES=y"));
    }
}

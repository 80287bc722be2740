//! Building an image: a root file system tarball (from mmdebstrap, or one
//! the user imports), checked by [`crate::tarscan`], turned into
//! `rootfs.ext4` by `mke2fs -d`, plus `work-seed.ext4` from its `/root`.

use std::path::Path;

use banger_sys::Cmd;
use serde::{Deserialize, Serialize};

use crate::catalog::{Download, ImageEntry, ImageOrigin, parse_recipe};
use crate::ext4;
use crate::kernel::{BuildEnv, BuildError, io_err};
use crate::progress::Stages;
use crate::store::{ArtifactStore, allocated_bytes, now_rfc3339};
use crate::tarscan;

/// The shared, read-only root file system of every VM of the image.
pub const ROOTFS: &str = "rootfs.ext4";
/// The initial content of a VM's /root.
pub const WORK_SEED: &str = "work-seed.ext4";
/// Room in the work seed beyond its content.
const WORK_SEED_HEADROOM_MIB: u64 = 32;

/// mmdebstrap copies the build host's `/etc/hostname` and
/// `/etc/resolv.conf` into the tree; an image must carry neither (each VM
/// gets its own at create time). Fixed strings, run by mmdebstrap's `sh`
/// with the tree as `$1`: nothing is interpolated into them.
const HYGIENE_HOOKS: [&str; 2] = [
    r#"echo banger > "$1/etc/hostname""#,
    r#"rm -f "$1/etc/resolv.conf" && : > "$1/etc/resolv.conf" && chmod 0644 "$1/etc/resolv.conf""#,
];

/// Where an image came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// Built from a catalog recipe.
    Build,
    /// Imported from a tarball or an ext4 file.
    Import,
    /// Pulled from an OCI or Docker registry.
    Oci,
}

/// What a published image directory holds (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Image name.
    pub name: String,
    /// How it was made.
    pub source: ImageSource,
    /// Hash of the catalog recipe, for built images.
    pub recipe_hash: Option<String>,
    /// The catalog kernel it boots with.
    pub kernel: String,
    /// When it was made (RFC 3339).
    pub built_at: String,
    /// Bytes on disk of the whole directory.
    pub size_bytes: u64,
    /// For pulled images: where from, and the config a VM can use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciOrigin>,
}

/// Where a pulled image came from, and what its config asks of a process
/// run in it (for `vm exec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciOrigin {
    /// The reference pulled.
    pub reference: String,
    /// The image manifest's digest.
    pub manifest_digest: String,
    /// `Env` (`KEY=value`).
    #[serde(default)]
    pub env: Vec<String>,
    /// `WorkingDir`, if set.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `User`, if set.
    #[serde(default)]
    pub user: Option<String>,
    /// The tree has `/sbin/init`.
    #[serde(default)]
    pub has_init: bool,
    /// The tree has `/usr/sbin/sshd`.
    #[serde(default)]
    pub has_sshd: bool,
    /// The distribution family whose package manager banger-init uses to
    /// install what is missing at first boot, if it knows one.
    #[serde(default)]
    pub first_boot: Option<String>,
}

impl OciOrigin {
    /// Why a VM cannot boot this image, if it cannot: banger boots the
    /// image's `/sbin/init` and reaches the guest over its SSH server, and
    /// can install them at first boot only with a package manager it knows.
    pub fn cannot_boot(&self) -> Option<String> {
        if self.first_boot.is_some() {
            return None;
        }
        self.missing().map(|missing| {
            format!(
                "it has no {}: banger boots the image's init and reaches the guest over SSH, and knows no package manager in it to install them with; use an image with systemd and an SSH server installed",
                missing.join(" and no ")
            )
        })
    }

    /// What banger-init installs at each VM's first boot (which needs the
    /// network: `--nat`), if anything.
    pub fn installs_at_first_boot(&self) -> Option<String> {
        let family = self.first_boot.as_ref()?;
        self.missing().map(|missing| {
            format!(
                "its VMs install {} at first boot with {family}'s package manager, which needs --nat",
                missing.join(" and ")
            )
        })
    }

    fn missing(&self) -> Option<Vec<&'static str>> {
        let missing: Vec<&str> = [
            (!self.has_init).then_some("/sbin/init (systemd)"),
            (!self.has_sshd).then_some("/usr/sbin/sshd (openssh-server)"),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!missing.is_empty()).then_some(missing)
    }
}

/// Builds catalog image `entry` into `out` from the Debian `mirror`.
pub fn build(
    entry: &ImageEntry,
    mirror: &str,
    out: &Path,
    env: BuildEnv<'_>,
) -> Result<ImageManifest, BuildError> {
    let recipe_text = match &entry.source {
        ImageOrigin::Build { recipe_text } => recipe_text,
        ImageOrigin::Bundle { download, kernel } => {
            return from_bundle(entry, download, kernel, out, env);
        }
    };
    let recipe = parse_recipe(recipe_text).map_err(|source| BuildError::Recipe {
        name: entry.name.clone(),
        source,
    })?;
    let mut stages = Stages::new(env.progress, 4);
    stages.begin(format!(
        "bootstrapping Debian {} from {mirror} (mmdebstrap)",
        recipe.suite
    ));
    let tar = out.join("rootfs.tar");
    env.runner.run(
        // unshare mode for root too: the build's mounts live in a namespace
        // that vanishes with it, so a killed build leaks no mount.
        &Cmd::new("mmdebstrap")
            .arg("--mode=unshare")
            .arg(format!("--variant={}", recipe.variant))
            .arg(format!("--include={}", recipe.packages.join(",")))
            .arg("--format=tar")
            .args(
                HYGIENE_HOOKS
                    .iter()
                    .map(|h| format!("--customize-hook={h}")),
            )
            .arg(&recipe.suite)
            .arg(&tar)
            .arg(mirror),
        env.log,
        env.cancel,
    )?;
    let manifest = from_tar(
        &tar,
        out,
        &mut stages,
        env,
        Meta {
            name: &entry.name,
            source: ImageSource::Build,
            recipe_hash: Some(entry.recipe_hash()),
            kernel: &recipe.kernel,
            headroom_mib: recipe.headroom_mib,
            oci: None,
        },
    )?;
    Ok(manifest)
}

/// Imports a root file system tarball as image `name`. `source` is the
/// file the caller opened (and checked is a regular file): it is copied
/// into the staging directory first, and only the copy is scanned and
/// built from, so the file cannot change between the check and the build.
pub fn import_tar(
    name: &str,
    kernel: &str,
    source: &mut Opened,
    out: &Path,
    env: BuildEnv<'_>,
) -> Result<ImageManifest, BuildError> {
    let mut stages = Stages::new(env.progress, 4);
    stages.begin("copying the tarball");
    let scratch = out.join(crate::store::BUILD_TMP);
    std::fs::create_dir_all(&scratch).map_err(io_err("create", &scratch))?;
    let tar = scratch.join("import.tar");
    copy_sparse(source, &tar, env.cancel)?;
    from_tar(
        &tar,
        out,
        &mut stages,
        env,
        Meta {
            name,
            source: ImageSource::Import,
            recipe_hash: None,
            kernel,
            headroom_mib: 256,
            oci: None,
        },
    )
}

/// Imports an existing ext4 file as image `name`: copied (holes kept) from
/// the file the caller opened as the root file system, with an empty work
/// seed.
pub fn import_ext4(
    name: &str,
    kernel: &str,
    source: &mut Opened,
    out: &Path,
    env: BuildEnv<'_>,
) -> Result<ImageManifest, BuildError> {
    let mut stages = Stages::new(env.progress, 2);
    stages.begin("copying the ext4 file");
    copy_sparse(source, &out.join(ROOTFS), env.cancel)?;
    stages.begin("writing an empty work seed");
    empty_work_seed(out, env)?;
    finish(
        out,
        Meta {
            name,
            source: ImageSource::Import,
            recipe_hash: None,
            kernel,
            headroom_mib: 0,
            oci: None,
        },
    )
}

/// A file the caller opened (and checked), with the path it was opened by
/// for messages.
#[derive(Debug)]
pub struct Opened {
    /// The open file.
    pub file: std::fs::File,
    /// Its path, as given.
    pub path: std::path::PathBuf,
}

/// Copies `source` from its start to a new file `dst`, leaving runs of
/// zeros as holes; checks `cancel` between chunks.
pub fn copy_sparse(
    source: &mut Opened,
    dst: &Path,
    cancel: &banger_sys::Cancel,
) -> Result<u64, BuildError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    const CHUNK: usize = 1 << 20;
    let src_path = source.path.clone();
    let read_err = |e| io_err("read", &src_path)(e);
    let source = &mut source.file;
    source.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut out = std::fs::File::create(dst).map_err(io_err("create", dst))?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Err(BuildError::Run(banger_sys::RunError::Cancelled));
        }
        let n = source.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            out.seek(SeekFrom::Current(i64::try_from(n).unwrap_or(i64::MAX)))
                .map_err(io_err("seek", dst))?;
        } else {
            out.write_all(&buf[..n]).map_err(io_err("write", dst))?;
        }
        total += n as u64;
    }
    out.set_len(total).map_err(io_err("write", dst))?;
    Ok(total)
}

/// Writes an empty `work-seed.ext4` into `out`.
fn empty_work_seed(out: &Path, env: BuildEnv<'_>) -> Result<(), BuildError> {
    let empty = out.join("empty.tar");
    tar::Builder::new(std::fs::File::create(&empty).map_err(io_err("create", &empty))?)
        .into_inner()
        .map_err(io_err("write", &empty))?;
    let seed = out.join(WORK_SEED);
    env.runner.run(
        &ext4::mkfs_from_tar(&empty, &seed, WORK_SEED_HEADROOM_MIB << 20, "work"),
        env.log,
        env.cancel,
    )?;
    std::fs::remove_file(&empty).map_err(io_err("remove", &empty))?;
    Ok(())
}

/// Downloads a bundle (a tarball with `rootfs.ext4` and, optionally,
/// `work-seed.ext4`), checks its SHA-256, and unpacks it into `out`.
fn from_bundle(
    entry: &ImageEntry,
    download: &Download,
    kernel: &str,
    out: &Path,
    env: BuildEnv<'_>,
) -> Result<ImageManifest, BuildError> {
    let mut stages = Stages::new(env.progress, 3);
    stages.begin(format!("downloading {}", download.url));
    let bundle = out.join("bundle.tar");
    crate::fetch::fetch(download, &bundle, env)?;
    stages.begin("unpacking rootfs.ext4");
    let found = crate::fetch::unpack_bundle(&bundle, out, &[ROOTFS, WORK_SEED], &[ROOTFS])?;
    std::fs::remove_file(&bundle).map_err(io_err("remove", &bundle))?;
    stages.begin("checking the work seed");
    if !found.iter().any(|f| f == WORK_SEED) {
        empty_work_seed(out, env)?;
    }
    finish(
        out,
        Meta {
            name: &entry.name,
            source: ImageSource::Build,
            recipe_hash: Some(entry.recipe_hash()),
            kernel,
            headroom_mib: 0,
            oci: None,
        },
    )
}

pub(crate) struct Meta<'a> {
    pub(crate) name: &'a str,
    pub(crate) source: ImageSource,
    pub(crate) recipe_hash: Option<String>,
    pub(crate) kernel: &'a str,
    pub(crate) headroom_mib: u64,
    pub(crate) oci: Option<OciOrigin>,
}

pub(crate) fn from_tar(
    tar: &Path,
    out: &Path,
    stages: &mut Stages<'_>,
    env: BuildEnv<'_>,
    meta: Meta<'_>,
) -> Result<ImageManifest, BuildError> {
    stages.begin("checking the tree");
    let summary = tarscan::scan(tar)?;

    stages.begin("writing rootfs.ext4 (mke2fs -d)");
    let rootfs = out.join(ROOTFS);
    let size = ext4::size_for(summary.bytes, summary.entries, meta.headroom_mib);
    env.runner.run(
        &ext4::mkfs_from_tar(tar, &rootfs, size, banger_init::abi::ROOT_LABEL),
        env.log,
        env.cancel,
    )?;

    stages.begin("writing work-seed.ext4 from /root");
    let seed_tar = out.join("work-seed.tar");
    tarscan::extract_work_seed(tar, &seed_tar)?;
    let seed_summary = tarscan::scan(&seed_tar)?;
    let seed = out.join(WORK_SEED);
    let seed_size = ext4::size_for(
        seed_summary.bytes,
        seed_summary.entries,
        WORK_SEED_HEADROOM_MIB,
    );
    env.runner.run(
        &ext4::mkfs_from_tar(&seed_tar, &seed, seed_size, "work"),
        env.log,
        env.cancel,
    )?;
    for f in [&seed_tar, &out.join("rootfs.tar")] {
        match std::fs::remove_file(f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err("remove", f)(e));
            }
            _ => {}
        }
    }
    finish(out, meta)
}

fn finish(out: &Path, meta: Meta<'_>) -> Result<ImageManifest, BuildError> {
    let manifest = ImageManifest {
        name: meta.name.to_owned(),
        source: meta.source,
        recipe_hash: meta.recipe_hash,
        kernel: meta.kernel.to_owned(),
        built_at: now_rfc3339(),
        size_bytes: allocated_bytes(&out.join(ROOTFS)) + allocated_bytes(&out.join(WORK_SEED)),
        oci: meta.oci,
    };
    ArtifactStore::write_manifest(out, &manifest).map_err(BuildError::Manifest)?;
    Ok(manifest)
}

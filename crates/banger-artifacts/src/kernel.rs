//! Building a catalog kernel from Debian's `linux-source-*` tarball:
//! unpack, `allnoconfig` with the recipe's fragment, check that every
//! symbol of the fragment survived, `make bzImage vmlinux`, keep the images.

use std::path::{Path, PathBuf};

use banger_sys::{Cancel, Cmd, RunError, Runner};
use serde::{Deserialize, Serialize};

use crate::catalog::{KernelEntry, KernelRecipe, KernelSource};
use crate::progress::{Progress, Stages};
use crate::store::{allocated_bytes, now_rfc3339};

/// What a published kernel directory holds (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelManifest {
    /// Catalog name.
    pub name: String,
    /// Hash of the recipe it was built from.
    pub recipe_hash: String,
    /// The Debian source package used.
    pub source_package: String,
    /// When it was built (RFC 3339).
    pub built_at: String,
    /// Bytes on disk of the whole directory.
    pub size_bytes: u64,
}

/// The files of a kernel directory.
pub const VMLINUX: &str = "vmlinux";
/// The compressed image QEMU boots.
pub const BZIMAGE: &str = "bzImage";
/// The final `.config`, for reference.
pub const CONFIG: &str = "config";

/// Errors building an artifact.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A Debian package the build needs is missing.
    #[error("{} is missing: install the {package} package (scripts/setup does)", path.display())]
    NotInstalled {
        /// The package.
        package: String,
        /// The file it would provide.
        path: PathBuf,
    },
    /// A build command failed or was cancelled.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The configured kernel lacks symbols the fragment asks for.
    #[error("the kernel config dropped {} fragment symbol(s): {}", .0.len(), .0.join(", "))]
    MissingSymbols(Vec<String>),
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] banger_sys::IoAt),
    /// The tarball was refused.
    #[error(transparent)]
    Tar(#[from] crate::tarscan::TarError),
    /// A registry image's layers could not be flattened.
    #[error(transparent)]
    Flatten(#[from] crate::oci::flatten::FlattenError),
    /// An image recipe does not parse.
    #[error("image recipe of {name}")]
    Recipe {
        /// The catalog entry.
        name: String,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// A build's manifest could not be written.
    #[error("write the manifest")]
    Manifest(#[source] crate::store::StoreError),
    /// A catalog download names a URL scheme banger does not fetch.
    #[error("download URL {0:?} is not https://, http:// or file://")]
    Scheme(String),
    /// The registry refused or failed the pull.
    #[error(transparent)]
    Registry(crate::oci::FetchError),
    /// The banger-init binary cannot go into an initramfs.
    #[error("{}: {why}", path.display())]
    Init {
        /// The binary.
        path: PathBuf,
        /// Why not.
        why: &'static str,
    },
    /// A download did not have the promised checksum.
    #[error(
        "{url} has SHA-256 {actual}, not the {expected} the catalog promises; nothing was published"
    )]
    Checksum {
        /// What was downloaded.
        url: String,
        /// The catalog's checksum.
        expected: String,
        /// The file's checksum.
        actual: String,
    },
    /// A downloaded bundle held something it must not.
    #[error("{0}")]
    Bundle(String),
}

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_owned();
    move |source| BuildError::Io(banger_sys::IoAt { what, path, source })
}

/// One build's collaborators.
#[derive(Clone, Copy)]
pub struct BuildEnv<'a> {
    /// Runs the build's commands.
    pub runner: &'a dyn Runner,
    /// Receives stage changes.
    pub progress: &'a dyn Progress,
    /// Stops the build.
    pub cancel: &'a Cancel,
    /// Where command output goes (named in errors).
    pub log: &'a Path,
}

impl std::fmt::Debug for BuildEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildEnv")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

/// Makes `entry` in `out` (a staging directory): builds it with `jobs`
/// parallel compiler jobs, or downloads it. Returns its manifest (also
/// written there).
pub fn build(
    entry: &KernelEntry,
    out: &Path,
    jobs: usize,
    env: BuildEnv<'_>,
) -> Result<KernelManifest, BuildError> {
    let source_package = match &entry.source {
        KernelSource::Build(recipe) => {
            compile(recipe, out, jobs, env)?;
            recipe.source_package.clone()
        }
        KernelSource::Download(download) => {
            let mut stages = Stages::new(env.progress, 2);
            stages.begin(format!("downloading {}", download.url));
            let bundle = out.join("kernel.tar");
            crate::fetch::fetch(download, &bundle, env)?;
            stages.begin("unpacking vmlinux and bzImage");
            crate::fetch::unpack_bundle(
                &bundle,
                out,
                &[VMLINUX, BZIMAGE, CONFIG],
                &[VMLINUX, BZIMAGE],
            )?;
            std::fs::remove_file(&bundle).map_err(io_err("remove", &bundle))?;
            "download".to_owned()
        }
    };
    let size_bytes = [BZIMAGE, VMLINUX, CONFIG]
        .iter()
        .map(|f| allocated_bytes(&out.join(f)))
        .sum();
    let manifest = KernelManifest {
        name: entry.name.clone(),
        recipe_hash: entry.recipe_hash(),
        source_package,
        built_at: now_rfc3339(),
        size_bytes,
    };
    crate::store::ArtifactStore::write_manifest(out, &manifest).map_err(BuildError::Manifest)?;
    Ok(manifest)
}

fn compile(
    recipe: &KernelRecipe,
    out: &Path,
    jobs: usize,
    env: BuildEnv<'_>,
) -> Result<(), BuildError> {
    let mut stages = Stages::new(env.progress, 5);
    let tarball = Path::new(&recipe.source_tarball);

    stages.begin(format!("checking {}", recipe.source_package));
    if !tarball.is_file() {
        return Err(BuildError::NotInstalled {
            package: recipe.source_package.clone(),
            path: tarball.to_owned(),
        });
    }

    stages.begin(format!("unpacking {}", recipe.source_package));
    let work = out.join("work");
    std::fs::create_dir_all(&work).map_err(io_err("create", &work))?;
    env.runner.run(
        &Cmd::new("tar").arg("-xf").arg(tarball).arg("-C").arg(&work),
        env.log,
        env.cancel,
    )?;
    let src = source_dir(&work)?;

    stages.begin("configuring (allnoconfig + fragment)");
    let fragment = work.join("banger.fragment");
    std::fs::write(&fragment, &recipe.config_fragment).map_err(io_err("write", &fragment))?;
    let mut allconfig = std::ffi::OsString::from("KCONFIG_ALLCONFIG=");
    allconfig.push(&fragment);
    env.runner.run(
        &Cmd::new("make")
            .arg("-C")
            .arg(&src)
            .arg("allnoconfig")
            .arg(allconfig),
        env.log,
        env.cancel,
    )?;
    let config_path = src.join(".config");
    let config = std::fs::read_to_string(&config_path).map_err(io_err("read", &config_path))?;
    let missing = missing_symbols(&recipe.config_fragment, &config);
    if !missing.is_empty() {
        return Err(BuildError::MissingSymbols(missing));
    }

    stages.begin(format!(
        "compiling (make -j{jobs} bzImage vmlinux, a few minutes)"
    ));
    env.runner.run(
        &Cmd::new("make")
            .arg("-C")
            .arg(&src)
            .arg(format!("-j{jobs}"))
            .args(["bzImage", "vmlinux"]),
        env.log,
        env.cancel,
    )?;

    stages.begin("collecting vmlinux and bzImage");
    for (from, to) in [
        (src.join("arch/x86/boot/bzImage"), BZIMAGE),
        (src.join("vmlinux"), VMLINUX),
        (config_path, CONFIG),
    ] {
        let dst = out.join(to);
        std::fs::rename(&from, &dst).map_err(io_err("move", &from))?;
    }
    std::fs::remove_dir_all(&work).map_err(io_err("remove", &work))?;
    Ok(())
}

/// The single directory the source tarball unpacked into.
fn source_dir(work: &Path) -> Result<PathBuf, BuildError> {
    let entries = std::fs::read_dir(work).map_err(io_err("list", work))?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("Makefile").is_file())
        .ok_or_else(|| {
            BuildError::Io(banger_sys::IoAt {
                what: "find the kernel source in",
                path: work.to_owned(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        })
}

/// Fragment assignments (`CONFIG_X=...`) absent from the final config.
pub fn missing_symbols(fragment: &str, config: &str) -> Vec<String> {
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .filter(|l| !have.contains(l))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records commands and plays `make`: allnoconfig writes a .config with
    /// the fragment's lines (minus `drop`), the build writes the images.
    #[derive(Debug, Default)]
    struct FakeMake {
        calls: Mutex<Vec<String>>,
        drop: Option<&'static str>,
    }

    impl Runner for FakeMake {
        fn run(&self, cmd: &Cmd, _log: &Path, _cancel: &Cancel) -> Result<(), RunError> {
            let line = cmd.display();
            self.calls.lock().unwrap().push(line.clone());
            let arg = |i: usize| PathBuf::from(&cmd.args[i]);
            if line.starts_with("tar -xf") {
                let src = arg(3).join("linux-source-6.1");
                std::fs::create_dir_all(src.join("arch/x86/boot")).unwrap();
                std::fs::write(src.join("Makefile"), "").unwrap();
            } else if line.contains("allnoconfig") {
                let frag = line.split("KCONFIG_ALLCONFIG=").nth(1).unwrap();
                let text = std::fs::read_to_string(frag).unwrap();
                let kept: String = text
                    .lines()
                    .filter(|l| Some(*l) != self.drop)
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(arg(1).join(".config"), kept).unwrap();
            } else if line.contains("bzImage vmlinux") {
                std::fs::write(arg(1).join("arch/x86/boot/bzImage"), b"bz").unwrap();
                std::fs::write(arg(1).join("vmlinux"), b"\x7fELF").unwrap();
            }
            Ok(())
        }
    }

    struct Recorded(Mutex<Vec<String>>);
    impl Progress for Recorded {
        fn stage(&self, s: crate::Stage) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{}/{} {}", s.index, s.total, s.name));
        }
    }

    fn entry_with_tarball(path: &str) -> KernelEntry {
        let mut e = crate::catalog::Catalog::embedded().kernels[0].clone();
        if let KernelSource::Build(recipe) = &mut e.source {
            recipe.source_tarball = path.to_owned();
        }
        e
    }

    #[test]
    fn build_runs_unpack_config_make_in_order_and_keeps_the_images() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("src.tar.xz").display().to_string();
        std::fs::write(&tarball, b"").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let runner = FakeMake::default();
        let progress = Recorded(Mutex::new(Vec::new()));
        let env = BuildEnv {
            runner: &runner,
            progress: &progress,
            cancel: &Cancel::new(),
            log: &dir.path().join("log"),
        };
        let manifest = build(&entry_with_tarball(&tarball), &out, 2, env).unwrap();

        let calls = runner.calls.lock().unwrap();
        assert!(
            calls[0].starts_with(&format!("tar -xf {tarball} -C ")),
            "{calls:?}"
        );
        assert!(
            calls[1].contains(" allnoconfig KCONFIG_ALLCONFIG="),
            "{calls:?}"
        );
        assert!(calls[2].ends_with("-j2 bzImage vmlinux"), "{calls:?}");
        assert_eq!(calls.len(), 3);
        for f in [BZIMAGE, VMLINUX, CONFIG, "manifest.json"] {
            assert!(out.join(f).is_file(), "{f}");
        }
        assert!(!out.join("work").exists(), "the source tree is removed");
        assert_eq!(manifest.name, "generic-6.1");
        assert_eq!(progress.0.lock().unwrap().len(), 5);
        assert!(progress.0.lock().unwrap()[3].starts_with("4/5 compiling"));
    }

    #[test]
    fn dropped_fragment_symbol_fails_the_build_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("src.tar.xz").display().to_string();
        std::fs::write(&tarball, b"").unwrap();
        let runner = FakeMake {
            drop: Some("CONFIG_OVERLAY_FS=y"),
            ..FakeMake::default()
        };
        let env = BuildEnv {
            runner: &runner,
            progress: &crate::progress::NoProgress,
            cancel: &Cancel::new(),
            log: &dir.path().join("log"),
        };
        let err = build(&entry_with_tarball(&tarball), dir.path(), 2, env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kernel config dropped 1 fragment symbol(s): CONFIG_OVERLAY_FS=y"
        );
        assert_eq!(
            runner.calls.lock().unwrap().len(),
            2,
            "no compile after a bad config"
        );
    }

    #[test]
    fn missing_source_package_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let runner = FakeMake::default();
        let env = BuildEnv {
            runner: &runner,
            progress: &crate::progress::NoProgress,
            cancel: &Cancel::new(),
            log: &dir.path().join("log"),
        };
        let err = build(
            &entry_with_tarball("/nonexistent/linux.tar.xz"),
            dir.path(),
            2,
            env,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("install the linux-source-6.1 package"),
            "{err}"
        );
        assert!(runner.calls.lock().unwrap().is_empty());
    }
}

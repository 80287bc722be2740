//! The artifact store in the cache directory: `kernels/<name>/` and
//! `images/<name>/`, each with a `manifest.json`.
//!
//! A build writes into a staging directory beside the final one and is
//! published by one rename, so a reader sees the old artifact or the new
//! one, never half of either. Debris of an interrupted build (a daemon
//! killed mid-pull) is swept by [`ArtifactStore::sweep`] at daemon start.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Prefixes of directories that are not published artifacts.
const STAGING: &str = ".staging-";
const RETIRED: &str = ".retired-";

/// Which kind of artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `kernels/`.
    Kernel,
    /// `images/`.
    Image,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Self::Kernel => "kernels",
            Self::Image => "images",
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error(transparent)]
    Io(#[from] banger_sys::IoAt),
    /// A manifest could not be parsed.
    #[error("manifest {} is corrupt", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io(banger_sys::IoAt { what, path, source })
}

/// The store rooted at the cache directory.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

/// A staging directory; removed on drop unless published.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    published: bool,
}

impl Staging {
    /// Where the build writes.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

impl ArtifactStore {
    /// A store under `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: cache_dir.into(),
        }
    }

    fn kind_dir(&self, kind: Kind) -> PathBuf {
        self.root.join(kind.dir())
    }

    /// The published directory of `name` (which may not exist).
    pub fn dir(&self, kind: Kind, name: &str) -> PathBuf {
        self.kind_dir(kind).join(name)
    }

    /// A fresh, empty staging directory for `name`.
    pub fn stage(&self, kind: Kind, name: &str) -> Result<Staging, StoreError> {
        let parent = self.kind_dir(kind);
        fs::create_dir_all(&parent).map_err(io("create", &parent))?;
        let path = parent.join(format!("{STAGING}{name}-{:016x}", rand::random::<u64>()));
        fs::create_dir(&path).map_err(io("create", &path))?;
        Ok(Staging {
            path,
            published: false,
        })
    }

    /// Writes `manifest` into `dir` through a temporary sibling and a
    /// rename, so a reader never sees a torn file.
    pub fn write_manifest<T: Serialize>(dir: &Path, manifest: &T) -> Result<(), StoreError> {
        let tmp = dir.join(format!(".manifest.json.{:016x}.tmp", rand::random::<u64>()));
        let text = serde_json::to_vec_pretty(manifest).map_err(|source| StoreError::Manifest {
            path: tmp.clone(),
            source,
        })?;
        fs::write(&tmp, text).map_err(io("write", &tmp))?;
        let file = fs::File::open(&tmp).map_err(io("open", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        let dst = dir.join("manifest.json");
        fs::rename(&tmp, &dst).map_err(io("rename", &dst))
    }

    /// Publishes `staging` as `name`, replacing an older artifact of that
    /// name. The replaced one is removed after the swap.
    pub fn publish(
        &self,
        kind: Kind,
        name: &str,
        mut staging: Staging,
    ) -> Result<PathBuf, StoreError> {
        // The build's scratch goes; only what it made is published.
        let scratch = staging.path.join(BUILD_TMP);
        fs::remove_dir_all(&scratch)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(io("remove", &scratch))?;
        let _ = fs::remove_file(staging.path.join(BUILD_GROUP));
        let dst = self.dir(kind, name);
        let retired = self
            .kind_dir(kind)
            .join(format!("{RETIRED}{name}-{:016x}", rand::random::<u64>()));
        let had_old = match fs::rename(&dst, &retired) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io("retire", &dst)(e)),
        };
        fs::rename(&staging.path, &dst).map_err(io("publish", &dst))?;
        staging.published = true;
        if had_old {
            let _ = fs::remove_dir_all(&retired);
        }
        Ok(dst)
    }

    /// Reads the manifest of `name`; `None` when it is not published.
    pub fn manifest<T: DeserializeOwned>(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let path = self.dir(kind, name).join("manifest.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Manifest { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Every published artifact's manifest, by name. Entries whose
    /// manifest is missing or corrupt are skipped: they were never
    /// published whole.
    pub fn list<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>, StoreError> {
        let dir = self.kind_dir(kind);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list", &dir)(e)),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names
            .iter()
            .filter_map(|n| self.manifest(kind, n).ok().flatten())
            .collect())
    }

    /// Removes `name`: renamed aside first so it vanishes from listings at
    /// once, then deleted.
    pub fn delete(&self, kind: Kind, name: &str) -> Result<bool, StoreError> {
        let dst = self.dir(kind, name);
        let retired = self
            .kind_dir(kind)
            .join(format!("{RETIRED}{name}-{:016x}", rand::random::<u64>()));
        match fs::rename(&dst, &retired) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io("delete", &dst)(e)),
        }
        fs::remove_dir_all(&retired).map_err(io("delete", &retired))?;
        Ok(true)
    }

    /// Where VM `vm_id`'s own link to the root file system it was created
    /// from lives (`images/.pins/<id>.ext4`).
    pub fn pinned_rootfs(&self, vm_id: &str) -> PathBuf {
        self.kind_dir(Kind::Image)
            .join(PINS)
            .join(format!("{vm_id}.ext4"))
    }

    /// Hard-links image `image`'s root file system for VM `vm_id`, so the
    /// VM keeps the generation it was created from: a re-pull publishes a
    /// new file under the image's name, the VM's link still names the old
    /// one, and the old blocks are freed when the last VM that uses them
    /// is deleted. (An overlay written over one base is garbage over
    /// another.) The link is in the same directory tree as the image, so
    /// on the same file system. Links are removed only by their VM's
    /// delete: installations may share a cache, so none prunes another's.
    pub fn pin_rootfs(&self, image: &str, vm_id: &str) -> Result<PathBuf, StoreError> {
        if vm_id.is_empty() || !vm_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Io(banger_sys::IoAt {
                what: "pin the root file system for",
                path: PathBuf::from(vm_id),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            }));
        }
        let src = self.dir(Kind::Image, image).join(crate::image::ROOTFS);
        let pin = self.pinned_rootfs(vm_id);
        if let Some(dir) = pin.parent() {
            fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let _ = fs::remove_file(&pin);
        fs::hard_link(&src, &pin).map_err(io("link", &src))?;
        Ok(pin)
    }

    /// Removes VM `vm_id`'s link; a missing one is fine.
    pub fn unpin_rootfs(&self, vm_id: &str) -> Result<(), StoreError> {
        let pin = self.pinned_rootfs(vm_id);
        match fs::remove_file(&pin) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &pin)(e)),
            _ => Ok(()),
        }
    }

    /// Removes staging and retired directories left by an interrupted
    /// process. Only call while no build runs (daemon start).
    pub fn sweep(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut removed = Vec::new();
        for kind in [Kind::Kernel, Kind::Image] {
            let dir = self.kind_dir(kind);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(STAGING) || name.starts_with(RETIRED) {
                    let path = entry.path();
                    stop_builds_in(&path);
                    fs::remove_dir_all(&path).map_err(io("sweep", &path))?;
                    removed.push(path);
                }
            }
        }
        Ok(removed)
    }
}

/// Where VMs' links to their root file systems live, under `images/`.
const PINS: &str = ".pins";

/// Where a build's running command records its process group, inside
/// the staging directory.
pub const BUILD_GROUP: &str = ".build-group";

/// Where a build's commands keep their temporary files (`TMPDIR`), inside
/// the staging directory, so a cancelled or crashed build leaves nothing
/// in `/tmp` (mmdebstrap's unpacked tree is hundreds of MB).
pub const BUILD_TMP: &str = ".tmp";

/// Stops what is left of a build that wrote into `dir`, as its group
/// record says: TERM, then KILL after a grace. Only that group: nothing
/// is judged by command line.
fn stop_builds_in(dir: &Path) {
    if let Some(group) = banger_sys::GroupRecord::read(&dir.join(BUILD_GROUP)) {
        group.stop(std::time::Duration::from_secs(5));
    }
}

/// A runner for one build: every command gets `TMPDIR` inside the staging
/// directory and records its process group there ([`BUILD_GROUP`]).
#[derive(Debug)]
pub struct StagedRunner<'a> {
    inner: &'a dyn banger_sys::Runner,
    staging: PathBuf,
}

impl<'a> StagedRunner<'a> {
    /// Commands of the build staged in `staging`, run by `inner`.
    pub fn new(inner: &'a dyn banger_sys::Runner, staging: &Path) -> Self {
        Self {
            inner,
            staging: staging.to_owned(),
        }
    }
}

impl banger_sys::Runner for StagedRunner<'_> {
    fn run(
        &self,
        cmd: &banger_sys::Cmd,
        log: &Path,
        cancel: &banger_sys::Cancel,
    ) -> Result<(), banger_sys::RunError> {
        let tmp = self.staging.join(BUILD_TMP);
        fs::create_dir_all(&tmp).map_err(|source| banger_sys::RunError::Start {
            command: cmd.display(),
            source,
        })?;
        let cmd = cmd
            .clone()
            .env("TMPDIR", &tmp)
            .record_group(self.staging.join(BUILD_GROUP));
        self.inner.run(&cmd, log, cancel)
    }
}

/// Bytes a file occupies on disk (sparse files count what is allocated).
pub fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// Now, RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct M {
        name: String,
        n: u32,
    }

    use banger_sys::Runner as _;

    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<banger_sys::Cmd>>);

    impl banger_sys::Runner for Recorder {
        fn run(
            &self,
            cmd: &banger_sys::Cmd,
            _log: &Path,
            _cancel: &banger_sys::Cancel,
        ) -> Result<(), banger_sys::RunError> {
            self.0.lock().unwrap().push(cmd.clone());
            Ok(())
        }
    }

    /// A re-pull publishes a new root file system under the image's name;
    /// a VM created before it keeps booting the one it was created from.
    #[test]
    fn a_vm_keeps_its_generation_of_the_root_file_system_across_a_re_pull() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path());
        let publish = |bytes: &[u8]| {
            let s = store.stage(Kind::Image, "deb").unwrap();
            fs::write(s.path().join(crate::image::ROOTFS), bytes).unwrap();
            store.publish(Kind::Image, "deb", s).unwrap();
        };
        publish(b"generation 1");
        let pin = store.pin_rootfs("deb", "0a1b2c3d4e5f6071").unwrap();
        publish(b"generation 2");
        assert_eq!(fs::read(&pin).unwrap(), b"generation 1");
        let current = store.dir(Kind::Image, "deb").join(crate::image::ROOTFS);
        assert_eq!(fs::read(current).unwrap(), b"generation 2");
        // A VM created now gets the new one.
        let newer = store.pin_rootfs("deb", "1111222233334444").unwrap();
        assert_eq!(fs::read(&newer).unwrap(), b"generation 2");
        // A VM's unpin removes only its own link, and is quiet when there
        // is nothing to remove.
        store.unpin_rootfs("1111222233334444").unwrap();
        assert!(pin.exists());
        store.unpin_rootfs("1111222233334444").unwrap();
        assert!(!newer.exists());
        assert!(store.pin_rootfs("deb", "../x").is_err());
        // Pins are not images.
        assert!(
            store
                .list::<serde_json::Value>(Kind::Image)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_builds_commands_keep_temporary_files_and_their_group_in_staging() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path());
        let s = store.stage(Kind::Image, "deb").unwrap();
        let recorder = Recorder::default();
        StagedRunner::new(&recorder, s.path())
            .run(
                &banger_sys::Cmd::new("mmdebstrap"),
                &dir.path().join("l"),
                &banger_sys::Cancel::new(),
            )
            .unwrap();
        let cmd = recorder.0.lock().unwrap().pop().unwrap();
        let tmp = s.path().join(BUILD_TMP);
        assert!(tmp.is_dir());
        assert!(
            cmd.env
                .contains(&("TMPDIR".into(), tmp.clone().into_os_string()))
        );
        assert_eq!(cmd.group_record, Some(s.path().join(BUILD_GROUP)));
        // Scratch left by the build is not published.
        fs::write(tmp.join("leftover"), b"x").unwrap();
        fs::write(s.path().join(BUILD_GROUP), b"1 2 3").unwrap();
        let published = store.publish(Kind::Image, "deb", s).unwrap();
        assert!(!published.join(BUILD_TMP).exists());
        assert!(!published.join(BUILD_GROUP).exists());
    }

    #[test]
    fn staged_build_is_invisible_until_published_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path());
        let s = store.stage(Kind::Image, "deb").unwrap();
        ArtifactStore::write_manifest(
            s.path(),
            &M {
                name: "deb".into(),
                n: 1,
            },
        )
        .unwrap();
        assert!(store.list::<M>(Kind::Image).unwrap().is_empty());
        store.publish(Kind::Image, "deb", s).unwrap();
        assert_eq!(
            store.manifest::<M>(Kind::Image, "deb").unwrap().unwrap().n,
            1
        );

        let s = store.stage(Kind::Image, "deb").unwrap();
        ArtifactStore::write_manifest(
            s.path(),
            &M {
                name: "deb".into(),
                n: 2,
            },
        )
        .unwrap();
        store.publish(Kind::Image, "deb", s).unwrap();
        assert_eq!(
            store.list::<M>(Kind::Image).unwrap(),
            [M {
                name: "deb".into(),
                n: 2
            }]
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("images"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, ["deb"]);
    }

    #[test]
    fn dropped_staging_leaves_nothing_and_sweep_clears_debris() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path());
        let s = store.stage(Kind::Kernel, "k").unwrap();
        let path = s.path().to_owned();
        fs::write(path.join("vmlinux"), b"x").unwrap();
        drop(s);
        assert!(!path.exists());

        // A killed daemon cannot drop its staging dir: sweep does.
        let s = store.stage(Kind::Kernel, "k").unwrap();
        let path = s.path().to_owned();
        std::mem::forget(s);
        assert!(path.exists());
        assert_eq!(store.sweep().unwrap(), std::slice::from_ref(&path));
        assert!(!path.exists());
        assert!(store.list::<M>(Kind::Kernel).unwrap().is_empty());
    }

    #[test]
    fn delete_reports_whether_it_existed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path());
        assert!(!store.delete(Kind::Kernel, "k").unwrap());
        let s = store.stage(Kind::Kernel, "k").unwrap();
        ArtifactStore::write_manifest(
            s.path(),
            &M {
                name: "k".into(),
                n: 1,
            },
        )
        .unwrap();
        store.publish(Kind::Kernel, "k", s).unwrap();
        assert!(store.delete(Kind::Kernel, "k").unwrap());
        assert!(store.manifest::<M>(Kind::Kernel, "k").unwrap().is_none());
    }
}

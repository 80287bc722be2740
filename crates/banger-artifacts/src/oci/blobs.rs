//! The layer blob cache: `<cache>/blobs/sha256/<hex>`, content-addressed,
//! written to a temporary sibling and renamed once its digest checked, so
//! a reader never sees half a blob. Shared by every pull.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use banger_sys::wait::lock;
use banger_sys::{IoAt, io_at};

/// The digests running pulls use, each with how many hold it: a prune
/// leaves them alone. A pull holds a digest through a [`BlobHold`], so the
/// count goes back down however the pull ends.
#[derive(Debug, Default, Clone)]
pub struct BlobsInUse(Arc<Mutex<HashMap<String, usize>>>);

impl BlobsInUse {
    /// Marks `digest` used until the guard is dropped.
    pub fn hold(&self, digest: &str) -> BlobHold {
        *lock(&self.0).entry(digest.to_owned()).or_default() += 1;
        BlobHold {
            in_use: self.clone(),
            digest: digest.to_owned(),
        }
    }

    /// Every digest held now.
    pub fn held(&self) -> HashSet<String> {
        lock(&self.0).keys().cloned().collect()
    }
}

/// One pull's hold on one digest.
#[derive(Debug)]
pub struct BlobHold {
    in_use: BlobsInUse,
    digest: String,
}

impl Drop for BlobHold {
    fn drop(&mut self) {
        let mut counts = lock(&self.in_use.0);
        if let Some(n) = counts.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.digest);
            }
        }
    }
}

/// What a prune removed (or, dry, would remove).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Blobs (and abandoned partial downloads).
    pub blobs: u64,
    /// Their bytes on disk.
    pub bytes: u64,
}

/// The cache.
#[derive(Debug, Clone)]
pub struct BlobCache {
    dir: PathBuf,
}

/// Why the blob cache refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A digest of another algorithm (a hostile manifest's, say).
    #[error("digest {0:?} is not a sha256 digest")]
    NotSha256(String),
    /// A sha256 digest that is not 64 lowercase hex digits.
    #[error("digest {0:?} is not 64 lowercase hex digits")]
    BadHex(String),
    /// A file operation in the cache failed.
    #[error(transparent)]
    Io(#[from] IoAt),
}

/// The hex part of a `sha256:<64 hex>` digest, or why it is not one.
pub fn digest_hex(digest: &str) -> Result<&str, BlobError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| BlobError::NotSha256(digest.to_owned()))?;
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(hex)
    } else {
        Err(BlobError::BadHex(digest.to_owned()))
    }
}

impl BlobCache {
    /// The cache under `cache_dir`.
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            dir: cache_dir.join("blobs").join("sha256"),
        }
    }

    /// Where the blob `digest` lives.
    pub fn path(&self, digest: &str) -> Result<PathBuf, BlobError> {
        Ok(self.dir.join(digest_hex(digest)?))
    }

    /// Whether the blob is cached.
    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.is_file())
    }

    /// A fresh temporary path for downloading `digest`.
    pub fn temp(&self, digest: &str) -> Result<PathBuf, BlobError> {
        std::fs::create_dir_all(&self.dir).map_err(io_at("create", &self.dir))?;
        Ok(self.dir.join(format!(
            "{}.tmp-{:08x}",
            digest_hex(digest)?,
            rand::random::<u32>()
        )))
    }

    /// Publishes a downloaded, verified temporary file as `digest`.
    pub fn commit(&self, temp: &Path, digest: &str) -> Result<PathBuf, BlobError> {
        let path = self.path(digest)?;
        std::fs::rename(temp, &path).map_err(io_at("publish", &path))?;
        Ok(path)
    }

    /// Removes every blob and partial download whose digest is not in
    /// `in_use` (those of pulls running now), or only counts them when
    /// `dry_run`.
    pub fn prune(&self, in_use: &HashSet<String>, dry_run: bool) -> std::io::Result<Pruned> {
        let mut pruned = Pruned::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pruned),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let hex = name.split(".tmp-").next().unwrap_or_default();
            if in_use.contains(&format!("sha256:{hex}")) {
                continue;
            }
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            if !dry_run {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {}
                    // A peer prune got there first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            pruned.blobs += 1;
            pruned.bytes += std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_stays_held_until_its_last_hold_is_dropped() {
        let in_use = BlobsInUse::default();
        let a = in_use.hold("sha256:a");
        let a2 = in_use.hold("sha256:a");
        let b = in_use.hold("sha256:b");
        drop(a);
        assert_eq!(
            in_use.held(),
            HashSet::from(["sha256:a".into(), "sha256:b".into()])
        );
        drop((a2, b));
        assert!(in_use.held().is_empty());
    }

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn digests_must_be_sha256_hex_so_they_name_one_file() {
        assert!(digest_hex(A).is_ok());
        for bad in [
            "sha512:aa",
            "sha256:../../etc/passwd",
            "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "sha256:aaaa",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prune_spares_what_a_running_pull_uses_and_dry_run_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        for digest in [A, B] {
            let temp = cache.temp(digest).unwrap();
            std::fs::write(&temp, vec![7u8; 8192]).unwrap();
            cache.commit(&temp, digest).unwrap();
        }
        // B's pull is still downloading another copy.
        std::fs::write(cache.temp(B).unwrap(), b"partial").unwrap();
        let in_use: HashSet<String> = [B.to_owned()].into();
        let dry = cache.prune(&in_use, true).unwrap();
        assert_eq!(dry.blobs, 1);
        assert!(dry.bytes >= 8192, "{dry:?}");
        assert!(cache.contains(A));
        let done = cache.prune(&in_use, false).unwrap();
        assert_eq!(done, dry);
        assert!(!cache.contains(A) && cache.contains(B));
        let rest = cache.prune(&HashSet::new(), false).unwrap();
        assert_eq!(rest.blobs, 2, "the blob and the partial download");
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }
}

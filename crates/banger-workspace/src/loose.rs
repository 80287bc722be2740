//! Loose git objects, carried as one pack. A guest under TCG pays for
//! every file it creates: the 4,745 loose objects of a freshly committed
//! 5,000-file tree cost a prepare about 1.5 s more as files than as one
//! pack. `git pack-objects` makes that pack on the host, beside the
//! stream (it runs while the work tree is sent), with no delta search and
//! light compression: the guest reads it as it is, with its index.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::repo::{RepoError, git};

/// Loose objects at least this large go as files: they are already
/// deflated, a few of them cost nothing per file, and repacking a
/// 2 GiB object would cost CPU for no gain.
pub(crate) const PACK_BELOW: u64 = 1 << 20;

/// One loose object file.
#[derive(Debug, Clone)]
pub(crate) struct Loose {
    /// `xx/yyyy...`, relative to the objects directory.
    pub(crate) name: String,
    /// Where it is.
    pub(crate) path: PathBuf,
    /// Its size on disk.
    pub(crate) size: u64,
}

impl Loose {
    /// The object's id (hex).
    fn id(&self) -> String {
        self.name.replace('/', "")
    }
}

/// The loose objects in `objects` (git's two-level layout); anything
/// else there (packs, `info/`, a temporary file) is not listed.
pub(crate) fn list(objects: &Path) -> Result<Vec<Loose>, RepoError> {
    let read = |path: &Path| {
        let path = path.to_owned();
        move |source| RepoError::Read { path, source }
    };
    let mut found = Vec::new();
    let fans = match std::fs::read_dir(objects) {
        Ok(fans) => fans,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(read(objects)(e)),
    };
    for fan in fans {
        let fan = fan.map_err(read(objects))?;
        let Some(fan_name) = fan.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !fan.file_type().map_err(read(objects))?.is_dir() {
            continue;
        }
        for object in std::fs::read_dir(fan.path()).map_err(read(&fan.path()))? {
            let object = object.map_err(read(&fan.path()))?;
            let Some(rest) = object.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let name = format!("{fan_name}/{rest}");
            let meta = object.metadata().map_err(read(&object.path()))?;
            if !meta.is_file() || !banger_api::workspace::is_object_name(&name) {
                continue;
            }
            found.push(Loose {
                name,
                path: object.path(),
                size: meta.len(),
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// A pack made of loose objects, in a scratch directory of its own.
#[derive(Debug)]
pub(crate) struct Made {
    /// The pack's name (`pack-<hex>`), as git named it.
    pub(crate) name: String,
    scratch: tempfile::TempDir,
}

impl Made {
    /// The pack's file with extension `ext` (`pack`, `idx`).
    pub(crate) fn file(&self, ext: &str) -> PathBuf {
        self.scratch.path().join(format!("{}.{ext}", self.name))
    }
}

/// Packs `objects` of the repository at `top` (also looking in `extra`,
/// a scratch object directory such as the base's) into a new pack; the
/// repository is not written. `None` when there is nothing to pack.
pub(crate) fn pack(
    top: &Path,
    extra: Option<&Path>,
    objects: &[Loose],
) -> Result<Option<Made>, RepoError> {
    if objects.is_empty() {
        return Ok(None);
    }
    let scratch = tempfile::tempdir().map_err(|source| RepoError::Read {
        path: std::env::temp_dir(),
        source,
    })?;
    let mut ids = String::with_capacity(objects.len() * 41);
    for object in objects {
        ids.push_str(&object.id());
        ids.push('\n');
    }
    // git writes its temporary files in the object directory: a scratch
    // one, so the repository is never written, with the repository's
    // objects (and the base's) reached as alternates.
    let objects = scratch.path().join("objects");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RepoError::Read { path, source }
    };
    std::fs::create_dir_all(objects.join("pack")).map_err(io(&objects))?;
    let mut alternates = std::ffi::OsString::from(top.join(".git/objects"));
    if let Some(extra) = extra {
        alternates.push(":");
        alternates.push(extra);
    }
    let mut cmd = git(top);
    // The user's global and system settings (a pack size limit would
    // split the pack, say) are not wanted here; these are.
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_OBJECT_DIRECTORY", &objects)
        .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", alternates);
    let settings: [&OsStr; 10] = [
        "-c".as_ref(),
        "pack.compression=1".as_ref(),
        "-c".as_ref(),
        "pack.writeReverseIndex=false".as_ref(),
        "-c".as_ref(),
        "pack.packSizeLimit=0".as_ref(),
        "-c".as_ref(),
        "pack.threads=1".as_ref(),
        "-c".as_ref(),
        "core.fsmonitor=false".as_ref(),
    ];
    let mut child = cmd
        .args(settings)
        .args(["pack-objects", "-q", "--window=0", "--depth=0"])
        .arg(scratch.path().join("pack"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RepoError::Spawn)?;
    let mut stdin = child.stdin.take();
    // Written beside the wait: the list can outgrow the pipe's buffer.
    let writer = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(ids.as_bytes());
        }
    });
    let out = child.wait_with_output().map_err(RepoError::Spawn)?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(RepoError::Git {
            args: "pack-objects (of the repository's loose objects)".to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let name = format!("pack-{hash}");
    if !banger_api::workspace::is_object_name(&format!("pack/{name}.pack")) {
        return Err(RepoError::Git {
            args: "pack-objects".to_owned(),
            stderr: format!("named its pack {hash:?}"),
        });
    }
    Ok(Some(Made { name, scratch }))
}

//! Whether a file root runs could be changed by anyone but root: it and
//! every directory above it must be root's and writable by no one else.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a path is not root's alone.
#[derive(Debug, thiserror::Error)]
pub enum NotRootsAlone {
    /// It, or a directory above it, cannot be examined.
    #[error("cannot stat {path}: {source}")]
    Stat {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// It is a symlink, which whoever owns its directory may repoint.
    #[error("{path} is a symlink")]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// It, or a directory above it, belongs to someone else.
    #[error("{path} belongs to uid {uid}, not root")]
    Owner {
        /// The path.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Group or others may write it.
    #[error("{path} is writable by group or others (mode {mode:o})")]
    Writable {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl NotRootsAlone {
    /// The path at fault.
    pub fn path(&self) -> &Path {
        match self {
            Self::Stat { path, .. }
            | Self::Symlink { path }
            | Self::Owner { path, .. }
            | Self::Writable { path, .. } => path,
        }
    }
}

/// Checks that `path` (absolute, not a symlink) and every directory above
/// it belong to root and are writable by no one else. A sticky directory
/// above it (`/tmp`) is excused: no one can replace another's entry there.
pub fn roots_alone(path: &Path) -> Result<(), NotRootsAlone> {
    if !path.is_absolute() {
        return Err(NotRootsAlone::Stat {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an absolute path"),
        });
    }
    for (depth, at) in path.ancestors().enumerate() {
        if at.as_os_str().is_empty() {
            continue;
        }
        let meta = std::fs::symlink_metadata(at).map_err(|source| NotRootsAlone::Stat {
            path: at.to_owned(),
            source,
        })?;
        if meta.file_type().is_symlink() {
            return Err(NotRootsAlone::Symlink {
                path: at.to_owned(),
            });
        }
        if meta.uid() != 0 {
            return Err(NotRootsAlone::Owner {
                path: at.to_owned(),
                uid: meta.uid(),
            });
        }
        let mode = meta.mode() & 0o7777;
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !(sticky && depth > 0) {
            return Err(NotRootsAlone::Writable {
                path: at.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

/// Checks the program a name on `PATH` leads to: every symlink on the way
/// lies in a directory that is root's alone (else its owner could repoint
/// it), and so does the file it ends at.
pub fn program_roots_alone(found: &Path) -> Result<(), NotRootsAlone> {
    let real = |p: &Path| {
        std::fs::canonicalize(p).map_err(|source| NotRootsAlone::Stat {
            path: p.to_owned(),
            source,
        })
    };
    let mut at = found.to_owned();
    // The kernel's own limit on links followed.
    for _ in 0..40 {
        let dir = real(at.parent().unwrap_or_else(|| Path::new("/")))?;
        roots_alone(&dir)?;
        match std::fs::read_link(&at) {
            Ok(next) => at = dir.join(next),
            Err(_) => return roots_alone(&real(&at)?),
        }
    }
    Err(NotRootsAlone::Stat {
        path: found.to_owned(),
        source: std::io::Error::other("too many levels of symbolic links"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn system_binaries_are_roots_alone_and_a_users_file_is_not() {
        roots_alone(Path::new("/bin/sh")).unwrap_or_else(|e| {
            // A merged /usr makes /bin a link: the file itself is what counts.
            assert!(matches!(e, NotRootsAlone::Symlink { .. }), "{e}");
            roots_alone(&std::fs::canonicalize("/bin/sh").unwrap()).unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vmm");
        std::fs::write(&file, "").unwrap();
        if crate::euid() != 0 {
            assert!(matches!(
                roots_alone(&file),
                Err(NotRootsAlone::Owner { .. })
            ));
            return;
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        roots_alone(&file).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o775)).unwrap();
        let err = roots_alone(&file).unwrap_err();
        assert!(
            matches!(err, NotRootsAlone::Writable { mode: 0o775, .. }),
            "{err}"
        );
        assert_eq!(err.path(), file);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(dir.path(), Some(1234), None).unwrap();
        let err = roots_alone(&file).unwrap_err();
        assert!(
            matches!(&err, NotRootsAlone::Owner { uid: 1234, path } if path == dir.path()),
            "{err}"
        );
        std::os::unix::fs::chown(dir.path(), Some(0), None).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(
            roots_alone(&link),
            Err(NotRootsAlone::Symlink { .. })
        ));
        // A sticky, world-writable directory above is excused; as the
        // path itself it is not.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        roots_alone(&file).unwrap();
        assert!(roots_alone(dir.path()).is_err());
        assert!(roots_alone(Path::new("bin/sh")).is_err(), "a relative path");
    }

    #[test]
    fn a_program_reached_through_a_link_someone_else_may_repoint_is_refused() {
        program_roots_alone(Path::new("/bin/sh")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.path().join("qemu");
        std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
        if crate::euid() == 0 {
            program_roots_alone(&link).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(1234), None).unwrap();
        }
        let err = program_roots_alone(&link).unwrap_err();
        assert_eq!(
            err.path(),
            std::fs::canonicalize(dir.path()).unwrap(),
            "{err}"
        );
    }
}

//! The directories banger uses and the files in them.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Errors resolving or creating banger's directories.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Neither the override, the XDG variable nor `HOME` gave a directory.
    #[error("cannot place the {what} directory: set {var} or HOME")]
    NoHome {
        /// Which directory.
        what: &'static str,
        /// The variable that would have placed it.
        var: &'static str,
    },
    /// An override variable held a relative path.
    #[error("{var} must be an absolute path, got {value:?}")]
    Relative {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: PathBuf,
    },
    /// A directory could not be created or inspected.
    #[error("directory {}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A directory exists but is not ours to use.
    #[error("directory {} is unsafe to use: {reason}", path.display())]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The socket path would not fit in a unix socket address.
    #[error(
        "socket path {} is {len} bytes, longer than the {MAX_SOCKET_PATH} a unix socket allows; set BANGER_RUNTIME_DIR to a shorter directory",
        path.display()
    )]
    SocketPathTooLong {
        /// The socket path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
}

/// banger's four directories. Construct with [`Layout::from_env`] or, in
/// tests, [`Layout::under`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `config.toml` lives here.
    pub config_dir: PathBuf,
    /// Durable state: the store, logs, the SSH key.
    pub state_dir: PathBuf,
    /// Rebuildable artifacts: kernels, images, layer blobs.
    pub cache_dir: PathBuf,
    /// The daemon's socket; gone after a reboot.
    pub runtime_dir: PathBuf,
}

impl Layout {
    /// Resolves the directories from the process environment.
    pub fn from_env() -> Result<Self, LayoutError> {
        // SAFETY: getuid cannot fail and touches no memory.
        let uid = unsafe { libc::getuid() };
        let mut layout = Self::resolve(|k| std::env::var_os(k), uid)?;
        // In system mode the owner's daemon is a service without a login
        // session: its runtime directory is the install's, for the CLI too.
        if std::env::var_os("BANGER_RUNTIME_DIR").is_none_or(|v| v.is_empty())
            && let Ok(Some(install)) =
                crate::install::Install::load(Path::new(crate::install::INSTALL_FILE))
            && install.owner_uid == uid
        {
            layout.runtime_dir = install.runtime_dir;
        }
        Ok(layout)
    }

    /// Resolves the directories from `env`, for a user `uid`. `BANGER_*_DIR`
    /// wins, then the XDG variable, then the XDG default under `HOME`; the
    /// runtime directory falls back to `/run/banger` for root (a directory
    /// in `/tmp` could be made first by any local user, to block or watch
    /// the daemon) and to `/tmp/banger-<uid>` for anyone else (checked to
    /// be theirs and private by [`Layout::ensure`]).
    pub fn resolve(env: impl Fn(&str) -> Option<OsString>, uid: u32) -> Result<Self, LayoutError> {
        let absolute = |var: &'static str| -> Result<Option<PathBuf>, LayoutError> {
            match env(var).filter(|v| !v.is_empty()).map(PathBuf::from) {
                Some(p) if p.is_absolute() => Ok(Some(p)),
                Some(p) if var.starts_with("BANGER_") => {
                    Err(LayoutError::Relative { var, value: p })
                }
                // The XDG spec says relative values are invalid and must be ignored.
                _ => Ok(None),
            }
        };
        let home = absolute("HOME")?;
        let pick = |what: &'static str,
                    over: &'static str,
                    xdg: &'static str,
                    home_rel: &str|
         -> Result<PathBuf, LayoutError> {
            if let Some(p) = absolute(over)? {
                return Ok(p);
            }
            if let Some(p) = absolute(xdg)? {
                return Ok(p.join("banger"));
            }
            home.as_ref()
                .map(|h| h.join(home_rel).join("banger"))
                .ok_or(LayoutError::NoHome { what, var: xdg })
        };
        let runtime_dir = match absolute("BANGER_RUNTIME_DIR")? {
            Some(p) => p,
            None => match absolute("XDG_RUNTIME_DIR")? {
                Some(p) => p.join("banger"),
                None if uid == 0 => PathBuf::from("/run/banger"),
                None => PathBuf::from(format!("/tmp/banger-{uid}")),
            },
        };
        Ok(Self {
            config_dir: pick("config", "BANGER_CONFIG_DIR", "XDG_CONFIG_HOME", ".config")?,
            state_dir: pick(
                "state",
                "BANGER_STATE_DIR",
                "XDG_STATE_HOME",
                ".local/state",
            )?,
            cache_dir: pick("cache", "BANGER_CACHE_DIR", "XDG_CACHE_HOME", ".cache")?,
            runtime_dir,
        })
    }

    /// All four directories under one root, as tests want them.
    pub fn under(root: &Path) -> Self {
        Self {
            config_dir: root.join("config"),
            state_dir: root.join("state"),
            cache_dir: root.join("cache"),
            runtime_dir: root.join("run"),
        }
    }

    /// The environment that makes another banger process resolve this same
    /// layout (passed to a daemon the CLI starts).
    pub fn env_overrides(&self) -> [(&'static str, &Path); 4] {
        [
            ("BANGER_CONFIG_DIR", &self.config_dir),
            ("BANGER_STATE_DIR", &self.state_dir),
            ("BANGER_CACHE_DIR", &self.cache_dir),
            ("BANGER_RUNTIME_DIR", &self.runtime_dir),
        ]
    }

    /// Creates the state, cache and runtime directories 0700 and checks that
    /// each is a real directory owned by us. The config directory is only
    /// read, so it is left alone.
    pub fn ensure(&self) -> Result<(), LayoutError> {
        let uid = banger_sys::euid();
        for dir in [&self.state_dir, &self.cache_dir, &self.runtime_dir] {
            ensure_private_dir(dir, uid)?;
        }
        self.check_socket_path()
    }

    /// For a daemon running as root, refuses a config directory or
    /// `config.toml` that someone else could have written: the config
    /// names binaries (`firecracker_bin`, `jailer_bin`) that root then
    /// runs. Each must be owned by root and not writable by group or
    /// others; what does not exist is fine (the defaults apply).
    pub fn check_config_trusted(&self, euid: u32) -> Result<(), LayoutError> {
        if euid != 0 {
            return Ok(());
        }
        check_trusted(&self.config_dir, 0)?;
        check_trusted(&self.config_path(), 0)
    }

    fn check_socket_path(&self) -> Result<(), LayoutError> {
        let path = self.socket_path();
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(LayoutError::SocketPathTooLong { path, len });
        }
        Ok(())
    }

    /// The daemon's API socket.
    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.sock")
    }

    /// The daemon's single-instance lock. It lives beside the store it
    /// protects: two daemons must never share a state directory, whatever
    /// their runtime directories.
    pub fn lock_path(&self) -> PathBuf {
        self.state_dir.join("bangerd.lock")
    }

    /// The SQLite store.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("state.db")
    }

    /// The daemon's JSON-lines log.
    pub fn log_path(&self) -> PathBuf {
        self.state_dir.join("bangerd.log")
    }

    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }
}

/// `path`, when it exists, is owned by `owner` and writable by no one else.
fn check_trusted(path: &Path, owner: u32) -> Result<(), LayoutError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(LayoutError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let unsafe_path = |reason: String| LayoutError::Unsafe {
        path: path.to_owned(),
        reason,
    };
    if meta.file_type().is_symlink() {
        return Err(unsafe_path(
            "a symlink; root reads no config through one".into(),
        ));
    }
    if meta.uid() != owner {
        return Err(unsafe_path(format!(
            "owned by uid {}, not {owner}: a daemon running as root reads no config another user could have written",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_path(format!(
            "mode {:o} lets group or others write it: a daemon running as root reads no such config (chmod go-w)",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

fn ensure_private_dir(dir: &Path, uid: u32) -> Result<(), LayoutError> {
    let io = |source| LayoutError::Io {
        path: dir.to_owned(),
        source,
    };
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(io(e)),
    }
    // lstat: a symlink planted where our directory should be is refused,
    // not followed (matters for the shared /tmp fallback).
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    let unsafe_dir = |reason: String| LayoutError::Unsafe {
        path: dir.to_owned(),
        reason,
    };
    if !meta.file_type().is_dir() {
        return Err(unsafe_dir(
            "not a directory (a symlink or a file is in its place)".into(),
        ));
    }
    if meta.uid() != uid {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not by us (uid {uid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn a_config_others_could_write_is_refused_for_root() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::under(root.path());
        // SAFETY: getuid cannot fail and touches no memory.
        let me = unsafe { libc::getuid() };
        // Nothing there: the defaults apply.
        check_trusted(&layout.config_dir, me).unwrap();
        std::fs::create_dir_all(&layout.config_dir).unwrap();
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(&layout.config_dir, 0o755).unwrap();
        std::fs::write(layout.config_path(), "vmm = \"qemu\"\n").unwrap();
        mode(&layout.config_path(), 0o644).unwrap();
        check_trusted(&layout.config_dir, me).unwrap();
        check_trusted(&layout.config_path(), me).unwrap();

        let err = check_trusted(&layout.config_dir, me + 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("owned by uid {me}")), "{err}");
        mode(&layout.config_path(), 0o666).unwrap();
        let err = check_trusted(&layout.config_path(), me)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mode 666") && err.contains("config.toml"),
            "{err}"
        );
        mode(&layout.config_dir, 0o777).unwrap();
        assert!(check_trusted(&layout.config_dir, me).is_err());
        // Only a daemon running as root asks.
        layout.check_config_trusted(me.max(1)).unwrap();
    }

    #[test]
    fn roots_runtime_directory_is_never_under_tmp() {
        let layout = Layout::resolve(env(&[("HOME", "/root")]), 0).unwrap();
        assert_eq!(layout.runtime_dir, Path::new("/run/banger"));
        let layout = Layout::resolve(
            env(&[("HOME", "/root"), ("XDG_RUNTIME_DIR", "/run/user/0")]),
            0,
        )
        .unwrap();
        assert_eq!(layout.runtime_dir, Path::new("/run/user/0/banger"));
    }

    #[test]
    fn xdg_defaults_under_home() {
        let layout = Layout::resolve(env(&[("HOME", "/home/u")]), 1000).unwrap();
        assert_eq!(layout.config_dir, Path::new("/home/u/.config/banger"));
        assert_eq!(layout.state_dir, Path::new("/home/u/.local/state/banger"));
        assert_eq!(layout.cache_dir, Path::new("/home/u/.cache/banger"));
        assert_eq!(layout.runtime_dir, Path::new("/tmp/banger-1000"));
    }

    #[test]
    fn xdg_variables_then_overrides_win() {
        let layout = Layout::resolve(
            env(&[
                ("HOME", "/home/u"),
                ("XDG_STATE_HOME", "/xdg/state"),
                ("XDG_RUNTIME_DIR", "/run/user/1000"),
                ("XDG_CACHE_HOME", "relative/is/ignored"),
                ("BANGER_CONFIG_DIR", "/o/config"),
            ]),
            1000,
        )
        .unwrap();
        assert_eq!(layout.config_dir, Path::new("/o/config"));
        assert_eq!(layout.state_dir, Path::new("/xdg/state/banger"));
        assert_eq!(layout.cache_dir, Path::new("/home/u/.cache/banger"));
        assert_eq!(
            layout.socket_path(),
            Path::new("/run/user/1000/banger/bangerd.sock")
        );
    }

    #[test]
    fn relative_override_is_an_error_naming_the_variable() {
        let err =
            Layout::resolve(env(&[("HOME", "/h"), ("BANGER_STATE_DIR", "st")]), 1).unwrap_err();
        assert!(err.to_string().contains("BANGER_STATE_DIR"), "{err}");
    }

    #[test]
    fn no_home_and_no_xdg_names_the_variable() {
        let err = Layout::resolve(env(&[]), 1).unwrap_err();
        assert!(err.to_string().contains("XDG_CONFIG_HOME or HOME"), "{err}");
    }

    #[test]
    fn ensure_creates_private_dirs_and_tightens_loose_ones() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::under(root.path());
        std::fs::create_dir_all(&layout.state_dir).unwrap();
        std::fs::set_permissions(&layout.state_dir, std::fs::Permissions::from_mode(0o755))
            .unwrap();
        layout.ensure().unwrap();
        for dir in [&layout.state_dir, &layout.cache_dir, &layout.runtime_dir] {
            let mode = std::fs::metadata(dir).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }

    #[test]
    fn ensure_refuses_symlink_in_place_of_runtime_dir() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::under(root.path());
        std::fs::create_dir_all(root.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.path().join("elsewhere"), &layout.runtime_dir).unwrap();
        let err = layout.ensure().unwrap_err();
        assert!(err.to_string().contains("unsafe to use"), "{err}");
    }

    #[test]
    fn overlong_socket_path_is_refused_with_hint() {
        let root = tempfile::tempdir().unwrap();
        let mut layout = Layout::under(root.path());
        layout.runtime_dir = root.path().join("r".repeat(120));
        let err = layout.ensure().unwrap_err();
        assert!(err.to_string().contains("BANGER_RUNTIME_DIR"), "{err}");
    }
}

//! `/etc/banger/install.toml`: what `banger system install` set up: whose
//! banger it is, which binaries the services run, the bridge and subnet
//! the root helper serves, and where the owner's daemon listens.
//!
//! Root writes it; anyone may read it. Its presence means system mode.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the record lives on a host.
pub const INSTALL_FILE: &str = "/etc/banger/install.toml";

/// What a system install recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    /// The owner's user name.
    pub owner: String,
    /// The owner's uid (never 0).
    pub owner_uid: u32,
    /// The owner's primary gid.
    pub owner_gid: u32,
    /// The owner's home directory.
    pub owner_home: PathBuf,
    /// The banger version installed.
    pub version: String,
    /// Its git commit.
    pub commit: String,
    /// The directory holding `banger`, `bangerd` and `bangerd-root`.
    pub bin_dir: PathBuf,
    /// The bridge the helper serves.
    pub bridge: String,
    /// The subnet the helper serves.
    pub bridge_subnet: String,
    /// The owner's daemon's runtime directory (its socket).
    pub runtime_dir: PathBuf,
    /// The root helper's socket.
    pub helper_socket: PathBuf,
}

/// Reading the record failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// It could not be read.
    #[error("read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// It is not a record this banger understands.
    #[error("{} is not a banger install record: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
}

impl Install {
    /// The record at `path`; `None` when there is none (no system install).
    pub fn load(path: &Path) -> Result<Option<Self>, InstallError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(InstallError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| InstallError::Parse {
                path: path.to_owned(),
                message: e.message().to_owned(),
            })
    }

    /// The record as TOML, with a header saying who wrote it.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# Written by `banger system install`; `banger system uninstall` removes it.\n{body}"
        )
    }

    /// The runtime directory of `uid`'s daemon in system mode:
    /// systemd's `RuntimeDirectory=` for the service.
    pub fn runtime_dir_for(uid: u32) -> PathBuf {
        PathBuf::from(format!("/run/banger-{uid}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Install {
        Install {
            owner: "alice".into(),
            owner_uid: 1000,
            owner_gid: 1000,
            owner_home: "/home/alice".into(),
            version: "0.1.0".into(),
            commit: "abc".into(),
            bin_dir: "/usr/local/bin".into(),
            bridge: "banger0".into(),
            bridge_subnet: "10.77.0.1/24".into(),
            runtime_dir: Install::runtime_dir_for(1000),
            helper_socket: "/run/banger-root/bangerd-root.sock".into(),
        }
    }

    #[test]
    fn the_record_round_trips_and_a_missing_one_is_no_install() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install.toml");
        assert_eq!(Install::load(&path).unwrap(), None);
        std::fs::write(&path, sample().to_toml()).unwrap();
        assert_eq!(Install::load(&path).unwrap(), Some(sample()));
        std::fs::write(&path, "owner = \"x\"\nshell = \"/bin/sh\"\n").unwrap();
        let err = Install::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not a banger install record"), "{err}");
    }
}

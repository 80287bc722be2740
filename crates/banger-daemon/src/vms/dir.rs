//! One VM's directory, `$STATE/vms/<id>/`, and every path in it: the one
//! place that names them (the VMM's own files are `banger_vmm::VmFiles`,
//! handed out from here).

use std::path::{Path, PathBuf};

use banger_vmm::VmFiles;

use super::disks::DiskFiles;

/// A VM's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDir {
    path: PathBuf,
}

impl VmDir {
    /// The directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the VMM uses: sockets, pidfile, console and VMM logs.
    pub fn vmm(&self) -> VmFiles {
        VmFiles::new(&self.path)
    }

    /// The overlay, work and workspace disks.
    pub fn disks(&self) -> DiskFiles {
        DiskFiles {
            overlay: self.path.join("overlay.ext4"),
            work: self.path.join("work.ext4"),
            repo: self.path.join("repo.ext4"),
        }
    }

    /// `handles.json`: the running VMM's pid, tap, accel and driver.
    pub fn handles(&self) -> PathBuf {
        self.path.join("handles.json")
    }

    /// The marker present while a create writes the disks: a daemon that
    /// finds it knows the create never finished.
    pub fn creating(&self) -> PathBuf {
        self.path.join(".creating")
    }

    /// What the create's commands printed.
    pub fn create_log(&self) -> PathBuf {
        self.path.join("create.log")
    }

    /// What the stop's SSH poweroff printed.
    pub fn stop_log(&self) -> PathBuf {
        self.path.join("stop.log")
    }

    /// Where the create generates the guest's host key (removed once it is
    /// in the overlay).
    pub fn host_key(&self) -> PathBuf {
        self.path.join("host_key")
    }
}

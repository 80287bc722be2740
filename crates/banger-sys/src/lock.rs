//! A single-instance lock: an exclusive `flock` on a file that also records
//! the holder's pid.
//!
//! The kernel drops the lock when the holder dies, however it dies, so a lock
//! file left behind by a SIGKILLed process never blocks the next one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Errors taking an [`InstanceLock`].
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds the lock.
    #[error("{} is held by pid {}", path.display(), pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()))]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, when it could be read.
        pid: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("lock file {}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// A held exclusive lock; released when dropped or when the process dies.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock without waiting and records our pid in it.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::Held {
                    path: path.to_owned(),
                    pid: read_pid(&mut file),
                });
            }
            return Err(io(err));
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pid recorded by whoever holds the lock at `path` now, or `None`
    /// when nobody does.
    pub fn holder(path: &Path) -> Option<u32> {
        let mut file = File::open(path).ok()?;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        if rc == 0 {
            // We could take it: nobody holds it. Our shared lock drops with `file`.
            return None;
        }
        read_pid(&mut file)
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Clear the pid so a reader never sees ours after we are gone; the
        // flock itself is released when the descriptor closes.
        let _ = self.file.set_len(0);
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_reports_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.lock");
        let held = InstanceLock::acquire(&path).unwrap();
        match InstanceLock::acquire(&path) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        assert_eq!(InstanceLock::holder(&path), Some(std::process::id()));
        drop(held);
        assert_eq!(InstanceLock::holder(&path), None);
        InstanceLock::acquire(&path).unwrap();
    }

    #[test]
    fn stale_lock_file_with_pid_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.lock");
        std::fs::write(&path, "999999\n").unwrap();
        assert_eq!(InstanceLock::holder(&path), None);
        let lock = InstanceLock::acquire(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap().trim(),
            std::process::id().to_string()
        );
    }
}

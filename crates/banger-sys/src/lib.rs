//! The one crate that spawns processes and makes the few raw syscalls banger
//! needs on the host side.
//!
//! Everything else goes through here so every argv is built in one place and
//! clippy can ban `Command::new` elsewhere (`clippy.toml`). This crate holds
//! mechanism only; which program to run and why is the caller's business.

// This crate is the one place allowed to build `Command`s (see clippy.toml).
#![allow(clippy::disallowed_methods)]

pub mod group;
pub mod host;
pub mod lock;
pub mod mount;
pub mod nofollow;
pub mod peer;
pub mod process;
pub mod run;
pub mod trust;
pub mod wait;

pub use group::GroupRecord;
pub use lock::{InstanceLock, LockError};
pub use process::{DetachedCommand, SpawnError, pid_alive};
pub use run::{Cancel, Cmd, HostRunner, RunError, Runner, output};

/// A file operation that failed: what it was doing, on which path, and
/// what the OS said. Every crate's error enum wraps this one type.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}", path.display())]
pub struct IoAt {
    /// What was being done (`read`, `create`, `grow`).
    pub what: &'static str,
    /// On which path.
    pub path: std::path::PathBuf,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

/// Turns an `io::Error` from doing `what` on `path` into an [`IoAt`]:
/// `.map_err(io_at("read", &path))`.
pub fn io_at(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> IoAt {
    let path = path.to_owned();
    move |source| IoAt { what, path, source }
}

/// This process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// The name of the user with id `uid` (through NSS, as `id -un` finds it),
/// if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain data; all zeroes is a valid value to overwrite.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    loop {
        // SAFETY: every pointer is valid for the call, and buf's length is
        // passed; getpwuid_r writes only into pwd, buf and found.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &raw mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &raw mut found,
            )
        };
        // A record larger than the buffer (a long NSS entry): grow it.
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return None;
        }
        break;
    }
    if found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points at a NUL-terminated string in buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    name.to_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_name_finds_root_and_not_a_uid_no_one_has() {
        assert_eq!(super::user_name(0).as_deref(), Some("root"));
        assert_eq!(super::user_name(3_999_999_999), None);
    }
}

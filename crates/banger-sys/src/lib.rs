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

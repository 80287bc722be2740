//! The host side of a VM's workspace: which files of a git checkout go to
//! the guest, and the one tar stream that carries them. It runs in the CLI,
//! so the user's files are read with the user's own rights, never the
//! daemon's.
//!
//! What is carried: every tracked file with its work-tree content, the
//! untracked files git does not ignore, each submodule's checkout, and
//! `.git` whole, so `git status`, `git diff` and `git log` in the guest
//! show what they show on the host.

pub mod base;
mod loose;
pub mod pack;
pub mod repo;

pub use base::{Base, PREPARED_REF};
pub use pack::{Contents, Held, Packed, Snapshot, held_paths, pack, pack_for_guest};
pub use repo::{Repo, RepoError, identity};

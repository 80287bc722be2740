//! Guest artifacts: the kernels and root file systems VMs boot.
//!
//! - [`catalog`]: the embedded catalogs (what `kernel pull NAME` and
//!   `image pull NAME` mean) and their recipe hashes.
//! - [`kernel`] and [`image`]: the builds, as ordered steps through a
//!   [`banger_sys::Runner`], reporting stages to a [`Progress`].
//! - [`oci`]: images pulled from OCI and Docker registries, flattened
//!   into the same build.
//! - [`tarscan`]: checks a root file system tarball entry by entry before
//!   any of it reaches `mke2fs`, and cuts the work seed out of it.
//! - [`store`]: `kernels/<name>/` and `images/<name>/` in the cache
//!   directory, staged in a sibling directory and published by rename.
//!
//! This crate does no locking between callers and knows nothing of the
//! daemon: the daemon decides who may build what, when.

pub mod catalog;
pub mod ext4;
pub mod fetch;
pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod oci;
pub mod policy;
pub mod progress;
pub mod store;
pub mod tarscan;

pub use progress::{Progress, Stage};

//! banger-init: PID 1 of banger's initramfs, run inside the guest.
//!
//! It reads its plan from the kernel command line ([`abi`], the boot ABI
//! the daemon writes), then runs
//! a fixed list of steps ([`plan`]): mount the image's shared root file
//! system read-only, the VM's own overlay disk read-write, overlayfs on
//! top, move it to `/`, and exec the image's init; an image without
//! systemd or sshd gets them installed first ([`firstboot`]). Every system call goes
//! through [`sys::Sys`], so the order is unit-tested with a recording fake;
//! a QEMU boot proves the real thing (`crates/banger/tests/artifacts.rs`).
//!
//! It must stay a static binary with no dependency beyond libc: there is
//! no dynamic loader in the initramfs.

pub mod abi;
pub mod firstboot;
pub mod plan;
pub mod sys;

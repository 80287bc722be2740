//! banger-init: PID 1 of banger's initramfs. See the library docs.
//!
//! On failure it says why on the console and resets the VM, so a VM that
//! cannot assemble its root stops instead of hanging. A probe boot
//! (`banger.probe`) prints its marker and resets too.

fn main() {
    let sys = banger_init::sys::LinuxSys;
    if let banger_init::plan::Exit::Failed(err) = banger_init::plan::run(&sys) {
        banger_init::sys::Sys::say(&sys, &format!("cannot boot: {err}; stopping the VM"));
    }
    // A reset, not a power-off: both VMMs stop on it (QEMU runs with
    // -no-reboot, Firecracker exits on the guest's reset), while an early
    // power-off may find no handler registered and merely halt the CPU,
    // leaving the VMM running.
    // SAFETY: sync and reboot take no pointers; as PID 1 there is nothing
    // left to do but stop the machine.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_RESTART);
    }
}

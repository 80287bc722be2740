//! banger-init: PID 1 of banger's initramfs. See the library docs.
//!
//! On failure it says why on the console and powers the VM off, so a VM
//! that cannot assemble its root stops instead of hanging.

fn main() {
    let sys = banger_init::sys::LinuxSys;
    let err = banger_init::plan::run(&sys);
    banger_init::sys::Sys::say(&sys, &format!("cannot boot: {err}; powering off"));
    // SAFETY: sync and reboot take no pointers; as PID 1 there is nothing
    // left to do but stop the machine.
    unsafe {
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
    }
}

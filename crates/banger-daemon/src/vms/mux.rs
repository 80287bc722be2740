//! One SSH control master per running VM, opened on first use: every
//! later session (`vm ssh`, `vm exec`, a prepare, an export) goes through
//! it and skips the key exchange, which under TCG is most of a short
//! command's time. The master is a process of its own, like the VMM: it
//! outlives a daemon restart, and goes when the VM stops or is deleted.

use std::path::PathBuf;

use banger_api::{SshTarget, VmState};
use banger_store::VmRecord;
use banger_sys::wait::lock;

use super::Vms;

/// Longest control socket path used: a unix socket's path holds 108
/// bytes, and ssh adds a suffix while it binds.
const MAX_PATH: usize = 90;

impl Vms {
    /// Where the VM's master listens, when the path is one ssh takes.
    fn mux_path(&self, id: &str) -> Option<PathBuf> {
        let path = self.dir(id).path().join("ssh.mux");
        let text = path.to_str()?;
        (text.len() <= MAX_PATH && banger_api::vm::is_plain_path(text)).then_some(path)
    }

    /// How to reach the running `vm`, through its master (opened now if
    /// none answers); without one when it cannot be opened.
    pub(super) fn mux_target(&self, vm: &VmRecord) -> SshTarget {
        let mut target = self.target(vm);
        let Some(path) = self.mux_path(&vm.id) else {
            return target;
        };
        let one = self.mux_lock(&vm.id);
        let _one = lock(&one);
        // A VM on its way out gets no new master (after_exit closes the
        // master under this lock once the VM has left `running`).
        if self.handles(&vm.id).is_none() || vm.state != VmState::Running {
            return target;
        }
        let up = (path.exists() && self.guest.master_alive(&path)) || {
            // A socket nobody answers on is a dead master's.
            super::remove_temp(&path);
            let log = self.dir(&vm.id).path().join("ssh-master.log");
            self.guest.open_master(&target, &path, &log)
        };
        if up {
            target.control_path = path.to_str().map(str::to_owned);
        }
        target
    }

    /// Closes the VM's master, if it has one.
    pub(super) fn close_mux(&self, id: &str) {
        let Some(path) = self.mux_path(id) else {
            return;
        };
        let one = self.mux_lock(id);
        let _one = lock(&one);
        if path.exists() {
            self.guest.close_master(&path);
            super::remove_temp(&path);
        }
    }

    fn mux_lock(&self, id: &str) -> std::sync::Arc<std::sync::Mutex<()>> {
        lock(&self.mux_locks)
            .entry(id.to_owned())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests;

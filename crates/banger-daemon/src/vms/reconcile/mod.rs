//! Matching recorded state with the host: adopting VMMs that outlived a
//! daemon, cleaning up after VMs that powered off by themselves.

use banger_api::VmState;
use banger_artifacts::store::now_rfc3339;

use banger_net::NetError;
use banger_store::VmRecord;
use banger_sys::wait::lock;

use super::Vms;
use super::handles::{self, Handles};

impl Vms {
    /// At daemon start: adopts VMs whose VMM still runs, cleans up after
    /// those whose VMM died, and removes taps a crash left behind.
    pub fn adopt(&self) {
        let all = match self.db.list_vms() {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list vms to adopt");
                return;
            }
        };
        let mut adopted = Vec::new();
        for vm in all {
            if vm.state == VmState::Created && self.half_created(&vm) {
                tracing::warn!(vm = %vm.name, "a create was interrupted before its disks were written; removing the vm");
                self.discard(&vm);
                continue;
            }
            let recorded = handles::read(&self.dir(&vm.id));
            let found = self.find_vmm(&vm, recorded.as_ref());
            self.settle(&vm, recorded.as_ref(), found);
            if self.handles(&vm.id).is_some() {
                adopted.push(vm);
            }
        }
        self.firewall_adopted(&adopted);
    }

    /// The firewall made of the adopted VMs, which also sweeps what VMs
    /// that no longer run left in it.
    fn firewall_adopted(&self, running: &[VmRecord]) {
        match self.firewall.reset(running) {
            Ok(()) => {}
            // No guest to isolate, and no way to the host's network (an
            // unprivileged daemon without its helper): nothing to say
            // until a start needs it, which fails naming the helper.
            Err(NetError::NeedsRoot { .. } | NetError::NoHelper { .. }) if running.is_empty() => {
                tracing::debug!("no root helper: banger's nftables tables were not swept");
            }
            Err(e) => {
                tracing::warn!(error = %crate::error::error_chain(&e), "cannot write the firewall of the adopted vms");
            }
        }
    }

    /// The VM's VMM if it still runs: the recorded one, else (handles lost
    /// or stale: a daemon killed between spawning the VMM and recording
    /// it) whatever a driver finds on the host, whatever the recorded state.
    fn find_vmm(&self, vm: &VmRecord, recorded: Option<&Handles>) -> Option<Handles> {
        let files = self.files(&vm.id);
        if let Some(h) = recorded
            && self.driver(&h.vmm).is_running(&files, h.pid)
        {
            return Some(h.clone());
        }
        self.drivers().find_map(|vmm| {
            let pid = vmm.recover_pid(&files)?;
            tracing::info!(vm = %vm.name, pid, vmm = vmm.name(), "found the vm's VMM from the host");
            let h = Handles {
                pid,
                tap: vm.tap.clone(),
                accel: recorded.map_or_else(|| "unknown".to_owned(), |h| h.accel.clone()),
                vmm: vmm.name().to_owned(),
            };
            if let Err(e) = handles::write(&self.dir(&vm.id), &h) {
                tracing::warn!(vm = %vm.name, error = %e, "cannot rewrite handles.json");
            }
            Some(h)
        })
    }

    /// Adopts, stops or cleans up after `vm` as what was found says.
    fn settle(&self, vm: &VmRecord, recorded: Option<&Handles>, found: Option<Handles>) {
        let running = vm.state == VmState::Running;
        match found {
            // Found only from the host, for a vm whose start never
            // finished: undo that start (the VMM holds the disks' write
            // lock and the tap; nothing else will stop it).
            Some(h) if recorded.is_none() && !running => {
                tracing::warn!(vm = %vm.name, pid = h.pid, "a start was interrupted after its VMM was spawned; stopping the VMM");
                self.after_exit(vm, Some(&h));
                self.record_state(
                    vm,
                    VmState::Error,
                    Some("the daemon stopped while this vm was starting; its VMM was stopped: start it again"),
                );
            }
            Some(h) => {
                tracing::info!(vm = %vm.name, pid = h.pid, "adopted a running vm");
                lock(&self.running).insert(vm.id.clone(), h);
                if !running {
                    self.record_state(vm, VmState::Running, None);
                }
            }
            None => {
                if running {
                    tracing::info!(vm = %vm.name, "vm died while the daemon was away; cleaning up");
                }
                self.after_exit(vm, recorded);
            }
        }
    }

    /// Records `state` for `vm`, logging a failure: reconciliation goes on
    /// with the other VMs.
    fn record_state(&self, vm: &VmRecord, state: VmState, error: Option<&str>) {
        if let Err(e) = self.db.set_vm_state(&vm.id, state, error, &now_rfc3339()) {
            tracing::warn!(vm = %vm.name, state = state.as_str(), error = %e, "cannot record the vm's state");
        }
    }

    /// Whether a `created` VM's create stopped before its disks were
    /// written: no directory yet, the marker `prepare` removes last, or
    /// (killed between the directory and the marker) no disks.
    fn half_created(&self, vm: &VmRecord) -> bool {
        let dir = self.dir(&vm.id);
        let disks = dir.disks();
        !dir.path().is_dir()
            || dir.creating().exists()
            || !disks.overlay.is_file()
            || !disks.work.is_file()
    }

    /// Notices VMs that powered off by themselves and cleans up after
    /// them. VMs busy in a lifecycle step are left to that step.
    pub fn reap(&self) {
        let running: Vec<(String, Handles)> = lock(&self.running)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, h) in running {
            let driver = self.driver(&h.vmm);
            if driver.is_running(&self.files(&id), h.pid) {
                // Only a log the VMM appends to can be truncated under it.
                if driver.console_appends() {
                    let console = super::console::ConsoleLog::new(self.files(&id).console());
                    let _one = lock(&self.console_lock);
                    if let Err(e) = console.rotate_if_over(super::console::MAX_SEGMENT) {
                        tracing::warn!(vm = %id, error = %e, "cannot rotate the console log");
                    }
                }
                continue;
            }
            let vm_lock = self.vm_lock(&id);
            let Ok(_guard) = vm_lock.try_lock() else {
                continue;
            };
            if let Ok(Some(vm)) = self.db.get_vm(&id) {
                tracing::info!(vm = %vm.name, "vm powered off");
                self.after_exit(&vm, None);
            } else {
                lock(&self.running).remove(&id);
                if let Err(e) = self.firewall.expel(&id) {
                    tracing::warn!(vm = %id, error = %crate::error::error_chain(&e), "cannot remove the guest from the firewall");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

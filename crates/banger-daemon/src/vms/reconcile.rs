//! Matching recorded state with the host: adopting VMMs that outlived a
//! daemon, cleaning up after VMs that powered off by themselves.

use banger_api::VmState;
use banger_artifacts::store::now_rfc3339;

use super::handles::{self, Handles};
use super::{Vms, lock};

impl Vms {
    /// At daemon start: adopts VMs whose VMM still runs, cleans up after
    /// those whose VMM died, and removes taps a crash left behind.
    pub fn adopt(&self) {
        let Ok(all) = self.db.list_vms() else {
            tracing::warn!("cannot list vms to adopt");
            return;
        };
        for vm in all {
            let files = self.files(&vm.id);
            let recorded = handles::read(files.dir());
            let adopted = match recorded.clone() {
                Some(h) if self.driver(&h.vmm).is_running(&files, h.pid) => Some(h),
                // Handles lost or stale (a daemon killed between spawning
                // the VMM and recording it): ask each driver.
                recorded if vm.state == VmState::Running.as_str() => {
                    self.drivers().find_map(|vmm| {
                        let pid = vmm.recover_pid(&files)?;
                        tracing::info!(vm = %vm.name, pid, vmm = vmm.name(), "found the vm's VMM from the host");
                        let h = Handles {
                            pid,
                            tap: vm.tap.clone(),
                            accel: recorded
                                .as_ref()
                                .map_or_else(|| "unknown".to_owned(), |h| h.accel.clone()),
                            vmm: vmm.name().to_owned(),
                        };
                        if let Err(e) = handles::write(files.dir(), &h) {
                            tracing::warn!(vm = %vm.name, error = %e, "cannot rewrite handles.json");
                        }
                        Some(h)
                    })
                }
                _ => None,
            };
            match adopted {
                Some(h) => {
                    tracing::info!(vm = %vm.name, pid = h.pid, "adopted a running vm");
                    lock(&self.running).insert(vm.id.clone(), h);
                    if vm.state != VmState::Running.as_str() {
                        let _ = self.db.set_vm_state(
                            &vm.id,
                            VmState::Running.as_str(),
                            None,
                            &now_rfc3339(),
                        );
                    }
                }
                None => {
                    if vm.state == VmState::Running.as_str() {
                        tracing::info!(vm = %vm.name, "vm died while the daemon was away; cleaning up");
                    }
                    self.after_exit(&vm, recorded.as_ref());
                }
            }
        }
    }

    /// Notices VMs that powered off by themselves and cleans up after
    /// them. VMs busy in a lifecycle step are left to that step.
    pub fn reap(&self) {
        let running: Vec<(String, Handles)> = lock(&self.running)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, h) in running {
            if self.driver(&h.vmm).is_running(&self.files(&id), h.pid) {
                let console = super::console::ConsoleLog::new(self.files(&id).console());
                if let Err(e) = console.rotate_if_over(super::console::MAX_SEGMENT) {
                    tracing::warn!(vm = %id, error = %e, "cannot rotate the console log");
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
            }
        }
    }
}

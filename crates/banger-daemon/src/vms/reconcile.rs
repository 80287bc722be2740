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
            if vm.state == VmState::Created.as_str() && self.half_created(&vm) {
                tracing::warn!(vm = %vm.name, "a create was interrupted before its disks were written; removing the vm");
                self.discard(&vm);
                continue;
            }
            let files = self.files(&vm.id);
            let recorded = handles::read(files.dir());
            let adopted = match recorded.clone() {
                Some(h) if self.driver(&h.vmm).is_running(&files, h.pid) => Some(h),
                // Handles lost or stale (a daemon killed between spawning
                // the VMM and recording it): ask each driver, whatever the
                // recorded state.
                recorded => {
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
            };
            match adopted {
                // Found only from the host, for a vm whose start never
                // finished: undo that start (the VMM holds the disks'
                // write lock and the tap; nothing else will stop it).
                Some(h) if recorded.is_none() && vm.state != VmState::Running.as_str() => {
                    tracing::warn!(vm = %vm.name, pid = h.pid, "a start was interrupted after its VMM was spawned; stopping the VMM");
                    self.after_exit(&vm, Some(&h));
                    let _ = self.db.set_vm_state(
                        &vm.id,
                        VmState::Error.as_str(),
                        Some("the daemon stopped while this vm was starting; its VMM was stopped: start it again"),
                        &now_rfc3339(),
                    );
                }
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

    /// Whether a `created` VM's create stopped before its disks were
    /// written: no directory yet, the marker `prepare` removes last, or
    /// (killed between the directory and the marker) no disks.
    fn half_created(&self, vm: &banger_store::VmRecord) -> bool {
        let dir = self.vm_dir(&vm.id);
        let disks = super::disks::DiskFiles::in_dir(&dir);
        !dir.is_dir()
            || dir.join(super::create::CREATING).exists()
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
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::start::tests::{Log, service};
    use super::*;

    #[test]
    fn a_vmm_spawned_by_a_start_that_never_finished_is_stopped_not_orphaned() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::default();
        let (vms, vm) = service(dir.path(), "orphan", &log);
        // No handles.json: the daemon died between spawn and record.
        vms.adopt();
        let steps = log.lock().unwrap().clone();
        assert_eq!(
            steps,
            [
                "vmm kill",
                "remove_nat 0a1b2c3d4e5f6071",
                "remove_tap bgt0a1b2c3d4e5f"
            ]
        );
        assert!(vms.handles(&vm.id).is_none());
        let stored = vms.db.get_vm(&vm.id).unwrap().unwrap();
        assert_eq!(stored.state, "error");
        assert!(
            stored
                .last_error
                .unwrap()
                .contains("while this vm was starting")
        );
    }

    #[test]
    fn a_vm_whose_create_was_cut_short_is_removed_and_a_finished_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::default();
        let (vms, web) = service(dir.path(), "nothing", &log);
        let created = |id: &str, name: &str, n: u8| banger_store::VmRecord {
            state: VmState::Created.as_str().into(),
            ip: format!("10.77.0.{n}"),
            tap: format!("bgt{id}"),
            ..banger_testutil::stopped_vm(id, name, "img")
        };
        // No directory yet (killed right after the row), a directory still
        // marked, and a finished `create --no-start`.
        let (early, marked, done) = (
            created("1111111111111111", "early", 11),
            created("2222222222222222", "marked", 12),
            created("3333333333333333", "done", 13),
        );
        for vm in [&early, &marked, &done] {
            vms.db.insert_vm(vm).unwrap();
        }
        for vm in [&marked, &done] {
            std::fs::create_dir_all(vms.vm_dir(&vm.id)).unwrap();
        }
        let disks = super::super::disks::DiskFiles::in_dir(&vms.vm_dir(&done.id));
        std::fs::write(&disks.overlay, b"").unwrap();
        std::fs::write(&disks.work, b"").unwrap();
        std::fs::write(
            vms.vm_dir(&marked.id).join(super::super::create::CREATING),
            b"",
        )
        .unwrap();
        vms.adopt();
        let mut left: Vec<String> = vms
            .db
            .list_vms()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        left.sort();
        assert_eq!(left, ["done".to_owned(), web.name.clone()]);
        assert!(!vms.vm_dir(&marked.id).exists());
        assert!(vms.vm_dir(&done.id).exists());
    }
}

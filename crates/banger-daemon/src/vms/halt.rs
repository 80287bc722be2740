//! Stopping, killing, deleting and resizing VMs.

use std::time::Duration;

use banger_api::{ErrorCode, SetVmRequest, Vm, VmState};
use banger_artifacts::store::now_rfc3339;
use banger_store::VmRecord;

use super::create::Size;
use super::disks::{self, DiskFiles};
use super::handles::{self, Handles};
use super::{Vms, failed, lock, not_running, ssh, stop_pid};
use crate::error::{ApiError, error_chain};

impl Vms {
    /// Stops a VM gracefully: poweroff over SSH (which syncs), then the
    /// ACPI power button, then kill, each phase bounded by the stop timeout.
    pub fn stop(&self, reference: &str) -> Result<Vm, ApiError> {
        self.halt(reference, true)
    }

    /// Kills a VM's VMM at once.
    pub fn kill(&self, reference: &str) -> Result<Vm, ApiError> {
        self.halt(reference, false)
    }

    pub(super) fn halt(&self, reference: &str, graceful: bool) -> Result<Vm, ApiError> {
        self.locked(reference, |vm| {
            let Some(h) = self.handles(&vm.id) else {
                return Err(not_running(&vm));
            };
            if graceful {
                self.graceful_stop(&vm, &h);
            }
            self.after_exit(&vm, Some(&h));
            self.view(self.reload(&vm.id)?)
        })
    }

    fn graceful_stop(&self, vm: &VmRecord, h: &Handles) {
        let files = self.files(&vm.id);
        let vmm = self.driver(&h.vmm);
        let timeout = self.settings.stop_timeout;
        let gone = |limit: Duration| {
            banger_sys::wait::poll_until(limit, Duration::from_millis(100), || {
                !vmm.is_running(&files, h.pid)
            })
        };
        // 1. The guest's own clean shutdown, which flushes its disks.
        let log = files.dir().join("stop.log");
        match ssh::poweroff_guest(
            &self.runner,
            &self.target(vm),
            &log,
            Duration::from_secs(20),
        ) {
            Ok(()) => {
                if gone(timeout) {
                    return;
                }
                tracing::warn!(vm = %vm.name, "guest did not power off in time after being asked over SSH");
            }
            // ssh also fails when the guest drops the connection while
            // going down: give it a moment before pressing the button.
            Err(banger_sys::RunError::Failed { .. }) => {
                if gone(timeout.min(Duration::from_secs(10))) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %error_chain(&e), "cannot ask the guest over SSH");
            }
        }
        // 2. The VMM's power button.
        if let Err(e) = vmm.request_shutdown(&files) {
            tracing::warn!(vm = %vm.name, error = %error_chain(&e), "shutdown request failed");
        } else if gone(timeout) {
            return;
        }
        // 3. Kill: after_exit, which every halt ends with, does it.
        tracing::warn!(vm = %vm.name, "guest did not power off in time; killing it");
    }

    /// Cleans up after a VMM is gone (or kills it first): NAT, tap,
    /// handles, state.
    pub(super) fn after_exit(&self, vm: &VmRecord, h: Option<&Handles>) {
        let files = self.files(&vm.id);
        match h {
            Some(h) => stop_pid(&*self.driver(&h.vmm), &files, h.pid),
            // Which VMM ran it is unknown: each removes what it would
            // have left (a socket, a jail); each is a no-op otherwise.
            None => {
                for vmm in self.drivers() {
                    if let Err(e) = vmm.release(&files) {
                        tracing::warn!(vm = %vm.name, vmm = vmm.name(), error = %error_chain(&e), "cannot remove what the VMM left");
                    }
                }
            }
        }
        self.release_network(vm);
        if let Err(e) = handles::remove(files.dir()) {
            tracing::warn!(vm = %vm.name, error = %e, "cannot remove handles.json");
        }
        lock(&self.running).remove(&vm.id);
        // Only a running VM becomes stopped: a created or failed one keeps
        // its state (and its recorded error).
        if vm.state == VmState::Running.as_str()
            && let Err(e) =
                self.db
                    .set_vm_state(&vm.id, VmState::Stopped.as_str(), None, &now_rfc3339())
        {
            tracing::warn!(vm = %vm.name, error = %e, "cannot record the stop");
        }
    }

    pub(super) fn release_network(&self, vm: &VmRecord) {
        if vm.nat
            && let Ok(ip) = vm.ip.parse()
            && let Err(e) = self.net.remove_nat(&vm.id, ip, &self.settings.bridge)
        {
            tracing::warn!(vm = %vm.name, error = %error_chain(&e), "cannot remove NAT rules");
        }
        if let Err(e) = self.net.remove_tap(&vm.tap) {
            tracing::warn!(vm = %vm.name, error = %error_chain(&e), "cannot remove the tap");
        }
    }

    /// Stops then starts a VM.
    pub fn restart(&self, reference: &str) -> Result<Vm, ApiError> {
        let vm = self.resolve_exact(reference)?;
        if self.handles(&vm.id).is_some() {
            self.stop(&vm.id)?;
        }
        self.start(&vm.id)
    }

    /// Deletes a VM; a running one only with `force` (it is killed).
    pub fn delete(&self, reference: &str, force: bool) -> Result<(), ApiError> {
        self.locked(reference, |vm| {
            if let Some(h) = self.handles(&vm.id) {
                if !force {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        format!(
                            "vm {} is running; stop it first, or delete with force",
                            vm.name
                        ),
                    ));
                }
                self.after_exit(&vm, Some(&h));
            }
            self.release_network(&vm);
            self.discard(&vm);
            tracing::info!(vm = %vm.name, id = %vm.id, "vm deleted");
            Ok(())
        })
    }

    /// Resizes a stopped VM.
    pub fn set(&self, reference: &str, req: &SetVmRequest) -> Result<Vm, ApiError> {
        self.locked(reference, |vm| {
            if self.handles(&vm.id).is_some() {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("vm {} is running; stop it before resizing", vm.name),
                ));
            }
            let size = Size::checked(
                req.vcpus.or(Some(vm.vcpus)),
                req.memory_mib.or(Some(vm.memory_mib)),
                req.disk_bytes.or(Some(vm.disk_bytes)),
                Some(vm.disk_bytes),
            )?;
            size.check_room(&self.room()?, size.disk_bytes - vm.disk_bytes, 0)?;
            if size.disk_bytes > vm.disk_bytes {
                let work = DiskFiles::in_dir(&self.vm_dir(&vm.id)).work;
                disks::grow_work(&work, size.disk_bytes).map_err(failed)?;
            }
            self.db.set_vm_size(
                &vm.id,
                size.vcpus,
                size.memory_mib,
                size.disk_bytes,
                &now_rfc3339(),
            )?;
            self.view(self.reload(&vm.id)?)
        })
    }
}

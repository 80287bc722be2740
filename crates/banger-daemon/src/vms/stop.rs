//! Stopping a VM: the graceful order (SSH poweroff, the power button,
//! kill), killing, restarting, and the clean-up after any VMM exit.

use std::time::Duration;

use banger_api::{Vm, VmState};
use banger_artifacts::store::now_rfc3339;
use banger_store::VmRecord;
use banger_sys::wait::{lock, poll_until};
use banger_vmm::{VmFiles, Vmm};

use super::handles::{self, Handles};
use super::{Vms, not_running, ssh};
use crate::error::error_chain;
use crate::vms::VmError;

impl Vms {
    /// Stops a VM gracefully: poweroff over SSH (which syncs), then the
    /// ACPI power button, then kill, each phase bounded by the stop timeout.
    pub fn stop(&self, reference: &str) -> Result<Vm, VmError> {
        self.halt(reference, true)
    }

    /// Kills a VM's VMM at once.
    pub fn kill(&self, reference: &str) -> Result<Vm, VmError> {
        self.halt(reference, false)
    }

    pub(super) fn halt(&self, reference: &str, graceful: bool) -> Result<Vm, VmError> {
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
            poll_until(limit, Duration::from_millis(100), || {
                !vmm.is_running(&files, h.pid)
            })
        };
        // 1. The guest's own clean shutdown, which flushes its disks.
        let log = self.dir(&vm.id).stop_log();
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
        if let Err(e) = handles::remove(&self.dir(&vm.id)) {
            tracing::warn!(vm = %vm.name, error = %e, "cannot remove handles.json");
        }
        lock(&self.running).remove(&vm.id);
        // After the VM left `running`: no master opens for it from now on
        // (mux_target checks under the same lock), and one opened before
        // goes.
        self.close_mux(&vm.id);
        // Only a running VM becomes stopped: a created or failed one keeps
        // its state (and its recorded error).
        if vm.state == VmState::Running
            && let Err(e) = self
                .db
                .set_vm_state(&vm.id, VmState::Stopped, None, &now_rfc3339())
        {
            tracing::warn!(vm = %vm.name, error = %e, "cannot record the stop");
        }
    }

    pub(super) fn release_network(&self, vm: &VmRecord) {
        // The address is typed in the record: no row reaches here with one
        // that does not parse, so no rule is left for that reason.
        if vm.nat
            && let Err(e) = self.net.remove_nat(&vm.id, vm.ip, &self.settings.bridge)
        {
            tracing::warn!(vm = %vm.name, error = %error_chain(&e), "cannot remove NAT rules");
        }
        if let Err(e) = self.net.remove_tap(&vm.tap) {
            tracing::warn!(vm = %vm.name, error = %error_chain(&e), "cannot remove the tap");
        }
        // Last: a tap never stands without its guest's chain.
        if let Err(e) = self.firewall.expel(&vm.id) {
            tracing::warn!(vm = %vm.name, error = %error_chain(&e), "cannot remove the guest from the firewall");
        }
    }

    /// Stops then starts a VM.
    pub fn restart(&self, reference: &str) -> Result<Vm, VmError> {
        let vm = self.resolve_exact(reference)?;
        if self.handles(&vm.id).is_some() {
            self.stop(&vm.id)?;
        }
        self.start(&vm.id)
    }
}

/// Kills `pid` if it is still this VM's VMM and waits (bounded) for it to go.
pub(super) fn stop_pid(vmm: &dyn Vmm, files: &VmFiles, pid: u32) {
    if vmm.is_running(files, pid) {
        vmm.kill(pid);
        let gone = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
            !vmm.is_running(files, pid)
        });
        if !gone {
            tracing::warn!(pid, "the VMM survived SIGKILL for 10 s");
            return;
        }
    }
    // A killed VMM leaves its sockets and pidfile (and a jail).
    if let Err(e) = vmm.release(files) {
        tracing::warn!(dir = %files.dir().display(), error = %error_chain(&e), "cannot remove what the VMM left");
    }
}

#[cfg(test)]
mod tests {
    use banger_testutil::fakes::FakeVmm;

    use crate::vms::handles;
    use crate::vms::testkit::{Ssh, kit};

    /// What every halt ends with for `web`: its NAT rules and tap removed.
    const RELEASED: [&str; 2] = ["remove_nat 0a1b2c3d4e5f6071", "remove_tap bgt0a1b2c3d4e5f"];

    /// Stops `web` (running under `driver`) with the guest answering SSH as
    /// `ssh` says and the power button obeyed or not; returns the calls.
    fn stop(driver: &str, ssh: Ssh, obeys_power_button: bool) -> Vec<String> {
        let k = kit("");
        k.run_web(driver);
        *k.ssh.lock().unwrap() = ssh;
        FakeVmm::set(&k.vmm.obeys_power_button, obeys_power_button);
        FakeVmm::set(&k.other.obeys_power_button, obeys_power_button);
        let vm = k.vms.stop("web").unwrap();
        assert_eq!(vm.state, banger_api::VmState::Stopped);
        assert!(handles::read(&k.vms.dir(&k.vm.id)).is_none());
        assert!(k.vms.handles(&k.vm.id).is_none());
        assert!(!k.vmm.is_alive() && !k.other.is_alive());
        k.take_calls()
    }

    #[test]
    fn a_stop_asks_the_guest_over_ssh_first_and_stops_there_when_it_goes() {
        assert_eq!(
            stop("vmm", Ssh::PowersOff, true),
            [&["run ssh"][..], &RELEASED].concat()
        );
    }

    #[test]
    fn a_guest_that_ignores_ssh_gets_the_power_button() {
        assert_eq!(
            stop("vmm", Ssh::Ignores, true),
            [&["run ssh", "vmm power button"][..], &RELEASED].concat()
        );
        // ssh failing (the guest dropped the connection, or has no sshd)
        // leads to the same button.
        assert_eq!(
            stop("vmm", Ssh::Fails, true),
            [&["run ssh", "vmm power button"][..], &RELEASED].concat()
        );
    }

    #[test]
    fn a_guest_that_ignores_ssh_and_the_button_is_killed() {
        assert_eq!(
            stop("vmm", Ssh::Ignores, false),
            [&["run ssh", "vmm power button", "vmm kill"][..], &RELEASED].concat()
        );
    }

    #[test]
    fn a_vm_started_under_another_vmm_is_stopped_by_that_driver() {
        assert_eq!(
            stop("other", Ssh::Ignores, false),
            [
                &["run ssh", "other power button", "other kill"][..],
                &RELEASED
            ]
            .concat()
        );
    }

    #[test]
    fn a_kill_skips_the_guest_and_the_button() {
        let k = kit("");
        k.run_web("vmm");
        k.vms.kill("web").unwrap();
        assert_eq!(k.take_calls(), [&["vmm kill"][..], &RELEASED].concat());
        assert_eq!(k.stored(&k.vm.id).state, banger_api::VmState::Stopped);
    }

    #[test]
    fn a_stop_of_a_vm_not_running_is_refused_and_touches_nothing() {
        let k = kit("");
        let err = k.vms.stop("web").unwrap_err();
        assert!(
            matches!(err, crate::vms::VmError::NotRunning { .. }),
            "{err:?}"
        );
        assert!(k.take_calls().is_empty());
    }
}

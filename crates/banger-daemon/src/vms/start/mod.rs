//! Starting a VM: the steps in [`steps`], each with its undo, under the
//! VM's lock; on failure the done steps are undone in reverse and the
//! error is recorded on the VM.

mod steps;

pub(super) use steps::mac_for;

use std::net::Ipv4Addr;
use std::time::Instant;

use banger_api::{Vm, VmState};
use banger_artifacts::store::now_rfc3339;
use banger_store::VmRecord;

use super::Vms;
use super::handles::Handles;
use super::undo::Undo;
use crate::vms::VmError;

/// Reports start stages: (1-based stage, what is happening).
pub(super) type StartProgress<'a> = dyn Fn(u32, &str) + 'a;

impl Vms {
    /// Starts a VM that is not running.
    pub fn start(&self, reference: &str) -> Result<Vm, VmError> {
        let requested = Instant::now();
        self.locked(reference, |vm| {
            if self.handles(&vm.id).is_some() {
                return Err(VmError::AlreadyRunning(vm.name));
            }
            self.start_locked(&vm, requested, &|_, _| {})?;
            self.view(self.reload(&vm.id)?)
        })
    }

    /// Runs the start steps and records the outcome on the VM.
    pub(super) fn start_locked(
        &self,
        vm: &VmRecord,
        requested: Instant,
        progress: &StartProgress<'_>,
    ) -> Result<(Ipv4Addr, Handles), VmError> {
        let started = Instant::now();
        let result = self.start_steps(vm, requested, progress);
        match &result {
            Ok((_, h)) => {
                tracing::info!(vm = %vm.name, pid = h.pid, accel = %h.accel, secs = started.elapsed().as_secs_f64(), "vm started");
                self.db
                    .set_vm_state(&vm.id, VmState::Running, None, &now_rfc3339())?;
            }
            Err(e) => {
                let message = e.message();
                tracing::warn!(vm = %vm.name, error = %message, "vm start failed; rolled back");
                self.db
                    .set_vm_state(&vm.id, VmState::Error, Some(&message), &now_rfc3339())?;
            }
        }
        result
    }

    /// Network, VMM, handles, guest readiness; any early return rolls back
    /// what the steps before it did (the [`Undo`] is dropped uncommitted).
    fn start_steps(
        &self,
        vm: &VmRecord,
        requested: Instant,
        progress: &StartProgress<'_>,
    ) -> Result<(Ipv4Addr, Handles), VmError> {
        let inputs = self.start_inputs(vm)?;
        progress(1, "booting");
        let initramfs = self.boot.initramfs()?;
        let accel = self.boot.accel(&inputs.bzimage, &initramfs);
        let mut undo = Undo::default();
        self.connect(vm, inputs.ip, &mut undo)?;
        let spec = self.boot_spec(vm, &inputs, initramfs, accel);
        let pid = self.spawn_vmm(vm, &spec, requested, &mut undo)?;
        let h = self.record_handles(vm, &spec, pid, &mut undo)?;
        progress(2, "waiting for the guest's SSH server");
        if let Err(why) = self.wait_for_guest(inputs.ip, &inputs.files, pid) {
            // Roll back first: the VMM is stopped before its console is read.
            drop(undo);
            return Err(Self::boot_failed(&why, &inputs.files));
        }
        undo.commit();
        Ok((inputs.ip, h))
    }
}

#[cfg(test)]
mod tests {
    use banger_artifacts::store::Kind;
    use banger_testutil::fakes::FakeVmm;

    use super::steps::mac_for;
    use crate::vms::handles;
    use crate::vms::testkit::{Kit, kit};

    /// A start of "web" whose network step `fail` fails (none fails for
    /// "": then the fake VMM dies during boot, unless `boots`).
    struct FailedStart {
        kit: Kit,
        /// The error's message.
        message: String,
        /// Every network and VMM call, in order.
        steps: Vec<String>,
    }

    fn failed_start(fail: &str, boots: bool, shutting_down: bool) -> FailedStart {
        let kit = kit(fail);
        FakeVmm::set(&kit.vmm.boots, boots);
        if shutting_down {
            kit.vms.begin_shutdown();
        }
        let message = crate::error::ApiError::from(kit.vms.start("web").unwrap_err()).message;
        let steps = kit.take_calls();
        FailedStart {
            kit,
            message,
            steps,
        }
    }

    impl FailedStart {
        /// No handles on disk or in memory, the VM in state `error`.
        fn assert_recorded_and_released(&self) {
            let (vms, vm) = (&self.kit.vms, &self.kit.vm);
            assert!(handles::read(&vms.dir(&vm.id)).is_none());
            assert!(vms.handles(&vm.id).is_none());
            let stored = self.kit.stored(&vm.id);
            assert_eq!(stored.state, banger_api::VmState::Error);
            assert_eq!(stored.last_error.as_deref(), Some(self.message.as_str()));
        }
    }

    #[test]
    fn a_failed_step_undoes_the_done_ones_in_reverse_and_records_the_error() {
        let f = failed_start("add_nat", false, false);
        assert!(f.message.contains("made to fail"), "{}", f.message);
        assert_eq!(
            f.steps,
            [
                "ensure_bridge banger0",
                "add_tap bgt0a1b2c3d4e5f",
                "add_nat 0a1b2c3d4e5f6071",
                "remove_nat 0a1b2c3d4e5f6071",
                "remove_tap bgt0a1b2c3d4e5f",
            ]
        );
        f.assert_recorded_and_released();
    }

    /// A guest the firewall cannot take never boots: no VMM, the network
    /// undone.
    #[test]
    fn a_guest_the_firewall_refuses_is_never_booted() {
        let f = failed_start("set_firewall", false, false);
        assert!(f.message.contains("isolate the guest"), "{}", f.message);
        assert_eq!(
            f.steps,
            [
                "ensure_bridge banger0",
                "add_tap bgt0a1b2c3d4e5f",
                "add_nat 0a1b2c3d4e5f6071",
                "set_firewall [bgt0a1b2c3d4e5f]",
                "remove_nat 0a1b2c3d4e5f6071",
                "remove_tap bgt0a1b2c3d4e5f",
            ]
        );
        f.assert_recorded_and_released();
    }

    /// A tap off the bridge fails the start before the SSH wait, with the
    /// VMM's handles and the network undone.
    #[test]
    fn a_detached_tap_fails_the_start_at_once() {
        let f = failed_start("check_tap", false, false);
        assert!(f.message.contains("made to fail"), "{}", f.message);
        assert_eq!(
            f.steps[4..],
            [
                "vmm start",
                "check_tap bgt0a1b2c3d4e5f",
                "remove_nat 0a1b2c3d4e5f6071",
                "remove_tap bgt0a1b2c3d4e5f",
                "set_firewall []",
            ]
        );
        f.assert_recorded_and_released();
    }

    /// Every step of a start up to the wait for the guest, in order.
    const BOOTED: [&str; 6] = [
        "ensure_bridge banger0",
        "add_tap bgt0a1b2c3d4e5f",
        "add_nat 0a1b2c3d4e5f6071",
        "set_firewall [bgt0a1b2c3d4e5f]",
        "vmm start",
        "check_tap bgt0a1b2c3d4e5f",
    ];
    /// The network undone, in reverse.
    const UNDONE: [&str; 3] = [
        "remove_nat 0a1b2c3d4e5f6071",
        "remove_tap bgt0a1b2c3d4e5f",
        "set_firewall []",
    ];

    #[test]
    fn a_vmm_that_dies_while_booting_is_rolled_back_with_its_handles() {
        let f = failed_start("", false, false);
        assert!(
            f.message.contains("stopped before its SSH server answered"),
            "{}",
            f.message
        );
        assert_eq!(f.steps, [&BOOTED[..], &UNDONE].concat());
        f.assert_recorded_and_released();
    }

    /// A boot still waiting for its guest when the daemon stops is rolled
    /// back (tap, NAT, the VMM killed), not left for the process exit to cut.
    #[test]
    fn a_boot_waiting_when_the_daemon_stops_is_rolled_back() {
        let f = failed_start("", true, true);
        assert!(
            f.message.starts_with("the daemon is shutting down"),
            "{}",
            f.message
        );
        assert_eq!(f.steps, [&BOOTED[..], &["vmm kill"], &UNDONE].concat());
        f.assert_recorded_and_released();
    }

    /// A VM boots the root file system it was created from, even after the
    /// image was published again under the same name.
    #[test]
    fn a_vm_boots_its_own_generation_of_the_image() {
        let k = kit("");
        let pin = k.vms.art_store.pin_rootfs("img", &k.vm.id).unwrap();
        let s = k.vms.art_store.stage(Kind::Image, "img").unwrap();
        std::fs::write(s.path().join(banger_artifacts::image::ROOTFS), b"new").unwrap();
        k.vms.art_store.publish(Kind::Image, "img", s).unwrap();
        let _ = k.vms.start("web");
        let booted = std::fs::read(k.vms.dir(&k.vm.id).path().join("fake-base-disk")).unwrap();
        assert_eq!(booted, pin.as_os_str().as_encoded_bytes());
    }

    #[test]
    fn macs_are_local_unicast_and_follow_the_id() {
        assert_eq!(mac_for("0a1b2c3d4e5f6071"), "02:ba:0a:1b:2c:3d");
        assert_eq!(mac_for("zz"), "02:ba:00:00:00:00");
    }
}

//! Every branch of `adopt` (daemon start) and `reap` (VMs that powered off
//! by themselves), with the recording fakes.

use banger_api::VmState;
use banger_testutil::fakes::{FAKE_PID, FakeVmm};

use crate::vms::handles::{self, Handles};
use crate::vms::testkit::{Kit, kit};

/// What cleaning up after `web` removes.
const RELEASED: [&str; 2] = ["remove_nat 0a1b2c3d4e5f6071", "remove_tap bgt0a1b2c3d4e5f"];
/// The firewall `adopt` writes last: no guest (which also sweeps what
/// VMs gone since left in it), or the adopted `web`.
const SWEPT: &str = "set_firewall []";
const WITH_WEB: &str = "set_firewall [bgt0a1b2c3d4e5f]";

/// A kit whose `web` a previous daemon left in `state`, with `handles`
/// recorded on disk (none in memory: this daemon just started).
fn left(state: VmState, recorded: Option<&Handles>) -> Kit {
    let k = kit("");
    k.set_state(&k.vm.id, state);
    if let Some(h) = recorded {
        handles::write(&k.vms.dir(&k.vm.id), h).unwrap();
    }
    k
}

fn recorded(vmm: &str) -> Handles {
    Handles {
        pid: FAKE_PID,
        tap: "bgt0a1b2c3d4e5f".into(),
        accel: "kvm".into(),
        vmm: vmm.into(),
    }
}

impl Kit {
    fn adopted(&self) -> Option<Handles> {
        self.vms.handles(&self.vm.id)
    }
    fn state(&self) -> VmState {
        self.stored(&self.vm.id).state
    }
}

#[test]
fn a_recorded_vmm_still_running_is_adopted_untouched() {
    let k = left(VmState::Running, Some(&recorded("vmm")));
    FakeVmm::set(&k.vmm.alive, true);
    k.vms.adopt();
    assert_eq!(k.adopted(), Some(recorded("vmm")));
    assert_eq!(k.take_calls(), [WITH_WEB]);
    assert_eq!(k.state(), VmState::Running);
}

#[test]
fn a_running_vmm_recorded_under_another_driver_is_adopted_by_it() {
    let k = left(VmState::Running, Some(&recorded("other")));
    FakeVmm::set(&k.other.alive, true);
    k.vms.adopt();
    assert_eq!(k.adopted().unwrap().vmm, "other");
    assert_eq!(k.take_calls(), [WITH_WEB]);
}

#[test]
fn an_adopted_vm_whose_state_write_was_lost_is_recorded_running() {
    let k = left(VmState::Stopped, Some(&recorded("vmm")));
    FakeVmm::set(&k.vmm.alive, true);
    k.vms.adopt();
    assert!(k.adopted().is_some());
    assert_eq!(k.state(), VmState::Running);
}

#[test]
fn stale_handles_are_replaced_by_what_the_host_shows() {
    // The recorded pid is not the VMM's any more, but its pidfile is.
    let mut stale = recorded("other");
    stale.pid = 1;
    let k = left(VmState::Running, Some(&stale));
    FakeVmm::set(&k.vmm.alive, true);
    FakeVmm::set(&k.vmm.findable, true);
    k.vms.adopt();
    let h = k.adopted().unwrap();
    assert_eq!(
        (h.pid, h.vmm.as_str(), h.accel.as_str()),
        (FAKE_PID, "vmm", "kvm")
    );
    assert_eq!(handles::read(&k.vms.dir(&k.vm.id)), Some(h));
    assert_eq!(k.take_calls(), [WITH_WEB]);
}

#[test]
fn a_running_vm_whose_handles_were_lost_is_found_from_the_host() {
    let k = left(VmState::Running, None);
    FakeVmm::set(&k.other.alive, true);
    FakeVmm::set(&k.other.findable, true);
    k.vms.adopt();
    let h = k.adopted().unwrap();
    assert_eq!((h.vmm.as_str(), h.accel.as_str()), ("other", "unknown"));
    assert_eq!(k.state(), VmState::Running);
}

#[test]
fn a_vmm_spawned_by_a_start_that_never_finished_is_stopped_not_orphaned() {
    let k = left(VmState::Created, None);
    // Its disks were written: only the start was cut short.
    let disks = k.vms.dir(&k.vm.id).disks();
    std::fs::write(&disks.overlay, b"").unwrap();
    std::fs::write(&disks.work, b"").unwrap();
    FakeVmm::set(&k.vmm.alive, true);
    FakeVmm::set(&k.vmm.findable, true);
    k.vms.adopt();
    assert_eq!(
        k.take_calls(),
        [&["vmm kill"][..], &RELEASED, &[SWEPT]].concat()
    );
    assert!(k.adopted().is_none());
    let stored = k.stored(&k.vm.id);
    assert_eq!(stored.state, VmState::Error);
    assert!(
        stored
            .last_error
            .unwrap()
            .contains("while this vm was starting")
    );
}

#[test]
fn a_vm_that_died_while_the_daemon_was_away_is_cleaned_up_and_stopped() {
    for recorded in [Some(recorded("vmm")), None] {
        let k = left(VmState::Running, recorded.as_ref());
        k.vms.adopt();
        assert_eq!(
            k.take_calls(),
            [&RELEASED[..], &[SWEPT]].concat(),
            "{recorded:?}"
        );
        assert!(k.adopted().is_none());
        assert!(handles::read(&k.vms.dir(&k.vm.id)).is_none());
        assert_eq!(k.state(), VmState::Stopped);
    }
}

#[test]
fn a_stopped_or_failed_vm_keeps_its_state_and_only_leftovers_go() {
    for state in [VmState::Stopped, VmState::Error] {
        let k = left(state, None);
        k.vms.adopt();
        // A tap or rule a crash left behind goes; nothing else happens.
        assert_eq!(k.take_calls(), [&RELEASED[..], &[SWEPT]].concat());
        assert_eq!(k.state(), state);
    }
}

#[test]
fn a_vm_whose_create_was_cut_short_is_removed_and_a_finished_one_kept() {
    let k = kit("");
    let created = |id: &str, name: &str, n: u8| banger_store::VmRecord {
        state: VmState::Created,
        ip: std::net::Ipv4Addr::new(10, 77, 0, n),
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
        k.vms.db.insert_vm(vm).unwrap();
    }
    for vm in [&marked, &done] {
        std::fs::create_dir_all(k.vms.dir(&vm.id).path()).unwrap();
    }
    let disks = k.vms.dir(&done.id).disks();
    std::fs::write(&disks.overlay, b"").unwrap();
    std::fs::write(&disks.work, b"").unwrap();
    std::fs::write(k.vms.dir(&marked.id).creating(), b"").unwrap();
    k.vms.adopt();
    let mut left: Vec<String> = k
        .vms
        .db
        .list_vms()
        .unwrap()
        .into_iter()
        .map(|v| v.name.to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["done".to_owned(), k.vm.name.to_string()]);
    assert!(!k.vms.dir(&marked.id).path().exists());
    assert!(k.vms.dir(&done.id).path().exists());
}

#[test]
fn reap_leaves_running_vms_and_cleans_up_after_one_that_powered_off() {
    let k = kit("");
    k.run_web("vmm");
    k.vms.reap();
    assert!(k.adopted().is_some());
    assert!(k.take_calls().is_empty());

    FakeVmm::set(&k.vmm.alive, false);
    k.vms.reap();
    assert!(k.adopted().is_none());
    assert_eq!(k.take_calls(), RELEASED);
    assert_eq!(k.state(), VmState::Stopped);
}

#[test]
fn reap_leaves_a_vm_busy_in_a_lifecycle_step_to_that_step() {
    let k = kit("");
    k.run_web("vmm");
    FakeVmm::set(&k.vmm.alive, false);
    let vm_lock = k.vms.vm_lock(&k.vm.id);
    let busy = vm_lock.lock().unwrap();
    k.vms.reap();
    assert!(k.adopted().is_some());
    assert!(k.take_calls().is_empty());
    drop(busy);
}

#[test]
fn reap_forgets_a_vm_whose_row_is_gone() {
    let k = kit("");
    k.run_web("vmm");
    FakeVmm::set(&k.vmm.alive, false);
    k.vms.db.delete_vm(&k.vm.id).unwrap();
    k.vms.reap();
    assert!(k.adopted().is_none());
    assert!(k.take_calls().is_empty());
}

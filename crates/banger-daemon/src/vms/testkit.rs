//! A VM service over a temp dir and the recording fakes of
//! `banger_testutil::fakes`, for the unit tests of start, stop and
//! reconcile: one stopped NAT VM `web` and the files a start checks for.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use banger_net::Subnet;
use banger_store::{Store, VmRecord};
use banger_sys::{RunError, Runner};
use banger_testutil::fakes::{Calls, FakeNet, FakeRunner, FakeVmm};

use banger_api::VmState;
use banger_sys::wait::lock;

use super::handles::{self, Handles};
use super::{Parts, VmSettings, Vms};
use crate::operations::Operations;

/// How the guest answers `poweroff` over SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::vms) enum Ssh {
    /// It powers off.
    PowersOff,
    /// ssh succeeds, the guest keeps running.
    Ignores,
    /// ssh fails (connection refused).
    Fails,
}

/// The service and what its fakes saw.
pub(in crate::vms) struct Kit {
    _dir: tempfile::TempDir,
    pub(in crate::vms) vms: Arc<Vms>,
    /// The VM `web`, as inserted.
    pub(in crate::vms) vm: VmRecord,
    /// Every network, VMM and command call, in order.
    pub(in crate::vms) calls: Calls,
    /// The driver new starts use, called `vmm`.
    pub(in crate::vms) vmm: Arc<FakeVmm>,
    /// A second driver, called `other`, for VMs a previous daemon ran under
    /// another VMM.
    pub(in crate::vms) other: Arc<FakeVmm>,
    /// How the guest answers SSH.
    pub(in crate::vms) ssh: Arc<Mutex<Ssh>>,
}

/// A kit whose network call starting with `fail` fails (none when it names
/// no call).
pub(in crate::vms) fn kit(fail: &str) -> Kit {
    build(fail, |_| {})
}

/// A kit whose settings `adjust` changes.
pub(in crate::vms) fn kit_with(adjust: impl FnOnce(&mut VmSettings)) -> Kit {
    build("", adjust)
}

fn build(fail: &str, adjust: impl FnOnce(&mut VmSettings)) -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let (cache, state) = (dir.path().join("cache"), dir.path().join("state"));
    for f in ["kernels/generic-6.1/bzImage", "images/img/rootfs.ext4"] {
        std::fs::create_dir_all(cache.join(f).parent().unwrap()).unwrap();
        std::fs::write(cache.join(f), b"").unwrap();
    }
    std::fs::create_dir_all(&state).unwrap();
    let calls = Calls::default();
    let vmm = Arc::new(FakeVmm::new("vmm", &calls).on_start(|spec| {
        // Which base it was given, for the generation test.
        std::fs::write(
            spec.files.dir().join("fake-base-disk"),
            spec.disks[0].path.as_os_str().as_encoded_bytes(),
        )
        .unwrap();
        assert!(
            spec.cmdline
                .contains("ip=10.77.0.2::10.77.0.1:255.255.255.0:web:eth0:off")
        );
    }));
    let other = Arc::new(FakeVmm::new("other", &calls));
    let ssh = Arc::new(Mutex::new(Ssh::Fails));
    let runner = ssh_runner(&calls, [vmm.clone(), other.clone()], ssh.clone());
    let db = Arc::new(Store::open(&state.join("s.db")).unwrap());
    let ops = Arc::new(Operations::default());
    let artifacts = Arc::new(crate::artifacts::Artifacts::new(
        &cache,
        db.clone(),
        ops.clone(),
        runner.clone(),
        String::new(),
        banger_artifacts::catalog::Catalog::embedded(),
    ));
    let net = if fail.is_empty() {
        FakeNet::new(&calls)
    } else {
        FakeNet::failing(&calls, fail)
    };
    let vms = Vms::new(
        Parts {
            db: &db,
            ops: &ops,
            artifacts: &artifacts,
            cache_dir: &cache,
            state_dir: &state,
        },
        runner,
        vmm.clone(),
        Arc::new(net),
        {
            let mut s = settings(&fake_init(dir.path()));
            adjust(&mut s);
            s
        },
    )
    .with_other_vmms(vec![other.clone()]);
    let vm = VmRecord {
        nat: true,
        tap: "bgt0a1b2c3d4e5f".into(),
        ..banger_testutil::stopped_vm("0a1b2c3d4e5f6071", "web", "img")
    };
    db.insert_vm(&vm).unwrap();
    std::fs::create_dir_all(vms.dir(&vm.id).path()).unwrap();
    Kit {
        _dir: dir,
        vms: Arc::new(vms),
        vm,
        calls,
        vmm,
        other,
        ssh,
    }
}

impl Kit {
    /// The kit with guest shell sessions going to `guest`.
    pub(in crate::vms) fn with_guest_shell(
        self,
        guest: Arc<dyn super::workspace::guest::GuestShell>,
    ) -> Self {
        let vms = Arc::try_unwrap(self.vms)
            .unwrap_or_else(|_| panic!("the kit's service is shared"))
            .with_guest_shell(guest);
        Self {
            vms: Arc::new(vms),
            ..self
        }
    }

    /// The calls so far, and forgets them.
    pub(in crate::vms) fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// Makes `web` a VM running under the driver called `driver`, as a
    /// finished start leaves it: the VMM up, its handles on disk and in
    /// memory, the row `running`.
    pub(in crate::vms) fn run_web(&self, driver: &str) -> Handles {
        let fake = if driver == "other" {
            &self.other
        } else {
            &self.vmm
        };
        FakeVmm::set(&fake.alive, true);
        let h = Handles {
            pid: banger_testutil::fakes::FAKE_PID,
            tap: self.vm.tap.clone(),
            accel: "tcg".into(),
            vmm: driver.into(),
        };
        handles::write(&self.vms.dir(&self.vm.id), &h).unwrap();
        lock(&self.vms.running).insert(self.vm.id.clone(), h.clone());
        self.set_state(&self.vm.id, VmState::Running);
        h
    }

    /// Records `state` for the VM `id`.
    pub(in crate::vms) fn set_state(&self, id: &str, state: VmState) {
        self.vms
            .db
            .set_vm_state(id, state, None, "2026-11-30T00:00:00Z")
            .unwrap();
    }

    /// The VM's row now.
    pub(in crate::vms) fn stored(&self, id: &str) -> VmRecord {
        self.vms.db.get_vm(id).unwrap().unwrap()
    }
}

/// A runner that expects only `ssh` (the stop's poweroff), answered as
/// `ssh` says (a guest that powers off stops every `vmms`), and `mke2fs`
/// (a workspace disk), which writes its output file with the tar's name.
fn ssh_runner(calls: &Calls, vmms: [Arc<FakeVmm>; 2], ssh: Arc<Mutex<Ssh>>) -> Arc<dyn Runner> {
    Arc::new(FakeRunner::new(calls, move |cmd| {
        if cmd.program == Path::new("mke2fs") {
            let n = cmd.args.len();
            std::fs::write(&cmd.args[n - 2], format!("ext4 of {:?}", cmd.args[n - 3])).unwrap();
            return Ok(());
        }
        assert_eq!(
            cmd.program,
            Path::new("ssh"),
            "only ssh and mke2fs are expected"
        );
        match *ssh.lock().unwrap() {
            Ssh::PowersOff => {
                for vmm in &vmms {
                    FakeVmm::set(&vmm.alive, false);
                }
                Ok(())
            }
            Ssh::Ignores => Ok(()),
            Ssh::Fails => Err(RunError::Failed {
                command: "ssh".into(),
                status: std::process::ExitStatus::from_raw(255 << 8),
                log: PathBuf::from("stop.log"),
            }),
        }
    }))
}

fn settings(init: &Path) -> VmSettings {
    VmSettings {
        bridge: "banger0".into(),
        subnet: Subnet::default(),
        accel: banger_config::Accel::Tcg,
        boot_timeout: std::time::Duration::from_secs(30),
        // Each stop phase waits this long: short, so the stop order is
        // tested in milliseconds.
        stop_timeout: std::time::Duration::from_millis(50),
        qemu: PathBuf::from("qemu-system-x86_64"),
        vmm: banger_config::VmmChoice::Qemu,
        firecracker: PathBuf::from("firecracker"),
        jailer: None,
        init_bin: Some(init.to_owned()),
        workspace_guest_path: "/root/repo".into(),
        file_sync: Vec::new(),
        owner_home: None,
    }
}

/// The smallest file the initramfs writer takes for a static ELF.
fn fake_init(dir: &Path) -> PathBuf {
    let init = dir.join("banger-init");
    let mut elf = vec![0u8; 120];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x20] = 64;
    elf[0x36] = 56;
    elf[0x38] = 1;
    elf[64] = 1;
    std::fs::write(&init, elf).unwrap();
    init
}

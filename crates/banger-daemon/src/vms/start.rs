//! Starting a VM: bridge, tap, NAT, VMM, handles, SSH readiness, each
//! step with its undo.

use std::net::Ipv4Addr;
use std::time::Instant;

use banger_api::{ErrorCode, Vm, VmState};
use banger_artifacts::store::{Kind, now_rfc3339};
use banger_init::abi::{BootPlan, GuestNet};
use banger_store::VmRecord;
use banger_vmm::{BootSpec, Disk, Nic};

use super::disks::DiskFiles;
use super::handles::{self, Handles};
use super::undo::Undo;
use super::{Vms, failed, lock, ssh, stop_pid};
use crate::error::{ApiError, error_chain};

/// Reports start stages: (1-based stage, what is happening).
pub(super) type StartProgress<'a> = dyn Fn(u32, &str) + 'a;

impl Vms {
    /// Starts a VM that is not running.
    pub fn start(&self, reference: &str) -> Result<Vm, ApiError> {
        let requested = Instant::now();
        self.locked(reference, |vm| {
            if self.handles(&vm.id).is_some() {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("vm {} is already running", vm.name),
                ));
            }
            self.start_locked(&vm, requested, &|_, _| {})?;
            self.view(self.reload(&vm.id)?)
        })
    }

    /// The start steps, each with its undo; on failure the done steps are
    /// undone in reverse and the error is recorded on the VM.
    pub(super) fn start_locked(
        &self,
        vm: &VmRecord,
        requested: Instant,
        progress: &StartProgress<'_>,
    ) -> Result<(Ipv4Addr, Handles), ApiError> {
        let started = Instant::now();
        let result = self.start_steps(vm, requested, progress);
        match &result {
            Ok((_, h)) => {
                tracing::info!(vm = %vm.name, pid = h.pid, accel = %h.accel, secs = started.elapsed().as_secs_f64(), "vm started");
                self.db
                    .set_vm_state(&vm.id, VmState::Running.as_str(), None, &now_rfc3339())?;
            }
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %e.message, "vm start failed; rolled back");
                self.db.set_vm_state(
                    &vm.id,
                    VmState::Error.as_str(),
                    Some(&e.message),
                    &now_rfc3339(),
                )?;
            }
        }
        result
    }

    pub(super) fn start_steps(
        &self,
        vm: &VmRecord,
        requested: Instant,
        progress: &StartProgress<'_>,
    ) -> Result<(Ipv4Addr, Handles), ApiError> {
        let ip: Ipv4Addr = vm
            .ip
            .parse()
            .map_err(|_| ApiError::internal(format!("bad address {:?} in the store", vm.ip)))?;
        let files = self.files(&vm.id);
        let kernel_dir = self.art_store.dir(Kind::Kernel, &vm.kernel);
        let kernel = kernel_dir.join(self.vmm.kernel_file());
        // The generation the VM was created from; VMs made before links
        // existed use the image's current one.
        let pinned = self.art_store.pinned_rootfs(&vm.id);
        let rootfs = if pinned.is_file() {
            pinned
        } else {
            self.art_store
                .dir(Kind::Image, &vm.image)
                .join(banger_artifacts::image::ROOTFS)
        };
        for (what, path) in [("kernel", &kernel), ("image", &rootfs)] {
            if !path.is_file() {
                return Err(failed(format!(
                    "the {what} {} is missing ({}); pull it again",
                    if what == "kernel" {
                        &vm.kernel
                    } else {
                        &vm.image
                    },
                    path.display()
                )));
            }
        }
        self.check_vmm_can_boot(&vm.kernel)?;
        let size = super::create::Size {
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            disk_bytes: vm.disk_bytes,
        };
        size.check_room(&self.room()?, 0, self.running_memory_mib(&vm.id)?)?;
        progress(1, "booting");
        let initramfs = self.initramfs()?;
        // The KVM probe boots the bzImage under QEMU, whichever VMM runs.
        let accel = self.accel(
            &kernel_dir.join(banger_artifacts::kernel::BZIMAGE),
            &initramfs,
        );
        let mut undo = Undo::default();
        let bridge = &self.settings.bridge;
        let net = self.net.clone();
        self.net
            .ensure_bridge(bridge, &self.settings.subnet)
            .map_err(|e| failed(error_chain(&e)))?;
        // Each undo is pushed before its step: the step may fail half-way
        // (a tap created but not attached), and the undo is idempotent.
        {
            let (net, tap) = (net.clone(), vm.tap.clone());
            undo.push("remove the tap", move || {
                net.remove_tap(&tap).map_err(|e| e.to_string())
            });
        }
        if let Err(e) = self.net.add_tap(&vm.tap, bridge, banger_sys::euid()) {
            undo.rollback();
            return Err(failed(error_chain(&e)));
        }
        if vm.nat {
            let (net, id, br) = (net.clone(), vm.id.clone(), bridge.clone());
            undo.push("remove NAT rules", move || {
                net.remove_nat(&id, ip, &br).map_err(|e| e.to_string())
            });
            if let Err(e) = self.net.add_nat(&vm.id, ip, bridge) {
                undo.rollback();
                return Err(failed(error_chain(&e)));
            }
        }
        let spec = BootSpec {
            files: files.clone(),
            kernel,
            initramfs,
            cmdline: format!(
                "{} {}",
                BootPlan::by_labels().cmdline(),
                GuestNet {
                    ip,
                    gateway: self.settings.subnet.gateway(),
                    netmask: self.settings.subnet.netmask(),
                    hostname: vm.name.clone(),
                }
            ),
            disks: {
                let d = DiskFiles::in_dir(files.dir());
                vec![
                    Disk {
                        id: "base",
                        path: rootfs,
                        read_only: true,
                    },
                    Disk {
                        id: "overlay",
                        path: d.overlay,
                        read_only: false,
                    },
                    Disk {
                        id: "work",
                        path: d.work,
                        read_only: false,
                    },
                ]
            },
            nic: Some(Nic {
                tap: vm.tap.clone(),
                mac: mac_for(&vm.id),
            }),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            accel,
        };
        let spawning = Instant::now();
        let pid = match self.vmm.start(&spec) {
            Ok(pid) => {
                // banger's own overhead, request to VMM spawn, and the VMM's
                // set-up time: the figures docs/performance.md reports.
                tracing::info!(
                    vm = %vm.name,
                    pid,
                    before_vmm_ms = millis(spawning.duration_since(requested)),
                    vmm_setup_ms = millis(spawning.elapsed()),
                    "vmm running"
                );
                pid
            }
            Err(e) => {
                undo.rollback();
                // The VMM may have made its socket before it gave up.
                let _ = self.vmm.release(&files);
                let log = std::fs::read_to_string(files.vmm_log()).unwrap_or_default();
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                return Err(failed(format!("{}: {last}", error_chain(&e))));
            }
        };
        {
            let (vmm, files) = (self.vmm.clone(), files.clone());
            undo.push("kill the VMM", move || {
                stop_pid(&*vmm, &files, pid);
                Ok(())
            });
        }
        let h = Handles {
            pid,
            tap: vm.tap.clone(),
            accel: accel.name().to_owned(),
            vmm: self.vmm.name().to_owned(),
        };
        if let Err(e) = handles::write(files.dir(), &h) {
            undo.rollback();
            return Err(failed(format!("write handles.json: {e}")));
        }
        {
            let dir = files.dir().to_owned();
            undo.push("remove handles.json", move || {
                handles::remove(&dir).map_err(|e| e.to_string())
            });
        }
        lock(&self.running).insert(vm.id.clone(), h.clone());
        // With the VMM holding the tap, a tap off the bridge would only show
        // as an SSH timeout minutes later: say so now.
        if let Err(e) = self.net.check_tap(&vm.tap, bridge) {
            lock(&self.running).remove(&vm.id);
            undo.rollback();
            return Err(failed(error_chain(&e)));
        }
        progress(2, "waiting for the guest's SSH server");
        let alive = || self.vmm.is_running(&files, pid) && !self.stopping.is_cancelled();
        if let Err(e) = ssh::wait_for_sshd(ip, self.settings.boot_timeout, alive) {
            let e = if self.stopping.is_cancelled() {
                "the daemon is shutting down".to_owned()
            } else {
                e.to_string()
            };
            lock(&self.running).remove(&vm.id);
            undo.rollback();
            // Only the tail is read (the guest decides the log's size), and
            // only printable text goes into the error a terminal shows.
            let tail = super::console::ConsoleLog::new(files.console()).tail(4096);
            let console = banger_api::text::printable(&String::from_utf8_lossy(&tail));
            let tail: Vec<&str> = console.lines().rev().take(3).collect();
            return Err(failed(format!(
                "{e}; console ({}) ends: {}",
                files.console().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        undo.commit();
        Ok((ip, h))
    }
}

/// A locally administered unicast MAC derived from the VM id.
fn mac_for(id: &str) -> String {
    let hex: Vec<u8> = (0..4)
        .map(|i| {
            id.get(i * 2..i * 2 + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0)
        })
        .collect();
    format!(
        "02:ba:{:02x}:{:02x}:{:02x}:{:02x}",
        hex[0], hex[1], hex[2], hex[3]
    )
}

/// Whole milliseconds as a u64, which tracing logs as a JSON number (a u128
/// would be logged as a string).
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use banger_net::{NetError, Network, Subnet};
    use banger_store::Store;
    use banger_sys::{Cancel, Cmd, RunError, Runner};
    use banger_vmm::{VmFiles, Vmm, VmmError};

    use crate::operations::Operations;
    use crate::vms::{Parts, VmSettings};

    pub(in crate::vms) type Log = Arc<Mutex<Vec<String>>>;

    #[derive(Debug)]
    struct FakeNet {
        log: Log,
        fail: &'static str,
    }

    impl FakeNet {
        fn step(&self, call: String) -> Result<(), NetError> {
            let fails = call.starts_with(self.fail);
            self.log.lock().unwrap().push(call);
            if fails {
                return Err(NetError::Invalid {
                    what: "step",
                    value: self.fail.to_owned(),
                    why: "made to fail",
                });
            }
            Ok(())
        }
    }

    impl Network for FakeNet {
        fn ensure_bridge(&self, bridge: &str, _: &Subnet) -> Result<(), NetError> {
            self.step(format!("ensure_bridge {bridge}"))
        }
        fn add_tap(&self, tap: &str, _: &str, _: u32) -> Result<(), NetError> {
            self.step(format!("add_tap {tap}"))
        }
        fn remove_tap(&self, tap: &str) -> Result<(), NetError> {
            self.step(format!("remove_tap {tap}"))
        }
        fn check_tap(&self, tap: &str, _: &str) -> Result<(), NetError> {
            self.step(format!("check_tap {tap}"))
        }
        fn add_nat(&self, tag: &str, _: Ipv4Addr, _: &str) -> Result<(), NetError> {
            self.step(format!("add_nat {tag}"))
        }
        fn remove_nat(&self, tag: &str, _: Ipv4Addr, _: &str) -> Result<(), NetError> {
            self.step(format!("remove_nat {tag}"))
        }
    }

    /// A VMM that starts, then is never running (it died during boot), or,
    /// for the "shutdown" and "orphan" cases, runs until killed; for
    /// "orphan" the host also shows it (its pidfile) to `recover_pid`.
    #[derive(Debug)]
    struct DyingVmm(Log, std::sync::atomic::AtomicBool, bool);

    impl Vmm for DyingVmm {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn kernel_file(&self) -> &'static str {
            banger_artifacts::kernel::BZIMAGE
        }
        fn recover_pid(&self, _: &VmFiles) -> Option<u32> {
            (self.2 && self.1.load(std::sync::atomic::Ordering::SeqCst)).then_some(4242)
        }
        fn start(&self, spec: &BootSpec) -> Result<u32, VmmError> {
            self.0.lock().unwrap().push("vmm start".into());
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
            Ok(4242)
        }
        fn request_shutdown(&self, _: &VmFiles) -> Result<(), VmmError> {
            Ok(())
        }
        fn is_running(&self, _: &VmFiles, _: u32) -> bool {
            self.1.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn kill(&self, _: u32) {
            self.0.lock().unwrap().push("vmm kill".into());
            self.1.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[derive(Debug)]
    struct NoCommands;

    impl Runner for NoCommands {
        fn run(&self, cmd: &Cmd, _: &Path, _: &Cancel) -> Result<(), RunError> {
            panic!("no command expected, got {}", cmd.display());
        }
    }

    /// A service over a temp dir with one stopped VM `web` and the files a
    /// start checks for. `fail` names the network step that fails, or
    /// the VMM's behaviour (see [`DyingVmm`]).
    pub(in crate::vms) fn service(
        dir: &Path,
        fail: &'static str,
        log: &Log,
    ) -> (Arc<Vms>, VmRecord) {
        let (cache, state) = (dir.join("cache"), dir.join("state"));
        for f in ["kernels/generic-6.1/bzImage", "images/img/rootfs.ext4"] {
            std::fs::create_dir_all(cache.join(f).parent().unwrap()).unwrap();
            std::fs::write(cache.join(f), b"").unwrap();
        }
        let init = dir.join("banger-init");
        let mut elf = vec![0u8; 120];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20] = 64;
        elf[0x36] = 56;
        elf[0x38] = 1;
        elf[64] = 1;
        std::fs::write(&init, elf).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let db = Arc::new(Store::open(&state.join("s.db")).unwrap());
        let ops = Arc::new(Operations::default());
        let runner: Arc<dyn Runner> = Arc::new(NoCommands);
        let artifacts = Arc::new(crate::artifacts::Artifacts::new(
            &cache,
            db.clone(),
            ops.clone(),
            runner.clone(),
            String::new(),
            banger_artifacts::catalog::Catalog::embedded(),
        ));
        let vms = Arc::new(Vms::new(
            Parts {
                db: &db,
                ops: &ops,
                artifacts: &artifacts,
                cache_dir: &cache,
                state_dir: &state,
            },
            runner,
            Arc::new(DyingVmm(
                log.clone(),
                matches!(fail, "shutdown" | "orphan").into(),
                fail == "orphan",
            )),
            Arc::new(FakeNet {
                log: log.clone(),
                fail,
            }),
            VmSettings {
                bridge: "banger0".into(),
                subnet: Subnet::default(),
                accel: banger_config::Accel::Tcg,
                boot_timeout: std::time::Duration::from_secs(30),
                stop_timeout: std::time::Duration::from_secs(1),
                qemu: PathBuf::from("qemu-system-x86_64"),
                vmm: banger_config::VmmChoice::Qemu,
                firecracker: PathBuf::from("firecracker"),
                jailer: None,
                init_bin: Some(init),
            },
        ));
        let vm = VmRecord {
            nat: true,
            tap: "bgt0a1b2c3d4e5f".into(),
            ..banger_testutil::stopped_vm("0a1b2c3d4e5f6071", "web", "img")
        };
        db.insert_vm(&vm).unwrap();
        std::fs::create_dir_all(vms.vm_dir(&vm.id)).unwrap();
        (vms, vm)
    }

    /// A start of "web" whose step `fail` fails (nothing fails for
    /// "nothing": then the fake VMM dies during boot).
    struct FailedStart {
        _dir: tempfile::TempDir,
        vms: Arc<Vms>,
        vm: VmRecord,
        /// The error's message.
        message: String,
        /// Every network and VMM call, in order.
        steps: Vec<String>,
    }

    fn failed_start(fail: &'static str) -> FailedStart {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::default();
        let (vms, vm) = service(dir.path(), fail, &log);
        if fail == "shutdown" {
            vms.begin_shutdown();
        }
        let message = vms.start("web").unwrap_err().message;
        let steps = log.lock().unwrap().clone();
        FailedStart {
            _dir: dir,
            vms,
            vm,
            message,
            steps,
        }
    }

    impl FailedStart {
        /// No handles on disk or in memory, the VM in state `error`.
        fn assert_recorded_and_released(&self) {
            assert!(handles::read(&self.vms.vm_dir(&self.vm.id)).is_none());
            assert!(self.vms.handles(&self.vm.id).is_none());
            let stored = self.vms.db.get_vm(&self.vm.id).unwrap().unwrap();
            assert_eq!(stored.state, "error");
            assert_eq!(stored.last_error.as_deref(), Some(self.message.as_str()));
        }
    }

    #[test]
    fn a_failed_step_undoes_the_done_ones_in_reverse_and_records_the_error() {
        let f = failed_start("add_nat");
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

    /// A tap off the bridge fails the start before the SSH wait, with the
    /// VMM's handles and the network undone.
    #[test]
    fn a_detached_tap_fails_the_start_at_once() {
        let f = failed_start("check_tap");
        assert!(f.message.contains("made to fail"), "{}", f.message);
        assert_eq!(
            f.steps[3..],
            [
                "vmm start",
                "check_tap bgt0a1b2c3d4e5f",
                "remove_nat 0a1b2c3d4e5f6071",
                "remove_tap bgt0a1b2c3d4e5f",
            ]
        );
        f.assert_recorded_and_released();
    }

    /// Every step of a start up to the wait for the guest, in order.
    const BOOTED: [&str; 5] = [
        "ensure_bridge banger0",
        "add_tap bgt0a1b2c3d4e5f",
        "add_nat 0a1b2c3d4e5f6071",
        "vmm start",
        "check_tap bgt0a1b2c3d4e5f",
    ];
    /// The network undone, in reverse.
    const UNDONE: [&str; 2] = ["remove_nat 0a1b2c3d4e5f6071", "remove_tap bgt0a1b2c3d4e5f"];

    #[test]
    fn a_vmm_that_dies_while_booting_is_rolled_back_with_its_handles() {
        let f = failed_start("nothing");
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
        let f = failed_start("shutdown");
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
        let dir = tempfile::tempdir().unwrap();
        let log = Log::default();
        let (vms, vm) = service(dir.path(), "nothing", &log);
        let pin = vms.art_store.pin_rootfs("img", &vm.id).unwrap();
        let s = vms.art_store.stage(Kind::Image, "img").unwrap();
        std::fs::write(s.path().join(banger_artifacts::image::ROOTFS), b"new").unwrap();
        vms.art_store.publish(Kind::Image, "img", s).unwrap();
        let _ = vms.start("web");
        let booted = std::fs::read(vms.vm_dir(&vm.id).join("fake-base-disk")).unwrap();
        assert_eq!(booted, pin.as_os_str().as_encoded_bytes());
    }

    #[test]
    fn macs_are_local_unicast_and_follow_the_id() {
        assert_eq!(mac_for("0a1b2c3d4e5f6071"), "02:ba:0a:1b:2c:3d");
        assert_eq!(mac_for("zz"), "02:ba:00:00:00:00");
    }
}

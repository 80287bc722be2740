//! The start's steps, in order: check the inputs, connect the network,
//! spawn the VMM, record its handles, wait for the guest. Each step that
//! leaves something on the host pushes its undo first.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

use banger_artifacts::store::Kind;
use banger_init::abi::{BootPlan, GuestNet};
use banger_store::VmRecord;
use banger_sys::wait::lock;
use banger_vmm::{Accel, BootSpec, Disk, Nic, VmFiles};

use super::super::handles::{self, Handles};
use super::super::stop::stop_pid;
use super::super::undo::Undo;
use super::super::{Vms, failed, ssh};
use crate::error::error_chain;
use crate::vms::VmError;

/// What a start boots, checked to exist before anything is changed.
#[derive(Debug)]
pub(super) struct Inputs {
    pub(super) ip: Ipv4Addr,
    pub(super) files: VmFiles,
    /// The kernel file this VMM boots.
    pub(super) kernel: PathBuf,
    /// The bzImage, which the KVM probe boots whichever VMM runs.
    pub(super) bzimage: PathBuf,
    /// The root file system generation the VM was created from.
    pub(super) rootfs: PathBuf,
}

impl Vms {
    /// The files a start needs, the VMM's ability to boot them and the
    /// host's room for the VM.
    pub(super) fn start_inputs(&self, vm: &VmRecord) -> Result<Inputs, VmError> {
        let ip = vm.ip;
        let kernel_dir = self.art_store.dir(Kind::Kernel, &vm.kernel);
        let kernel = kernel_dir.join(self.vmm.kernel_file());
        // VMs made before pins existed use the image's current generation.
        let pinned = self.art_store.pinned_rootfs(&vm.id);
        let rootfs = if pinned.is_file() {
            pinned
        } else {
            self.art_store
                .dir(Kind::Image, &vm.image)
                .join(banger_artifacts::image::ROOTFS)
        };
        for (what, name, path) in [
            ("kernel", &vm.kernel, &kernel),
            ("image", &vm.image, &rootfs),
        ] {
            if !path.is_file() {
                return Err(failed(format!(
                    "the {what} {name} is missing ({}); pull it again",
                    path.display()
                )));
            }
        }
        self.check_vmm_can_boot(&vm.kernel)?;
        self.check_network_ready()?;
        let size = super::super::create::Size {
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            disk_bytes: vm.disk_bytes,
        };
        size.check_room(&self.room()?, 0, self.running_memory_mib(&vm.id)?)?;
        Ok(Inputs {
            ip,
            files: self.files(&vm.id),
            kernel,
            bzimage: kernel_dir.join(banger_artifacts::kernel::BZIMAGE),
            rootfs,
        })
    }

    /// The bridge, the VM's tap on it, for a NAT VM its rules, and its
    /// place in the firewall. Each
    /// undo is pushed before its step: the step may fail half-way (a tap
    /// created but not attached), and the undo is idempotent.
    pub(super) fn connect(
        &self,
        vm: &VmRecord,
        ip: Ipv4Addr,
        undo: &mut Undo,
    ) -> Result<(), VmError> {
        let bridge = &self.settings.bridge;
        self.net
            .ensure_bridge(bridge, &self.settings.subnet)
            .map_err(|e| failed(error_chain(&e)))?;
        // Undone last (undos run in reverse): a tap never stands without
        // its guest's chain. Leaving is idempotent.
        let (firewall, id) = (self.firewall.clone(), vm.id.clone());
        undo.push("leave the firewall", move || Ok(firewall.expel(&id)?));
        let (net, tap) = (self.net.clone(), vm.tap.clone());
        undo.push("remove the tap", move || Ok(net.remove_tap(&tap)?));
        self.net
            .add_tap(&vm.tap, bridge, banger_sys::euid())
            .map_err(|e| failed(error_chain(&e)))?;
        if vm.nat {
            let (net, id, br) = (self.net.clone(), vm.id.clone(), bridge.clone());
            undo.push(
                "remove NAT rules",
                move || Ok(net.remove_nat(&id, ip, &br)?),
            );
            self.net
                .add_nat(&vm.id, ip, bridge)
                .map_err(|e| failed(error_chain(&e)))?;
        }
        // Before the VMM: the guest never runs outside the tables.
        self.firewall.admit(vm).map_err(|e| {
            failed(format!(
                "isolate the guest (banger's nftables tables): {}",
                error_chain(&e)
            ))
        })
    }

    /// What the VMM is asked to boot.
    pub(super) fn boot_spec(
        &self,
        vm: &VmRecord,
        inputs: &Inputs,
        initramfs: PathBuf,
        accel: Accel,
    ) -> BootSpec {
        let net = GuestNet {
            ip: inputs.ip,
            gateway: self.settings.subnet.gateway(),
            netmask: self.settings.subnet.netmask(),
            hostname: vm.name.to_string(),
        };
        let disks = self.dir(&vm.id).disks();
        let disk = |id, path, read_only| Disk {
            id,
            path,
            read_only,
        };
        BootSpec {
            files: inputs.files.clone(),
            kernel: inputs.kernel.clone(),
            initramfs,
            cmdline: format!("{} {net}", BootPlan::by_labels().cmdline()),
            disks: {
                let mut all = vec![
                    disk("base", inputs.rootfs.clone(), true),
                    disk("overlay", disks.overlay, false),
                    disk("work", disks.work, false),
                ];
                // Made at create for a VM born with a workspace, whose
                // fstab mounts it.
                if disks.repo.exists() {
                    all.push(disk("repo", disks.repo, false));
                }
                all
            },
            nic: Some(Nic {
                tap: vm.tap.clone(),
                mac: mac_for(&vm.id),
            }),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            accel,
        }
    }

    /// Spawns the VMM; a failure names the last line of its log.
    pub(super) fn spawn_vmm(
        &self,
        vm: &VmRecord,
        spec: &BootSpec,
        requested: Instant,
        undo: &mut Undo,
    ) -> Result<u32, VmError> {
        let files = spec.files.clone();
        let spawning = Instant::now();
        let pid = self.vmm.start(spec).map_err(|e| {
            let log = std::fs::read_to_string(files.vmm_log()).unwrap_or_default();
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            // The VMM may have made its socket (or jail) before it gave up.
            // Only here: once a pid exists, the kill's undo releases, and
            // only after the process is gone.
            if let Err(r) = self.vmm.release(&files) {
                tracing::warn!(vm = %vm.name, error = %error_chain(&r), "cannot remove what the failed VMM left");
            }
            failed(format!("{}: {last}", error_chain(&e)))
        })?;
        // banger's own overhead, request to VMM spawn, and the VMM's set-up
        // time: the figures docs/performance.md reports.
        tracing::info!(
            vm = %vm.name,
            pid,
            before_vmm_ms = millis(spawning.duration_since(requested)),
            vmm_setup_ms = millis(spawning.elapsed()),
            "vmm running"
        );
        let vmm = self.vmm.clone();
        undo.push("kill the VMM", move || {
            stop_pid(&*vmm, &files, pid);
            Ok(())
        });
        Ok(pid)
    }

    /// Records the VMM on disk and in memory, then checks the tap: with the
    /// VMM holding it, a tap off the bridge would only show as an SSH
    /// timeout minutes later.
    pub(super) fn record_handles(
        &self,
        vm: &VmRecord,
        spec: &BootSpec,
        pid: u32,
        undo: &mut Undo,
    ) -> Result<Handles, VmError> {
        let h = Handles {
            pid,
            tap: vm.tap.clone(),
            accel: spec.accel.name().to_owned(),
            vmm: self.vmm.name().to_owned(),
        };
        let dir = self.dir(&vm.id);
        {
            let dir = dir.clone();
            undo.push("remove handles.json", move || Ok(handles::remove(&dir)?));
        }
        handles::write(&dir, &h).map_err(|e| failed(format!("write handles.json: {e}")))?;
        let (running, id) = (self.running.clone(), vm.id.clone());
        undo.push("forget the VMM", move || {
            lock(&running).remove(&id);
            Ok(())
        });
        lock(&self.running).insert(vm.id.clone(), h.clone());
        self.net
            .check_tap(&vm.tap, &self.settings.bridge)
            .map_err(|e| failed(error_chain(&e)))?;
        Ok(h)
    }

    /// Waits for the guest's SSH server while the VMM runs and the daemon
    /// is not stopping; the error says why it gave up.
    pub(super) fn wait_for_guest(
        &self,
        ip: Ipv4Addr,
        files: &VmFiles,
        pid: u32,
    ) -> Result<(), GuestWait> {
        let alive = || self.vmm.is_running(files, pid) && !self.stopping.is_cancelled();
        let Err(e) = ssh::wait_for_sshd(ip, self.settings.boot_timeout, alive) else {
            return Ok(());
        };
        Err(if self.stopping.is_cancelled() {
            GuestWait::ShuttingDown
        } else {
            GuestWait::Sshd(e)
        })
    }

    /// A boot that gave up because of `why`, with the console's last lines:
    /// read after the rollback stopped the VMM, so they are its last.
    pub(super) fn boot_failed(why: &GuestWait, files: &VmFiles) -> VmError {
        // Only the tail is read (the guest decides the log's size), and
        // only printable text goes into the error a terminal shows.
        let tail = super::super::console::ConsoleLog::new(files.console()).tail(4096);
        let console = banger_api::text::printable(&String::from_utf8_lossy(&tail));
        let tail: Vec<&str> = console.lines().rev().take(3).collect();
        failed(format!(
            "{why}; console ({}) ends: {}",
            files.console().display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }
}

/// Why the wait for the guest gave up.
#[derive(Debug, thiserror::Error)]
pub(super) enum GuestWait {
    /// The daemon began to stop.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The VMM exited, or sshd did not answer in time.
    #[error(transparent)]
    Sshd(ssh::SshdWaitError),
}

/// A locally administered unicast MAC derived from the VM id.
pub(in crate::vms) fn mac_for(id: &str) -> String {
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

//! `banger doctor`'s proof that the Firecracker banger would run accepts
//! banger's whole configuration of a VM: every API call a start sends but
//! `InstanceStart`, sent to the real binary with scratch files, so a
//! refusal (an older or differently built Firecracker) shows before a start
//! does. Needs no KVM: Firecracker opens it only at `InstanceStart`.

use std::path::{Path, PathBuf};

use banger_init::abi::{BootPlan, GuestNet};
use banger_net::TAP_PREFIX;
use banger_vmm::firecracker::Firecracker;
use banger_vmm::{Accel, BootSpec, Disk, Nic, VmFiles, VmmError};

use super::Vms;
use crate::doctor::Rehearsal;
use crate::error::error_chain;
use banger_sys::wait::lock;

/// The size of each scratch file standing in for a kernel or a disk.
const SCRATCH_BYTES: u64 = 1 << 20;

/// This daemon's rehearsal tap: banger's prefix, then `doc` (never a VM's:
/// theirs are hex) and this process's id, so two daemons on one host
/// never share one.
fn doctor_tap() -> String {
    format!("{TAP_PREFIX}doc{:06x}", std::process::id() & 0xff_ffff)
}

impl Vms {
    /// Rehearses a start with the Firecracker at `binary` (see the module).
    /// Makes the bridge if it is missing, as a start would.
    pub(super) fn rehearse_firecracker(&self, binary: &Path) -> Rehearsal {
        let _one = lock(&self.rehearsal_lock);
        // Shorter than a VM's `vms/<id>`, so its sockets fit wherever a
        // VM's do.
        let dir = self
            .vms_dir
            .parent()
            .unwrap_or(&self.vms_dir)
            .join("doctor");
        let _ = std::fs::remove_dir_all(&dir);
        let tap = doctor_tap();
        let nic = self.doctor_nic(&tap);
        let outcome =
            scratch_spec(&dir, nic.as_ref().ok())
                .map_err(|e| format!("cannot make scratch files in {}: {e}", dir.display()))
                .and_then(|spec| {
                    Firecracker::new(binary).rehearse(&spec).map_err(|e| match e {
                    VmmError::Refused { .. } => format!(
                        "it refused banger's configuration of a VM, so a start would fail: {}",
                        error_chain(&e)
                    ),
                    other => format!("the rehearsal could not run: {}", error_chain(&other)),
                })
                });
        // Always: an add_tap that failed half-way may have made it.
        if let Err(e) = self.net.remove_tap(&tap) {
            tracing::warn!(tap, error = %error_chain(&e), "cannot remove the doctor's tap");
        }
        let _ = std::fs::remove_dir_all(&dir);
        Rehearsal {
            binary: binary.to_owned(),
            outcome,
            nic_skipped: nic.err(),
        }
    }

    /// A tap for the rehearsal's network interface, made as a start makes
    /// one (Firecracker opens it by name at the call); why not, otherwise.
    fn doctor_nic(&self, tap: &str) -> Result<Nic, String> {
        let bridge = &self.settings.bridge;
        self.check_network_ready().map_err(|e| e.message())?;
        self.net
            .ensure_bridge(bridge, &self.settings.subnet)
            .and_then(|()| self.net.add_tap(tap, bridge, banger_sys::euid()))
            .map_err(|e| error_chain(&e))?;
        Ok(Nic {
            tap: tap.to_owned(),
            mac: "02:ba:d0:c7:00:00".to_owned(),
        })
    }
}

/// A VM of the shape a start boots (read-only base, overlay, work and
/// workspace disks, a NIC when there is a tap), on scratch files in `dir`.
fn scratch_spec(dir: &Path, nic: Option<&Nic>) -> std::io::Result<BootSpec> {
    std::fs::create_dir_all(dir)?;
    let scratch = |name: &str| -> std::io::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::File::create(&path)?.set_len(SCRATCH_BYTES)?;
        Ok(path)
    };
    let disk = |id, read_only| -> std::io::Result<Disk> {
        Ok(Disk {
            id,
            path: scratch(&format!("{id}.ext4"))?,
            read_only,
        })
    };
    let net = GuestNet {
        ip: std::net::Ipv4Addr::new(10, 0, 0, 2),
        gateway: std::net::Ipv4Addr::new(10, 0, 0, 1),
        netmask: std::net::Ipv4Addr::new(255, 255, 255, 0),
        hostname: "doctor".to_owned(),
    };
    Ok(BootSpec {
        files: VmFiles::new(dir),
        kernel: scratch("vmlinux")?,
        initramfs: scratch("initramfs.cpio")?,
        cmdline: format!("{} {net}", BootPlan::by_labels().cmdline()),
        disks: vec![
            disk("base", true)?,
            disk("overlay", false)?,
            disk("work", false)?,
            disk("repo", false)?,
        ],
        nic: nic.cloned(),
        vcpus: 2,
        memory_mib: 1024,
        accel: Accel::Kvm,
    })
}

//! The API calls that configure and boot one VM, in the order Firecracker
//! accepts them: every pre-boot resource, then `InstanceStart`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::BootSpec;

/// The guest's vsock context id; each VM has its own vsock device, so all
/// can use the first id a guest may have.
pub const GUEST_CID: u32 = 3;

/// One API call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// What it does, for error messages ("attach drive work").
    pub step: String,
    /// `PUT` or `PATCH`.
    pub method: &'static str,
    /// The request path.
    pub path: String,
    /// The JSON body.
    pub body: Value,
}

impl Call {
    fn put(step: impl Into<String>, path: impl Into<String>, body: Value) -> Self {
        Self {
            step: step.into(),
            method: "PUT",
            path: path.into(),
            body,
        }
    }

    /// An action (`InstanceStart`, `SendCtrlAltDel`).
    pub fn action(action: &str) -> Self {
        Self::put(
            format!("run action {action}"),
            "/actions",
            json!({ "action_type": action }),
        )
    }
}

/// Where Firecracker finds each file: host paths, or paths inside the
/// jailer's chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPaths {
    /// The uncompressed kernel (`vmlinux`).
    pub kernel: PathBuf,
    /// banger's initramfs.
    pub initramfs: PathBuf,
    /// One path per disk of the spec, in its order.
    pub disks: Vec<PathBuf>,
    /// Firecracker's own log.
    pub log: PathBuf,
    /// Its metrics file.
    pub metrics: PathBuf,
    /// The guest's serial console.
    pub console: PathBuf,
    /// The vsock device's host socket.
    pub vsock: PathBuf,
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The kernel command line Firecracker boots with: a serial console, a
/// guest reboot ends the VMM (`reboot=k`), no PCI bus to probe.
pub fn boot_args(spec: &BootSpec) -> String {
    format!("console=ttyS0 reboot=k panic=1 pci=off {}", spec.cmdline)
}

/// Every call that configures `spec` before boot, then `InstanceStart`.
pub fn calls(spec: &BootSpec, paths: &GuestPaths) -> Vec<Call> {
    // The logger first, so that a refusal of anything after it is logged.
    let mut calls = vec![
        Call::put(
            "configure the logger",
            "/logger",
            json!({ "log_path": text(&paths.log), "level": "Info", "show_level": true }),
        ),
        Call::put(
            "configure metrics",
            "/metrics",
            json!({ "metrics_path": text(&paths.metrics) }),
        ),
        Call::put(
            "size the machine",
            "/machine-config",
            json!({ "vcpu_count": spec.vcpus, "mem_size_mib": spec.memory_mib, "smt": false }),
        ),
        Call::put(
            "set the boot source",
            "/boot-source",
            json!({
                "kernel_image_path": text(&paths.kernel),
                "initrd_path": text(&paths.initramfs),
                "boot_args": boot_args(spec),
            }),
        ),
        Call::put(
            "attach the serial console",
            "/serial",
            json!({ "serial_out_path": text(&paths.console) }),
        ),
    ];
    for (disk, path) in spec.disks.iter().zip(&paths.disks) {
        calls.push(Call::put(
            format!("attach drive {}", disk.id),
            format!("/drives/{}", disk.id),
            json!({
                "drive_id": disk.id,
                "path_on_host": text(path),
                "is_root_device": false,
                "is_read_only": disk.read_only,
                // Honour the guest's flushes: what it synced before a stop
                // is on the host's disk.
                "cache_type": "Writeback",
            }),
        ));
    }
    if let Some(nic) = &spec.nic {
        calls.push(Call::put(
            format!("attach network interface on tap {}", nic.tap),
            "/network-interfaces/eth0",
            json!({ "iface_id": "eth0", "host_dev_name": nic.tap, "guest_mac": nic.mac }),
        ));
    }
    calls.push(Call::put(
        "attach the vsock device",
        "/vsock",
        json!({ "guest_cid": GUEST_CID, "uds_path": text(&paths.vsock) }),
    ));
    calls.push(Call::action("InstanceStart"));
    calls
}

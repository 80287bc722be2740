//! `banger doctor`: what this host can do.

use std::path::{Path, PathBuf};

use banger_api::{Check, DoctorReport};
use banger_artifacts::store::Kind;

use super::Vms;
use super::create::DEFAULT_IMAGE;

impl Vms {
    /// What banger finds about this host.
    pub fn doctor(&self) -> DoctorReport {
        let mut checks = Vec::new();
        let kernel = self
            .db
            .get_image(DEFAULT_IMAGE)
            .ok()
            .flatten()
            .map_or_else(|| "generic-6.1".to_owned(), |i| i.kernel);
        let bz = self.art_store.dir(Kind::Kernel, &kernel).join("bzImage");
        let accel = match (bz.is_file(), self.initramfs()) {
            (true, Ok(initramfs)) => {
                let v = self.kvm_verdict(&bz, &initramfs);
                checks.push(Check {
                    name: "kvm".to_owned(),
                    ok: v.usable,
                    detail: v.reason,
                });
                self.accel(&bz, &initramfs).name()
            }
            (false, _) => {
                checks.push(Check {
                    name: "kvm".to_owned(),
                    ok: false,
                    detail: format!(
                        "not probed yet: the probe boots kernel {kernel}, which is not pulled (banger kernel pull {kernel})"
                    ),
                });
                "tcg"
            }
            (true, Err(e)) => {
                checks.push(Check {
                    name: "kvm".to_owned(),
                    ok: false,
                    detail: format!("not probed: {}", e.message),
                });
                "tcg"
            }
        };
        checks.push(Check {
            name: "banger-init".to_owned(),
            ok: self.settings.init_bin.is_some(),
            detail: self.settings.init_bin.as_ref().map_or_else(
                || "no static banger-init found (BANGER_INIT_BIN, or beside bangerd)".to_owned(),
                |p| p.display().to_string(),
            ),
        });
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        checks.push(Check {
            name: "root".to_owned(),
            ok: root,
            detail: if root {
                "bangerd runs as root: it can create the bridge, taps and NAT rules".to_owned()
            } else {
                "bangerd is not root: bridge, tap and NAT setup will fail".to_owned()
            },
        });
        for tool in [
            self.settings.qemu.to_string_lossy().as_ref(),
            "mke2fs",
            "debugfs",
            "resize2fs",
            "tune2fs",
            "ssh",
            "ssh-keygen",
            "ip",
            "iptables",
        ] {
            let found = find_in_path(tool);
            checks.push(Check {
                name: tool.to_owned(),
                ok: found.is_some(),
                detail: found.map_or_else(
                    || "not found on PATH (scripts/setup installs it)".to_owned(),
                    |p| p.display().to_string(),
                ),
            });
        }
        DoctorReport {
            accel: accel.to_owned(),
            checks,
        }
    }
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let p = Path::new(tool);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|c| c.is_file())
}

//! `banger doctor`: what this host can do.

use std::path::Path;

use banger_api::{Check, CheckStatus, DoctorReport};
use banger_artifacts::store::Kind;
use banger_config::VmmChoice;
use banger_sys::{Cancel, Cmd};
use banger_vmm::firecracker::version::{self, MIN_SUPPORTED, Standing, TESTED};

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
            .map_or_else(|| crate::artifacts::DEFAULT_KERNEL.to_owned(), |i| i.kernel);
        let bz = self
            .art_store
            .dir(Kind::Kernel, &kernel)
            .join(banger_artifacts::kernel::BZIMAGE);
        let accel = match (bz.is_file(), self.boot.initramfs()) {
            (true, Ok(initramfs)) => {
                let v = self.boot.kvm_verdict(&bz, &initramfs);
                checks.push(Check {
                    name: "kvm".to_owned(),
                    status: CheckStatus::of(v.usable),
                    essential: self.settings.vmm == VmmChoice::Firecracker,
                    detail: v.reason,
                });
                self.boot.accel(&bz, &initramfs).name()
            }
            (false, _) => {
                checks.push(Check {
                    name: "kvm".to_owned(),
                    status: CheckStatus::Fail,
                    essential: self.settings.vmm == VmmChoice::Firecracker,
                    detail: format!(
                        "not probed yet: the probe boots kernel {kernel}, which is not pulled (banger kernel pull {kernel})"
                    ),
                });
                "tcg"
            }
            (true, Err(e)) => {
                checks.push(Check {
                    name: "kvm".to_owned(),
                    status: CheckStatus::Fail,
                    essential: self.settings.vmm == VmmChoice::Firecracker,
                    detail: format!("not probed: {}", e.message),
                });
                "tcg"
            }
        };
        checks.push(Check {
            name: "banger-init".to_owned(),
            status: CheckStatus::of(self.settings.init_bin.is_some()),
            essential: true,
            detail: self.settings.init_bin.as_ref().map_or_else(
                || "no static banger-init found (BANGER_INIT_BIN, or beside bangerd)".to_owned(),
                |p| p.display().to_string(),
            ),
        });
        let root = banger_sys::euid() == 0;
        checks.push(Check {
            name: "root".to_owned(),
            status: CheckStatus::of(root),
            essential: true,
            detail: if root {
                "bangerd runs as root: it can create the bridge, taps and NAT rules".to_owned()
            } else {
                "bangerd is not root: bridge, tap and NAT setup will fail".to_owned()
            },
        });
        let fc_needed = self.settings.vmm == VmmChoice::Firecracker;
        checks.push(Check {
            name: "vmm".to_owned(),
            status: CheckStatus::Pass,
            essential: true,
            detail: format!(
                "{} runs guests (config vmm = \"{}\")",
                self.vmm.name(),
                self.settings.vmm.as_str()
            ),
        });
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let mut binaries = vec![("firecracker", self.settings.firecracker.clone())];
        if let Some(jailer) = &self.settings.jailer {
            binaries.push(("jailer", jailer.clone()));
        }
        for (name, bin) in binaries {
            let found = banger_sys::wait::find_in_path(&bin.to_string_lossy());
            let output = found.as_ref().and_then(|p| self.version_output(name, p));
            checks.push(version_check(
                name,
                found.as_deref(),
                output.as_deref(),
                &os_release,
                fc_needed,
            ));
        }
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
            let found = banger_sys::wait::find_in_path(tool);
            checks.push(Check {
                name: tool.to_owned(),
                status: CheckStatus::of(found.is_some()),
                // QEMU also runs the KVM probe, so it is needed either way.
                essential: true,
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

impl Vms {
    /// What `<binary> --version` prints, if it runs.
    fn version_output(&self, name: &str, binary: &Path) -> Option<String> {
        let log = self.cache_dir.join(format!("doctor-{name}-version.log"));
        let _ = std::fs::remove_file(&log);
        let ran = self
            .runner
            .run(&Cmd::new(binary).arg("--version"), &log, &Cancel::new());
        let text = std::fs::read_to_string(&log).ok();
        let _ = std::fs::remove_file(&log);
        ran.ok().and(text)
    }
}

/// The check for Firecracker or its jailer: found or not, and its version
/// against the supported window. Essential only when the config asks for
/// Firecracker.
pub(super) fn version_check(
    name: &str,
    found: Option<&Path>,
    version_output: Option<&str>,
    os_release: &str,
    essential: bool,
) -> Check {
    let check = |status, detail| Check {
        name: name.to_owned(),
        status,
        essential,
        detail,
    };
    let window = format!("min {MIN_SUPPORTED}, tested {TESTED}");
    let Some(path) = found else {
        return check(
            CheckStatus::Fail,
            format!("not found on PATH: {}", version::install_hint(os_release)),
        );
    };
    let Some(v) = version_output.and_then(version::parse) else {
        return check(
            CheckStatus::Fail,
            format!(
                "{}: `--version` printed no version banger can read ({window})",
                path.display()
            ),
        );
    };
    match version::standing(v) {
        Standing::Supported => check(
            CheckStatus::Pass,
            format!("{v} at {} (supported; {window})", path.display()),
        ),
        Standing::Newer => check(
            CheckStatus::Warn,
            format!(
                "{v} at {} is newer than banger is tested with ({window}): likely fine, not proven",
                path.display()
            ),
        ),
        Standing::TooOld => check(
            CheckStatus::Fail,
            format!(
                "{v} at {} is older than banger supports ({window}); upgrade: {}",
                path.display(),
                version::install_hint(os_release)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "ID=debian\nVERSION_ID=\"12\"\n";

    #[test]
    fn version_check_covers_every_standing() {
        let path = Path::new("/usr/bin/firecracker");
        let at = |out: &str| version_check("firecracker", Some(path), Some(out), DEBIAN, true);

        let pass = at(
            "Firecracker v1.16.1\n\n2026-11-24T10:00:00 [anonymous-instance:main] Firecracker exiting successfully. exit_code=0\n",
        );
        assert_eq!(pass.status, CheckStatus::Pass);
        assert_eq!(
            pass.detail,
            "v1.16.1 at /usr/bin/firecracker (supported; min v1.16.0, tested v1.16.1)"
        );
        assert!(pass.essential);

        let newer = at("Firecracker v1.17.0\n");
        assert_eq!(newer.status, CheckStatus::Warn);
        assert!(
            newer.detail.contains("newer than banger is tested with"),
            "{}",
            newer.detail
        );

        let old = at("Firecracker v1.14.1\n");
        assert_eq!(old.status, CheckStatus::Fail);
        assert!(
            old.detail.contains("older than banger supports"),
            "{}",
            old.detail
        );
        assert!(
            old.detail.contains("Debian and Ubuntu do not package"),
            "{}",
            old.detail
        );

        let garbled = at("firecracker, some build\n");
        assert_eq!(garbled.status, CheckStatus::Fail);
        assert!(
            garbled.detail.contains("printed no version"),
            "{}",
            garbled.detail
        );
        let silent = version_check("jailer", Some(path), None, DEBIAN, false);
        assert_eq!(silent.status, CheckStatus::Fail);
        assert!(!silent.essential);
    }

    #[test]
    fn a_missing_binary_fails_with_the_distributions_hint() {
        let arch = version_check("firecracker", None, None, "ID=arch\n", false);
        assert_eq!(arch.status, CheckStatus::Fail);
        assert!(
            arch.detail
                .starts_with("not found on PATH: install it with `paru"),
            "{}",
            arch.detail
        );
        let other = version_check("jailer", None, None, "", true);
        assert!(
            other.detail.contains("firecracker/releases"),
            "{}",
            other.detail
        );
        assert_eq!(other.name, "jailer");
    }
}

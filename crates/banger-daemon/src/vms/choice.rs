//! Which VMM runs guests (config `vmm`), and what `vm create` checks
//! before it allocates anything for a VM that Firecracker is to run.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use banger_config::{Accel as AccelChoice, Layout, VmmChoice};
use banger_vmm::Vmm;
use banger_vmm::firecracker::Firecracker;
use banger_vmm::firecracker::jailer::JailerConfig;
use banger_vmm::qemu::Qemu;

use super::{VmSettings, Vms, boot_assets, failed};
use crate::vms::VmError;
use banger_sys::wait::find_in_path;

/// The driver the settings ask for, then every driver (so that VMs a
/// previous daemon ran under another VMM are still theirs). `auto` takes
/// Firecracker only when it is installed and this host boot's KVM probe
/// found KVM usable; with no verdict yet it takes QEMU, which runs
/// everywhere.
pub fn choose_vmm(settings: &VmSettings, layout: &Layout) -> (Arc<dyn Vmm>, Vec<Arc<dyn Vmm>>) {
    let qemu = || -> Arc<dyn Vmm> { Arc::new(Qemu::new(settings.qemu.clone())) };
    let firecracker = || -> Arc<dyn Vmm> {
        let binary = find_in_path(&settings.firecracker.to_string_lossy())
            .unwrap_or_else(|| settings.firecracker.clone());
        let fc = Firecracker::new(binary);
        let fc = match &settings.jailer {
            Some(jailer) => {
                // Firecracker drops to whoever owns banger's state. Never
                // to root: a start refuses (check_vmm_can_boot) when that
                // is root or unknown, and nobody stands in meanwhile.
                let (uid, gid) = jailer_owner(&layout.state_dir).unwrap_or((NOBODY, NOBODY));
                fc.with_jailer(JailerConfig {
                    binary: find_in_path(&jailer.to_string_lossy())
                        .unwrap_or_else(|| jailer.clone()),
                    chroot_base: layout.runtime_dir.join("jailer"),
                    uid,
                    gid,
                })
            }
            None => fc,
        };
        Arc::new(fc)
    };
    let installed = || find_in_path(&settings.firecracker.to_string_lossy()).is_some();
    // An explicit accel = "kvm" overrides the probe: the user knows their
    // host, and the VMM's own error speaks if they are wrong.
    let kvm = || {
        settings.accel == AccelChoice::Kvm
            || boot_assets::cached_kvm_verdict(&layout.cache_dir).is_some_and(|v| v.usable)
    };
    let chosen = match pick(settings.vmm, installed, kvm) {
        Driver::Qemu => qemu(),
        Driver::Firecracker => firecracker(),
    };
    (chosen, vec![qemu(), firecracker()])
}

/// The uid a refused jailer configuration stands in with.
const NOBODY: u32 = 65534;

/// Who the jailer runs Firecracker as: the owner of banger's state
/// directory, which must not be root (a jailed Firecracker running as root
/// would undo the point of the jail).
pub(crate) fn jailer_owner(state_dir: &std::path::Path) -> Result<(u32, u32), String> {
    let meta = std::fs::metadata(state_dir).map_err(|e| {
        format!(
            "the jailer runs Firecracker as the owner of {}, which cannot be read: {e}",
            state_dir.display()
        )
    })?;
    if meta.uid() == 0 {
        return Err(format!(
            "the jailer would run Firecracker as root: {} belongs to root; run banger as the user VMs should run as (`sudo banger system install`), or unset jailer_bin",
            state_dir.display()
        ));
    }
    Ok((meta.uid(), meta.gid()))
}

/// A driver new starts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Qemu,
    Firecracker,
}

/// The driver `choice` means on a host where Firecracker is `installed`
/// and KVM is `usable` (asked only for `auto`).
fn pick(
    choice: VmmChoice,
    installed: impl FnOnce() -> bool,
    usable: impl FnOnce() -> bool,
) -> Driver {
    match choice {
        VmmChoice::Qemu => Driver::Qemu,
        VmmChoice::Firecracker => Driver::Firecracker,
        VmmChoice::Auto if installed() && usable() => Driver::Firecracker,
        VmmChoice::Auto => Driver::Qemu,
    }
}

impl Vms {
    /// Refuses a start whose VM could not be connected: an unprivileged
    /// daemon with no root helper, or one serving another bridge.
    pub(super) fn check_network_ready(&self) -> Result<(), VmError> {
        self.net
            .ready(&self.settings.bridge, &self.settings.subnet)
            .map_err(|e| super::failed_by(&e))
    }

    /// The jailer needs root to chroot and drop privileges (the root helper
    /// does not run it yet), and must not run Firecracker as root. Root
    /// runs the jailer, which copies Firecracker into the jail: both must
    /// be root's alone, or whoever could replace one would run as root.
    fn check_jailer(&self) -> Result<(), VmError> {
        if banger_sys::euid() != 0 {
            return Err(failed(
                "jailer_bin needs bangerd to run as root: the root helper does not run the jailer yet; unset jailer_bin to run Firecracker as you",
            ));
        }
        let jailer = self.settings.jailer.clone().unwrap_or_default();
        for (what, bin) in [
            ("jailer_bin", &jailer),
            ("firecracker_bin", &self.settings.firecracker),
        ] {
            let name = bin.to_string_lossy();
            let found = find_in_path(&name)
                .ok_or_else(|| failed(format!("{what} {name} is not installed")))?;
            banger_sys::trust::program_roots_alone(&found).map_err(|e| {
                failed(format!(
                    "root runs the jailer, so {what} {} must be root's and writable by no one else, as must every directory above it and every link on the way: {e}",
                    found.display()
                ))
            })?;
        }
        let state_dir = self.vms_dir.parent().unwrap_or(&self.vms_dir);
        jailer_owner(state_dir).map(drop).map_err(failed)
    }

    /// With `vmm = "firecracker"`, refuses a create that cannot boot: the
    /// binary missing, or KVM unusable (Firecracker has no emulation to
    /// fall back on) unless the config says `accel = "kvm"`. Runs before
    /// the VM's name, address or files exist.
    pub(super) fn check_vmm_can_boot(&self, kernel: &str) -> Result<(), VmError> {
        if self.vmm.name() == "firecracker" && self.settings.jailer.is_some() {
            self.check_jailer()?;
        }
        if self.settings.vmm != VmmChoice::Firecracker {
            return Ok(());
        }
        let bin = self.settings.firecracker.to_string_lossy();
        if find_in_path(&bin).is_none() {
            let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
            return Err(failed(format!(
                "vmm = \"firecracker\" but {bin} is not installed: {}",
                banger_vmm::firecracker::version::install_hint(&os_release)
            )));
        }
        if self.settings.accel == AccelChoice::Kvm {
            return Ok(());
        }
        let bz = self
            .art_store
            .dir(banger_artifacts::store::Kind::Kernel, kernel)
            .join(banger_artifacts::kernel::BZIMAGE);
        let verdict = self.boot.kvm_verdict(&bz, &self.boot.initramfs()?);
        if verdict.usable {
            Ok(())
        } else {
            Err(failed(format!(
                "vmm = \"firecracker\" needs KVM, and KVM cannot run guests on this host ({}); set vmm = \"qemu\" or \"auto\" in the config",
                verdict.reason
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jailer_never_runs_firecracker_as_root() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        assert!(jailer_owner(&gone).unwrap_err().contains("cannot be read"));
        if banger_sys::euid() == 0 {
            let err = jailer_owner(dir.path()).unwrap_err();
            assert!(err.contains("would run Firecracker as root"), "{err}");
            std::os::unix::fs::chown(dir.path(), Some(1234), Some(1235)).unwrap();
            assert_eq!(jailer_owner(dir.path()), Ok((1234, 1235)));
        } else {
            let meta = std::fs::metadata(dir.path()).unwrap();
            assert_eq!(jailer_owner(dir.path()), Ok((meta.uid(), meta.gid())));
        }
    }

    #[test]
    fn the_jailer_and_firecracker_must_be_roots_alone() {
        use std::os::unix::fs::PermissionsExt;
        let bins = tempfile::tempdir().unwrap();
        std::fs::set_permissions(bins.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = |name: &str, mode: u32| {
            let p = bins.path().join(name);
            std::fs::write(&p, "").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let (jailer, firecracker) = (bin("jailer", 0o755), bin("firecracker", 0o775));
        let kit = |jailer: std::path::PathBuf, firecracker: std::path::PathBuf| {
            crate::vms::testkit::kit_with(move |s| {
                s.jailer = Some(jailer);
                s.firecracker = firecracker;
            })
        };
        let err = kit(jailer.clone(), firecracker.clone())
            .vms
            .check_jailer()
            .unwrap_err()
            .to_string();
        if banger_sys::euid() != 0 {
            assert!(err.contains("needs bangerd to run as root"), "{err}");
            return;
        }
        assert!(
            err.contains("firecracker_bin") && err.contains("writable by group or others"),
            "{err}"
        );
        std::fs::set_permissions(&firecracker, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&jailer, Some(1234), None).unwrap();
        let err = kit(jailer.clone(), firecracker.clone())
            .vms
            .check_jailer()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("jailer_bin") && err.contains("uid 1234"),
            "{err}"
        );
        std::os::unix::fs::chown(&jailer, Some(0), None).unwrap();
        // Both sound: what is left is the state directory's owner (root's
        // here), which the jailer must not run Firecracker as.
        let err = kit(jailer, firecracker)
            .vms
            .check_jailer()
            .unwrap_err()
            .to_string();
        assert!(err.contains("would run Firecracker as root"), "{err}");
    }

    #[test]
    fn auto_takes_firecracker_only_when_installed_with_usable_kvm() {
        let table = [
            (VmmChoice::Qemu, true, true, Driver::Qemu),
            (VmmChoice::Firecracker, false, false, Driver::Firecracker),
            (VmmChoice::Auto, true, true, Driver::Firecracker),
            (VmmChoice::Auto, true, false, Driver::Qemu),
            (VmmChoice::Auto, false, true, Driver::Qemu),
            (VmmChoice::Auto, false, false, Driver::Qemu),
        ];
        for (choice, installed, usable, want) in table {
            assert_eq!(
                pick(choice, || installed, || usable),
                want,
                "{choice:?} installed={installed} usable={usable}"
            );
        }
        // An explicit choice never probes the host.
        pick(VmmChoice::Qemu, || panic!("asked"), || panic!("asked"));
    }

    #[test]
    fn a_firecracker_create_without_the_binary_is_refused_before_anything_exists() {
        let k = crate::vms::testkit::kit_with(|s| {
            s.vmm = VmmChoice::Firecracker;
            s.firecracker = "/nonexistent/firecracker".into();
        });
        let err = k.vms.check_vmm_can_boot("generic-6.1").unwrap_err();
        assert!(err.to_string().contains("is not installed"), "{err}");
        assert!(k.take_calls().is_empty());
    }

    #[test]
    fn accel_kvm_overrides_the_probe_for_firecracker() {
        // /bin/sh stands in for an installed Firecracker; no kernel is
        // pulled, so without the override the probe could not say yes.
        let k = crate::vms::testkit::kit_with(|s| {
            s.vmm = VmmChoice::Firecracker;
            s.firecracker = "/bin/sh".into();
            s.accel = AccelChoice::Kvm;
        });
        k.vms.check_vmm_can_boot("generic-6.1").unwrap();
        assert!(k.take_calls().is_empty(), "the probe ran");
    }
}

//! Which VMM runs guests (config `vmm`), and what `vm create` checks
//! before it allocates anything for a VM that Firecracker is to run.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use banger_config::{Layout, VmmChoice};
use banger_sys::Runner;
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
pub fn choose_vmm(
    settings: &VmSettings,
    layout: &Layout,
    runner: &Arc<dyn Runner>,
) -> (Arc<dyn Vmm>, Vec<Arc<dyn Vmm>>) {
    let qemu = || -> Arc<dyn Vmm> { Arc::new(Qemu::new(settings.qemu.clone(), runner.clone())) };
    let firecracker = || -> Arc<dyn Vmm> {
        let binary = find_in_path(&settings.firecracker.to_string_lossy())
            .unwrap_or_else(|| settings.firecracker.clone());
        let fc = Firecracker::new(binary);
        let fc = match &settings.jailer {
            Some(jailer) => {
                // Firecracker drops to whoever owns banger's state.
                let owner = std::fs::metadata(&layout.state_dir).ok();
                fc.with_jailer(JailerConfig {
                    binary: find_in_path(&jailer.to_string_lossy())
                        .unwrap_or_else(|| jailer.clone()),
                    chroot_base: layout.runtime_dir.join("jailer"),
                    uid: owner.as_ref().map_or(0, MetadataExt::uid),
                    gid: owner.as_ref().map_or(0, MetadataExt::gid),
                })
            }
            None => fc,
        };
        Arc::new(fc)
    };
    let installed = || find_in_path(&settings.firecracker.to_string_lossy()).is_some();
    let kvm = || boot_assets::cached_kvm_verdict(&layout.cache_dir).is_some_and(|v| v.usable);
    let chosen = match pick(settings.vmm, installed, kvm) {
        Driver::Qemu => qemu(),
        Driver::Firecracker => firecracker(),
    };
    (chosen, vec![qemu(), firecracker()])
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

    /// With `vmm = "firecracker"`, refuses a create that cannot boot: the
    /// binary missing, or KVM unusable (Firecracker has no emulation to
    /// fall back on). Runs before the VM's name, address or files exist.
    pub(super) fn check_vmm_can_boot(&self, kernel: &str) -> Result<(), VmError> {
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
}

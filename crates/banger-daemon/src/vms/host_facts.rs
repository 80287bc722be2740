//! The facts `banger doctor` judges ([`crate::doctor`]), gathered from
//! this host and the service's configuration.

use std::path::{Path, PathBuf};

use banger_artifacts::store::Kind;
use banger_sys::host::opens_rw;
use banger_sys::trust::program_roots_alone;
use banger_sys::wait::find_in_path;
use banger_sys::{Cancel, Cmd};

use super::Vms;
use super::create::DEFAULT_IMAGE;
use crate::doctor::{Binary, HostFacts, KvmFact};

impl Vms {
    /// What this host has, as the doctor needs it; runs the KVM probe if
    /// no verdict is cached.
    pub fn host_facts(&self) -> HostFacts {
        let mut firecracker = vec![("firecracker", self.settings.firecracker.clone())];
        if let Some(jailer) = &self.settings.jailer {
            firecracker.push(("jailer", jailer.clone()));
        }
        let qemu = self.settings.qemu.to_string_lossy().into_owned();
        let tools = [
            qemu.as_str(),
            "mke2fs",
            "debugfs",
            "resize2fs",
            "tune2fs",
            "ssh",
            "ssh-keygen",
            "ip",
            "iptables",
            "nft",
        ];
        let firecracker_api = find_in_path(&self.settings.firecracker.to_string_lossy())
            .map(|binary| self.rehearse_firecracker(&binary));
        HostFacts {
            vmm: self.vmm.name(),
            vmm_choice: self.settings.vmm,
            kvm: self.kvm_fact(),
            init_bin: self.settings.init_bin.clone(),
            root: banger_sys::euid() == 0,
            helper: self.check_network_ready().map_err(|e| e.message()),
            tun: opens_rw(Path::new("/dev/net/tun")).map_err(|e| e.to_string()),
            kvm_device: Path::new("/dev/kvm")
                .exists()
                .then(|| opens_rw(Path::new("/dev/kvm")).map_err(|e| e.to_string())),
            vmm_binaries: self.vmm_binaries(),
            user: banger_sys::user_name(banger_sys::euid())
                .unwrap_or_else(|| format!("uid {}", banger_sys::euid())),
            os_release: std::fs::read_to_string("/etc/os-release").unwrap_or_default(),
            firecracker: firecracker
                .into_iter()
                .map(|(name, bin)| {
                    let found = find_in_path(&bin.to_string_lossy());
                    let version_output = found.as_ref().and_then(|p| self.version_output(name, p));
                    Binary {
                        name,
                        found,
                        version_output,
                    }
                })
                .collect(),
            firecracker_api,
            tools: tools
                .iter()
                .map(|t| ((*t).to_owned(), find_in_path(t)))
                .collect(),
        }
    }

    /// The KVM probe's verdict for the default image's kernel.
    fn kvm_fact(&self) -> KvmFact {
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
        if !bz.is_file() {
            return KvmFact::KernelMissing(kernel);
        }
        match self.boot.initramfs() {
            Ok(initramfs) => {
                let v = self.boot.kvm_verdict(&bz, &initramfs);
                KvmFact::Probed {
                    usable: v.usable,
                    reason: v.reason,
                    accel: self.boot.accel(&bz, &initramfs).name(),
                }
            }
            Err(e) => KvmFact::NotProbed(e.to_string()),
        }
    }

    /// Each VMM binary found on PATH, checked root's alone along every
    /// link from where it was found to the file it ends at.
    fn vmm_binaries(&self) -> Vec<(PathBuf, Result<(), String>)> {
        let mut wanted = vec![
            self.settings.qemu.clone(),
            self.settings.firecracker.clone(),
        ];
        wanted.extend(self.settings.jailer.clone());
        wanted
            .iter()
            .filter_map(|b| find_in_path(&b.to_string_lossy()))
            .map(|found| {
                let verdict = program_roots_alone(&found).map_err(|e| e.to_string());
                (found, verdict)
            })
            .collect()
    }

    /// What `<binary> --version` prints, if it runs.
    fn version_output(&self, name: &str, binary: &Path) -> Option<String> {
        let log = self.cache_dir.join(format!("doctor-{name}-version.log"));
        // A leftover from an earlier run would be read as this one's output.
        let _ = std::fs::remove_file(&log);
        let ran = self
            .runner
            .run(&Cmd::new(binary).arg("--version"), &log, &Cancel::new());
        let text = std::fs::read_to_string(&log).ok();
        let _ = std::fs::remove_file(&log);
        ran.ok().and(text)
    }
}

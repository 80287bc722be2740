//! What a boot needs besides the VM's own files: banger's initramfs and
//! the choice of KVM or TCG (a real probe boot, cached per host boot).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use banger_config::Accel as AccelChoice;
use banger_sys::Runner;
use banger_sys::wait::lock;
use banger_vmm::Accel;
use banger_vmm::probe::KvmVerdict;
use serde::{Deserialize, Serialize};

use super::{VmSettings, failed};
use crate::error::error_chain;
use crate::vms::VmError;

/// The initramfs and the KVM verdict, each made once and shared by every
/// boot. No lock is held across the probe boot: a second caller waits on
/// the first probe's result (`OnceLock`), and nothing else waits at all.
#[derive(Debug)]
pub struct BootAssets {
    cache_dir: PathBuf,
    init_bin: Option<PathBuf>,
    choice: AccelChoice,
    qemu: PathBuf,
    runner: Arc<dyn Runner>,
    /// Short: at most one cpio write.
    initramfs: Mutex<Option<PathBuf>>,
    kvm: OnceLock<KvmVerdict>,
}

impl BootAssets {
    /// Assets cached under `cache_dir`, as `settings` choose them.
    pub fn new(cache_dir: &Path, settings: &VmSettings, runner: Arc<dyn Runner>) -> Self {
        Self {
            cache_dir: cache_dir.to_owned(),
            init_bin: settings.init_bin.clone(),
            choice: settings.accel,
            qemu: settings.qemu.clone(),
            runner,
            initramfs: Mutex::new(None),
            kvm: OnceLock::new(),
        }
    }

    /// banger's initramfs, written once per banger-init binary.
    pub fn initramfs(&self) -> Result<PathBuf, VmError> {
        let mut cached = lock(&self.initramfs);
        if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
            return Ok(path.clone());
        }
        let init = self.init_bin.clone().ok_or_else(|| {
            failed("no static banger-init binary found: set BANGER_INIT_BIN or build it (scripts/setup does)")
        })?;
        let bytes =
            std::fs::read(&init).map_err(|e| failed(format!("read {}: {e}", init.display())))?;
        let digest = {
            use sha2::Digest;
            let d = sha2::Sha256::digest(&bytes);
            d.iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let dir = self.cache_dir.join("initramfs");
        std::fs::create_dir_all(&dir)
            .map_err(|e| failed(format!("create {}: {e}", dir.display())))?;
        let path = dir.join(format!("banger-{digest}.cpio"));
        if !path.is_file() {
            banger_artifacts::initramfs::write(&init, &path)
                .map_err(|e| failed(error_chain(&e)))?;
        }
        *cached = Some(path.clone());
        Ok(path)
    }

    /// KVM or TCG, as configured; `auto` asks [`Self::kvm_verdict`].
    pub fn accel(&self, kernel: &Path, initramfs: &Path) -> Accel {
        let tcg = Accel::Tcg {
            tsc_khz: banger_sys::host::host_tsc_khz(),
        };
        match self.choice {
            AccelChoice::Tcg => tcg,
            AccelChoice::Kvm => Accel::Kvm,
            AccelChoice::Auto => {
                if self.kvm_verdict(kernel, initramfs).usable {
                    Accel::Kvm
                } else {
                    tcg
                }
            }
        }
    }

    /// The KVM probe's verdict: from memory, else from the cache file when
    /// written during this host boot, else a fresh probe boot.
    pub fn kvm_verdict(&self, kernel: &Path, initramfs: &Path) -> KvmVerdict {
        self.kvm
            .get_or_init(|| {
                cached_kvm_verdict(&self.cache_dir).unwrap_or_else(|| self.probe(kernel, initramfs))
            })
            .clone()
    }

    fn probe(&self, kernel: &Path, initramfs: &Path) -> KvmVerdict {
        let dir = self.cache_dir.join("kvm-probe");
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the probe's directory");
        }
        let v = banger_vmm::probe::probe_kvm(
            &self.runner,
            &self.qemu,
            kernel,
            initramfs,
            &dir,
            Duration::from_secs(30),
        );
        tracing::info!(usable = v.usable, reason = %v.reason, "KVM probe");
        let record = ProbeCache {
            boot_id: boot_id(),
            usable: v.usable,
            reason: v.reason.clone(),
        };
        let file = self.cache_dir.join("kvm-probe.json");
        let tmp = file.with_extension("json.tmp");
        let written = serde_json::to_vec(&record)
            .map_err(std::io::Error::other)
            .and_then(|text| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), error = %e, "cannot cache the KVM verdict");
        }
        v
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The KVM probe's verdict recorded in `cache_dir` during this host boot.
/// A "usable" one stands only while this process can open `/dev/kvm`: the
/// probe may have run as another user (root, before a system install), or
/// before the owner left the kvm group.
pub fn cached_kvm_verdict(cache_dir: &Path) -> Option<KvmVerdict> {
    let boot_id = boot_id();
    let cached = std::fs::read(cache_dir.join("kvm-probe.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<ProbeCache>(&b).ok())
        .filter(|c| !boot_id.is_empty() && c.boot_id == boot_id)?;
    let opens = || banger_sys::host::opens_rw(Path::new("/dev/kvm"));
    Some(match (cached.usable, cached.usable.then(opens)) {
        (true, Some(Err(e))) => KvmVerdict {
            usable: false,
            reason: format!(
                "the probe found KVM usable, but bangerd's user cannot open /dev/kvm ({e})"
            ),
        },
        _ => KvmVerdict {
            usable: cached.usable,
            reason: cached.reason,
        },
    })
}

/// The KVM verdict, cached per host boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProbeCache {
    boot_id: String,
    usable: bool,
    reason: String,
}

/// Finds the static banger-init: `$BANGER_INIT_BIN`, else the release
/// build of a source tree bangerd runs from, else `/usr/lib/banger`.
pub fn find_init_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BANGER_INIT_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join("../x86_64-unknown-linux-gnu/release/banger-init"),
        dir.join("banger-init.static"),
        PathBuf::from("/usr/lib/banger/banger-init"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_usable_verdict_stands_only_while_dev_kvm_opens() {
        let dir = tempfile::tempdir().unwrap();
        let write = |usable: bool| {
            let record = ProbeCache {
                boot_id: boot_id(),
                usable,
                reason: "the probe reached userspace".into(),
            };
            std::fs::write(
                dir.path().join("kvm-probe.json"),
                serde_json::to_vec(&record).unwrap(),
            )
            .unwrap();
        };
        write(false);
        assert!(!cached_kvm_verdict(dir.path()).unwrap().usable);
        write(true);
        let v = cached_kvm_verdict(dir.path()).unwrap();
        let opens = banger_sys::host::opens_rw(Path::new("/dev/kvm")).is_ok();
        assert_eq!(v.usable, opens, "{}", v.reason);
        if !opens {
            assert!(v.reason.contains("cannot open /dev/kvm"), "{}", v.reason);
        }
    }
}

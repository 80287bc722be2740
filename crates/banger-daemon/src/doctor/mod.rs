//! `banger doctor`: what this host can do, judged from facts the VM
//! service gathers ([`HostFacts`]), so every verdict is unit-tested
//! without the host it describes.

mod access;
mod firecracker;

use std::path::PathBuf;

use banger_api::{Check, CheckStatus, DoctorReport};
use banger_config::VmmChoice;

pub use firecracker::Rehearsal;
use firecracker::{rehearsal_check, version_check};

/// What the KVM probe found, or why it did not run.
#[derive(Debug, Clone)]
pub enum KvmFact {
    /// The probe ran (now or earlier this host boot).
    Probed {
        /// Whether KVM can run guests.
        usable: bool,
        /// Why.
        reason: String,
        /// What starts use: `kvm` or `tcg`.
        accel: &'static str,
    },
    /// The probe boots this kernel, which is not pulled.
    KernelMissing(String),
    /// The probe could not be prepared.
    NotProbed(String),
}

/// A binary banger may run, and what `--version` printed.
#[derive(Debug, Clone)]
pub struct Binary {
    /// Its role (`firecracker`, `jailer`).
    pub name: &'static str,
    /// Where it was found.
    pub found: Option<PathBuf>,
    /// What `--version` printed, if it ran.
    pub version_output: Option<String>,
}

/// Everything the doctor judges.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The driver new starts use.
    pub vmm: &'static str,
    /// What the config asks for.
    pub vmm_choice: VmmChoice,
    /// The KVM probe.
    pub kvm: KvmFact,
    /// The static banger-init, if found.
    pub init_bin: Option<PathBuf>,
    /// Whether bangerd runs as root.
    pub root: bool,
    /// Not root: whether the root helper answers and serves this
    /// daemon's bridge and subnet (the error names the fix).
    pub helper: Result<(), String>,
    /// Whether `/dev/net/tun` opens (QEMU attaches to its tap through it).
    pub tun: Result<(), String>,
    /// Whether `/dev/kvm` opens for reading and writing; `None` where the
    /// host has none.
    pub kvm_device: Option<Result<(), String>>,
    /// Each VMM binary found, and whether it is root's alone.
    pub vmm_binaries: Vec<(PathBuf, Result<(), String>)>,
    /// Who bangerd runs as, for the fixes the rows name.
    pub user: String,
    /// `/etc/os-release`, for install hints.
    pub os_release: String,
    /// Firecracker and its jailer.
    pub firecracker: Vec<Binary>,
    /// The installed Firecracker driven through a start's calls; `None`
    /// where no Firecracker is installed.
    pub firecracker_api: Option<Rehearsal>,
    /// Every other tool, by name, and where it was found.
    pub tools: Vec<(String, Option<PathBuf>)>,
}

/// The report `facts` add up to.
pub fn report(facts: &HostFacts) -> DoctorReport {
    let fc_needed = facts.vmm_choice == VmmChoice::Firecracker;
    let (accel, kvm) = kvm_check(&facts.kvm, fc_needed);
    let mut checks = vec![kvm];
    checks.push(Check {
        name: "banger-init".to_owned(),
        status: CheckStatus::of(facts.init_bin.is_some()),
        essential: true,
        detail: facts.init_bin.as_ref().map_or_else(
            || "no static banger-init found (BANGER_INIT_BIN, or beside bangerd)".to_owned(),
            |p| p.display().to_string(),
        ),
    });
    checks.push(privileges_check(facts));
    checks.push(access::tun_check(&facts.tun));
    // Essential wherever starts use KVM: Firecracker, or accel = "kvm".
    checks.extend(access::kvm_device_check(
        facts.kvm_device.as_ref(),
        &facts.user,
        fc_needed || accel == "kvm",
    ));
    checks.extend(access::binaries_check(&facts.vmm_binaries));
    checks.push(Check {
        name: "vmm".to_owned(),
        status: CheckStatus::Pass,
        essential: true,
        detail: format!(
            "{} runs guests (config vmm = \"{}\")",
            facts.vmm,
            facts.vmm_choice.as_str()
        ),
    });
    for b in &facts.firecracker {
        checks.push(version_check(
            b.name,
            b.found.as_deref(),
            b.version_output.as_deref(),
            &facts.os_release,
            fc_needed,
        ));
    }
    if let Some(r) = &facts.firecracker_api {
        checks.push(rehearsal_check(r, fc_needed));
    }
    for (tool, found) in &facts.tools {
        checks.push(Check {
            name: tool.clone(),
            status: CheckStatus::of(found.is_some()),
            // QEMU also runs the KVM probe, so it is needed either way.
            essential: true,
            detail: found.as_ref().map_or_else(
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

/// Root works, but is not the supported mode (said once, as a warning);
/// anyone else needs the root helper.
fn privileges_check(facts: &HostFacts) -> Check {
    let (status, essential, detail) = match (&facts.root, &facts.helper) {
        (true, _) => (
            CheckStatus::Warn,
            false,
            "bangerd runs as root: VMs work, but this is not the supported mode; `sudo banger system install` runs it as you, with a root helper for the network (docs/privileges.md)".to_owned(),
        ),
        (false, Ok(())) => (
            CheckStatus::Pass,
            true,
            "bangerd runs unprivileged; the root helper answers and serves its bridge and subnet"
                .to_owned(),
        ),
        (false, Err(e)) => (CheckStatus::Fail, true, e.clone()),
    };
    Check {
        name: "privileges".to_owned(),
        status,
        essential,
        detail,
    }
}

/// The KVM check and the accelerator starts use.
fn kvm_check(kvm: &KvmFact, essential: bool) -> (&'static str, Check) {
    let check = |status, detail| Check {
        name: "kvm".to_owned(),
        status,
        essential,
        detail,
    };
    match kvm {
        KvmFact::Probed {
            usable: false,
            reason,
            accel: "kvm",
        } => (
            "kvm",
            check(
                CheckStatus::Warn,
                format!(
                    "the probe found KVM unusable ({reason}), but the config's accel = \"kvm\" overrides it: starts use KVM"
                ),
            ),
        ),
        KvmFact::Probed {
            usable,
            reason,
            accel,
        } => (accel, check(CheckStatus::of(*usable), reason.clone())),
        KvmFact::KernelMissing(kernel) => (
            "tcg",
            check(
                CheckStatus::Fail,
                format!(
                    "not probed yet: the probe boots kernel {kernel}, which is not pulled (banger kernel pull {kernel})"
                ),
            ),
        ),
        KvmFact::NotProbed(why) => (
            "tcg",
            check(CheckStatus::Fail, format!("not probed: {why}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "ID=debian\nVERSION_ID=\"12\"\n";

    fn facts() -> HostFacts {
        HostFacts {
            vmm: "qemu",
            vmm_choice: VmmChoice::Qemu,
            kvm: KvmFact::KernelMissing("generic-6.1".into()),
            init_bin: None,
            root: false,
            helper: Err("starting a VM needs banger's root helper, and none answers".into()),
            tun: Err("Permission denied (os error 13)".into()),
            kvm_device: None,
            vmm_binaries: vec![],
            user: "alice".into(),
            os_release: DEBIAN.into(),
            firecracker: vec![Binary {
                name: "firecracker",
                found: None,
                version_output: None,
            }],
            firecracker_api: None,
            tools: vec![
                ("ip".into(), Some("/usr/sbin/ip".into())),
                ("ssh".into(), None),
            ],
        }
    }

    fn check<'a>(r: &'a DoctorReport, name: &str) -> &'a Check {
        r.checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn the_report_judges_each_fact() {
        let r = report(&facts());
        assert_eq!(r.accel, "tcg");
        let kvm = check(&r, "kvm");
        assert_eq!(kvm.status, CheckStatus::Fail);
        assert!(
            kvm.detail.contains("banger kernel pull generic-6.1"),
            "{}",
            kvm.detail
        );
        assert!(!kvm.essential, "KVM is optional under QEMU");
        let privileges = check(&r, "privileges");
        assert_eq!(privileges.status, CheckStatus::Fail);
        assert!(
            privileges.detail.contains("root helper"),
            "{}",
            privileges.detail
        );
        let tun = check(&r, "tun");
        assert_eq!(tun.status, CheckStatus::Fail);
        assert!(
            tun.detail.contains("sudo chmod 0666 /dev/net/tun"),
            "{}",
            tun.detail
        );
        assert_eq!(check(&r, "banger-init").status, CheckStatus::Fail);
        let helped = report(&HostFacts {
            helper: Ok(()),
            tun: Ok(()),
            ..facts()
        });
        assert_eq!(check(&helped, "privileges").status, CheckStatus::Pass);
        assert_eq!(check(&helped, "tun").status, CheckStatus::Pass);
        assert_eq!(check(&r, "ip").status, CheckStatus::Pass);
        assert_eq!(check(&r, "ssh").status, CheckStatus::Fail);
        assert!(!check(&r, "firecracker").essential);

        let r = report(&HostFacts {
            vmm_choice: VmmChoice::Firecracker,
            kvm: KvmFact::Probed {
                usable: true,
                reason: "the probe reached userspace".into(),
                accel: "kvm",
            },
            root: true,
            init_bin: Some("/usr/lib/banger/banger-init".into()),
            ..facts()
        });
        assert_eq!(r.accel, "kvm");
        assert_eq!(check(&r, "kvm").status, CheckStatus::Pass);
        assert!(check(&r, "kvm").essential && check(&r, "firecracker").essential);
        let privileges = check(&r, "privileges");
        assert_eq!(
            privileges.status,
            CheckStatus::Warn,
            "root works, with a warning"
        );
        assert!(privileges.detail.contains("not the supported mode"));
        assert_eq!(check(&r, "banger-init").status, CheckStatus::Pass);

        let forced = report(&HostFacts {
            kvm: KvmFact::Probed {
                usable: false,
                reason: "KVM internal error".into(),
                accel: "kvm",
            },
            ..facts()
        });
        assert_eq!(forced.accel, "kvm");
        let kvm = check(&forced, "kvm");
        assert_eq!(kvm.status, CheckStatus::Warn);
        assert!(kvm.detail.contains("overrides it"), "{}", kvm.detail);
    }
}

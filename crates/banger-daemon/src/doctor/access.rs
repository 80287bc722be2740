//! The doctor's rows on what bangerd's user may open (`/dev/net/tun`,
//! `/dev/kvm`) and whether the VMM binaries it runs are root's alone.

use std::path::PathBuf;

use banger_api::{Check, CheckStatus};

/// The `tun` row: QEMU and Firecracker attach to their tap through it.
pub(super) fn tun_check(tun: &Result<(), String>) -> Check {
    Check {
        name: "tun".to_owned(),
        status: CheckStatus::of(tun.is_ok()),
        essential: true,
        detail: match tun {
            Ok(()) => "/dev/net/tun opens: a VMM can attach to its tap".to_owned(),
            Err(e) => format!(
                "cannot open /dev/net/tun ({e}): a VMM cannot attach to its tap; udev gives it mode 0666 on Debian and Ubuntu (`sudo chmod 0666 /dev/net/tun`)"
            ),
        },
    }
}

/// The `kvm-device` row, where the host has `/dev/kvm` or starts need it
/// (`essential`: Firecracker, or `accel = "kvm"`): the VMM runs as
/// bangerd's user, who must be able to open it.
pub(super) fn kvm_device_check(
    device: Option<&Result<(), String>>,
    user: &str,
    essential: bool,
) -> Option<Check> {
    let (status, detail) = match device {
        None if !essential => return None,
        None => (
            CheckStatus::Fail,
            "this host has no /dev/kvm, yet starts use KVM (vmm = \"firecracker\" or accel = \"kvm\"); set accel = \"auto\" and vmm = \"auto\", or load the kvm module".to_owned(),
        ),
        Some(Ok(())) => (
            CheckStatus::Pass,
            format!("{user} opens /dev/kvm: a VMM running as {user} can use KVM"),
        ),
        Some(Err(e)) => (
            CheckStatus::Fail,
            format!(
                "{user} cannot open /dev/kvm ({e}), so guests cannot use KVM: `sudo usermod -aG kvm {user}`, then `sudo banger system restart` (or start bangerd again)"
            ),
        ),
    };
    Some(Check {
        name: "kvm-device".to_owned(),
        status,
        essential,
        detail,
    })
}

/// The `vmm-binaries` row: each VMM binary, as found and as resolved, and
/// every directory above it, root's and writable by no one else; anyone
/// who could replace one would run code as whoever runs the VMM (root, for
/// a root daemon or the jailer).
pub(super) fn binaries_check(binaries: &[(PathBuf, Result<(), String>)]) -> Option<Check> {
    if binaries.is_empty() {
        return None;
    }
    let faults: Vec<&String> = binaries
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    let names: Vec<String> = binaries
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    let (status, detail) = if faults.is_empty() {
        (
            CheckStatus::Pass,
            format!("{}: root's, writable by no one else", names.join(", ")),
        )
    } else {
        (
            CheckStatus::Fail,
            format!(
                "{}; install them root-owned (`sudo chown root:root FILE && sudo chmod go-w FILE`, and the same for each directory above)",
                faults
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    };
    Some(Check {
        name: "vmm-binaries".to_owned(),
        status,
        essential: false,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_passes_or_says_how_to_fix_it() {
        assert!(kvm_device_check(None, "alice", false).is_none());
        let absent = kvm_device_check(None, "alice", true).unwrap();
        assert_eq!((absent.status, absent.essential), (CheckStatus::Fail, true));
        assert!(absent.detail.contains("no /dev/kvm"), "{}", absent.detail);
        let ok = kvm_device_check(Some(&Ok(())), "alice", false).unwrap();
        assert_eq!((ok.status, ok.essential), (CheckStatus::Pass, false));
        let denied = Err("Permission denied (os error 13)".to_owned());
        let no = kvm_device_check(Some(&denied), "alice", true).unwrap();
        assert_eq!((no.status, no.essential), (CheckStatus::Fail, true));
        assert!(no.detail.contains("usermod -aG kvm alice"), "{}", no.detail);

        assert!(binaries_check(&[]).is_none());
        let sound = binaries_check(&[("/usr/bin/qemu-system-x86_64".into(), Ok(()))]).unwrap();
        assert_eq!(sound.status, CheckStatus::Pass);
        assert!(
            sound
                .detail
                .starts_with("/usr/bin/qemu-system-x86_64: root's")
        );
        let bad = binaries_check(&[
            ("/usr/bin/qemu-system-x86_64".into(), Ok(())),
            (
                "/home/a/bin/firecracker".into(),
                Err("/home/a/bin/firecracker belongs to uid 1000, not root".into()),
            ),
        ])
        .unwrap();
        assert_eq!(bad.status, CheckStatus::Fail);
        assert!(
            bad.detail.contains("uid 1000") && bad.detail.contains("chown root:root"),
            "{}",
            bad.detail
        );
        let tun = tun_check(&denied);
        assert!(tun.detail.contains("chmod 0666"), "{}", tun.detail);
    }
}

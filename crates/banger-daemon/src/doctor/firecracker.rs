//! The doctor's Firecracker rows: the binaries' versions against the
//! supported window, and whether the binary accepts banger's whole
//! configuration of a VM ([`Rehearsal`]).

use std::path::{Path, PathBuf};

use banger_api::{Check, CheckStatus};
use banger_vmm::firecracker::version::{self, MIN_SUPPORTED, Standing, TESTED};

/// What driving Firecracker through a start's calls (all but
/// `InstanceStart`) found.
#[derive(Debug, Clone)]
pub struct Rehearsal {
    /// The binary driven.
    pub binary: PathBuf,
    /// The steps it accepted, or the refusal (which names the call).
    pub outcome: Result<Vec<String>, String>,
    /// Why the network interface was left out, if it was (no tap could be
    /// made).
    pub nic_skipped: Option<String>,
}

/// The `firecracker-api` row: a refusal fails (essential when the config
/// asks for Firecracker); a rehearsal without the network interface warns.
pub(super) fn rehearsal_check(r: &Rehearsal, essential: bool) -> Check {
    let (status, detail) = match (&r.outcome, &r.nic_skipped) {
        (Err(e), _) => (CheckStatus::Fail, format!("{}: {e}", r.binary.display())),
        (Ok(steps), None) => (
            CheckStatus::Pass,
            format!(
                "{} accepted every call a start sends before InstanceStart ({} calls)",
                r.binary.display(),
                steps.len()
            ),
        ),
        (Ok(steps), Some(why)) => (
            CheckStatus::Warn,
            format!(
                "{} accepted {} calls; the network interface was not tried, for want of a tap: {why}",
                r.binary.display(),
                steps.len()
            ),
        ),
    };
    Check {
        name: "firecracker-api".to_owned(),
        status,
        essential,
        detail,
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

    #[test]
    fn the_rehearsal_row_names_the_refused_call() {
        let r = |outcome, nic_skipped| Rehearsal {
            binary: "/usr/bin/firecracker".into(),
            outcome,
            nic_skipped,
        };
        let steps = || Ok(vec!["size the machine".to_owned(); 11]);
        let pass = rehearsal_check(&r(steps(), None), true);
        assert_eq!(pass.status, CheckStatus::Pass);
        assert!(pass.detail.contains("(11 calls)"), "{}", pass.detail);
        assert!(pass.essential);
        let refused = rehearsal_check(
            &r(
                Err("it refused banger's configuration of a VM, so a start would fail: firecracker refused to size the machine: SMT (HTTP 400 on PUT /machine-config)".into()),
                None,
            ),
            false,
        );
        assert_eq!(refused.status, CheckStatus::Fail);
        assert!(!refused.essential);
        assert!(
            refused.detail.contains("a start would fail")
                && refused.detail.contains("PUT /machine-config"),
            "{}",
            refused.detail
        );
        let no_tap = rehearsal_check(&r(steps(), Some("no root helper answers".into())), true);
        assert_eq!(no_tap.status, CheckStatus::Warn);
        assert!(
            no_tap.detail.contains("no root helper answers"),
            "{}",
            no_tap.detail
        );
    }
}

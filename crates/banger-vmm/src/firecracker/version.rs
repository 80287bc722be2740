//! Which Firecracker versions banger drives: parsed from `--version` and
//! judged against the oldest it supports and the one its contract tests
//! are built on.

use std::fmt;

/// A `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The oldest Firecracker banger drives: the serial console goes to a file
/// through `PUT /serial`, which the 1.16 API has and banger relies on.
pub const MIN_SUPPORTED: Version = Version(1, 16, 0);

/// The version whose API specification the contract tests check against.
pub const TESTED: Version = Version(1, 16, 1);

/// Parses `Firecracker v1.16.1` (or `Jailer v1.16.1`) out of `--version`'s
/// output, which may carry log lines after it; a pre-release suffix
/// (`v1.17.0-dev`) is ignored.
pub fn parse(output: &str) -> Option<Version> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let (Some(name), Some(v), None) = (words.next(), words.next(), words.next()) else {
            return None;
        };
        if !matches!(name, "Firecracker" | "Jailer") {
            return None;
        }
        let core = v.strip_prefix('v')?.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Some(Version(a, b, c)),
            _ => None,
        }
    })
}

/// How a found version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Between the minimum and the tested version.
    Supported,
    /// Newer than tested: likely fine, not proven.
    Newer,
    /// Older than the minimum: refused.
    TooOld,
}

/// Judges `v`.
pub fn standing(v: Version) -> Standing {
    if v < MIN_SUPPORTED {
        Standing::TooOld
    } else if v > TESTED {
        Standing::Newer
    } else {
        Standing::Supported
    }
}

/// How to install Firecracker on the distribution `/etc/os-release`
/// describes; only where banger knows a packaged route, else the upstream
/// releases page.
pub fn install_hint(os_release: &str) -> String {
    let field = |key: &str| {
        os_release
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_ascii_lowercase())
            .unwrap_or_default()
    };
    let id = field("ID");
    let like = field("ID_LIKE");
    let ids: Vec<&str> = std::iter::once(id.as_str())
        .chain(like.split_whitespace())
        .collect();
    let upstream = "download a release from https://github.com/firecracker-microvm/firecracker/releases and put firecracker and jailer on PATH";
    if ids.iter().any(|i| matches!(*i, "arch" | "manjaro")) {
        "install it with `paru -S firecracker-bin` (AUR)".to_owned()
    } else if ids.contains(&"nixos") {
        "install it with `nix-env -iA nixos.firecracker`".to_owned()
    } else if ids.iter().any(|i| matches!(*i, "debian" | "ubuntu")) {
        format!("Debian and Ubuntu do not package Firecracker: {upstream}")
    } else {
        upstream.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_finds_the_version_line_among_log_lines() {
        let out = "Firecracker v1.16.1\n\n2026-11-24T10:00:00.000 [anonymous-instance:main] Firecracker exiting successfully. exit_code=0\n";
        assert_eq!(parse(out), Some(Version(1, 16, 1)));
        assert_eq!(parse("Jailer v1.7.0\n"), Some(Version(1, 7, 0)));
        assert_eq!(parse("Firecracker v1.17.0-dev\n"), Some(Version(1, 17, 0)));
        for bad in [
            "",
            "firecracker 1.2.3",
            "Firecracker v1.2",
            "Firecracker v1.2.x",
            "Firecracker v1.2.3.4",
            "Firecracker v1.2.3 extra",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn standing_orders_by_major_minor_patch() {
        assert_eq!(standing(TESTED), Standing::Supported);
        assert_eq!(standing(MIN_SUPPORTED), Standing::Supported);
        assert_eq!(standing(Version(1, 15, 9)), Standing::TooOld);
        assert_eq!(standing(Version(0, 99, 99)), Standing::TooOld);
        assert_eq!(standing(Version(1, 16, 2)), Standing::Newer);
        assert_eq!(standing(Version(2, 0, 0)), Standing::Newer);
    }

    #[test]
    fn install_hint_follows_id_and_id_like() {
        assert!(install_hint("ID=arch\n").contains("paru"));
        assert!(install_hint("ID=manjaro\n").contains("paru"));
        assert!(install_hint("ID=nixos\n").contains("nix-env"));
        assert!(install_hint("ID=debian\n").contains("Debian and Ubuntu do not package"));
        assert!(install_hint("ID=pop\nID_LIKE=\"ubuntu debian\"\n").contains("Debian and Ubuntu"));
        let other = install_hint("ID=fedora\n");
        assert!(other.starts_with("download a release"), "{other}");
        assert!(install_hint("").starts_with("download a release"));
    }
}

//! What a binary knows about its own build: release version, git commit and
//! build time, stamped by `build.rs`.

/// The release version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The full git commit of HEAD at build time, or `unknown` outside a git
/// checkout.
pub const COMMIT: &str = env!("BANGER_GIT_COMMIT");
/// The build time, RFC 3339 in UTC.
pub const BUILT_AT: &str = env!("BANGER_BUILT_AT");

/// The commit shortened to 12 characters for one-line displays.
pub fn short_commit() -> &'static str {
    short(COMMIT)
}

fn short(commit: &str) -> &str {
    if commit == "unknown" {
        return commit;
    }
    commit.get(..12).unwrap_or(commit)
}

/// The one-line `--version` text: `<bin> <version> (commit <sha>, built <time>)`.
pub fn version_line(bin: &str) -> String {
    format!(
        "{bin} {VERSION} (commit {}, built {BUILT_AT})",
        short_commit()
    )
}

/// The `--version` text without the binary name, as clap wants it.
pub fn clap_version() -> &'static str {
    // Leaked once per process: clap needs a 'static str.
    let line = version_line("");
    Box::leak(line.trim_start().to_owned().into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_commit_keeps_unknown_and_trims_sha() {
        assert_eq!(short("unknown"), "unknown");
        assert_eq!(
            short("0123456789abcdef0123456789abcdef01234567"),
            "0123456789ab"
        );
        assert_eq!(short("abc"), "abc");
    }

    #[test]
    fn version_line_has_version_commit_and_rfc3339_time() {
        let line = version_line("banger");
        assert!(
            line.starts_with(&format!("banger {VERSION} (commit ")),
            "{line}"
        );
        assert!(line.ends_with(')'), "{line}");
        let built = line.rsplit("built ").next().unwrap().trim_end_matches(')');
        assert!(humantime_like(built), "{built}");
    }

    fn humantime_like(s: &str) -> bool {
        // 2026-11-24T08:35:11Z
        s.len() == 20 && s.as_bytes()[10] == b'T' && s.ends_with('Z')
    }
}

//! `[[file_sync]]`: host files and directories copied onto a new VM's work
//! disk (its `/root`). Only the form is checked here; where a host path
//! resolves (it must stay inside the owner's home) is checked by the daemon
//! at each create, since the file system can change after the config is
//! read.

use serde::Deserialize;

/// One `[[file_sync]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSync {
    /// The host file or directory: `~/...` (the owner's home) or an
    /// absolute path inside that home.
    pub host: String,
    /// Where it goes in the guest: an absolute path under `/root`.
    pub guest: String,
    /// Permission bits for every regular file copied, in octal (`"0600"`);
    /// without it each file keeps its host permission bits.
    #[serde(default)]
    pub mode: Option<String>,
}

/// Longest host or guest path an entry may name.
const MAX_PATH: usize = 1024;

/// What banger itself writes under `/root`, which no entry may cover.
pub const BANGER_OWNED: [&str; 3] = ["/root/.ssh", "/root/.gitconfig", "/root/.hushlogin"];

/// Whether `path` is `dir` or lies under it.
pub fn is_within(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|tail| tail.starts_with('/'))
}

impl FileSync {
    /// The entry's `mode` as permission bits.
    pub fn mode_bits(&self) -> Option<u32> {
        self.mode
            .as_deref()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
    }

    /// The guest path relative to `/root` (checked by [`FileSync::check`]).
    pub fn guest_in_home(&self) -> &str {
        self.guest.trim_start_matches("/root/")
    }

    /// Checks the entry's form; `workspace` is the workspace guest path,
    /// which a workspace disk covers when mounted.
    pub fn check(&self, workspace: &str) -> Result<(), String> {
        let host_ok = (self.host.starts_with("~/") || self.host.starts_with('/'))
            && self.host.len() <= MAX_PATH
            && !self.host.chars().any(char::is_control);
        if !host_ok {
            return Err(format!(
                "host must be ~/... or an absolute path inside the owner's home, without control characters, got {:?}",
                self.host
            ));
        }
        let rest = self.guest.strip_prefix("/root/").unwrap_or_default();
        // debugfs reads the path from a line of its script, so no newline
        // (nor any control character) can be carried; and an argument
        // "<N>" names inode N, whatever follows.
        let plain =
            |c: &str| !c.is_empty() && c != "." && c != ".." && !c.chars().any(char::is_control);
        if rest.is_empty()
            || rest.starts_with('<')
            || self.guest.len() > MAX_PATH
            || !rest.split('/').all(plain)
        {
            return Err(format!(
                "guest must be an absolute path under /root (the work disk), without empty, '.' or '..' components, control characters or a leading '<', got {:?}",
                self.guest
            ));
        }
        if is_within(&self.guest, workspace) || is_within(workspace, &self.guest) {
            return Err(format!(
                "guest {:?} overlaps the workspace path {workspace:?}, which a workspace replaces",
                self.guest
            ));
        }
        if let Some(owned) = BANGER_OWNED
            .iter()
            .find(|owned| is_within(&self.guest, owned) || is_within(owned, &self.guest))
        {
            return Err(format!(
                "guest {:?} overlaps {owned}, which banger writes itself",
                self.guest
            ));
        }
        let octal = |m: &str| {
            !m.is_empty() && m.len() <= 4 && m.bytes().all(|b| (b'0'..=b'7').contains(&b))
        };
        match &self.mode {
            Some(m) if !octal(m) || self.mode_bits().is_none_or(|b| b > 0o777) => Err(format!(
                "mode must be permission bits in octal, \"0000\" to \"0777\", got {m:?}"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str, guest: &str, mode: Option<&str>) -> FileSync {
        FileSync {
            host: host.into(),
            guest: guest.into(),
            mode: mode.map(Into::into),
        }
    }

    #[test]
    fn a_home_relative_or_absolute_host_and_a_path_under_root_pass() {
        for (host, guest, mode) in [
            ("~/.aws", "/root/.aws", None),
            ("/home/u/.npmrc", "/root/.npmrc", Some("0600")),
            ("~/a b", "/root/.config/a b", Some("755")),
        ] {
            entry(host, guest, mode).check("/root/repo").unwrap();
        }
        assert_eq!(
            entry("~/x", "/root/x", Some("0640")).mode_bits(),
            Some(0o640)
        );
        assert_eq!(entry("~/x", "/root/.a/b", None).guest_in_home(), ".a/b");
    }

    #[test]
    fn bad_entries_are_refused_saying_which_field() {
        for (host, guest, mode, says) in [
            ("aws", "/root/.aws", None, "host must be"),
            ("~user/.aws", "/root/.aws", None, "host must be"),
            ("~/a\nb", "/root/.aws", None, "host must be"),
            ("~/.aws", "/etc/aws", None, "guest must be"),
            ("~/.aws", "/root", None, "guest must be"),
            ("~/.aws", "/root/", None, "guest must be"),
            ("~/.aws", "/root/../etc", None, "guest must be"),
            ("~/.aws", "/root//x", None, "guest must be"),
            ("~/.aws", "/root/a\nb", None, "guest must be"),
            ("~/.aws", "/root/repo", None, "overlaps the workspace"),
            ("~/.aws", "/root/repo/x", None, "overlaps the workspace"),
            ("~/.aws", "/root/.aws", Some("rw"), "mode must be"),
            ("~/.aws", "/root/.aws", Some("0800"), "mode must be"),
            ("~/.aws", "/root/.aws", Some("1777"), "mode must be"),
            ("~/.aws", "/root/.aws", Some(""), "mode must be"),
            ("~/.aws", "/root/.aws", Some("+600"), "mode must be"),
            ("~/.aws", "/root/<2>", None, "leading '<'"),
            ("~/.ssh", "/root/.ssh", None, "banger writes itself"),
            ("~/.ssh/config", "/root/.ssh/config", None, "/root/.ssh"),
            (
                "~/.gitconfig",
                "/root/.gitconfig",
                None,
                "banger writes itself",
            ),
            (
                "~/.hushlogin",
                "/root/.hushlogin",
                None,
                "banger writes itself",
            ),
        ] {
            let err = entry(host, guest, mode).check("/root/repo").unwrap_err();
            assert!(err.contains(says), "{host} {guest} {mode:?}: {err}");
        }
        // A guest directory that holds the workspace overlaps it too.
        let err = entry("~/src", "/root/src", None)
            .check("/root/src/app")
            .unwrap_err();
        assert!(err.contains("overlaps"), "{err}");
        entry("~/repo2", "/root/repo2", None)
            .check("/root/repo")
            .unwrap();
    }
}

//! `[[file_sync]]` at create: each entry's host path resolved (it must
//! land inside the owner's home), its files copied into a staging
//! directory in the VM's directory, and the debugfs commands that lay them
//! onto the work disk. The host files are read here, by the daemon (the
//! owner), with every nested path opened without following symlinks.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use banger_config::FileSync;

/// Most bytes all entries together may copy (also held to a quarter of
/// the work disk).
pub const MAX_BYTES: u64 = 256 << 20;
/// Most files and directories all entries together may copy.
pub const MAX_ENTRIES: u64 = 10_000;
/// Deepest directory nesting copied.
const MAX_DEPTH: usize = 64;

/// Checks that every entry's host path, resolved, lies inside `home`
/// (a path that does not exist passes: staging skips it with a warning).
pub fn check(entries: &[FileSync], home: Option<&Path>) -> Result<(), String> {
    for (i, entry) in entries.iter().enumerate() {
        resolve(i, entry, home)?;
    }
    Ok(())
}

/// "file_sync[i] (host ...)", for messages.
fn named(i: usize, entry: &FileSync) -> String {
    format!("file_sync[{i}] (host {:?})", entry.host)
}

/// The entry's host path, canonical, or `None` when it does not exist.
fn resolve(i: usize, entry: &FileSync, home: Option<&Path>) -> Result<Option<PathBuf>, String> {
    let home = home.ok_or_else(|| {
        format!(
            "{}: the owner's home is unknown (the daemon has no absolute HOME)",
            named(i, entry)
        )
    })?;
    let home = std::fs::canonicalize(home).map_err(|e| {
        format!(
            "{}: resolve the owner's home {}: {e}",
            named(i, entry),
            home.display()
        )
    })?;
    let path = match entry.host.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(&entry.host),
    };
    let real = match std::fs::canonicalize(&path) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "{}: resolve {}: {e}",
                named(i, entry),
                path.display()
            ));
        }
    };
    if real == home || !real.starts_with(&home) {
        return Err(format!(
            "{}: resolves to {}, which is not inside the owner's home {}",
            named(i, entry),
            real.display(),
            home.display()
        ));
    }
    Ok(Some(real))
}

/// What staging produced.
#[derive(Debug, Default)]
pub struct Staged {
    /// debugfs commands, run in the VM's directory with the work disk's
    /// root as the current directory.
    pub commands: String,
    /// One line per thing skipped.
    pub warnings: Vec<String>,
}

/// Copies every entry into `dir/rel` (files named by number) and returns
/// the commands that lay them onto the work disk; at most `max_bytes`.
pub fn stage(
    entries: &[FileSync],
    home: Option<&Path>,
    (dir, rel): (&Path, &str),
    max_bytes: u64,
) -> Result<Staged, String> {
    let mut stager = Stager {
        dir: dir.join(rel),
        rel: rel.to_owned(),
        out: Staged::default(),
        files: 0,
        entries: 0,
        bytes: 0,
        max_bytes,
    };
    if !entries.is_empty() {
        std::fs::create_dir(&stager.dir)
            .map_err(|e| format!("create {}: {e}", stager.dir.display()))?;
    }
    for (i, entry) in entries.iter().enumerate() {
        let Some(host) = resolve(i, entry, home)? else {
            stager.warn(format!("{}: does not exist; skipped", named(i, entry)));
            continue;
        };
        let guest = entry.guest_in_home();
        // The guest path's parents, made if the seed lacks them (debugfs
        // says so, harmlessly, when they exist).
        let parts: Vec<&str> = guest.split('/').collect();
        for n in 1..parts.len() {
            stager.cmd(&format!("mkdir {}", quote(&parts[..n].join("/"))));
        }
        stager
            .copy(&host, guest, entry.mode_bits(), 0)
            .map_err(|e| format!("{}: {e}", named(i, entry)))?;
    }
    Ok(stager.out)
}

struct Stager {
    dir: PathBuf,
    rel: String,
    out: Staged,
    files: u64,
    entries: u64,
    bytes: u64,
    max_bytes: u64,
}

impl Stager {
    fn cmd(&mut self, line: &str) {
        self.out.commands.push_str(line);
        self.out.commands.push('\n');
    }

    fn warn(&mut self, line: String) {
        tracing::warn!("{line}");
        self.out.warnings.push(line);
    }

    fn count(&mut self) -> Result<(), String> {
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} files and directories"));
        }
        Ok(())
    }

    /// Copies `host` (opened without following a symlink) to `guest`.
    fn copy(
        &mut self,
        host: &Path,
        guest: &str,
        mode: Option<u32>,
        depth: usize,
    ) -> Result<(), String> {
        let meta =
            std::fs::symlink_metadata(host).map_err(|e| format!("stat {}: {e}", host.display()))?;
        let kind = meta.file_type();
        let q = quote(guest);
        if kind.is_dir() {
            if depth >= MAX_DEPTH {
                return Err(format!(
                    "{} nests deeper than {MAX_DEPTH} directories",
                    host.display()
                ));
            }
            self.count()?;
            self.cmd(&format!("mkdir {q}"));
            self.cmd(&format!(
                "sif {q} mode 0{:o}",
                0o040_000 | (meta.mode() & 0o777) | 0o700
            ));
            self.owned_by_root(&q);
            let mut children: Vec<_> = std::fs::read_dir(host)
                .map_err(|e| format!("read {}: {e}", host.display()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("read {}: {e}", host.display()))?;
            children.sort();
            for name in children {
                let path = host.join(&name);
                match std::str::from_utf8(name.as_bytes()) {
                    Ok(n) if !n.chars().any(char::is_control) => {
                        self.copy(&path, &format!("{guest}/{n}"), mode, depth + 1)?;
                    }
                    _ => self.warn(format!(
                        "file_sync skipped {}: its name has a control character or is not UTF-8",
                        path.display()
                    )),
                }
            }
        } else if kind.is_file() {
            self.count()?;
            let staged = self.file(host)?;
            self.cmd(&format!("rm {q}"));
            self.cmd(&format!("write {staged} {q}"));
            let bits = mode.unwrap_or_else(|| meta.mode() & 0o777);
            self.cmd(&format!("sif {q} mode 0{:o}", 0o100_000 | bits));
            self.owned_by_root(&q);
        } else if kind.is_symlink() {
            self.warn(format!(
                "file_sync skipped symlink {} (it could lead outside the synced tree)",
                host.display()
            ));
        } else {
            self.warn(format!(
                "file_sync skipped {}: not a regular file or directory",
                host.display()
            ));
        }
        Ok(())
    }

    fn owned_by_root(&mut self, q: &str) {
        self.cmd(&format!("sif {q} uid 0"));
        self.cmd(&format!("sif {q} gid 0"));
    }

    /// Copies one regular file into the staging directory, holding the
    /// total to `max_bytes`; returns its name relative to the VM's dir.
    fn file(&mut self, host: &Path) -> Result<String, String> {
        // O_NONBLOCK: a FIFO swapped in after the stat must not hang the
        // create; the fstat below refuses it.
        let mut src = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(host)
            .map_err(|e| format!("open {}: {e}", host.display()))?;
        let meta = src
            .metadata()
            .map_err(|e| format!("stat {}: {e}", host.display()))?;
        if !meta.is_file() {
            return Err(format!("{} changed while being copied", host.display()));
        }
        let name = self.files.to_string();
        self.files += 1;
        let dest = self.dir.join(&name);
        let mut out = File::create(&dest).map_err(|e| format!("create {}: {e}", dest.display()))?;
        let left = self.max_bytes - self.bytes;
        let copied = std::io::copy(&mut (&mut src).take(left + 1), &mut out)
            .and_then(|n| out.flush().map(|()| n))
            .map_err(|e| format!("copy {}: {e}", host.display()))?;
        if copied > left {
            return Err(format!(
                "more than {} MiB to copy (at most 256 MiB, and a quarter of the work disk)",
                self.max_bytes >> 20
            ));
        }
        self.bytes += copied;
        Ok(format!("{}/{name}", self.rel))
    }
}

/// A name as one debugfs argument: in double quotes, a quote doubled
/// (its parser's rule). Names hold no control characters.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests;

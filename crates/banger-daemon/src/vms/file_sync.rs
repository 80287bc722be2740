//! `[[file_sync]]` at create: each entry's host path resolved (it must
//! land inside the owner's home), its files copied into a staging
//! directory in the VM's directory, and the debugfs commands that lay them
//! onto the work disk. The host files are read here, by the daemon (the
//! owner), with no symlink followed below the resolved host path.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use banger_config::FileSync;
use banger_sys::nofollow;

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

/// Longest debugfs command line written. debugfs reads its script with
/// `fgets` into 8 KiB; a longer line would run its tail as a command of
/// its own (and a tail starting with `!` as a shell command).
const MAX_LINE: usize = 4096;
/// Most script all entries together may produce.
const MAX_SCRIPT: usize = 16 << 20;

/// Copies every entry into `dir/rel` (files named by number) and returns
/// the commands that lay them onto the work disk; at most `max_bytes`.
///
/// Nothing is followed below the resolved host path: every path is
/// opened with no symlink allowed in it, each child relative to its open
/// parent. Every guest path is removed before it is made (debugfs `rm`
/// refuses directories), so a `mkdir` or `write` never meets an inode of
/// another type, and no `sif mode` (which rewrites the type) runs on a
/// file: a file's permission bits are its staged copy's.
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
        owner: 0,
        files: 0,
        entries: 0,
        bytes: 0,
        max_bytes,
    };
    if entries.is_empty() {
        return Ok(stager.out);
    }
    std::fs::create_dir(&stager.dir)
        .map_err(|e| format!("create {}: {e}", stager.dir.display()))?;
    for (i, entry) in entries.iter().enumerate() {
        let Some(host) = resolve(i, entry, home)? else {
            stager.warn(format!("{}: does not exist; skipped", named(i, entry)));
            continue;
        };
        let at = |e: String| format!("{}: {e}", named(i, entry));
        // resolve() succeeded, so the home is known and canonical.
        let home = home
            .and_then(|h| std::fs::canonicalize(h).ok())
            .unwrap_or_default();
        stager.owner = std::fs::metadata(&home)
            .map_err(|e| at(format!("stat {}: {e}", home.display())))?
            .uid();
        let top = nofollow::open_no_symlinks(&host).map_err(|e| {
            at(format!(
                "open {}: {e} (did it change since it was resolved?)",
                host.display()
            ))
        })?;
        let guest = entry.guest_in_home();
        let parts: Vec<&str> = guest.split('/').collect();
        for n in 1..parts.len() {
            stager
                .dir_commands(&quote(&parts[..n].join("/")), None)
                .map_err(at)?;
        }
        stager
            .copy(top, &host, guest, entry.mode_bits(), 0)
            .map_err(at)?;
    }
    Ok(stager.out)
}

struct Stager {
    dir: PathBuf,
    rel: String,
    out: Staged,
    /// The home's owner: whatever else owns a file was not put there by
    /// the user (a hard link, a file root left).
    owner: u32,
    files: u64,
    entries: u64,
    bytes: u64,
    max_bytes: u64,
}

impl Stager {
    fn cmd(&mut self, line: &str) -> Result<(), String> {
        if line.len() > MAX_LINE {
            return Err(format!("a path longer than {MAX_LINE} bytes"));
        }
        if self.out.commands.len() + line.len() >= MAX_SCRIPT {
            return Err(format!(
                "more than {} MiB of debugfs commands",
                MAX_SCRIPT >> 20
            ));
        }
        self.out.commands.push_str(line);
        self.out.commands.push('\n');
        Ok(())
    }

    fn warn(&mut self, line: String) {
        self.out.warnings.push(line);
    }

    /// A directory at the quoted guest path `q`: what is there removed
    /// unless it is a directory, made, its mode set when given.
    fn dir_commands(&mut self, q: &str, mode: Option<u32>) -> Result<(), String> {
        self.cmd(&format!("rm {q}"))?;
        self.cmd(&format!("mkdir {q}"))?;
        if let Some(bits) = mode {
            self.cmd(&format!("sif {q} mode 0{:o}", 0o040_000 | bits))?;
        }
        self.owned_by_root(q)
    }

    fn owned_by_root(&mut self, q: &str) -> Result<(), String> {
        self.cmd(&format!("sif {q} uid 0"))?;
        self.cmd(&format!("sif {q} gid 0"))
    }

    /// Copies the open `file` (host path `shown`) to `guest`.
    fn copy(
        &mut self,
        mut file: File,
        shown: &Path,
        guest: &str,
        mode: Option<u32>,
        depth: usize,
    ) -> Result<(), String> {
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} files and directories"));
        }
        let meta = file
            .metadata()
            .map_err(|e| format!("stat {}: {e}", shown.display()))?;
        let q = quote(guest);
        if q.len() > MAX_LINE - 64 {
            self.warn(format!(
                "file_sync skipped {}: its guest path is too long",
                shown.display()
            ));
        } else if meta.uid() != self.owner {
            self.warn(format!(
                "file_sync skipped {}: owned by uid {}, not by the home's owner",
                shown.display(),
                meta.uid()
            ));
        } else if meta.is_dir() {
            if depth >= MAX_DEPTH {
                return Err(format!(
                    "{} nests deeper than {MAX_DEPTH} directories",
                    shown.display()
                ));
            }
            self.dir_commands(&q, Some((meta.mode() & 0o777) | 0o700))?;
            let names =
                nofollow::names(&file).map_err(|e| format!("read {}: {e}", shown.display()))?;
            for name in names {
                self.child(&file, shown, guest, &name, (mode, depth))?;
            }
        } else if meta.is_file() {
            let bits = mode.unwrap_or_else(|| meta.mode() & 0o777);
            let staged = self.file(&mut file, shown, bits)?;
            self.cmd(&format!("rm {q}"))?;
            self.cmd(&format!("write {staged} {q}"))?;
            self.owned_by_root(&q)?;
        } else {
            self.warn(format!(
                "file_sync skipped {}: not a regular file or directory",
                shown.display()
            ));
        }
        Ok(())
    }

    /// Copies `name` of the open directory `dir`, never following it.
    fn child(
        &mut self,
        dir: &File,
        shown: &Path,
        guest: &str,
        name: &std::ffi::OsStr,
        (mode, depth): (Option<u32>, usize),
    ) -> Result<(), String> {
        let path = shown.join(name);
        let Some(n) = std::str::from_utf8(name.as_bytes())
            .ok()
            .filter(|n| !n.chars().any(char::is_control))
        else {
            self.warn(format!(
                "file_sync skipped {}: its name has a control character or is not UTF-8",
                path.display()
            ));
            return Ok(());
        };
        match nofollow::open_child(dir, name) {
            Ok(child) => self.copy(child, &path, &format!("{guest}/{n}"), mode, depth + 1),
            Err(e) if nofollow::is_symlink_refusal(&e) => {
                self.warn(format!(
                    "file_sync skipped symlink {} (it could lead outside the synced tree)",
                    path.display()
                ));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.warn(format!(
                    "file_sync skipped {}: gone while being copied",
                    path.display()
                ));
                Ok(())
            }
            Err(e) => Err(format!("open {}: {e}", path.display())),
        }
    }

    /// Copies one open regular file into the staging directory with
    /// permission bits `bits`, holding the total to `max_bytes`; returns
    /// its name relative to the VM's directory.
    fn file(&mut self, src: &mut File, shown: &Path, bits: u32) -> Result<String, String> {
        let name = self.files.to_string();
        self.files += 1;
        let dest = self.dir.join(&name);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .map_err(|e| format!("create {}: {e}", dest.display()))?;
        let left = self.max_bytes - self.bytes;
        let copied = std::io::copy(&mut src.take(left + 1), &mut out)
            .and_then(|n| out.flush().map(|()| n))
            .map_err(|e| format!("copy {}: {e}", shown.display()))?;
        if copied > left {
            return Err(format!(
                "more than {} KiB to copy (at most 256 MiB, and a quarter of the work disk)",
                self.max_bytes >> 10
            ));
        }
        self.bytes += copied;
        // debugfs gives the new inode these bits.
        out.set_permissions(std::fs::Permissions::from_mode(bits))
            .map_err(|e| format!("chmod {}: {e}", dest.display()))?;
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

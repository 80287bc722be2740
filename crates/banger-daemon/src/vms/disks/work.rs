//! The work disk, mounted at `/root`: written from the image's seed at
//! create, with banger's own files and the `[[file_sync]]` entries.

use std::path::Path;
use std::sync::Arc;

use banger_sys::{Cmd, Runner, io_at};

use super::{DiskError, DiskFiles, WORK_LABEL, run};
use crate::vms::remove_temp;

/// The guest's `/root/.gitconfig`: the developer's identity, and stat
/// checks a carried index survives (the tar keeps sizes and whole-second
/// mtimes, not inodes or ctimes), so git does not reread every file.
pub fn gitconfig(name: Option<&str>, email: Option<&str>) -> String {
    // A git config value in double quotes: `\` and `"` escaped (the API
    // refused control characters).
    let quoted = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let mut text =
        String::from("# Written by banger.\n[core]\n\tcheckStat = minimal\n\ttrustctime = false\n");
    if name.is_some() || email.is_some() {
        text.push_str("[user]\n");
    }
    if let Some(name) = name {
        text.push_str(&format!("\tname = {}\n", quoted(name)));
    }
    if let Some(email) = email {
        text.push_str(&format!("\temail = {}\n", quoted(email)));
    }
    text
}

/// The debugfs commands that write banger's own files into the work
/// disk's root: last, so a `[[file_sync]]` entry cannot replace them.
/// debugfs reads commands, not a shell; the files it is given are named
/// relative to its working directory, so no host path is interpolated.
const BANGER_FILES: &str = "cd /\n\
    mkdir .ssh\n\
    sif .ssh mode 040700\n\
    sif .ssh uid 0\n\
    sif .ssh gid 0\n\
    cd .ssh\n\
    rm authorized_keys\n\
    write authorized_keys authorized_keys\n\
    sif authorized_keys mode 0100600\n\
    sif authorized_keys uid 0\n\
    sif authorized_keys gid 0\n\
    cd /\n\
    rm .gitconfig\n\
    write gitconfig .gitconfig\n\
    sif .gitconfig mode 0100644\n\
    sif .gitconfig uid 0\n\
    sif .gitconfig gid 0\n\
    rm .hushlogin\n\
    write /dev/null .hushlogin\n\
    sif .hushlogin mode 0100644\n\
    sif .hushlogin uid 0\n\
    sif .hushlogin gid 0\n";

/// What a create writes into the work disk's root.
#[derive(Debug, Clone, Copy)]
pub struct WorkFiles<'a> {
    /// banger's public key, for `/root/.ssh/authorized_keys`.
    pub authorized_key: &'a str,
    /// `/root/.gitconfig` ([`gitconfig`]).
    pub gitconfig: &'a str,
    /// debugfs commands laying `[[file_sync]]` entries, staged in the
    /// VM's directory (run first).
    pub synced: &'a str,
}

/// Writes the work disk: the image's work seed, grown to `size_bytes`
/// (sparse), relabelled, with the file_sync entries, banger's key in
/// `/root/.ssh/authorized_keys`, the `.gitconfig` and a `.hushlogin`.
pub fn make_work(
    runner: &Arc<dyn Runner>,
    seed: &Path,
    disks: &DiskFiles,
    size_bytes: u64,
    files: WorkFiles<'_>,
    log: &Path,
) -> Result<(), DiskError> {
    let work = &disks.work;
    run(
        runner,
        &Cmd::new("cp").arg("--sparse=always").arg(seed).arg(work),
        log,
        "copy the work seed",
    )?;
    // The seed is banger's own (built with the image), never guest-written,
    // so e2fsprogs may grow it here.
    grow_work(work, size_bytes)?;
    run(
        runner,
        &Cmd::new("resize2fs")
            .arg("-f")
            .arg(work)
            .arg(format!("{}K", size_bytes / 1024)),
        log,
        "grow the work seed's file system",
    )?;
    run(
        runner,
        &Cmd::new("tune2fs").args(["-L", WORK_LABEL]).arg(work),
        log,
        "label the work disk",
    )?;
    let dir = work.parent().unwrap_or_else(|| Path::new("."));
    let key_file = dir.join("authorized_keys");
    let script = dir.join("work.debugfs");
    let config_file = dir.join("gitconfig");
    std::fs::write(&config_file, files.gitconfig).map_err(io_at("write", &config_file))?;
    std::fs::write(&key_file, files.authorized_key).map_err(io_at("write", &key_file))?;
    let commands = format!("{}{BANGER_FILES}", files.synced);
    std::fs::write(&script, commands).map_err(io_at("write", &script))?;
    let result = run(
        runner,
        &Cmd::new("debugfs")
            .args(["-w", "-f", "work.debugfs"])
            .arg(work)
            .cwd(dir),
        log,
        "install authorized_keys on the work disk",
    );
    remove_temp(&key_file);
    remove_temp(&config_file);
    remove_temp(&script);
    result
}

/// Grows the work disk file to `size_bytes` (never shrinks). Only the
/// file: the guest wrote that file system, so no e2fsprogs runs on it on
/// the host (they have had memory-corruption bugs on crafted images). The
/// guest's own systemd grows the mounted file system at boot, asked to by
/// `x-systemd.growfs` in the fstab line [`overlay_tar`] writes.
pub fn grow_work(work: &Path, size_bytes: u64) -> Result<(), DiskError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(work)
        .map_err(io_at("open", work))?;
    let current = file.metadata().map_err(io_at("stat", work))?.len();
    if size_bytes <= current {
        return Ok(());
    }
    Ok(file.set_len(size_bytes).map_err(io_at("grow", work))?)
}

//! The work disk, mounted at `/root`: written from the image's seed at
//! create, with banger's own files and the `[[file_sync]]` entries.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
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
/// The seed's `/root` comes from the image (a registry's, maybe), so
/// whatever is at each path is removed first (`rm` refuses a directory)
/// and no `sif mode` touches a file: on a failed `write` it would rewrite
/// the type of the inode that is there. Files take their staged copies'
/// permission bits.
const BANGER_FILES: &str = "cd /\n\
    rm .ssh\n\
    mkdir .ssh\n\
    sif .ssh mode 040700\n\
    sif .ssh uid 0\n\
    sif .ssh gid 0\n\
    rm .ssh/authorized_keys\n\
    write authorized_keys .ssh/authorized_keys\n\
    sif .ssh/authorized_keys uid 0\n\
    sif .ssh/authorized_keys gid 0\n\
    rm .gitconfig\n\
    write gitconfig .gitconfig\n\
    sif .gitconfig uid 0\n\
    sif .gitconfig gid 0\n\
    rm .hushlogin\n\
    write hushlogin .hushlogin\n\
    sif .hushlogin uid 0\n\
    sif .hushlogin gid 0\n";

/// The files [`BANGER_FILES`] writes, staged in the VM's directory:
/// (name, permission bits).
const STAGED: [(&str, u32); 3] = [
    ("authorized_keys", 0o600),
    ("gitconfig", 0o644),
    ("hushlogin", 0o644),
];

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
    let script = dir.join("work.debugfs");
    let contents = [files.authorized_key, files.gitconfig, ""];
    let staged = STAGED
        .iter()
        .zip(contents)
        .try_for_each(|((name, bits), text)| {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .and_then(|()| std::fs::set_permissions(&path, Permissions::from_mode(*bits)))
                .map_err(io_at("write", &path))
        });
    let result = staged
        .and_then(|()| {
            let commands = format!("{}{BANGER_FILES}", files.synced);
            std::fs::write(&script, commands).map_err(io_at("write", &script))
        })
        .map_err(DiskError::from)
        .and_then(|()| {
            run(
                runner,
                &Cmd::new("debugfs")
                    .args(["-w", "-f", "work.debugfs"])
                    .arg(work)
                    .cwd(dir),
                log,
                "write files onto the work disk",
            )
        });
    for (name, _) in STAGED {
        remove_temp(&dir.join(name));
    }
    remove_temp(&script);
    result
}

/// Grows the work disk file (or a workspace disk's, by the same rules)
/// to `size_bytes` (never shrinks). Only the
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

#[cfg(test)]
mod tests {
    use banger_sys::{Cancel, HostRunner};

    use super::*;

    /// A seed whose `/root` holds a file where `.ssh` goes, a directory
    /// where `.gitconfig` goes and a symlink where `.hushlogin` goes (an
    /// image can ship any of them): the key still lands, 0600, in a real
    /// directory, and no inode changes type.
    #[test]
    fn banger_files_land_whatever_the_seed_holds_at_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed.ext4");
        let log = dir.path().join("log");
        let runner: Arc<dyn Runner> = Arc::new(HostRunner);
        let run = |cmd: &Cmd| runner.run(cmd, &log, &Cancel::new()).unwrap();
        run(&banger_artifacts::ext4::mkfs_empty(&seed, 8 << 20, "seed"));
        std::fs::write(dir.path().join("junk"), "not a directory\n").unwrap();
        std::fs::write(
            dir.path().join("seed.debugfs"),
            "write junk .ssh\nmkdir .gitconfig\nsymlink .hushlogin /etc/shadow\n",
        )
        .unwrap();
        run(&Cmd::new("debugfs")
            .args(["-w", "-f", "seed.debugfs", "seed.ext4"])
            .cwd(dir.path()));
        let vm = dir.path().join("vm");
        std::fs::create_dir(&vm).unwrap();
        let disks = DiskFiles {
            overlay: vm.join("overlay.ext4"),
            work: vm.join("work.ext4"),
            repo: vm.join("repo.ext4"),
        };
        let files = WorkFiles {
            authorized_key: "ssh-ed25519 AAAA banger\n",
            gitconfig: "[core]\n",
            synced: "",
        };
        make_work(&runner, &seed, &disks, 32 << 20, files, &log).unwrap();
        let out = vm.join("out");
        run(&Cmd::new("sh")
            .arg("-c")
            .arg("debugfs -R 'ls -l' work.ext4 > out; debugfs -R 'ls -l .ssh' work.ext4 >> out; debugfs -R 'cat .ssh/authorized_keys' work.ext4 >> out")
            .cwd(&vm));
        let listing = std::fs::read_to_string(out).unwrap();
        let line = |name: &str| {
            listing
                .lines()
                .find(|l| l.ends_with(&format!(" {name}")))
                .unwrap_or_else(|| panic!("{name}: {listing}"))
                .to_owned()
        };
        assert!(line(".ssh").contains(" 40700 "), "{listing}");
        assert!(line("authorized_keys").contains(" 100600 "), "{listing}");
        assert!(
            line(".gitconfig").contains(" 40755 "),
            "stays a directory: {listing}"
        );
        assert!(line(".hushlogin").contains(" 100644 "), "{listing}");
        assert!(listing.contains("ssh-ed25519 AAAA banger"), "{listing}");
        assert!(!listing.contains("120777"), "{listing}");
    }
}

//! banger's initramfs: a newc cpio archive, written here byte by byte,
//! holding `/init` (the static banger-init binary) and the directories and
//! console node it needs before any file system is mounted.

use std::io::Write;
use std::path::Path;

use crate::kernel::{BuildError, io_err};

/// What the archive holds besides `/init`: (path, mode incl. type, rdev).
const SKELETON: &[(&str, u32, (u32, u32))] = &[
    ("dev", 0o040_755, (0, 0)),
    ("dev/console", 0o020_600, (5, 1)),
    ("proc", 0o040_555, (0, 0)),
    ("sys", 0o040_555, (0, 0)),
    ("mnt", 0o040_755, (0, 0)),
    ("mnt/base", 0o040_755, (0, 0)),
    ("mnt/overlay", 0o040_755, (0, 0)),
    ("newroot", 0o040_755, (0, 0)),
];

/// Writes the initramfs for `init` (the banger-init binary) to `out`.
pub fn write(init: &Path, out: &Path) -> Result<(), BuildError> {
    let binary = std::fs::read(init).map_err(io_err("read", init))?;
    if binary.get(..4) != Some(b"\x7fELF") {
        return Err(BuildError::Recipe(format!(
            "{} is not an ELF binary",
            init.display()
        )));
    }
    let mut archive = Vec::with_capacity(binary.len() + 4096);
    let mut ino = 1;
    for (name, mode, rdev) in SKELETON {
        entry(&mut archive, ino, name, *mode, *rdev, &[]);
        ino += 1;
    }
    entry(&mut archive, ino, "init", 0o100_755, (0, 0), &binary);
    entry(&mut archive, 0, "TRAILER!!!", 0, (0, 0), &[]);
    let tmp = out.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(&archive).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("sync", &tmp))?;
    std::fs::rename(&tmp, out).map_err(io_err("rename", out))
}

/// One newc entry: a 110-byte ASCII header, the NUL-terminated name padded
/// to 4 bytes, the data padded to 4 bytes. Owner root, mtime 0, so the
/// archive is reproducible.
fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(data.len()).unwrap_or(u32::MAX),
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
    out.extend_from_slice(data);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(
        clippy::disallowed_methods,
        reason = "checks the archive with the real cpio"
    )]
    fn cpio(args: &[&str], archive: &Path) -> String {
        let out = std::process::Command::new("cpio")
            .args(args)
            .stdin(std::fs::File::open(archive).unwrap())
            .output()
            .expect("run cpio (apt-get install cpio)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn cpio_reads_back_the_skeleton_and_the_init_binary() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("banger-init");
        let mut elf = b"\x7fELF".to_vec();
        elf.extend_from_slice(b"-rest-of-a-binary");
        std::fs::write(&init, &elf).unwrap();
        let out = dir.path().join("initramfs.cpio");
        write(&init, &out).unwrap();

        let listing = cpio(&["-t", "-v", "--quiet"], &out);
        let names: Vec<&str> = listing
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "proc",
                "sys",
                "mnt",
                "mnt/base",
                "mnt/overlay",
                "newroot",
                "init"
            ]
        );
        let console = listing
            .lines()
            .find(|l| l.ends_with("dev/console"))
            .unwrap();
        assert!(
            console.starts_with("crw-------") && console.contains("5,   1"),
            "{console}"
        );
        let init_line = listing.lines().find(|l| l.ends_with(" init")).unwrap();
        assert!(init_line.starts_with("-rwxr-xr-x"), "{init_line}");
        assert_eq!(
            cpio(&["-i", "--to-stdout", "--quiet", "init"], &out).into_bytes(),
            elf
        );
    }

    #[test]
    fn a_non_elf_init_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("script");
        std::fs::write(&init, b"#!/bin/sh\n").unwrap();
        let err = write(&init, &dir.path().join("out")).unwrap_err();
        assert!(err.to_string().contains("not an ELF binary"), "{err}");
    }
}

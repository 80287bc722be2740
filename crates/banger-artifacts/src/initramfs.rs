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
        return Err(BuildError::Init {
            path: init.to_owned(),
            why: "not an ELF binary",
        });
    }
    if !is_static_elf(&binary) {
        return Err(BuildError::Init {
            path: init.to_owned(),
            why: "dynamically linked; the initramfs has no loader (build it with -C target-feature=+crt-static, as scripts/lib.sh does)",
        });
    }
    let mut archive = Vec::with_capacity(binary.len() + 4096);
    let mut ino = 1;
    for (name, mode, rdev) in SKELETON {
        entry(&mut archive, ino, name, *mode, *rdev, &[]);
        ino += 1;
    }
    entry(&mut archive, ino, "init", 0o100_755, (0, 0), &binary);
    entry(&mut archive, 0, "TRAILER!!!", 0, (0, 0), &[]);
    // Daemons of several installations may share the cache: each writes
    // its own temporary file so none can truncate another's mid-rename.
    let tmp = out.with_extension(format!("tmp-{:08x}", rand::random::<u32>()));
    let written = std::fs::File::create(&tmp)
        .map_err(io_err("create", &tmp))
        .and_then(|mut file| {
            file.write_all(&archive).map_err(io_err("write", &tmp))?;
            file.sync_all().map_err(io_err("sync", &tmp))
        })
        .and_then(|()| std::fs::rename(&tmp, out).map_err(io_err("rename", out)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Whether a 64-bit little-endian ELF has no program interpreter (no
/// `PT_INTERP`), i.e. runs without a dynamic loader.
pub fn is_static_elf(binary: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        binary
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        binary
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        binary
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // ELFCLASS64, ELFDATA2LSB.
    if binary.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum))
        .all(|i| u32_at(phoff + i * usize::from(phentsize)).is_some_and(|t| t != PT_INTERP))
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
        let elf = fake_elf(1);
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

    /// A 64-bit ELF header plus one program header of type `p_type`.
    fn fake_elf(p_type: u32) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&p_type.to_le_bytes());
        elf
    }

    #[test]
    fn a_dynamically_linked_init_is_refused_before_it_can_panic_a_guest() {
        assert!(is_static_elf(&fake_elf(1)));
        assert!(!is_static_elf(&fake_elf(3)));
        assert!(!is_static_elf(b"\x7fELF\x01\x01short"));
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("banger-init");
        std::fs::write(&init, fake_elf(3)).unwrap();
        let err = write(&init, &dir.path().join("out")).unwrap_err();
        assert!(err.to_string().contains("dynamically linked"), "{err}");
        // The real thing, as scripts/test builds it, when present.
        let real = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/x86_64-unknown-linux-gnu/release/banger-init");
        if let Ok(bytes) = std::fs::read(&real) {
            assert!(is_static_elf(&bytes), "{} is not static", real.display());
        }
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me), "a test binary is dynamically linked");
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

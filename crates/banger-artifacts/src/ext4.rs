//! Building ext4 images with `mke2fs -d`, straight from a tarball: owners,
//! modes, setuid bits, xattrs, hard links and device nodes come from the tar
//! headers, so no root and no unpacking are needed (e2fsprogs >= 1.47.1,
//! with libarchive).

use std::path::Path;

use banger_sys::Cmd;

const MIB: u64 = 1024 * 1024;

/// The `mke2fs` command that writes an ext4 of `size_bytes` at `out` from
/// the tarball `tar`, with lazy inode-table and journal init.
pub fn mkfs_from_tar(tar: &Path, out: &Path, size_bytes: u64, label: &str) -> Cmd {
    Cmd::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", label])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg("-d")
        .arg(tar)
        .arg(out)
        .arg(format!("{}k", size_bytes / 1024))
}

/// The `mke2fs` command that writes an empty ext4 of `size_bytes` at `out`
/// (sparse: lazy inode-table and journal init write almost nothing).
pub fn mkfs_empty(out: &Path, size_bytes: u64, label: &str) -> Cmd {
    Cmd::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", label])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(out)
        .arg(format!("{}k", size_bytes / 1024))
}

/// Size for a file system holding `bytes` of file data in `entries`
/// entries, plus `headroom_mib` free: data plus a 4 KiB block per entry
/// plus 10% for metadata, rounded up to 64 MiB.
pub fn size_for(bytes: u64, entries: u64, headroom_mib: u64) -> u64 {
    let raw = bytes + entries * 4096;
    let with_meta = raw + raw / 10 + headroom_mib * MIB;
    with_meta.div_ceil(64 * MIB) * 64 * MIB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_rounds_up_and_keeps_headroom() {
        assert_eq!(size_for(0, 0, 0), 0);
        assert_eq!(size_for(1, 1, 0), 64 * MIB);
        let s = size_for(300 * MIB, 10_000, 256);
        assert!(s >= 300 * MIB + 256 * MIB + 10_000 * 4096, "{s}");
        assert_eq!(s % (64 * MIB), 0);
    }

    #[test]
    fn mkfs_argv_has_lazy_init_and_tar_source() {
        let cmd = mkfs_from_tar(
            Path::new("/s/r.tar"),
            Path::new("/s/rootfs.ext4"),
            128 * MIB,
            "rootfs",
        );
        assert_eq!(
            cmd.display(),
            "mke2fs -q -F -t ext4 -L rootfs -E lazy_itable_init=1,lazy_journal_init=1 -d /s/r.tar /s/rootfs.ext4 131072k"
        );
    }
}

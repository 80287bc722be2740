//! Bind mounts and device nodes for a VMM's chroot, and finding what is
//! mounted under a directory so that it can be taken apart safely.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bind-mounts the file or directory `src` onto `dst` (which must exist),
/// read-only when asked.
pub fn bind(src: &Path, dst: &Path, read_only: bool) -> io::Result<()> {
    let (src, dst) = (c_path(src)?, c_path(dst)?);
    // SAFETY: both strings are NUL-terminated and outlive the call; the
    // file system type and data may be null for a bind mount.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    })?;
    if read_only {
        // A bind mount ignores MS_RDONLY until remounted.
        // SAFETY: as above; the source is ignored on a remount.
        let remount = check(unsafe {
            libc::mount(
                std::ptr::null(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        });
        if let Err(e) = remount {
            // SAFETY: a NUL-terminated path; no other memory is touched.
            unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
            return Err(e);
        }
    }
    Ok(())
}

/// Detaches the mount at `path` without following a symlink there.
pub fn unmount(path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: a NUL-terminated path that outlives the call.
    check(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) })
}

/// Makes a block device node at `path` for device `rdev`.
pub fn mknod_block(path: &Path, rdev: u64, mode: u32) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: a NUL-terminated path that outlives the call.
    check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFBLK | mode, rdev) })
}

/// The mount points at or under `dir` listed in `mountinfo` (the text of
/// `/proc/self/mountinfo`), deepest first: the order they must be
/// unmounted in.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by(|a, b| {
        b.components()
            .count()
            .cmp(&a.components().count())
            .then_with(|| b.cmp(a))
    });
    points.dedup();
    points
}

/// The mount points at or under `dir` on this host, deepest first.
pub fn host_mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(mounts_under(
        &std::fs::read_to_string("/proc/self/mountinfo")?,
        dir,
    ))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_lists_only_that_tree_deepest_first_and_unescapes() {
        let info = "\
22 1 0:21 / / rw - ext4 /dev/sda rw
30 22 0:40 / /run/banger/jail/a/root rw - tmpfs t rw
31 30 8:1 /x /run/banger/jail/a/root/rootfs.ext4 ro - ext4 /dev/sda rw
32 30 8:1 /y /run/banger/jail/a/root/dir\\040with\\040space/disk rw - ext4 /dev/sda rw
33 22 8:1 /z /run/banger/jail/ab/root rw - ext4 /dev/sda rw
";
        assert_eq!(
            mounts_under(info, Path::new("/run/banger/jail/a")),
            [
                PathBuf::from("/run/banger/jail/a/root/dir with space/disk"),
                PathBuf::from("/run/banger/jail/a/root/rootfs.ext4"),
                PathBuf::from("/run/banger/jail/a/root"),
            ]
        );
    }

    #[test]
    fn unescape_leaves_a_lone_backslash_alone() {
        assert_eq!(unescape("a\\b\\1"), "a\\b\\1");
        assert_eq!(unescape("\\134x"), "\\x");
    }
}

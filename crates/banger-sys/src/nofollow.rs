//! Opening files without following symlinks anywhere on the way: for
//! reading a user's tree while a process of theirs may be swapping
//! directories for links under it.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Flags every open here uses: read-only, never a controlling terminal,
/// never blocking on a FIFO, closed on exec.
const READ: libc::c_int = libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC;

fn c_path(path: &[u8]) -> std::io::Result<CString> {
    CString::new(path).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Opens the absolute `path` for reading, failing (`ELOOP`) when any of
/// its components, the last included, is a symlink.
pub fn open_no_symlinks(path: &Path) -> std::io::Result<File> {
    let c = c_path(path.as_os_str().as_bytes())?;
    // SAFETY: open_how is plain integers; all zeroes is its default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::try_from(READ).unwrap_or_default();
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `c` is a valid C string and `how` a valid open_how of the
    // size passed; the kernel only reads them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &raw const how,
            size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens `name`, one entry of the directory `dir`, for reading without
/// following it if it is a symlink (`ELOOP`).
pub fn open_child(dir: &File, name: &OsStr) -> std::io::Result<File> {
    if name.as_bytes().contains(&b'/') {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    let c = c_path(name.as_bytes())?;
    // SAFETY: `dir` is an open descriptor and `c` a valid C string.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), READ | libc::O_NOFOLLOW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The names in the open directory `dir` (not `.` or `..`), sorted.
pub fn names(dir: &File) -> std::io::Result<Vec<std::ffi::OsString>> {
    // /proc/self/fd/N names the very directory open as N, wherever it
    // has moved since.
    let mut names: Vec<_> = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

/// Whether `err` says a symlink was met where none may be.
pub fn is_symlink_refusal(err: &std::io::Error) -> bool {
    err.raw_os_error() == Some(libc::ELOOP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_refused_at_any_depth_and_files_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("d"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("d/f"), root.join("d/flink")).unwrap();
        open_no_symlinks(&root.join("d/f")).unwrap();
        for bad in ["link/f", "link", "d/flink"] {
            let err = open_no_symlinks(&root.join(bad)).unwrap_err();
            assert!(is_symlink_refusal(&err), "{bad}: {err}");
        }
        let d = open_no_symlinks(&root.join("d")).unwrap();
        assert_eq!(names(&d).unwrap(), ["f", "flink"]);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut open_child(&d, OsStr::new("f")).unwrap(), &mut text)
            .unwrap();
        assert_eq!(text, "x");
        assert!(is_symlink_refusal(
            &open_child(&d, OsStr::new("flink")).unwrap_err()
        ));
        assert!(open_child(&d, OsStr::new("../d/f")).is_err());
    }
}

//! The system calls banger-init makes, behind a trait so the plan above it
//! is tested with a recording fake.

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Mount flags banger-init uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountFlags {
    /// No flags.
    None,
    /// `MS_RDONLY`.
    ReadOnly,
    /// `MS_MOVE`.
    Move,
    /// `MS_BIND`.
    Bind,
}

/// What banger-init asks of the kernel.
pub trait Sys {
    /// `mkdir -p`-like: an existing directory is fine.
    fn mkdir(&self, path: &Path) -> std::io::Result<()>;
    /// mount(2).
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> std::io::Result<()>;
    /// umount2(2) with `MNT_DETACH`.
    fn umount(&self, target: &Path) -> std::io::Result<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> std::io::Result<()>;
    /// chroot(2).
    fn chroot(&self, path: &Path) -> std::io::Result<()>;
    /// execv(2); returns only on failure.
    fn exec(&self, path: &Path) -> std::io::Error;
    /// Reads a small text file.
    fn read_to_string(&self, path: &Path) -> std::io::Result<String>;
    /// Whether something exists at `path` (a dangling symlink counts: the
    /// image's init is often a link that resolves only after the switch).
    fn exists(&self, path: &Path) -> bool;
    /// The virtio block devices, as `/dev/vdX` paths.
    fn block_devices(&self) -> Vec<PathBuf>;
    /// The ext4 volume label of a block device, if it has one.
    fn ext4_label(&self, device: &Path) -> Option<String>;
    /// Writes a line to the console.
    fn say(&self, line: &str);
    /// Runs `argv` (looked up on `env`'s `PATH`) chrooted in `root`, its
    /// output on the console; returns its exit code (-1 when killed).
    fn run_in(&self, root: &Path, argv: &[&str], env: &[(&str, &str)]) -> std::io::Result<i32>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSys;

fn cstr(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Sys for LinuxSys {
    fn mkdir(&self, path: &Path) -> std::io::Result<()> {
        match std::fs::create_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    }

    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> std::io::Result<()> {
        let source = CString::new(source)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let fstype = CString::new(fstype)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let data = CString::new(data)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let target = cstr(target)?;
        let flags = match flags {
            MountFlags::None => 0,
            MountFlags::ReadOnly => libc::MS_RDONLY,
            MountFlags::Move => libc::MS_MOVE,
            MountFlags::Bind => libc::MS_BIND,
        };
        // SAFETY: every pointer is a valid NUL-terminated string that
        // outlives the call.
        check(unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        })
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "banger-init is PID 1 in the guest: banger-sys's runner is not there"
    )]
    fn run_in(&self, root: &Path, argv: &[&str], env: &[(&str, &str)]) -> std::io::Result<i32> {
        use std::os::unix::process::CommandExt;
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let root = cstr(root)?;
        let slash = cstr(Path::new("/"))?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args).env_clear().envs(env.iter().copied());
        // SAFETY: chroot(2) and chdir(2) are async-signal-safe and only read
        // the two C strings, which were made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                check(libc::chroot(root.as_ptr()))?;
                check(libc::chdir(slash.as_ptr()))
            });
        }
        let status = cmd.status()?;
        Ok(status.code().unwrap_or(-1))
    }

    fn umount(&self, target: &Path) -> std::io::Result<()> {
        let target = cstr(target)?;
        // SAFETY: a valid NUL-terminated path.
        check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
    }

    fn chdir(&self, path: &Path) -> std::io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn chroot(&self, path: &Path) -> std::io::Result<()> {
        std::os::unix::fs::chroot(path)
    }

    fn exec(&self, path: &Path) -> std::io::Error {
        let Ok(prog) = cstr(path) else {
            return std::io::Error::from(std::io::ErrorKind::InvalidInput);
        };
        let argv = [prog.as_ptr(), std::ptr::null()];
        // SAFETY: argv is a NULL-terminated array of valid C strings; on
        // success execv does not return.
        unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
        std::io::Error::last_os_error()
    }

    fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn exists(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }

    fn block_devices(&self) -> Vec<PathBuf> {
        let mut devices: Vec<PathBuf> = std::fs::read_dir("/sys/class/block")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| {
                        n.starts_with("vd") && n.bytes().skip(2).all(|b| b.is_ascii_lowercase())
                    })
                    .map(|n| PathBuf::from("/dev").join(n))
                    .collect()
            })
            .unwrap_or_default();
        devices.sort();
        devices
    }

    fn ext4_label(&self, device: &Path) -> Option<String> {
        // The superblock starts at 1024; s_magic at +56, s_volume_name at +120.
        let mut file = std::fs::File::open(device).ok()?;
        let mut sb = [0u8; 136];
        file.seek(SeekFrom::Start(1024)).ok()?;
        file.read_exact(&mut sb).ok()?;
        if sb[56..58] != [0x53, 0xef] {
            return None;
        }
        let name = &sb[120..136];
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        Some(String::from_utf8_lossy(&name[..end]).into_owned())
    }

    fn say(&self, line: &str) {
        use std::io::Write;
        let line = format!("banger-init: {line}\n");
        // The kernel log reaches the serial console synchronously; a tty
        // write may still sit in a buffer when the machine stops a moment
        // later. Before devtmpfs is mounted there is no /dev/kmsg: stderr.
        match std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
            Ok(mut kmsg) => {
                let _ = kmsg.write_all(line.as_bytes());
            }
            Err(_) => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }
}

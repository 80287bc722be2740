//! Jailer mode: each VM's Firecracker runs chrooted under
//! `<base>/firecracker/<vm id>/root`, with its uid and gid dropped. banger
//! stages that root before the jailer starts (the kernel, initramfs and
//! disks linked in, the binary copied in, the log files made) and takes it
//! apart after the VMM is gone.

use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use banger_sys::mount;

use super::plan::GuestPaths;
use crate::{BootSpec, VmFiles, VmmError};

/// How the jailer is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary.
    pub binary: PathBuf,
    /// Where the per-VM chroots live (under banger's runtime dir).
    pub chroot_base: PathBuf,
    /// The uid Firecracker drops to.
    pub uid: u32,
    /// The gid Firecracker drops to.
    pub gid: u32,
}

/// The API socket's path inside the chroot.
pub const API_SOCKET: &str = "/api.sock";
/// The vsock socket's path inside the chroot.
pub const VSOCK_SOCKET: &str = "/vsock.sock";
/// The binary's name inside the chroot (the jailer names the chroot's
/// parent and the pidfile after it).
pub const EXEC_NAME: &str = "firecracker";

/// One VM's chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    base: PathBuf,
    id: String,
}

fn jail_err(step: String) -> impl FnOnce(std::io::Error) -> VmmError {
    move |source| VmmError::Jail { step, source }
}

impl Jail {
    /// The chroot of the VM whose files are `files` (its id is the name
    /// of its directory).
    pub fn for_vm(base: &Path, files: &VmFiles) -> Self {
        let id = files
            .dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            base: base.to_owned(),
            id,
        }
    }

    /// The VM's id, as given to the jailer.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `<base>/firecracker/<id>`: everything the jail adds to the host.
    pub fn dir(&self) -> PathBuf {
        self.base.join(EXEC_NAME).join(&self.id)
    }

    /// The chroot itself.
    pub fn root(&self) -> PathBuf {
        self.dir().join("root")
    }

    /// The host path of a path inside the chroot.
    pub fn host_path(&self, inside: &str) -> PathBuf {
        self.root().join(inside.trim_start_matches('/'))
    }

    /// The pidfile the jailer writes.
    pub fn pidfile(&self) -> PathBuf {
        self.root().join(format!("{EXEC_NAME}.pid"))
    }

    /// The pid the jailer recorded, if any.
    pub fn recorded_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Refuses a jail whose path, from the base down, passes through a
    /// symlink: cleanup as root must never be steered outside the base.
    fn check_no_symlinks(&self) -> Result<(), VmmError> {
        let mut path = self.base.clone();
        let mut parts = vec![path.clone()];
        for part in [EXEC_NAME, self.id.as_str(), "root"] {
            path.push(part);
            parts.push(path.clone());
        }
        for part in parts {
            match std::fs::symlink_metadata(&part) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(VmmError::BadPath {
                        what: "jail path component",
                        path: part,
                        why: "it is a symlink",
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(jail_err(format!("inspect {}", part.display()))(e)),
            }
        }
        Ok(())
    }

    fn check_id(&self) -> Result<(), VmmError> {
        let ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(VmmError::BadPath {
                what: "VM directory",
                path: self.dir(),
                why: "its name is not a jailer id (1 to 64 of a-z, 0-9, -)",
            })
        }
    }

    /// Stages the chroot for `spec`: returns where Firecracker, inside it,
    /// finds each file.
    pub fn stage(
        &self,
        spec: &BootSpec,
        firecracker: &Path,
        uid: u32,
        gid: u32,
    ) -> Result<GuestPaths, VmmError> {
        self.check_id()?;
        // A jail left by a crash is taken apart first, never reused.
        self.teardown()?;
        let root = self.root();
        std::fs::create_dir_all(&root).map_err(jail_err(format!("create {}", root.display())))?;
        self.check_no_symlinks()?;
        let files = &spec.files;
        let mut paths = GuestPaths {
            kernel: "/vmlinux".into(),
            initramfs: "/initrd.cpio".into(),
            disks: Vec::new(),
            log: "/logger.log".into(),
            metrics: "/metrics.json".into(),
            console: "/console.log".into(),
            vsock: VSOCK_SOCKET.into(),
        };
        link_in(&spec.kernel, &self.host_path("/vmlinux"), true)?;
        link_in(&spec.initramfs, &self.host_path("/initrd.cpio"), true)?;
        for disk in &spec.disks {
            let inside = format!("/{}.img", disk.id);
            let dst = self.host_path(&inside);
            let meta = std::fs::metadata(&disk.path)
                .map_err(jail_err(format!("inspect disk {}", disk.path.display())))?;
            if meta.file_type().is_block_device() {
                mount::mknod_block(&dst, meta.rdev(), 0o600)
                    .map_err(jail_err(format!("make device node {}", dst.display())))?;
                chown(&dst, uid, gid)?;
            } else {
                if !disk.read_only {
                    // The VM's own disk: Firecracker, as uid, writes it.
                    chown(&disk.path, uid, gid)?;
                }
                link_in(&disk.path, &dst, disk.read_only)?;
            }
            paths.disks.push(inside.into());
        }
        for (host, inside) in [
            (files.logger(), &paths.log),
            (files.metrics(), &paths.metrics),
            (files.console(), &paths.console),
        ] {
            touch(&host)?;
            chown(&host, uid, gid)?;
            link_in(&host, &self.host_path(&inside.to_string_lossy()), false)?;
        }
        let exe = self.host_path(EXEC_NAME);
        std::fs::copy(firecracker, &exe)
            .and_then(|_| std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)))
            .map_err(jail_err(format!(
                "copy {} into the jail",
                firecracker.display()
            )))?;
        chown(&root, uid, gid)?;
        Ok(paths)
    }

    /// Unmounts what is mounted in the jail, deepest first, and removes it.
    /// Refuses a path through a symlink, and leaves everything in place if
    /// anything stays mounted.
    pub fn teardown(&self) -> Result<(), VmmError> {
        let dir = self.dir();
        if std::fs::symlink_metadata(&dir).is_err() {
            return Ok(());
        }
        self.check_id()?;
        self.check_no_symlinks()?;
        let mounted = mount::host_mounts_under(&dir)
            .map_err(jail_err("read /proc/self/mountinfo".to_owned()))?;
        for point in &mounted {
            mount::unmount(point).map_err(jail_err(format!("unmount {}", point.display())))?;
        }
        let left = mount::host_mounts_under(&dir)
            .map_err(jail_err("read /proc/self/mountinfo".to_owned()))?;
        if let Some(point) = left.first() {
            return Err(VmmError::Jail {
                step: format!("unmount {}", point.display()),
                source: std::io::Error::other("still mounted after unmounting"),
            });
        }
        std::fs::remove_dir_all(&dir).map_err(jail_err(format!("remove {}", dir.display())))
    }
}

/// Creates `path` (0600) if missing: Firecracker opens its log, metrics and
/// console files, it does not create them.
pub(super) fn touch(path: &Path) -> Result<(), VmmError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(jail_err(format!("create {}", path.display())))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), VmmError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(jail_err(format!("give {} to {uid}:{gid}", path.display())))
}

/// Puts `src` at `dst` without copying: a hard link, or a bind mount when
/// `src` is on another file system (the runtime dir is often a tmpfs).
fn link_in(src: &Path, dst: &Path, read_only: bool) -> Result<(), VmmError> {
    match std::fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            std::fs::File::create(dst)
                .map_err(jail_err(format!("create mount point {}", dst.display())))?;
            mount::bind(src, dst, read_only).map_err(jail_err(format!(
                "bind {} at {}",
                src.display(),
                dst.display()
            )))
        }
        Err(e) => Err(jail_err(format!(
            "link {} at {}",
            src.display(),
            dst.display()
        ))(e)),
    }
}

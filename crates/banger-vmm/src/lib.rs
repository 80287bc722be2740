//! VMM drivers behind one trait.
//!
//! - [`Vmm`]: what the daemon needs of a hypervisor process: start one
//!   detached (it outlives the daemon), ask the guest to power off, and
//!   tell whether a recorded pid is still that VM.
//! - [`qemu`]: `qemu-system-x86_64 -M microvm`, controlled over QMP
//!   ([`qmp`]).
//! - [`firecracker`]: Firecracker over its REST API, plain or under its
//!   jailer.
//! - [`probe`]: whether KVM can really run a guest here.
//!
//! Every file a VMM keeps lives in the VM's directory ([`VmFiles`]), so a
//! VM's leftovers are found, and removed, by that one path.

pub mod firecracker;
pub mod probe;
pub mod qemu;
pub mod qmp;

use std::path::{Path, PathBuf};

/// How the guest's CPU is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation. `tsc_khz` is the host's TSC rate, given to the
    /// guest so it does not calibrate against the emulated PIT (which
    /// sometimes stalls the boot for good).
    Tcg {
        /// The host's TSC rate, when known.
        tsc_khz: Option<u64>,
    },
}

impl Accel {
    /// The name shown to users and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg { .. } => "tcg",
        }
    }
}

/// One virtio block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Short identifier (`[a-z]+`), also the drive id.
    pub id: &'static str,
    /// The raw image file.
    pub path: PathBuf,
    /// Attached read-only (the shared rootfs).
    pub read_only: bool,
}

/// One virtio network device on a host tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The host tap device.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: String,
}

/// Everything needed to boot one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSpec {
    /// Where the VMM keeps its files.
    pub files: VmFiles,
    /// The kernel image.
    pub kernel: PathBuf,
    /// banger's initramfs.
    pub initramfs: PathBuf,
    /// The kernel command line, without the console and accel parts the
    /// driver adds itself.
    pub cmdline: String,
    /// Block devices, in order.
    pub disks: Vec<Disk>,
    /// The network device, if any.
    pub nic: Option<Nic>,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// KVM or TCG.
    pub accel: Accel,
}

/// The files a VMM keeps in a VM's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFiles {
    dir: PathBuf,
}

impl VmFiles {
    /// The files of the VM whose directory is `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The VM's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The guest's serial console, appended across boots.
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// The VMM's own output (start-up errors).
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }

    /// The VMM's own log, where it has one besides its output
    /// (Firecracker's logger).
    pub fn logger(&self) -> PathBuf {
        self.dir.join("vmm-logger.log")
    }

    /// The VMM's metrics (Firecracker's, flushed as JSON lines).
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.json")
    }

    /// The host side of the guest's vsock device (Firecracker's hybrid
    /// vsock), or a link to it.
    pub fn vsock(&self) -> PathBuf {
        self.dir.join("vsock.sock")
    }

    /// The VMM's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("vmm.sock")
    }

    /// The VMM's pid, written by the VMM.
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("vmm.pid")
    }

    /// Removes what only a running VMM needs (its sockets and pidfile),
    /// which a killed VMM leaves behind. The logs stay.
    pub fn remove_transient(&self) -> std::io::Result<()> {
        for path in [self.control_socket(), self.vsock(), self.pidfile()] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Errors from a VMM driver.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The VMM could not be started; its log says why.
    #[error("start the VMM")]
    Start(#[source] banger_sys::RunError),
    /// A path the VMM must be given cannot be passed to it.
    #[error("{what} {} cannot be given to the VMM: {why}", path.display())]
    BadPath {
        /// Which path.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why not.
        why: &'static str,
    },
    /// The VMM started but left no usable pid file.
    #[error("the VMM left no pid in {}", path.display())]
    NoPid {
        /// The pid file.
        path: PathBuf,
    },
    /// The VMM could not be spawned.
    #[error("spawn the VMM")]
    Spawn(#[source] banger_sys::SpawnError),
    /// The VMM's API refused a configuration step; `fault` is its words.
    #[error("{vmm} refused to {step}: {fault} (HTTP {status} on {method} {path})")]
    Refused {
        /// Which VMM.
        vmm: &'static str,
        /// What banger was doing.
        step: String,
        /// The request method.
        method: &'static str,
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The VMM's message.
        fault: String,
    },
    /// Staging or removing a jail failed.
    #[error("jail: {step}")]
    Jail {
        /// What was being done.
        step: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Talking to the VMM's control socket failed.
    #[error("VMM control socket {}: {message}", socket.display())]
    Control {
        /// The socket.
        socket: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// A hypervisor driver. The process it starts is detached: it survives
/// the daemon, which finds it again from its pid and directory.
pub trait Vmm: Send + Sync + std::fmt::Debug {
    /// The driver's name (`qemu`, `firecracker`).
    fn name(&self) -> &'static str;

    /// The kernel file this VMM boots, as named in a kernel's directory:
    /// `bzImage` for QEMU, the uncompressed `vmlinux` for Firecracker.
    fn kernel_file(&self) -> &'static str;

    /// Starts the VM and returns its VMM's pid once the VMM is up.
    fn start(&self, spec: &BootSpec) -> Result<u32, VmmError>;

    /// Finds the VM's VMM from what the OS and the VM's files say, when
    /// the recorded pid is lost (a daemon killed between spawning the VMM
    /// and writing its handles).
    fn recover_pid(&self, files: &VmFiles) -> Option<u32>;

    /// Removes what the VMM needed while it ran (sockets, pidfile, a
    /// jail), once it is gone. The logs and disks stay.
    fn release(&self, files: &VmFiles) -> Result<(), VmmError> {
        files.remove_transient().map_err(|e| VmmError::Control {
            socket: files.control_socket(),
            message: format!("remove the VMM's sockets: {e}"),
        })
    }

    /// Asks the guest, through the VMM, to power off: the ACPI power
    /// button on QEMU (ctrl-alt-del on Firecracker, whose guests reboot
    /// into an exit). The guest may ignore it; callers wait and then kill.
    fn request_shutdown(&self, files: &VmFiles) -> Result<(), VmmError>;

    /// Whether `pid` is still this VM's VMM (not a reused pid).
    fn is_running(&self, files: &VmFiles, pid: u32) -> bool {
        banger_sys::pid_alive(pid) && banger_sys::process::cmdline_mentions(pid, files.dir())
    }

    /// Kills the VMM at once.
    fn kill(&self, pid: u32) {
        banger_sys::process::kill(pid);
    }

    /// Whether the VMM appends to the console log (`O_APPEND`), so the log
    /// may be truncated in place while it runs. One that writes at its own
    /// offset would leave a hole as long as everything the guest printed.
    fn console_appends(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_transient_keeps_the_logs_and_tolerates_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = VmFiles::new(dir.path());
        for path in [
            files.control_socket(),
            files.vsock(),
            files.pidfile(),
            files.console(),
            files.vmm_log(),
        ] {
            std::fs::write(path, "x").unwrap();
        }
        files.remove_transient().unwrap();
        assert!(!files.control_socket().exists() && !files.pidfile().exists());
        assert!(!files.vsock().exists());
        assert!(files.console().exists() && files.vmm_log().exists());
        files.remove_transient().unwrap();
    }
}

//! The QEMU driver: `qemu-system-x86_64 -M microvm` with virtio-mmio
//! devices, in a session of its own (so it outlives the daemon), under its
//! seccomp sandbox, and controlled over QMP.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use banger_sys::{Cmd, DetachedCommand, RunError};

use crate::{Accel, BootSpec, VmFiles, Vmm, VmmError, qmp};

/// How long QEMU may take to set its machine up before it is killed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The QEMU driver.
#[derive(Debug, Clone)]
pub struct Qemu {
    binary: PathBuf,
}

impl Qemu {
    /// A driver that runs `binary` (normally `qemu-system-x86_64`).
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
        }
    }
}

/// Why QEMU did not come up.
enum Setup {
    /// It exited, e.g. over a bad drive, tap or kernel.
    Exited(ExitStatus),
    /// It neither exited nor answered in time.
    Silent,
}

/// Waits until QEMU answers on QMP. QEMU serves QMP from its main loop
/// only, after every device (drives, tap, kernel) is set up, so an answer
/// means what `-daemonize`'s parent exiting used to: the machine is built.
fn wait_until_set_up(child: &mut Child, socket: &Path, within: Duration) -> Result<(), Setup> {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Setup::Exited(status));
        }
        if socket.exists() && qmp::execute(socket, "query-status", None).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Setup::Silent);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

impl Vmm for Qemu {
    /// The console chardev is opened with `append=on`.
    fn console_appends(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "qemu"
    }

    fn kernel_file(&self) -> &'static str {
        "bzImage"
    }

    fn recover_pid(&self, files: &VmFiles) -> Option<u32> {
        let pid = std::fs::read_to_string(files.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        self.is_running(files, pid).then_some(pid)
    }

    fn start(&self, spec: &BootSpec) -> Result<u32, VmmError> {
        let cmd = command(&self.binary, spec)?;
        let files = &spec.files;
        // A stale socket would answer nothing; a stale pidfile would lie.
        let _ = files.remove_transient();
        let detached = cmd
            .args
            .iter()
            .fold(DetachedCommand::new(&cmd.program), |d, a| d.arg(a.clone()));
        let mut child = detached.spawn(&files.vmm_log()).map_err(VmmError::Spawn)?;
        let pid = child.id();
        // The machine must be built before start returns, so a bad drive or
        // tap is an error here, not a dead VM later.
        match wait_until_set_up(&mut child, &files.control_socket(), SETUP_TIMEOUT) {
            Ok(()) => {
                // Reaped here, so an exited VMM is never a zombie of the
                // daemon's.
                std::thread::spawn(move || child.wait());
                Ok(pid)
            }
            Err(Setup::Exited(status)) => Err(VmmError::Start(RunError::Failed {
                command: cmd.display(),
                status,
                log: files.vmm_log(),
            })),
            Err(Setup::Silent) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(VmmError::Control {
                    socket: files.control_socket(),
                    message: format!(
                        "QEMU did not answer within {} s of starting; its output is in {}",
                        SETUP_TIMEOUT.as_secs(),
                        files.vmm_log().display()
                    ),
                })
            }
        }
    }

    fn request_shutdown(&self, files: &VmFiles) -> Result<(), VmmError> {
        qmp::execute(&files.control_socket(), "system_powerdown", None).map(drop)
    }
}

/// QEMU's seccomp filter: no obsolete system calls, no set*id, no fork or
/// exec, no changes to its own scheduling or CPU affinity. (This is why
/// banger detaches QEMU itself: `-daemonize` calls `setsid` and `fork` after
/// the filter is in place, and QEMU would exit 1, silently.)
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// QEMU's option parser splits on commas; a path with one cannot be
/// passed safely, so it is refused rather than escaped.
fn checked<'a>(what: &'static str, path: &'a Path) -> Result<&'a Path, VmmError> {
    let text = path.as_os_str().as_encoded_bytes();
    let why = if !path.is_absolute() {
        Some("it is not absolute")
    } else if text.contains(&b',') {
        Some("it contains a comma")
    } else if what == "control socket" && text.len() >= 108 {
        Some("it is longer than a unix socket path may be (107 bytes)")
    } else {
        None
    };
    match why {
        Some(why) => Err(VmmError::BadPath {
            what,
            path: path.to_owned(),
            why,
        }),
        None => Ok(path),
    }
}

fn option(
    prefix: &str,
    what: &'static str,
    path: &Path,
    suffix: &str,
) -> Result<OsString, VmmError> {
    let mut out = OsString::from(prefix);
    out.push(checked(what, path)?);
    out.push(suffix);
    Ok(out)
}

/// The full QEMU command line for `spec`.
pub fn command(binary: &Path, spec: &BootSpec) -> Result<Cmd, VmmError> {
    let files = &spec.files;
    let mut cmdline = String::from("console=ttyS0 panic=-1");
    let mut cmd = Cmd::new(binary).args(["-M", "microvm,acpi=on"]);
    match spec.accel {
        Accel::Kvm => cmd = cmd.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg { tsc_khz } => {
            cmd = cmd.args(["-accel", "tcg", "-cpu", "max"]);
            if let Some(khz) = tsc_khz {
                cmdline.push_str(&format!(" tsc_early_khz={khz}"));
            }
        }
    }
    cmdline.push(' ');
    cmdline.push_str(&spec.cmdline);
    cmd = cmd
        .args([
            "-smp",
            &spec.vcpus.to_string(),
            "-m",
            &spec.memory_mib.to_string(),
        ])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-sandbox", SANDBOX])
        // A guest reboot ends the VMM: banger decides what starts again.
        .arg("-no-reboot")
        .arg("-chardev")
        .arg(option(
            "file,id=console,append=on,path=",
            "console log",
            &files.console(),
            "",
        )?)
        .args(["-serial", "chardev:console"])
        .arg("-kernel")
        .arg(checked("kernel", &spec.kernel)?)
        .arg("-initrd")
        .arg(checked("initramfs", &spec.initramfs)?)
        .arg("-append")
        .arg(cmdline);
    for disk in &spec.disks {
        let ro = if disk.read_only { ",readonly=on" } else { "" };
        cmd = cmd
            .arg("-drive")
            .arg(option(
                &format!(
                    "id={},format=raw,if=none,cache=writeback{ro},file=",
                    disk.id
                ),
                "disk",
                &disk.path,
                "",
            )?)
            .arg("-device")
            .arg(format!("virtio-blk-device,drive={}", disk.id));
    }
    if let Some(nic) = &spec.nic {
        cmd = cmd
            .arg("-netdev")
            .arg(format!(
                "tap,id=net0,ifname={},script=no,downscript=no",
                nic.tap
            ))
            .arg("-device")
            .arg(format!("virtio-net-device,netdev=net0,mac={}", nic.mac));
    }
    cmd = cmd
        .arg("-qmp")
        .arg(option(
            "unix:",
            "control socket",
            &files.control_socket(),
            ",server=on,wait=off",
        )?)
        .arg("-pidfile")
        .arg(checked("pid file", &files.pidfile())?);
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Disk, Nic};

    fn spec(dir: &str) -> BootSpec {
        BootSpec {
            files: VmFiles::new(dir),
            kernel: "/cache/kernels/k/bzImage".into(),
            initramfs: "/cache/initramfs.cpio".into(),
            cmdline: "banger.base=LABEL=rootfs ip=10.0.0.2::10.0.0.1:255.255.255.0:web:eth0:off"
                .into(),
            disks: vec![
                Disk {
                    id: "base",
                    path: "/cache/images/i/rootfs.ext4".into(),
                    read_only: true,
                },
                Disk {
                    id: "overlay",
                    path: format!("{dir}/overlay.ext4").into(),
                    read_only: false,
                },
            ],
            nic: Some(Nic {
                tap: "bgt0a1b2c3d".into(),
                mac: "02:ba:00:0a:1b:2c".into(),
            }),
            vcpus: 2,
            memory_mib: 1024,
            accel: Accel::Tcg {
                tsc_khz: Some(2_600_000),
            },
        }
    }

    fn argv(spec: &BootSpec) -> Vec<String> {
        let cmd = command(Path::new("qemu-system-x86_64"), spec).unwrap();
        cmd.display().split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn tcg_boot_passes_the_tsc_rate_and_every_device() {
        let text = command(Path::new("qemu-system-x86_64"), &spec("/s/vms/ab"))
            .unwrap()
            .display();
        for part in [
            "-M microvm,acpi=on",
            "-accel tcg -cpu max",
            "-smp 2 -m 1024",
            "-no-reboot",
            "file,id=console,append=on,path=/s/vms/ab/console.log",
            "console=ttyS0 panic=-1 tsc_early_khz=2600000 banger.base=LABEL=rootfs",
            "id=base,format=raw,if=none,cache=writeback,readonly=on,file=/cache/images/i/rootfs.ext4",
            "id=overlay,format=raw,if=none,cache=writeback,file=/s/vms/ab/overlay.ext4",
            "virtio-blk-device,drive=overlay",
            "tap,id=net0,ifname=bgt0a1b2c3d,script=no,downscript=no",
            "virtio-net-device,netdev=net0,mac=02:ba:00:0a:1b:2c",
            "unix:/s/vms/ab/vmm.sock,server=on,wait=off",
            "-pidfile /s/vms/ab/vmm.pid",
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ] {
            assert!(text.contains(part), "missing {part:?} in {text}");
        }
    }

    #[test]
    fn kvm_boot_uses_the_host_cpu_and_no_tsc_hint() {
        let mut s = spec("/s/vms/ab");
        s.accel = Accel::Kvm;
        let args = argv(&s);
        assert!(args.windows(2).any(|w| w == ["-accel", "kvm"]));
        assert!(args.windows(2).any(|w| w == ["-cpu", "host"]));
        assert!(!args.iter().any(|a| a.contains("tsc_early_khz")));
    }

    #[test]
    fn paths_qemu_would_split_or_misread_are_refused_by_name() {
        let s = spec("/s/vms/a,b");
        let err = command(Path::new("qemu"), &s).unwrap_err().to_string();
        assert!(err.contains("/s/vms/a,b") && err.contains("comma"), "{err}");

        let mut s = spec("/s/vms/ab");
        s.kernel = "relative/bzImage".into();
        let err = command(Path::new("qemu"), &s).unwrap_err().to_string();
        assert!(
            err.contains("kernel") && err.contains("not absolute"),
            "{err}"
        );

        let long = format!("/{}", "d".repeat(110));
        let err = command(Path::new("qemu"), &spec(&long))
            .unwrap_err()
            .to_string();
        assert!(err.contains("control socket"), "{err}");
    }
}

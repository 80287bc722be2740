//! The Firecracker driver: `firecracker --api-sock <sock>` (or the same
//! under `jailer`), configured through its REST API ([`api`]) with the calls
//! [`plan`] lists, then `InstanceStart`.
//!
//! The process is spawned in its own session and reaped by a thread of its
//! own: nothing tied to a request can end it (the predecessor lost VMs to a
//! request context that killed Firecracker 150 ms after `vm start`
//! returned). After a daemon restart it is found again from the jailer's
//! pidfile or the API socket on its command line, and only a process whose
//! comm is the binary's name (`firecracker`, or `firecracker-v1.` for a
//! release's `firecracker-v1.16.1-x86_64`) is adopted or signalled.

pub mod api;
pub mod jailer;
pub mod plan;
pub mod version;
pub mod vsock;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_sys::DetachedCommand;
use banger_sys::process::{comm_in, find_by_arg, has_arg_pair};

use crate::{BootSpec, VmFiles, Vmm, VmmError};
use api::{Api, ApiFailure};
use jailer::{Jail, JailerConfig};
use plan::GuestPaths;

/// The driver's name.
pub const COMM: &str = "firecracker";

/// The most bytes of a process name the kernel keeps (`TASK_COMM_LEN` - 1).
const COMM_MAX: usize = 15;

/// AF_UNIX paths hold at most 107 bytes and a NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The Firecracker driver.
#[derive(Debug, Clone)]
pub struct Firecracker {
    binary: PathBuf,
    jailer: Option<JailerConfig>,
    api_timeout: Duration,
}

impl Firecracker {
    /// A driver that runs `binary` directly.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            jailer: None,
            api_timeout: Duration::from_secs(5),
        }
    }

    /// Runs each VM's Firecracker under the jailer.
    pub fn with_jailer(mut self, jailer: JailerConfig) -> Self {
        self.jailer = Some(jailer);
        self
    }

    /// The name the kernel gives this binary's processes: its file name,
    /// cut to 15 bytes (the jailer execs a copy of the same name).
    fn comm(&self) -> String {
        let name = self
            .binary
            .file_name()
            .unwrap_or_default()
            .as_encoded_bytes();
        String::from_utf8_lossy(&name[..name.len().min(COMM_MAX)]).into_owned()
    }

    /// Whether `pid` is a live process of this binary.
    fn is_ours(&self, pid: u32) -> bool {
        banger_sys::pid_alive(pid) && comm_in(Path::new("/proc"), pid) == Some(self.comm())
    }

    fn jail(&self, files: &VmFiles) -> Option<Jail> {
        self.jailer
            .as_ref()
            .map(|j| Jail::for_vm(&j.chroot_base, files))
    }

    /// Spawns the VMM and returns its pid and where it finds its files.
    fn spawn(&self, spec: &BootSpec) -> Result<(u32, GuestPaths), VmmError> {
        let files = &spec.files;
        let sock = files.control_socket();
        let (cmd, paths) = match (&self.jailer, self.jail(files)) {
            (Some(cfg), Some(jail)) => {
                let paths = jail.stage(spec, &self.binary, cfg.uid, cfg.gid)?;
                // The chroot's socket path is long; banger reaches it
                // through a short link in the VM's directory.
                for (link, inside) in [
                    (&sock, jailer::API_SOCKET),
                    (&files.vsock(), jailer::VSOCK_SOCKET),
                ] {
                    std::os::unix::fs::symlink(jail.host_path(inside), link).map_err(|source| {
                        VmmError::Jail {
                            step: format!("link {}", link.display()),
                            source,
                        }
                    })?;
                }
                let cmd = DetachedCommand::new(&cfg.binary)
                    .arg("--id")
                    .arg(jail.id())
                    .arg("--exec-file")
                    .arg(&self.binary)
                    .arg("--uid")
                    .arg(cfg.uid.to_string())
                    .arg("--gid")
                    .arg(cfg.gid.to_string())
                    .arg("--chroot-base-dir")
                    .arg(&cfg.chroot_base)
                    .arg("--")
                    .arg("--api-sock")
                    .arg(jailer::API_SOCKET);
                (cmd, paths)
            }
            _ => {
                for file in [files.logger(), files.metrics(), files.console()] {
                    jailer::touch(&file)?;
                }
                let paths = GuestPaths {
                    kernel: spec.kernel.clone(),
                    initramfs: spec.initramfs.clone(),
                    disks: spec.disks.iter().map(|d| d.path.clone()).collect(),
                    log: files.logger(),
                    metrics: files.metrics(),
                    console: files.console(),
                    vsock: files.vsock(),
                };
                let cmd = DetachedCommand::new(&self.binary)
                    .arg("--api-sock")
                    .arg(&sock)
                    .arg("--id")
                    .arg(files.dir().file_name().unwrap_or_default());
                (cmd, paths)
            }
        };
        let mut child = cmd.spawn(&files.vmm_log()).map_err(VmmError::Spawn)?;
        let pid = child.id();
        // Reaped here, so an exited VMM is never a zombie of the daemon's.
        std::thread::spawn(move || child.wait());
        Ok((pid, paths))
    }

    fn wait_for_api(&self, api: &Api, pid: u32) -> Result<(), VmmError> {
        let deadline = Instant::now() + self.api_timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            if api.is_up() {
                return Ok(());
            }
            if !banger_sys::pid_alive(pid) {
                return Err(VmmError::Control {
                    socket: api.socket().to_owned(),
                    message: "firecracker exited before its API socket answered".to_owned(),
                });
            }
            if Instant::now() >= deadline {
                return Err(VmmError::Control {
                    socket: api.socket().to_owned(),
                    message: format!(
                        "no answer within {} s of starting firecracker",
                        self.api_timeout.as_secs()
                    ),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Sends the plan's calls for `spec`, `InstanceStart` only when `boot`;
    /// returns the steps Firecracker accepted.
    fn configure(
        &self,
        api: &Api,
        spec: &BootSpec,
        paths: &GuestPaths,
        boot: bool,
    ) -> Result<Vec<String>, VmmError> {
        let mut accepted = Vec::new();
        for call in plan::calls(spec, paths) {
            if !boot && call == plan::Call::action("InstanceStart") {
                continue;
            }
            api.send(call.method, &call.path, &call.body)
                .map_err(|failure| match failure {
                    ApiFailure::Refused { status, fault } => VmmError::Refused {
                        vmm: COMM,
                        step: call.step.clone(),
                        method: call.method,
                        path: call.path.clone(),
                        status,
                        fault,
                    },
                    ApiFailure::Transport(message) => VmmError::Control {
                        socket: api.socket().to_owned(),
                        message: format!("{}: {message}", call.step),
                    },
                })?;
            accepted.push(call.step);
        }
        Ok(accepted)
    }

    /// Spawns the VMM and configures it for `spec` (booting it when
    /// `boot`); a failure leaves no process, socket or jail behind.
    fn launch(&self, spec: &BootSpec, boot: bool) -> Result<(u32, Vec<String>), VmmError> {
        let files = &spec.files;
        let sock = files.control_socket();
        if sock.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(VmmError::BadPath {
                what: "control socket",
                path: sock,
                why: "it is longer than a unix socket path may be (107 bytes)",
            });
        }
        let _ = self.release(files);
        let (pid, paths) = match self.spawn(spec) {
            Ok(spawned) => spawned,
            Err(e) => {
                let _ = self.release(files);
                return Err(e);
            }
        };
        let api = Api::new(&sock);
        let configured = self
            .wait_for_api(&api, pid)
            .and_then(|()| self.configure(&api, spec, &paths, boot));
        match configured {
            Ok(steps) => Ok((pid, steps)),
            Err(e) => {
                // Waited for, so a failed start leaves no VMM behind it.
                if self.is_ours(pid) {
                    banger_sys::process::kill_and_wait(pid, Duration::from_secs(5));
                }
                let _ = self.release(files);
                Err(e)
            }
        }
    }

    /// Proves this binary accepts banger's whole configuration for `spec`
    /// without KVM: runs it directly (never jailed; its files in
    /// `spec.files`'s directory), sends every call a start sends except
    /// `InstanceStart`, then stops it and removes its sockets. Returns the
    /// steps it accepted; the error names the call it refused.
    pub fn rehearse(&self, spec: &BootSpec) -> Result<Vec<String>, VmmError> {
        let direct = Self {
            jailer: None,
            ..self.clone()
        };
        let (pid, steps) = direct.launch(spec, false)?;
        if direct.is_ours(pid) && !banger_sys::process::kill_and_wait(pid, Duration::from_secs(5)) {
            return Err(VmmError::Control {
                socket: spec.files.control_socket(),
                message: format!("the rehearsal's firecracker (pid {pid}) outlived SIGKILL"),
            });
        }
        direct.release(&spec.files)?;
        Ok(steps)
    }
}

impl Vmm for Firecracker {
    fn name(&self) -> &'static str {
        COMM
    }

    fn kernel_file(&self) -> &'static str {
        "vmlinux"
    }

    fn start(&self, spec: &BootSpec) -> Result<u32, VmmError> {
        self.launch(spec, true).map(|(pid, _)| pid)
    }

    fn request_shutdown(&self, files: &VmFiles) -> Result<(), VmmError> {
        let call = plan::Call::action("SendCtrlAltDel");
        Api::new(files.control_socket())
            .send(call.method, &call.path, &call.body)
            .map_err(|failure| VmmError::Control {
                socket: files.control_socket(),
                message: match failure {
                    ApiFailure::Refused { status, fault } => format!("HTTP {status}: {fault}"),
                    ApiFailure::Transport(m) => m,
                },
            })
    }

    fn is_running(&self, files: &VmFiles, pid: u32) -> bool {
        if !self.is_ours(pid) {
            return false;
        }
        let proc_root = Path::new("/proc");
        match self.jail(files) {
            // The jailer hands the id on to Firecracker: only a process
            // carrying this VM's id is this VM's (a recorded pid may have
            // been reused, even by another VM's Firecracker).
            Some(jail) => has_arg_pair(proc_root, pid, &self.comm(), "--id", Path::new(jail.id())),
            None => has_arg_pair(
                proc_root,
                pid,
                &self.comm(),
                "--api-sock",
                &files.control_socket(),
            ),
        }
    }

    fn recover_pid(&self, files: &VmFiles) -> Option<u32> {
        match self.jail(files) {
            Some(jail) => jail.recorded_pid().filter(|pid| {
                has_arg_pair(
                    Path::new("/proc"),
                    *pid,
                    &self.comm(),
                    "--id",
                    Path::new(jail.id()),
                )
            }),
            None => find_by_arg(
                Path::new("/proc"),
                &self.comm(),
                "--api-sock",
                &files.control_socket(),
            )
            .into_iter()
            .next(),
        }
    }

    fn kill(&self, pid: u32) {
        // Never signal a pid that is no longer a Firecracker.
        if self.is_ours(pid) {
            banger_sys::process::kill(pid);
        }
    }

    fn release(&self, files: &VmFiles) -> Result<(), VmmError> {
        files.remove_transient().map_err(|e| VmmError::Control {
            socket: files.control_socket(),
            message: format!("remove the VMM's sockets: {e}"),
        })?;
        match self.jail(files) {
            Some(jail) => jail.teardown(),
            None => Ok(()),
        }
    }
}

//! banger's SSH identity and its known_hosts: the client key VMs trust, the
//! host key each VM is given at create time, and the file that pins it so
//! no connection ever trusts on first use.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_sys::{Cancel, Cmd, IoAt, RunError, Runner, io_at};

use super::remove_temp;

/// Why banger's SSH files could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] IoAt),
    /// ssh-keygen failed.
    #[error("generate an SSH key")]
    Keygen(#[source] RunError),
    /// A host public key is not `<type> <base64> ...`.
    #[error("malformed host public key {0:?}")]
    MalformedKey(String),
}

/// The files under `<state>/ssh/`.
#[derive(Debug)]
pub struct SshFiles {
    dir: PathBuf,
    /// Serialises the first key generation: parallel first creates must
    /// agree on one key pair, not install halves of different ones.
    identity_lock: Mutex<()>,
    /// Serialises known_hosts rewrites.
    known_hosts_lock: Mutex<()>,
}

impl SshFiles {
    /// The SSH files under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            identity_lock: Mutex::new(()),
            known_hosts_lock: Mutex::new(()),
        }
    }

    /// banger's private key.
    pub fn identity(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// banger's known_hosts.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// Creates the client key pair when missing.
    pub fn ensure_identity(&self, runner: &Arc<dyn Runner>) -> Result<(), SshError> {
        // Held across one ssh-keygen, once per installation; later calls
        // only check that the files exist.
        let _guard = banger_sys::wait::lock(&self.identity_lock);
        let key = self.identity();
        if key.exists() && pub_of(&key).exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(io_at("create", &self.dir))?;
        let tmp = self
            .dir
            .join(format!("id_tmp_{:08x}", rand::random::<u32>()));
        let tmp_pub = pub_of(&tmp);
        let generated = keygen(runner, &tmp, "banger", &self.dir.join("keygen.log"));
        let result = generated.and_then(|()| {
            std::fs::rename(&tmp_pub, pub_of(&key))
                .and_then(|()| std::fs::rename(&tmp, &key))
                .map_err(|e| io_at("install", &key)(e).into())
        });
        remove_temp(&tmp);
        remove_temp(&tmp_pub);
        result
    }

    /// banger's public key line (for authorized_keys).
    pub fn public_key(&self) -> Result<String, SshError> {
        let path = pub_of(&self.identity());
        Ok(std::fs::read_to_string(&path).map_err(io_at("read", &path))?)
    }

    /// Pins `public_key` (an `ssh-ed25519 AAAA...` line) for the VM `id`,
    /// reachable as `ip` and `<name>.vm`, replacing any older entry for the
    /// VM or the address.
    pub fn pin(
        &self,
        id: &str,
        name: &str,
        ip: Ipv4Addr,
        public_key: &str,
    ) -> Result<(), SshError> {
        let mut fields = public_key.split_whitespace();
        let (Some(kind), Some(key)) = (fields.next(), fields.next()) else {
            return Err(SshError::MalformedKey(public_key.to_owned()));
        };
        let ip_text = ip.to_string();
        self.rewrite(|lines| {
            lines.retain(|l| !is_for(l, id) && !names_host(l, &ip_text));
            lines.push(format!("{ip},{name}.vm {kind} {key} banger:{id}"));
        })
    }

    /// Removes the VM `id`'s entries.
    pub fn unpin(&self, id: &str) -> Result<(), SshError> {
        self.rewrite(|lines| lines.retain(|l| !is_for(l, id)))
    }

    fn rewrite(&self, edit: impl FnOnce(&mut Vec<String>)) -> Result<(), SshError> {
        let _guard = banger_sys::wait::lock(&self.known_hosts_lock);
        let path = self.known_hosts();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_at("read", &path)(e).into()),
        };
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        edit(&mut lines);
        let mut out = lines.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        std::fs::create_dir_all(&self.dir).map_err(io_at("create", &self.dir))?;
        // Readers (ssh) may open it at any time: never show a torn file.
        let tmp = path.with_extension(format!("tmp-{:08x}", rand::random::<u32>()));
        std::fs::write(&tmp, out)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                remove_temp(&tmp);
                io_at("write", &path)(e).into()
            })
    }
}

/// `key.pub` beside `key` (ssh-keygen's naming).
pub fn pub_of(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn is_for(line: &str, id: &str) -> bool {
    line.split_whitespace().last() == Some(&format!("banger:{id}"))
}

fn names_host(line: &str, host: &str) -> bool {
    line.split_whitespace()
        .next()
        .is_some_and(|hosts| hosts.split(',').any(|h| h == host))
}

/// Generates an ed25519 key pair at `path` and `path.pub`.
pub fn keygen(
    runner: &Arc<dyn Runner>,
    path: &Path,
    comment: &str,
    log: &Path,
) -> Result<(), SshError> {
    runner
        .run(
            &Cmd::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(path),
            log,
            &Cancel::new(),
        )
        .map_err(SshError::Keygen)
}

/// Waits until `ip:22` greets with an SSH banner, `alive` stays true and
/// `timeout` has not passed.
pub fn wait_for_sshd(
    ip: Ipv4Addr,
    timeout: Duration,
    alive: impl Fn() -> bool,
) -> Result<(), SshdWaitError> {
    let addr = SocketAddr::from((ip, 22));
    let mut gone = false;
    let up = banger_sys::wait::poll_until(timeout, Duration::from_millis(250), || {
        // Asked first: no connection is tried for a guest that is gone.
        gone = !alive();
        gone || banner(addr).is_some_and(|b| b.starts_with(b"SSH-"))
    });
    match (up, gone) {
        (_, true) => Err(SshdWaitError::VmGone),
        (true, false) => Ok(()),
        (false, false) => Err(SshdWaitError::Timeout {
            addr,
            secs: timeout.as_secs(),
        }),
    }
}

/// Why a guest's SSH server was not reached.
#[derive(Debug, thiserror::Error)]
pub enum SshdWaitError {
    /// Its VMM exited first.
    #[error("the VM stopped before its SSH server answered")]
    VmGone,
    /// It did not answer in time.
    #[error("the guest's SSH server did not answer on {addr} within {secs} s")]
    Timeout {
        /// Where it was asked.
        addr: SocketAddr,
        /// How long.
        secs: u64,
    },
}

fn banner(addr: SocketAddr) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// The daemon's own `ssh` to `target`: no `~/.ssh/config` or system
/// config (`-F /dev/null`: a user's `ProxyCommand`, `Include` or agent
/// forwarding must not reach the daemon's connections), no global
/// known_hosts, never a prompt.
pub(super) fn daemon_ssh(target: &banger_api::SshTarget) -> Cmd {
    daemon_ssh_options(target).arg(target.destination())
}

/// [`daemon_ssh`] without the destination, for callers adding options.
pub(super) fn daemon_ssh_options(target: &banger_api::SshTarget) -> Cmd {
    Cmd::new("ssh")
        .args(["-F", "/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"])
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "UpdateHostKeys=no",
        ])
        .args(["-o", "ForwardAgent=no", "-o", "ClearAllForwardings=yes"])
        .args(target.ssh_options())
}

/// Asks the guest over SSH to flush its disks and power off, giving up
/// after `timeout`. The connection may drop as the guest goes down; the
/// caller judges by whether the VMM exits.
pub fn poweroff_guest(
    runner: &Arc<dyn Runner>,
    target: &banger_api::SshTarget,
    log: &Path,
    timeout: Duration,
) -> Result<(), RunError> {
    let cmd = daemon_ssh(target)
        // A fixed string for the guest's shell: nothing is interpolated.
        .arg("sync; systemctl --no-block poweroff || poweroff");
    let cancel = Cancel::new();
    let (done, timer) = {
        let cancel = cancel.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            if rx.recv_timeout(timeout).is_err() {
                cancel.cancel();
            }
        });
        (tx, t)
    };
    let result = runner.run(&cmd, log, &cancel);
    let _ = done.send(());
    let _ = timer.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_ssh_reads_no_user_or_system_config() {
        let target = banger_api::SshTarget {
            name: "web".into(),
            user: "root".into(),
            host: "10.77.0.2".into(),
            port: 22,
            identity_file: "/s/ssh/id_ed25519".into(),
            known_hosts_file: "/s/ssh/known_hosts".into(),
            control_path: None,
        };
        let cmd = daemon_ssh(&target);
        // `-F` must come first: ssh reads the config named by the first one.
        assert_eq!(cmd.args[..2], ["-F", "/dev/null"]);
        let line = cmd.display();
        for want in [
            "BatchMode=yes",
            "GlobalKnownHostsFile=/dev/null",
            "UserKnownHostsFile=/s/ssh/known_hosts",
            "StrictHostKeyChecking=yes",
            "root@10.77.0.2",
        ] {
            assert!(line.contains(want), "{line}");
        }
    }

    #[test]
    fn pin_replaces_the_vms_and_the_addresss_old_entries_and_unpin_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let files = SshFiles::new(dir.path());
        let ip = Ipv4Addr::new(10, 77, 0, 2);
        files
            .pin("aa", "web", ip, "ssh-ed25519 KEY1 root@x\n")
            .unwrap();
        files
            .pin("bb", "db", Ipv4Addr::new(10, 77, 0, 3), "ssh-ed25519 KEY2")
            .unwrap();
        // A new VM on a reused address replaces the stale entry.
        files.pin("cc", "api", ip, "ssh-ed25519 KEY3").unwrap();
        let text = std::fs::read_to_string(files.known_hosts()).unwrap();
        assert_eq!(
            text,
            "10.77.0.3,db.vm ssh-ed25519 KEY2 banger:bb\n10.77.0.2,api.vm ssh-ed25519 KEY3 banger:cc\n"
        );
        files.unpin("bb").unwrap();
        files.unpin("cc").unwrap();
        assert_eq!(std::fs::read_to_string(files.known_hosts()).unwrap(), "");
        assert!(files.pin("dd", "x", ip, "garbage").is_err());
    }

    /// Writes a numbered key pair after a pause long enough for every
    /// caller to be inside `ensure_identity` at once.
    #[derive(Debug, Default)]
    struct SlowKeygen {
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Runner for SlowKeygen {
        fn run(&self, cmd: &Cmd, _log: &Path, _cancel: &Cancel) -> Result<(), RunError> {
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            let path = PathBuf::from(cmd.args.last().expect("-f <path>"));
            std::fs::write(&path, format!("private {n}")).unwrap();
            std::fs::write(pub_of(&path), format!("public {n}")).unwrap();
            Ok(())
        }
    }

    #[test]
    fn parallel_first_calls_generate_one_key_pair() {
        let dir = tempfile::tempdir().unwrap();
        let files = SshFiles::new(dir.path().join("ssh"));
        let keygen = Arc::new(SlowKeygen::default());
        let runner: Arc<dyn Runner> = keygen.clone();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| files.ensure_identity(&runner).unwrap());
            }
        });
        assert_eq!(keygen.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let private = std::fs::read_to_string(files.identity()).unwrap();
        assert_eq!(private, "private 0");
        assert_eq!(files.public_key().unwrap(), "public 0");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("ssh"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("id_tmp"))
            .collect();
        assert!(left.is_empty(), "temporary keys left: {left:?}");
    }

    #[test]
    fn wait_for_sshd_gives_up_when_the_vm_dies_or_time_runs_out() {
        // TEST-NET-1: nothing answers there.
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        let err = wait_for_sshd(ip, Duration::from_secs(30), || false).unwrap_err();
        assert!(matches!(err, SshdWaitError::VmGone), "{err}");
        let err = wait_for_sshd(ip, Duration::from_millis(1), || true).unwrap_err();
        assert!(matches!(err, SshdWaitError::Timeout { .. }), "{err}");
    }
}

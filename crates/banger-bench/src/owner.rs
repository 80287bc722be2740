//! The supported install's cost: `vm run --rm -- true` with bangerd run by
//! an unprivileged owner (a throwaway user made here, in the kvm group as
//! an owner following `banger doctor` would be, removed after) and the
//! host network through `bangerd-root`, run by run alternating with the
//! same command as root; and what each root-helper call takes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Install;
use crate::figures::{Figure, Unit};

/// The user an [`Install`]'s commands run as, and its helper's socket.
#[derive(Debug)]
pub struct Owner {
    uid: u32,
    gid: u32,
    helper_socket: PathBuf,
    /// The owner's own artifact cache.
    cache: PathBuf,
}

impl Owner {
    /// `program` run as the owner with their groups (as systemd runs a
    /// `User=` service), from its home under `dir`, pointed at its helper.
    pub fn command(&self, program: &Path, dir: &Path) -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &self.uid.to_string()])
            .args(["--regid", &self.gid.to_string()])
            .args(["--init-groups", "--"])
            .arg(program)
            .env("HOME", dir.join("home"))
            .env("BANGER_HELPER_SOCKET", &self.helper_socket)
            .env("BANGER_CACHE_DIR", &self.cache)
            .current_dir(dir.join("home"));
        c
    }
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// What must go when the figures are taken, whatever happened: the
/// owner's processes (daemon, VMMs), the helper, the user, the tun mode.
struct Cleanup {
    user: String,
    uid: Option<u32>,
    helper: Option<Child>,
    install: Option<Install>,
    /// `/dev/net/tun`'s mode before the bench changed it.
    tun_mode: Option<u32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(install) = self.install.take() {
            let _ = install.ok(&["daemon", "stop"]);
        }
        // A VM a failed run left (VMMs outlive their daemon) would keep
        // the user in use.
        if let Some(uid) = self.uid {
            kill_all_of(uid);
        }
        if let Some(mut helper) = self.helper.take() {
            let _ = helper.kill();
            let _ = helper.wait();
        }
        if let Some(mode) = self.tun_mode {
            let _ = std::fs::set_permissions(TUN, std::fs::Permissions::from_mode(mode));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match run("userdel", &[&self.user]) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    eprintln!("banger-bench: {e}");
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

const TUN: &str = "/dev/net/tun";

/// SIGKILLs every process whose real uid is `uid`.
fn kill_all_of(uid: u32) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok());
        if real == Some(uid) {
            // SAFETY: signalling a process of the bench's own throwaway user.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// An owner's installation, warmed up, ready to run `vm run --rm -- true`.
pub struct OwnerBench {
    cleanup: Cleanup,
    log: PathBuf,
    warm_calls: usize,
}

impl OwnerBench {
    /// Makes the user, their copy of `cache`, their installation and
    /// their helper, and runs the warm-up.
    pub fn start(bins: &Path, cache: &Path) -> Result<Self, String> {
        let user = format!("bgbench{}", std::process::id());
        // In the kvm group, as `banger doctor` tells an owner to be, so
        // both sides use KVM wherever root's does.
        let kvm = run("getent", &["group", "kvm"]).is_ok();
        let mut useradd = vec![
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ];
        if kvm {
            useradd.extend(["-G", "kvm"]);
        }
        useradd.push(&user);
        run("useradd", &useradd)?;
        let mut cleanup = Cleanup {
            user: user.clone(),
            uid: None,
            helper: None,
            install: None,
            tun_mode: None,
        };
        let id = |flag: &str| -> Result<u32, String> {
            run("id", &[flag, &user])?
                .parse()
                .map_err(|e| format!("{user}'s id: {e}"))
        };
        let (uid, gid) = (id("-u")?, id("-g")?);
        cleanup.uid = Some(uid);
        let mut install = Install::new(bins)?;
        let dir = install.dir.path().to_owned();
        let own_cache = dir.join("home/cache");
        lay_out(&dir, cache, &own_cache, uid, gid)?;
        // What udev gives it on Debian and Ubuntu: the owner's QEMU opens
        // its own tap through it. Put back afterwards.
        let mode = std::fs::metadata(TUN)
            .map_err(|e| format!("{TUN}: {e}"))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o666 != 0o666 {
            cleanup.tun_mode = Some(mode);
            std::fs::set_permissions(TUN, std::fs::Permissions::from_mode(0o666))
                .map_err(|e| format!("{TUN}: {e}"))?;
        }
        let socket = dir.join("helper/bangerd-root.sock");
        let log = dir.join("helper/helper.log");
        cleanup.helper = Some(start_helper(bins, uid, &socket, &log)?);
        install.owner = Some(Owner {
            uid,
            gid,
            helper_socket: socket,
            cache: own_cache,
        });
        cleanup.install = Some(install);
        let mut me = Self {
            cleanup,
            log,
            warm_calls: 0,
        };
        // The warm-up makes the owner's initramfs; its calls are not
        // counted (its last one, the tap's removal, lands after it exits).
        me.run()?;
        me.warm_calls = settled_millis(&me.log).len();
        Ok(me)
    }

    /// One `vm run --rm -- true` as the owner, timed.
    pub fn run(&self) -> Result<Duration, String> {
        let install = self.cleanup.install.as_ref().ok_or("no installation")?;
        let t = Instant::now();
        install.ok(&["vm", "run", "--rm", "--", "true"])?;
        Ok(t.elapsed())
    }

    /// The figures of `samples` (runs alternating with `as_root`'s).
    pub fn figures(self, samples: &[Duration], as_root: &Figure) -> Result<Vec<Figure>, String> {
        let calls: Vec<f64> = settled_millis(&self.log).split_off(self.warm_calls);
        if calls.is_empty() {
            return Err("the owner's runs made no root-helper call".to_owned());
        }
        let owner = Figure::durations(
            "vm run --rm -- true, as its owner through bangerd-root",
            samples,
        );
        let ratio = Figure::ratio(
            "as its owner / as root, run by run (1.0 = no cost)",
            &owner,
            as_root,
        );
        let calls = Figure::new(
            "one root-helper call (ping, bridge, tap, NAT), as logged",
            Unit::Ms,
            calls,
        );
        Ok(vec![owner, ratio, calls])
    }
}

/// The installation's directories under `dir`, the owner's, with their
/// own copy of `cache`'s kernel, initramfs, image and KVM verdict (a
/// "usable" one counts only where the owner can open /dev/kvm) at
/// `own_cache`; `helper/` stays root's.
fn lay_out(dir: &Path, cache: &Path, own_cache: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    for sub in ["config", "state", "run", "home", "helper"] {
        std::fs::create_dir(dir.join(sub)).map_err(|e| format!("{sub}: {e}"))?;
        // Whatever the umask: the helper refuses a directory others
        // may write.
        std::fs::set_permissions(dir.join(sub), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(own_cache.join("images")).map_err(|e| e.to_string())?;
    for part in [
        "kernels",
        "initramfs",
        "images/debian-bookworm",
        "kvm-probe.json",
    ] {
        run(
            "cp",
            &[
                "-R",
                "--sparse=always",
                &cache.join(part).to_string_lossy(),
                &own_cache.join(part).to_string_lossy(),
            ],
        )?;
    }
    for sub in ["config", "state", "run", "home"] {
        run(
            "chown",
            &[
                "-R",
                &format!("{uid}:{gid}"),
                &dir.join(sub).to_string_lossy(),
            ],
        )?;
    }
    Ok(())
}

/// `bangerd-root` for `uid` on `socket`, once it serves (its socket the
/// owner's), logging to `log`.
fn start_helper(bins: &Path, uid: u32, socket: &Path, log: &Path) -> Result<Child, String> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let mut helper = Command::new(bins.join("bangerd-root"))
        .args(["--owner", &uid.to_string(), "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(|e| format!("bangerd-root: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::fs::symlink_metadata(socket).is_ok_and(|m| m.uid() == uid) {
            return Ok(helper);
        }
        let exited = helper.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let _ = helper.kill();
            let _ = helper.wait();
            return Err(format!(
                "bangerd-root did not serve: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Each call's `ms` from the helper's log, in order, once the log has
/// stopped growing (a tap is removed after the command that used it ends).
fn settled_millis(log: &Path) -> Vec<f64> {
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    let mut last = read();
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        let now = read();
        if now == last {
            break;
        }
        last = now;
    }
    last.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["ms"].as_f64())
        .collect()
}

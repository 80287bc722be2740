//! The supported install's cost: `vm run --rm -- true` with bangerd run by
//! an unprivileged owner (a throwaway user made here, removed after) and
//! the host network through `bangerd-root`, beside the same figure as root
//! in the same run; and what each root-helper call takes.

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
    /// `program` run as the owner (no supplementary groups, as a service
    /// would), from its home under `dir`, pointed at its helper.
    pub fn command(&self, program: &Path, dir: &Path) -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &self.uid.to_string()])
            .args(["--regid", &self.gid.to_string()])
            .args(["--clear-groups", "--"])
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
/// daemon, the helper, the user.
struct Cleanup {
    user: String,
    helper: Option<Child>,
    install: Option<Install>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(install) = self.install.take() {
            let _ = install.ok(&["daemon", "stop"]);
        }
        if let Some(mut helper) = self.helper.take() {
            let _ = helper.kill();
            let _ = helper.wait();
        }
        if let Err(e) = run("userdel", &[&self.user]) {
            eprintln!("banger-bench: {e}");
        }
    }
}

/// The owner's figures; `as_root` is `vm run --rm -- true` as root, from
/// this run.
pub fn figures(
    bins: &Path,
    cache: &Path,
    as_root: &Figure,
    runs: usize,
) -> Result<Vec<Figure>, String> {
    let user = format!("bgbench{}", std::process::id());
    run(
        "useradd",
        &[
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            &user,
        ],
    )?;
    let mut cleanup = Cleanup {
        user: user.clone(),
        helper: None,
        install: None,
    };
    let uid: u32 = run("id", &["-u", &user])?
        .parse()
        .map_err(|e| format!("{user}'s uid: {e}"))?;
    let gid: u32 = run("id", &["-g", &user])?
        .parse()
        .map_err(|e| format!("{user}'s gid: {e}"))?;
    let mut install = Install::new(bins)?;
    let dir = install.dir.path().to_owned();
    // Traversable by the owner; the helper's directory stays root's.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    for sub in ["config", "state", "run", "home", "helper"] {
        std::fs::create_dir(dir.join(sub)).map_err(|e| format!("{sub}: {e}"))?;
    }
    // The owner's own copy of the kernel, initramfs and image, as a real
    // owner's cache is theirs.
    let own_cache = dir.join("home/cache");
    std::fs::create_dir_all(own_cache.join("images")).map_err(|e| e.to_string())?;
    // The KVM verdict too (a "usable" one counts only where the owner can
    // open /dev/kvm), so the warm-up does not probe again.
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
    // What udev gives it on Debian and Ubuntu: the owner's QEMU opens its
    // own tap through it.
    std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("/dev/net/tun: {e}"))?;

    let socket = dir.join("helper/bangerd-root.sock");
    let log_path = dir.join("helper/helper.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let helper = Command::new(bins.join("bangerd-root"))
        .args(["--owner", &uid.to_string(), "--socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("bangerd-root: {e}"))?;
    cleanup.helper = Some(helper);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err(format!(
                "bangerd-root did not listen: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    install.owner = Some(Owner {
        uid,
        gid,
        helper_socket: socket,
        cache: own_cache,
    });
    let install = cleanup.install.insert(install);
    let run_true = ["vm", "run", "--rm", "--", "true"];
    let mut cmd = install.command(&run_true);
    // The warm-up makes the owner's initramfs; its calls are not counted.
    let warm = cmd.output().map_err(|e| e.to_string())?;
    if !warm.status.success() {
        return Err(format!(
            "vm run as {user}: {}",
            String::from_utf8_lossy(&warm.stderr).trim()
        ));
    }
    let warm_calls = helper_millis(&log_path).len();
    let mut samples = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = cmd.output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "vm run as {user}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        samples.push(t.elapsed());
    }
    let calls: Vec<f64> = helper_millis(&log_path).split_off(warm_calls);
    if calls.is_empty() {
        return Err("the owner's runs made no root-helper call".to_owned());
    }
    let owner = Figure::durations(
        "vm run --rm -- true, as its owner through bangerd-root",
        &samples,
    );
    let ratio = Figure::ratio("as its owner / as root (1.0 = no cost)", &owner, as_root);
    let calls = Figure::new(
        "one root-helper call (ping, bridge, tap, NAT), as logged",
        Unit::Ms,
        calls,
    );
    Ok(vec![owner, ratio, calls])
}

/// Each call's `ms` from the helper's log, in order.
fn helper_millis(log: &Path) -> Vec<f64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["ms"].as_f64())
        .collect()
}

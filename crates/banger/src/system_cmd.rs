//! `banger system ...`: the supported install. `bangerd` runs as its owner
//! under systemd; `bangerd-root`, the root helper, does the few privileged
//! things for it (see docs/privileges.md).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use banger_config::install::{INSTALL_FILE, Install};
use banger_config::{Config, Layout};
use banger_sys::Cmd;

use crate::cli::SystemCommand;
use crate::install_checks::{self, UNIT_DIR};
use crate::print;
use crate::units::{self, DAEMON_UNIT, HELPER_UNIT};

pub fn run(command: SystemCommand) -> anyhow::Result<ExitCode> {
    match command {
        SystemCommand::Install { owner, root } => install(owner.as_deref(), root.as_deref())?,
        SystemCommand::Uninstall { root } => uninstall(root.as_deref())?,
        SystemCommand::Restart => {
            need_root("restart")?;
            need_systemd()?;
            systemctl(&["restart", HELPER_UNIT, DAEMON_UNIT])?;
            print("restarted bangerd-root and bangerd\n")?;
        }
        SystemCommand::Status { root } => return status(root.as_deref()),
    }
    Ok(ExitCode::SUCCESS)
}

fn need_root(what: &str) -> anyhow::Result<()> {
    if banger_sys::euid() != 0 {
        bail!(
            "`banger system {what}` changes system services: run it as root, e.g. `sudo banger system {what}`"
        );
    }
    Ok(())
}

/// Whether systemd is this host's init (what `sd_booted` checks).
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn need_systemd() -> anyhow::Result<()> {
    if !systemd_runs() {
        bail!(
            "systemd is not running on this host: start bangerd-root and bangerd by hand (see docs/privileges.md)"
        );
    }
    Ok(())
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Cmd::new("systemctl")
        .args(args)
        .to_command()
        .output()
        .context("run systemctl")?;
    if !out.status.success() {
        bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A user as the passwd database has it.
struct Owner {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

/// `--owner` (a name or uid), else the user who ran sudo.
fn owner(arg: Option<&str>) -> anyhow::Result<Owner> {
    let key = match arg {
        Some(a) => a.to_owned(),
        None => std::env::var("SUDO_UID").map_err(|_| {
            anyhow::anyhow!(
                "say whose banger this is: --owner USER (the user who will run VMs), or run it through sudo as that user"
            )
        })?,
    };
    if key.is_empty() || key.starts_with('-') || key.contains(['\n', ':', '/']) {
        bail!("--owner {key:?} is not a user name or uid");
    }
    let out = Cmd::new("getent")
        .args(["passwd", &key])
        .to_command()
        .output()
        .context("run getent")?;
    let line = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = line.trim_end().split(':').collect();
    if !out.status.success() || fields.len() != 7 {
        bail!("no user {key:?} on this host");
    }
    let owner = Owner {
        name: fields[0].to_owned(),
        uid: fields[2].parse().context("the owner's uid")?,
        gid: fields[3].parse().context("the owner's gid")?,
        home: PathBuf::from(fields[5]),
    };
    if owner.uid == 0 {
        bail!("banger's owner may not be root: name the user who will run VMs with --owner");
    }
    if !owner.home.is_absolute() || !owner.home.is_dir() {
        bail!(
            "{}'s home {} does not exist: banger keeps the owner's VMs and images there",
            owner.name,
            owner.home.display()
        );
    }
    Ok(owner)
}

/// The directory of this `banger`, which must also hold `bangerd` and
/// `bangerd-root`, each root's and writable by no one else: root runs them.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("find this binary")?;
    let exe = std::fs::canonicalize(&exe).context("resolve this binary")?;
    let dir = exe.parent().context("this binary's directory")?.to_owned();
    if dir.starts_with("/root") || dir.starts_with("/home") {
        bail!(
            "{} is under a home directory, which the helper's unit hides (ProtectHome=yes): install the binaries elsewhere, e.g. /usr/local/bin",
            dir.display()
        );
    }
    // Every directory above them too: one someone else could write would
    // let them swap the binaries root runs (a sticky one like /tmp cannot).
    for name in ["banger", "bangerd", "bangerd-root"] {
        let path = dir.join(name);
        if std::fs::symlink_metadata(&path).is_err() {
            bail!(
                "{} is missing: install banger, bangerd and bangerd-root side by side",
                path.display()
            );
        }
        banger_sys::trust::roots_alone(&path).map_err(|e| {
            anyhow::anyhow!(
                "{e}: it must be root's and writable by no one else, as must every directory above it (root will run it); fix with `chown root:root` and `chmod go-w` on {}",
                e.path().display()
            )
        })?;
    }
    Ok(dir)
}

fn install(owner_arg: Option<&str>, root: Option<&Path>) -> anyhow::Result<()> {
    need_root("install")?;
    let owner = owner(owner_arg)?;
    let home = owner.home.clone();
    let layout = Layout::resolve(
        |k| (k == "HOME").then(|| home.clone().into_os_string()),
        owner.uid,
    )?;
    let config = owners_config(&layout.config_path())?;
    let record = Install {
        owner: owner.name.clone(),
        owner_uid: owner.uid,
        owner_gid: owner.gid,
        owner_home: owner.home.clone(),
        version: banger_buildinfo::VERSION.to_owned(),
        commit: banger_buildinfo::COMMIT.to_owned(),
        bin_dir: bin_dir()?,
        bridge: config.bridge.clone(),
        bridge_subnet: config.bridge_subnet.clone(),
        runtime_dir: Install::runtime_dir_for(owner.uid),
        helper_socket: banger_api::net::HELPER_SOCKET.into(),
    };
    let helper = units::helper(&record)?;
    let daemon = units::daemon(&record, &layout.state_dir, &layout.cache_dir)?;
    let prefix = root.unwrap_or_else(|| Path::new("/"));
    let record_path = prefix.join(INSTALL_FILE.trim_start_matches('/'));
    print(&format!(
        "owner {} (uid {}), bridge {} {}, binaries in {}\n",
        owner.name,
        owner.uid,
        record.bridge,
        record.bridge_subnet,
        record.bin_dir.display()
    ))?;
    write(&prefix.join(UNIT_DIR).join(HELPER_UNIT), &helper)?;
    write(&prefix.join(UNIT_DIR).join(DAEMON_UNIT), &daemon)?;
    if root.is_some() {
        write(&record_path, &record.to_toml())?;
        return print(&format!(
            "wrote {INSTALL_FILE}, {HELPER_UNIT} and {DAEMON_UNIT} under {}; nothing was started\n",
            prefix.display()
        ));
    }
    owned_dirs(&[&layout.state_dir, &layout.cache_dir], &owner)?;
    if !systemd_runs() {
        runtime_dir(&record.runtime_dir, &owner)?;
        // Last: the record redirects the owner's CLI to the service's
        // runtime directory, which must exist by then.
        write(&record_path, &record.to_toml())?;
        return print(&format!(
            "wrote {INSTALL_FILE} and the units, but systemd is not running here: start the two processes by hand\n  \
             sudo {bin}/bangerd-root --owner {uid} --bridge {bridge} --subnet {subnet}\n  \
             BANGER_RUNTIME_DIR={run} {bin}/bangerd     (as {name})\n",
            bin = record.bin_dir.display(),
            uid = owner.uid,
            bridge = record.bridge,
            subnet = record.bridge_subnet,
            run = record.runtime_dir.display(),
            name = owner.name,
        ));
    }
    let managed = Cmd::new("systemctl")
        .args(["is-active", "--quiet", DAEMON_UNIT])
        .to_command()
        .status()
        .is_ok_and(|s| s.success());
    if !managed {
        stop_unmanaged_daemon(&layout, owner.uid)?;
    }
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", HELPER_UNIT, DAEMON_UNIT])?;
    // Restart, not start: an install over an older one must run the new
    // binaries, owner, bridge and subnet.
    systemctl(&["restart", HELPER_UNIT, DAEMON_UNIT])?;
    write(&record_path, &record.to_toml())?;
    print(&format!(
        "installed: bangerd runs as {} and bangerd-root serves it (bridge {}, subnet {}); check with `banger system status`\n",
        owner.name, record.bridge, record.bridge_subnet
    ))
}

/// The owner's config, read as root: only a regular file of sane size
/// (not a link to /dev/zero or a FIFO), its bridge and subnet shown back.
fn owners_config(path: &Path) -> anyhow::Result<Config> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
        Ok(m) if !m.file_type().is_file() || m.len() > 1024 * 1024 => {
            bail!(
                "{} must be a regular file of at most 1 MiB (not a symlink)",
                path.display()
            );
        }
        Ok(_) => {}
    }
    Ok(Config::load(path)?.config)
}

/// A daemon the owner started by hand holds the instance lock the
/// service's daemon needs: it is asked to stop (its VMs keep running).
fn stop_unmanaged_daemon(layout: &Layout, owner_uid: u32) -> anyhow::Result<()> {
    let Some(pid) = banger_sys::InstanceLock::holder(&layout.lock_path()) else {
        return Ok(());
    };
    // The lock file is the owner's to write: signal only the owner's own
    // bangerd, never whatever pid it names.
    if !is_owners_bangerd(pid, owner_uid) {
        bail!(
            "{} names pid {pid}, which is not a bangerd of the owner's: stop the owner's bangerd (`banger daemon stop`) and install again",
            layout.lock_path().display()
        );
    }
    print(&format!(
        "stopping the bangerd that runs outside systemd (pid {pid}); its VMs keep running\n"
    ))?;
    banger_sys::process::signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    while banger_sys::pid_alive(pid) {
        if Instant::now() >= deadline {
            bail!("bangerd (pid {pid}) did not stop within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Whether `pid` runs `bangerd` with every uid the owner's.
fn is_owners_bangerd(pid: u32, owner_uid: u32) -> bool {
    let proc = Path::new("/proc").join(pid.to_string());
    let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
    let status = std::fs::read_to_string(proc.join("status")).unwrap_or_default();
    let uids: Vec<&str> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    comm.trim() == "bangerd" && uids.len() == 4 && uids.iter().all(|u| *u == owner_uid.to_string())
}

/// Makes `dirs` (and their parents) as the owner, through setpriv: root
/// never creates or chowns anything in a home the owner can rearrange.
fn owned_dirs(dirs: &[&Path], owner: &Owner) -> anyhow::Result<()> {
    let (uid, gid) = (owner.uid.to_string(), owner.gid.to_string());
    let out = Cmd::new("setpriv")
        .args(["--reuid", &uid, "--regid", &gid, "--init-groups", "--"])
        .args(["mkdir", "-p", "-m", "700", "--"])
        .args(dirs.iter().map(|d| d.as_os_str()))
        .to_command()
        .output()
        .context("run setpriv (util-linux)")?;
    if !out.status.success() {
        bail!(
            "create the owner's banger directories as {}: {}",
            owner.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The owner's daemon's runtime directory, made by root in /run (which
/// only root writes) and given to the owner: what systemd's
/// `RuntimeDirectory=` does for the service, for running it by hand.
fn runtime_dir(dir: &Path, owner: &Owner) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() && m.uid() == owner.uid => return Ok(()),
        Ok(_) => bail!("{} exists and is not the owner's directory", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("stat {}", dir.display())),
    }
    std::fs::create_dir(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::lchown(dir, Some(owner.uid), Some(owner.gid))
        .with_context(|| format!("give {} to {}", dir.display(), owner.name))
}

/// Writes `text` to `path` (0644) through a temporary file and a rename.
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("a file's directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
}

fn uninstall(root: Option<&Path>) -> anyhow::Result<()> {
    need_root("uninstall")?;
    let prefix = root.unwrap_or_else(|| Path::new("/"));
    if root.is_none() && systemd_runs() {
        let installed = [DAEMON_UNIT, HELPER_UNIT]
            .iter()
            .any(|u| prefix.join(UNIT_DIR).join(u).exists());
        if installed {
            // Stopped before their files go, or they would run on unmanaged.
            systemctl(&["disable", "--now", DAEMON_UNIT, HELPER_UNIT])?;
        }
    }
    let mut removed = Vec::new();
    for path in [
        prefix.join(UNIT_DIR).join(DAEMON_UNIT),
        prefix.join(UNIT_DIR).join(HELPER_UNIT),
        prefix.join(INSTALL_FILE.trim_start_matches('/')),
    ] {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
        }
    }
    if root.is_none() && systemd_runs() {
        systemctl(&["daemon-reload"])?;
    }
    if removed.is_empty() {
        return print("no system install to remove\n");
    }
    print(&format!(
        "removed {}; VMs, images and the store are kept\n",
        removed.join(", ")
    ))
}

fn status(root: Option<&Path>) -> anyhow::Result<ExitCode> {
    let prefix = root.unwrap_or_else(|| Path::new("/"));
    let record_path = prefix.join(INSTALL_FILE.trim_start_matches('/'));
    let Some(install) = Install::load(&record_path)? else {
        print(
            "no system install: bangerd runs as whoever starts it, and VM starts need root or the root helper\n\
             install with `sudo banger system install` (see docs/privileges.md)\n",
        )?;
        return Ok(ExitCode::from(3));
    };
    let mut out = format!(
        "owner:    {} (uid {})\nversion:  {} ({})\nbinaries: {}\nbridge:   {} {}\n",
        install.owner,
        install.owner_uid,
        install.version,
        install.commit,
        install.bin_dir.display(),
        install.bridge,
        install.bridge_subnet
    );
    let checks = install_checks::judge(&install, &install_checks::gather(&install, prefix));
    out.push_str(&crate::vm_cmd::check_rows(&checks));
    print(&out)?;
    let failed = checks
        .iter()
        .any(|c| c.status == banger_api::CheckStatus::Fail);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

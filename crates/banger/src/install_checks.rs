//! A system install, checked: each service active, each socket private to
//! the owner, each unit file exactly as banger renders it from the install
//! record (so its hardening is intact) with no drop-in overriding it.
//! `banger system status` prints these rows; `banger doctor` adds them to
//! the daemon's own. Facts are gathered apart from their judgement, so
//! every verdict is unit-tested.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use banger_api::{Check, CheckStatus};
use banger_config::Layout;
use banger_config::install::Install;
use banger_sys::Cmd;

use crate::units::{self, DAEMON_UNIT, HELPER_UNIT};

/// Where unit files live, under the install's root.
pub const UNIT_DIR: &str = "etc/systemd/system";

/// One service's facts.
#[derive(Debug, Clone)]
pub struct Service {
    /// `helper` or `daemon`, for the rows' names.
    pub role: &'static str,
    /// Its unit file's name.
    pub unit: &'static str,
    /// What `systemctl is-active` said; `None` where systemd is not running.
    pub active: Option<String>,
    /// The unit as banger renders it from the record.
    pub expected: Result<String, String>,
    /// The unit file as it is.
    pub found: Result<String, String>,
    /// Drop-in files that may override it.
    pub drop_ins: Vec<PathBuf>,
    /// Where banger wrote the unit file.
    pub path: PathBuf,
    /// What systemd has loaded for the unit; `None` where it is not running.
    pub loaded: Option<Result<Loaded, String>>,
    /// Its socket, with its mode and owner (or why not).
    pub socket: (PathBuf, Result<(u32, u32), String>),
}

/// What systemd has loaded for a unit (`systemctl show`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The unit file it read.
    pub fragment: String,
    /// Every drop-in it applies, wherever it lies (`/etc`, `/run`,
    /// `/usr/lib`, `systemctl set-property`'s, the all-services ones).
    pub drop_ins: Vec<PathBuf>,
    /// Whether the file changed since it was read.
    pub needs_reload: bool,
    /// `loaded`, `not-found`, `masked`, ...
    pub load_state: String,
}

/// Reads `systemctl show -p FragmentPath -p DropInPaths -p
/// NeedDaemonReload` output.
pub fn parse_show(text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("FragmentPath", v)) => v.clone_into(&mut loaded.fragment),
            Some(("DropInPaths", v)) => {
                loaded.drop_ins = v.split_whitespace().map(PathBuf::from).collect();
            }
            Some(("NeedDaemonReload", v)) => loaded.needs_reload = v == "yes",
            Some(("LoadState", v)) => v.clone_into(&mut loaded.load_state),
            _ => {}
        }
    }
    loaded
}

fn systemd_loaded(unit: &str) -> Result<Loaded, String> {
    let out = Cmd::new("systemctl")
        .args(["show", "-p", "FragmentPath", "-p", "DropInPaths"])
        .args(["-p", "NeedDaemonReload", "-p", "LoadState", unit])
        .to_command()
        .output()
        .map_err(|e| format!("run systemctl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(parse_show(&String::from_utf8_lossy(&out.stdout)))
}

/// A unit file's text: a regular file (not a link to somewhere else) of
/// sane size.
fn read_unit(path: &Path) -> Result<String, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() || meta.len() > 64 * 1024 {
        return Err(format!(
            "{} is not a regular file of at most 64 KiB",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}

/// Gathers the facts of `install`, its files under `root` (`/` but for
/// packaging and tests).
pub fn gather(install: &Install, root: &Path) -> Vec<Service> {
    let unit_dir = root.join(UNIT_DIR);
    // The host's systemd says nothing of the files under another root.
    let systemd = root == Path::new("/") && Path::new("/run/systemd/system").is_dir();
    let home = install.owner_home.clone();
    let daemon_unit = Layout::resolve(
        |k| (k == "HOME").then(|| home.clone().into_os_string()),
        install.owner_uid,
    )
    .map_err(|e| e.to_string())
    .and_then(|l| units::daemon(install, &l.state_dir, &l.cache_dir).map_err(|e| e.to_string()));
    let services = [
        (
            "helper",
            HELPER_UNIT,
            units::helper(install).map_err(|e| e.to_string()),
            install.helper_socket.clone(),
        ),
        (
            "daemon",
            DAEMON_UNIT,
            daemon_unit,
            install.runtime_dir.join("bangerd.sock"),
        ),
    ];
    services
        .into_iter()
        .map(|(role, unit, expected, socket)| Service {
            role,
            unit,
            active: systemd.then(|| is_active(unit)),
            expected,
            found: read_unit(&unit_dir.join(unit)),
            drop_ins: std::fs::read_dir(unit_dir.join(format!("{unit}.d")))
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default(),
            path: unit_dir.join(unit),
            loaded: systemd.then(|| systemd_loaded(unit)),
            socket: (
                socket.clone(),
                std::fs::symlink_metadata(&socket)
                    .map(|m| (m.mode() & 0o7777, m.uid()))
                    .map_err(|e| e.to_string()),
            ),
        })
        .collect()
}

fn is_active(unit: &str) -> String {
    Cmd::new("systemctl")
        .args(["is-active", unit])
        .to_command()
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// The rows `services` add up to, for `install`'s owner.
pub fn judge(install: &Install, services: &[Service]) -> Vec<Check> {
    let mut checks = Vec::new();
    for s in services {
        checks.push(service_check(s));
        checks.push(socket_check(s, install.owner_uid));
        checks.push(unit_check(s));
    }
    checks
}

fn check(name: String, status: CheckStatus, essential: bool, detail: String) -> Check {
    Check {
        name,
        status,
        essential,
        detail,
    }
}

fn service_check(s: &Service) -> Check {
    let name = format!("{}-service", s.role);
    match s.active.as_deref() {
        Some("active") => check(
            name,
            CheckStatus::Pass,
            true,
            format!("{} is active", s.unit),
        ),
        Some(state) => check(
            name,
            CheckStatus::Fail,
            true,
            format!(
                "{} is {state}: see `journalctl -u {}`, then `sudo banger system restart`",
                s.unit, s.unit
            ),
        ),
        None => check(
            name,
            CheckStatus::Warn,
            false,
            format!(
                "systemd is not running here, so {} cannot be asked; run the processes by hand (docs/privileges.md)",
                s.unit
            ),
        ),
    }
}

fn socket_check(s: &Service, owner_uid: u32) -> Check {
    let name = format!("{}-socket", s.role);
    let (path, meta) = &s.socket;
    let fix = "`sudo banger system restart` makes it again";
    match meta {
        Ok((0o600, uid)) if *uid == owner_uid => check(
            name,
            CheckStatus::Pass,
            true,
            format!("{}: mode 600, the owner's", path.display()),
        ),
        Ok((mode, uid)) => check(
            name,
            CheckStatus::Fail,
            true,
            format!(
                "{}: mode {mode:o} and uid {uid}, not mode 600 and uid {owner_uid}: others could reach it; {fix}",
                path.display()
            ),
        ),
        Err(e) => check(
            name,
            CheckStatus::Fail,
            true,
            format!("{}: {e}; {fix}", path.display()),
        ),
    }
}

/// A unit's directives in order, each with its section: `User=` means
/// nothing under `[Install]`.
fn directives(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_owned();
        }
        out.push((section.clone(), line.to_owned()));
    }
    out
}

/// The unit file against banger's rendering: a line missing, changed or
/// added (a later `ProtectSystem=false` undoes the earlier one) fails, and
/// so may a drop-in, which systemd reads after the file.
fn unit_check(s: &Service) -> Check {
    let name = format!("{}-unit", s.role);
    let fix = "`sudo banger system install` writes it again";
    let (expected, found) = match (&s.expected, &s.found) {
        (Err(e), _) => {
            return check(
                name,
                CheckStatus::Fail,
                false,
                format!("the install record cannot render {}: {e}", s.unit),
            );
        }
        (_, Err(e)) => {
            return check(
                name,
                CheckStatus::Fail,
                false,
                format!("cannot read {}: {e}; {fix}", s.unit),
            );
        }
        (Ok(expected), Ok(found)) => (expected, found),
    };
    let (want, have) = (directives(expected), directives(found));
    let missing: Vec<&String> = want
        .iter()
        .filter(|d| !have.contains(d))
        .map(|(_, l)| l)
        .collect();
    let added: Vec<&String> = have
        .iter()
        .filter(|d| !want.contains(d))
        .map(|(_, l)| l)
        .collect();
    if want != have && missing.is_empty() && added.is_empty() {
        return check(
            name,
            CheckStatus::Fail,
            false,
            format!(
                "{} has banger's directives, but repeated or in another order; {fix}",
                s.unit
            ),
        );
    }
    if !missing.is_empty() || !added.is_empty() {
        let list = |lines: &[&String]| {
            lines
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut detail = format!("{} is not as banger wrote it:", s.unit);
        if !missing.is_empty() {
            detail.push_str(&format!(" missing {};", list(&missing)));
        }
        if !added.is_empty() {
            detail.push_str(&format!(" added {};", list(&added)));
        }
        detail.push_str(&format!(" {fix}"));
        return check(name, CheckStatus::Fail, false, detail);
    }
    if let Some(Err(e)) = &s.loaded {
        return check(
            name,
            CheckStatus::Warn,
            false,
            format!(
                "{} is as banger wrote it, but systemd could not be asked what it loaded: {e}",
                s.unit
            ),
        );
    }
    if let Some(Ok(loaded)) = &s.loaded {
        if !loaded.load_state.is_empty() && loaded.load_state != "loaded" {
            return check(
                name,
                CheckStatus::Fail,
                false,
                format!(
                    "systemd has {} {}: `sudo systemctl daemon-reload` (and unmask it if masked), then `sudo banger system restart`",
                    s.unit, loaded.load_state
                ),
            );
        }
        if loaded.needs_reload {
            return check(
                name,
                CheckStatus::Fail,
                false,
                format!(
                    "systemd still runs an older {} than the file: `sudo systemctl daemon-reload`, then `sudo banger system restart`",
                    s.unit
                ),
            );
        }
        if !loaded.fragment.is_empty() && Path::new(&loaded.fragment) != s.path {
            return check(
                name,
                CheckStatus::Fail,
                false,
                format!(
                    "systemd loads {} from {}, not from {}, which banger wrote; remove the other file, or {fix}",
                    s.unit,
                    loaded.fragment,
                    s.path.display()
                ),
            );
        }
    }
    let mut drop_ins = s.drop_ins.clone();
    if let Some(Ok(loaded)) = &s.loaded {
        drop_ins.extend(
            loaded
                .drop_ins
                .iter()
                .filter(|p| !s.drop_ins.contains(p))
                .cloned(),
        );
    }
    if !drop_ins.is_empty() {
        let files: Vec<String> = drop_ins.iter().map(|p| p.display().to_string()).collect();
        return check(
            name,
            CheckStatus::Warn,
            false,
            format!(
                "{} is as banger wrote it, but drop-ins may override its hardening: {}",
                s.unit,
                files.join(", ")
            ),
        );
    }
    check(
        name,
        CheckStatus::Pass,
        false,
        format!(
            "{} is as banger wrote it ({})",
            s.unit,
            units::HARDENING.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install() -> Install {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install.toml");
        std::fs::write(&path, units::tests::ALICE).unwrap();
        Install::load(&path).unwrap().unwrap()
    }

    fn service(role: &'static str) -> Service {
        let unit = units::helper(&install()).unwrap();
        Service {
            role,
            unit: HELPER_UNIT,
            active: Some("active".into()),
            expected: Ok(unit.clone()),
            found: Ok(unit),
            drop_ins: vec![],
            path: "/etc/systemd/system/bangerd-root.service".into(),
            loaded: Some(Ok(Loaded {
                fragment: "/etc/systemd/system/bangerd-root.service".into(),
                drop_ins: vec![],
                needs_reload: false,
                load_state: "loaded".into(),
            })),
            socket: (
                "/run/banger-root/bangerd-root.sock".into(),
                Ok((0o600, 1000)),
            ),
        }
    }

    fn row<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn a_unit_file_is_read_only_when_regular_and_small() {
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("bangerd.service");
        std::fs::write(&unit, "[Service]\n").unwrap();
        assert_eq!(read_unit(&unit).unwrap(), "[Service]\n");
        let link = dir.path().join("link.service");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        assert!(read_unit(&link).unwrap_err().contains("not a regular file"));
        std::fs::write(&unit, vec![b'#'; 65 * 1024]).unwrap();
        assert!(read_unit(&unit).is_err());
    }

    #[test]
    fn a_sound_install_passes_every_row() {
        let checks = judge(&install(), &[service("helper")]);
        assert_eq!(checks.len(), 3);
        for c in &checks {
            assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
        }
        assert!(
            row(&checks, "helper-unit")
                .detail
                .contains("NoNewPrivileges=yes")
        );
    }

    #[test]
    fn each_fault_fails_its_row_and_says_how_to_fix_it() {
        let judge1 = |s: Service| judge(&install(), &[s]);
        let down = judge1(Service {
            active: Some("failed".into()),
            ..service("helper")
        });
        let c = row(&down, "helper-service");
        assert_eq!((c.status, c.essential), (CheckStatus::Fail, true));
        assert!(
            c.detail.contains("journalctl -u bangerd-root.service"),
            "{}",
            c.detail
        );

        let no_systemd = judge1(Service {
            active: None,
            ..service("helper")
        });
        assert_eq!(row(&no_systemd, "helper-service").status, CheckStatus::Warn);

        for (meta, want) in [
            (Ok((0o666, 1000)), "mode 666"),
            (Ok((0o600, 0)), "uid 0"),
            (Err("No such file or directory".to_owned()), "No such file"),
        ] {
            let s = Service {
                socket: ("/run/x.sock".into(), meta),
                ..service("daemon")
            };
            let c = row(&judge1(s), "daemon-socket").clone();
            assert_eq!(c.status, CheckStatus::Fail);
            assert!(
                c.detail.contains(want) && c.detail.contains("system restart"),
                "{}",
                c.detail
            );
        }

        let weakened = service("helper")
            .expected
            .unwrap()
            .replace("NoNewPrivileges=yes\n", "")
            + "ProtectSystem=false\n";
        let c = row(
            &judge1(Service {
                found: Ok(weakened),
                ..service("helper")
            }),
            "helper-unit",
        )
        .clone();
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(
            c.detail.contains("missing `NoNewPrivileges=yes`")
                && c.detail.contains("added `ProtectSystem=false`")
                && c.detail.contains("system install"),
            "{}",
            c.detail
        );
        // A directive moved to a section where systemd ignores it.
        let moved = service("helper")
            .expected
            .unwrap()
            .replace("NoNewPrivileges=yes\n", "")
            .replace("[Install]\n", "[Install]\nNoNewPrivileges=yes\n");
        let c = row(
            &judge1(Service {
                found: Ok(moved),
                ..service("helper")
            }),
            "helper-unit",
        )
        .clone();
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.detail.contains("`NoNewPrivileges=yes`"), "{}", c.detail);
        let repeated = service("helper").expected.unwrap() + "[Service]\nRestart=on-failure\n";
        let c = row(
            &judge1(Service {
                found: Ok(repeated),
                ..service("helper")
            }),
            "helper-unit",
        )
        .clone();
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(
            c.detail.contains("repeated or in another order"),
            "{}",
            c.detail
        );
        // Comments and blank lines are not directives.
        let commented = service("helper").expected.unwrap() + "\n# a note\n";
        let same = judge1(Service {
            found: Ok(commented),
            ..service("helper")
        });
        assert_eq!(row(&same, "helper-unit").status, CheckStatus::Pass);

        let dropped = judge1(Service {
            drop_ins: vec!["/etc/systemd/system/bangerd-root.service.d/x.conf".into()],
            ..service("helper")
        });
        let c = row(&dropped, "helper-unit");
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(c.detail.contains("x.conf"), "{}", c.detail);

        // What systemd loaded: drop-ins anywhere, a stale load, another file.
        let loaded = |l: Loaded| Service {
            loaded: Some(Ok(l)),
            ..service("helper")
        };
        let shown = parse_show(
            "FragmentPath=/etc/systemd/system/bangerd-root.service\nDropInPaths=/run/systemd/system/bangerd-root.service.d/50-x.conf /etc/systemd/system/service.d/y.conf\nNeedDaemonReload=no\n",
        );
        assert_eq!(shown.drop_ins.len(), 2);
        let c = row(&judge1(loaded(shown.clone())), "helper-unit").clone();
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(
            c.detail.contains("50-x.conf") && c.detail.contains("y.conf"),
            "{}",
            c.detail
        );
        let stale = judge1(loaded(Loaded {
            drop_ins: vec![],
            needs_reload: true,
            ..shown.clone()
        }));
        let c = row(&stale, "helper-unit");
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.detail.contains("daemon-reload"), "{}", c.detail);
        let elsewhere = judge1(loaded(Loaded {
            fragment: "/run/systemd/system/bangerd-root.service".into(),
            drop_ins: vec![],
            needs_reload: false,
            load_state: "loaded".into(),
        }));
        let c = row(&elsewhere, "helper-unit");
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(
            c.detail.contains("loads bangerd-root.service from /run"),
            "{}",
            c.detail
        );

        let masked = judge1(loaded(Loaded {
            drop_ins: vec![],
            load_state: "masked".into(),
            ..shown.clone()
        }));
        let c = row(&masked, "helper-unit");
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.detail.contains("masked"), "{}", c.detail);
        let unasked = judge1(Service {
            loaded: Some(Err("Failed to connect to bus".into())),
            ..service("helper")
        });
        assert_eq!(row(&unasked, "helper-unit").status, CheckStatus::Warn);

        let gone = judge1(Service {
            found: Err("No such file or directory".into()),
            ..service("helper")
        });
        assert_eq!(row(&gone, "helper-unit").status, CheckStatus::Fail);
    }
}

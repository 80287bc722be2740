//! `banger system`: the record and units a system install writes, checked
//! by systemd itself (`systemd-analyze verify`, which needs no running
//! systemd), what `uninstall` removes, and what either refuses.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "integration tests: each file is a test crate of its own, and runs the binary and systemd-analyze"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use banger_config::install::Install;
use common::{TestUser, stderr};

fn banger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(args)
        .env_remove("SUDO_UID")
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn install_writes_a_record_and_units_systemd_accepts_and_uninstall_removes_them() {
    if !banger_testutil::have_root("install_writes_a_record_and_units_systemd_accepts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let user = TestUser::with_home(Some(&dir.path().join("home")));
    std::fs::create_dir_all(dir.path().join("home/.config/banger")).unwrap();
    std::fs::write(
        dir.path().join("home/.config/banger/config.toml"),
        "bridge = \"bgtest0\"\nbridge_subnet = \"10.88.0.1/24\"\n",
    )
    .unwrap();
    let root = dir.path().join("root");
    let root_arg = root.to_str().unwrap();
    let o = banger(&[
        "system", "install", "--owner", &user.name, "--root", root_arg,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out(&o).contains("nothing was started"), "{}", out(&o));

    // The record names the owner and the config's network.
    let record = Install::load(&root.join("etc/banger/install.toml"))
        .unwrap()
        .unwrap();
    assert_eq!((record.owner_uid, record.owner_gid), (user.uid, user.gid));
    assert_eq!(record.owner, user.name);
    assert_eq!(
        (record.bridge.as_str(), record.bridge_subnet.as_str()),
        ("bgtest0", "10.88.0.1/24")
    );
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_banger")).parent().unwrap();
    assert_eq!(record.bin_dir, std::fs::canonicalize(bin_dir).unwrap());

    // systemd reads both units as they are meant.
    let units = root.join("etc/systemd/system");
    let helper = std::fs::read_to_string(units.join("bangerd-root.service")).unwrap();
    assert!(
        helper.contains(&format!(
            "--owner {} --bridge bgtest0 --subnet 10.88.0.1/24",
            user.uid
        )),
        "{helper}"
    );
    let daemon = std::fs::read_to_string(units.join("bangerd.service")).unwrap();
    assert!(
        daemon.contains(&format!("User={}\n", user.name)),
        "{daemon}"
    );
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(units.join("bangerd-root.service"))
        .arg(units.join("bangerd.service"))
        .output()
        .expect("run systemd-analyze (apt-get install systemd)");
    let said = format!("{}{}", out(&verify), stderr(&verify));
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("bangerd")).collect();
    assert!(ours.is_empty(), "systemd-analyze complained: {ours:?}");

    // status checks what was written: both units as banger wrote them;
    // no service answers (nothing was started), so it exits 1.
    let status = |what: &str| {
        let o = banger(&["system", "status", "--root", root_arg]);
        let text = out(&o);
        let row = |name: &str| {
            text.lines()
                .find(|l| l.split_whitespace().nth(1) == Some(name))
                .unwrap_or_else(|| panic!("{what}: no {name} row in {text}"))
                .to_owned()
        };
        (
            o.status.code(),
            row("helper-unit"),
            row("daemon-unit"),
            row("daemon-socket"),
        )
    };
    let (code, helper_row, daemon_row, socket_row) = status("as written");
    assert_eq!(code, Some(1), "{socket_row}");
    assert!(helper_row.starts_with("PASS"), "{helper_row}");
    assert!(daemon_row.starts_with("PASS"), "{daemon_row}");
    assert!(
        socket_row.starts_with("FAIL") && socket_row.contains("system restart"),
        "{socket_row}"
    );
    // A weakened unit, or a drop-in beside it, is named.
    std::fs::write(
        units.join("bangerd.service"),
        daemon.replace("NoNewPrivileges=yes\n", "") + "ProtectHome=no\n",
    )
    .unwrap();
    let (_, _, daemon_row, _) = status("weakened");
    assert!(
        daemon_row.starts_with("FAIL")
            && daemon_row.contains("missing `NoNewPrivileges=yes`")
            && daemon_row.contains("added `ProtectHome=no`"),
        "{daemon_row}"
    );
    std::fs::write(units.join("bangerd.service"), &daemon).unwrap();
    std::fs::create_dir(units.join("bangerd-root.service.d")).unwrap();
    std::fs::write(
        units.join("bangerd-root.service.d/caps.conf"),
        "[Service]\nCapabilityBoundingSet=~\n",
    )
    .unwrap();
    let (_, helper_row, daemon_row, _) = status("with a drop-in");
    assert!(
        helper_row.starts_with("WARN") && helper_row.contains("caps.conf"),
        "{helper_row}"
    );
    assert!(daemon_row.starts_with("PASS"), "{daemon_row}");
    std::fs::remove_dir_all(units.join("bangerd-root.service.d")).unwrap();

    // Uninstall removes exactly what install wrote.
    let o = banger(&["system", "uninstall", "--root", root_arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!root.join("etc/banger/install.toml").exists());
    assert!(std::fs::read_dir(&units).unwrap().next().is_none());
    let o = banger(&["system", "uninstall", "--root", root_arg]);
    assert_eq!(out(&o), "no system install to remove\n");
}

#[test]
fn install_refuses_root_as_owner_an_unknown_user_and_a_caller_who_is_not_root() {
    if !banger_testutil::have_root("install_refuses_root_as_owner") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    for (owner, why) in [
        ("root", "banger's owner may not be root"),
        ("0", "banger's owner may not be root"),
        (
            "no-such-user-here",
            "no user \"no-such-user-here\" on this host",
        ),
        ("-rf", "is not a user name or uid"),
        ("a:b", "is not a user name or uid"),
    ] {
        let o = banger(&[
            "system",
            "install",
            &format!("--owner={owner}"),
            "--root",
            root,
        ]);
        assert!(!o.status.success(), "{owner}");
        assert!(stderr(&o).contains(why), "{owner}: {}", stderr(&o));
    }
    let o = banger(&["system", "install", "--root", root]);
    assert!(
        stderr(&o).contains("say whose banger this is: --owner USER"),
        "{}",
        stderr(&o)
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "a refused install wrote files"
    );

    let o = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_banger"))
        .args(["system", "install", "--owner", "65534", "--root", root])
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("run it as root, e.g. `sudo banger system install`"),
        "{}",
        stderr(&o)
    );
}

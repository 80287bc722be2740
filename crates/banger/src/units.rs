//! The two systemd units of a system install, rendered from its record.
//!
//! Every value put into a unit is checked to be plain (no whitespace,
//! quote, backslash, `%` specifier or `$` expansion), so what systemd runs
//! is exactly what the record says.

use std::path::Path;

use banger_config::install::Install;

/// The helper's unit file name.
pub const HELPER_UNIT: &str = "bangerd-root.service";
/// The daemon's unit file name.
pub const DAEMON_UNIT: &str = "bangerd.service";

/// The directives `banger doctor` and the tests expect in both units.
pub const HARDENING: &[&str] = &[
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
];

/// What the helper's operations need, and nothing else: taps, bridges and
/// iptables (NET_ADMIN, NET_RAW), and handing its socket to the owner
/// (CHOWN).
pub const HELPER_CAPABILITIES: &str = "CAP_NET_ADMIN CAP_NET_RAW CAP_CHOWN";

/// A value that cannot go into a unit as it is.
#[derive(Debug, thiserror::Error)]
#[error("{what} {value:?} cannot go into a systemd unit: use only letters, digits and / . _ + - :")]
pub struct Unplain {
    what: &'static str,
    value: String,
}

fn plain<'a>(what: &'static str, value: &'a str) -> Result<&'a str, Unplain> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+-:".contains(&b));
    if ok {
        Ok(value)
    } else {
        Err(Unplain {
            what,
            value: value.to_owned(),
        })
    }
}

fn plain_path<'a>(what: &'static str, path: &'a Path) -> Result<&'a str, Unplain> {
    match path.to_str() {
        Some(s) => plain(what, s),
        None => Err(Unplain {
            what,
            value: path.to_string_lossy().into_owned(),
        }),
    }
}

/// `dir`'s name, when it is `/run/<name>`: what `RuntimeDirectory=` takes.
fn run_subdir<'a>(what: &'static str, dir: &'a Path) -> Result<&'a str, Unplain> {
    dir.strip_prefix("/run")
        .ok()
        .filter(|d| d.components().count() == 1)
        .and_then(Path::to_str)
        .ok_or_else(|| Unplain {
            what,
            value: dir.to_string_lossy().into_owned(),
        })
        .and_then(|name| plain(what, name))
}

/// The root helper's unit: root, bounded to the capabilities its ops need,
/// serving only the install's owner, bridge and subnet.
pub fn helper(install: &Install) -> Result<String, Unplain> {
    let bin = plain_path("bin_dir", &install.bin_dir)?;
    let socket = plain_path("helper_socket", &install.helper_socket)?;
    let run_dir = run_subdir(
        "helper_socket (must be /run/<dir>/<name>)",
        install
            .helper_socket
            .parent()
            .unwrap_or_else(|| Path::new("")),
    )?;
    Ok(format!(
        "\
# Written by `banger system install`.
[Unit]
Description=banger root helper: bridge, taps and NAT rules for {owner}'s bangerd
After=network.target

[Service]
Type=simple
ExecStart={bin}/bangerd-root --owner {uid} --bridge {bridge} --subnet {subnet} --socket {socket}
Restart=on-failure
RuntimeDirectory={run_dir}
RuntimeDirectoryMode=0755
# iptables' legacy backend takes a lock file in /run, read-only below.
ExecStartPre=+/usr/bin/touch /run/xtables.lock
ReadWritePaths=-/run/xtables.lock
{hardening}
ProtectHome=yes
PrivateTmp=yes
ProtectControlGroups=yes
RestrictNamespaces=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
CapabilityBoundingSet={caps}

[Install]
WantedBy=multi-user.target
",
        owner = plain("owner", &install.owner)?,
        uid = install.owner_uid,
        bridge = plain("bridge", &install.bridge)?,
        subnet = plain("bridge_subnet", &install.bridge_subnet)?,
        hardening = HARDENING.join("\n"),
        caps = HELPER_CAPABILITIES,
    ))
}

/// The owner's daemon: the owner's uid, the owner's banger directories the
/// only writable part of the file system, and `KillMode=process` so VMs
/// outlive a restart.
pub fn daemon(install: &Install, state_dir: &Path, cache_dir: &Path) -> Result<String, Unplain> {
    let run_dir = run_subdir("runtime_dir (must be /run/<dir>)", &install.runtime_dir)?;
    Ok(format!(
        "\
# Written by `banger system install`.
[Unit]
Description=banger daemon for {owner}
Wants={helper_unit}
After={helper_unit} network.target

[Service]
Type=simple
User={owner}
Group={gid}
Environment=HOME={home}
Environment=BANGER_RUNTIME_DIR=/run/{run_dir}
ExecStart={bin}/bangerd
KillMode=process
Restart=on-failure
RuntimeDirectory={run_dir}
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
{hardening}
ProtectHome=read-only
ReadWritePaths={state} {cache}
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
",
        owner = plain("owner", &install.owner)?,
        gid = install.owner_gid,
        home = plain_path("owner_home", &install.owner_home)?,
        bin = plain_path("bin_dir", &install.bin_dir)?,
        run_dir = run_dir,
        state = plain_path("state directory", state_dir)?,
        cache = plain_path("cache directory", cache_dir)?,
        hardening = HARDENING.join("\n"),
        helper_unit = HELPER_UNIT,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record as `system install` writes it for alice.
    pub(crate) const ALICE: &str = r#"
        owner = "alice"
        owner_uid = 1000
        owner_gid = 1000
        owner_home = "/home/alice"
        version = "0.1.0"
        commit = "abc"
        bin_dir = "/usr/local/bin"
        bridge = "banger0"
        bridge_subnet = "10.77.0.1/24"
        runtime_dir = "/run/banger-1000"
        helper_socket = "/run/banger-root/bangerd-root.sock"
    "#;

    fn install() -> Install {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install.toml");
        std::fs::write(&path, ALICE).unwrap();
        Install::load(&path).unwrap().unwrap()
    }

    #[test]
    fn the_units_carry_the_owner_the_hardening_and_the_helpers_bounds() {
        let h = helper(&install()).unwrap();
        assert!(h.contains(
            "ExecStart=/usr/local/bin/bangerd-root --owner 1000 --bridge banger0 --subnet 10.77.0.1/24 --socket /run/banger-root/bangerd-root.sock"
        ), "{h}");
        assert!(h.contains("RuntimeDirectory=banger-root\n"), "{h}");
        assert!(h.contains("ProtectHome=yes\n"), "{h}");
        assert!(h.contains(&format!("CapabilityBoundingSet={HELPER_CAPABILITIES}\n")));
        let d = daemon(
            &install(),
            Path::new("/home/alice/.local/state/banger"),
            Path::new("/home/alice/.cache/banger"),
        )
        .unwrap();
        for line in [
            "User=alice\n",
            "KillMode=process\n",
            "ProtectHome=read-only\n",
            "ReadWritePaths=/home/alice/.local/state/banger /home/alice/.cache/banger\n",
            "RuntimeDirectory=banger-1000\n",
            // Named outright: the record that points the CLI there is
            // written after the service first starts.
            "Environment=BANGER_RUNTIME_DIR=/run/banger-1000\n",
            "ExecStart=/usr/local/bin/bangerd\n",
        ] {
            assert!(d.contains(line), "{line:?} missing from {d}");
        }
        for unit in [&h, &d] {
            for directive in HARDENING {
                assert!(unit.contains(&format!("{directive}\n")), "{directive}");
            }
        }
    }

    #[test]
    fn values_systemd_would_read_differently_are_refused() {
        type Spoil = fn(&mut Install);
        let bad: [(&str, Spoil); 5] = [
            ("bin_dir", |i| i.bin_dir = "/opt/my tools".into()),
            ("bin_dir", |i| i.bin_dir = "/opt/%h".into()),
            ("owner_home", |i| i.owner_home = "/home/$USER".into()),
            ("owner", |i| i.owner = "al\nExecStartPre=/bin/sh".into()),
            ("runtime_dir", |i| i.runtime_dir = "/tmp/banger".into()),
        ];
        for (what, spoil) in bad {
            let mut i = install();
            spoil(&mut i);
            let err = helper(&i)
                .and_then(|_| daemon(&i, Path::new("/s"), Path::new("/c")))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(what), "{what}: {err}");
        }
    }
}

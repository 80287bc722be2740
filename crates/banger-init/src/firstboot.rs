//! First boot of a container image, which has no systemd or no SSH server:
//! banger-init installs them with the image's own package manager, run
//! chrooted in the assembled root (network from the kernel's `ip=`,
//! resolvers from the overlay's resolv.conf), before it execs the init
//! they provide. Output goes to the console, so progress and failure are
//! in the VM's console log.

/// How one distribution family gets systemd (as `/sbin/init`) and sshd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// The family, for messages (`debian`, `fedora`, ...).
    pub family: &'static str,
    /// Commands run in order, each an argv looked up on `PATH`.
    pub commands: Vec<Vec<&'static str>>,
}

/// The environment the commands run with.
pub const ENV: [(&str, &str); 4] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("DEBIAN_FRONTEND", "noninteractive"),
    ("HOME", "/root"),
    ("LANG", "C"),
];

fn field(os_release: &str, key: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().trim_matches(['"', '\'']).to_ascii_lowercase())
        .unwrap_or_default()
}

/// The install for the distribution `/etc/os-release` describes: by `ID`,
/// else by the first `ID_LIKE` banger knows.
pub fn plan_for(os_release: &str) -> Option<Install> {
    let id = field(os_release, "ID");
    let like = field(os_release, "ID_LIKE");
    std::iter::once(id.as_str())
        .chain(like.split_whitespace())
        .find_map(install_for)
}

fn install_for(id: &str) -> Option<Install> {
    let (family, commands): (&str, Vec<Vec<&'static str>>) = match id {
        "debian" | "ubuntu" => (
            "debian",
            vec![
                vec!["apt-get", "update"],
                vec![
                    "apt-get",
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "systemd-sysv",
                    "openssh-server",
                ],
            ],
        ),
        "alpine" => (
            "alpine",
            vec![
                vec!["apk", "add", "--no-cache", "openrc", "openssh"],
                vec!["rc-update", "add", "sshd", "default"],
            ],
        ),
        "fedora" | "rhel" | "centos" => (
            "fedora",
            vec![
                vec!["dnf", "install", "-y", "systemd", "openssh-server"],
                vec!["systemctl", "enable", "sshd"],
            ],
        ),
        "arch" | "archlinux" => (
            "arch",
            vec![
                vec![
                    "pacman",
                    "-Sy",
                    "--noconfirm",
                    "systemd",
                    "systemd-sysvcompat",
                    "openssh",
                ],
                vec!["systemctl", "enable", "sshd"],
            ],
        ),
        "opensuse" | "suse" | "opensuse-leap" | "opensuse-tumbleweed" | "sles" => (
            "opensuse",
            vec![
                vec![
                    "zypper",
                    "--non-interactive",
                    "install",
                    "systemd-sysvinit",
                    "openssh-server",
                ],
                vec!["systemctl", "enable", "sshd"],
            ],
        ),
        _ => return None,
    };
    Some(Install { family, commands })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_is_found_by_id_or_id_like() {
        let family = |text: &str| plan_for(text).map(|i| i.family);
        assert_eq!(family("ID=debian\n"), Some("debian"));
        assert_eq!(family("ID=\"ubuntu\"\nID_LIKE=debian\n"), Some("debian"));
        assert_eq!(
            family("ID=pop\nID_LIKE=\"ubuntu debian\"\n"),
            Some("debian")
        );
        assert_eq!(family("ID=alpine\n"), Some("alpine"));
        assert_eq!(
            family("ID=rocky\nID_LIKE=\"rhel centos fedora\"\n"),
            Some("fedora")
        );
        assert_eq!(family("ID=arch\n"), Some("arch"));
        assert_eq!(
            family("ID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"\n"),
            Some("opensuse")
        );
        assert_eq!(family("ID=nixos\n"), None);
        assert_eq!(family(""), None);
        // IDENTITY= or VERSION_ID= are not ID=.
        assert_eq!(family("VERSION_ID=12\nIDENTITY=debian\n"), None);
    }

    #[test]
    fn debian_updates_then_installs_both_without_recommends() {
        let install = plan_for("ID=debian\n").unwrap();
        assert_eq!(install.commands[0], ["apt-get", "update"]);
        assert!(install.commands[1].ends_with(&["systemd-sysv", "openssh-server"]));
        assert!(install.commands[1].contains(&"-y"));
    }
}

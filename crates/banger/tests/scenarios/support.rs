//! What scenarios share: their shape, what a VM leaves behind, and the
//! context printed when one fails.

use std::path::Path;
use std::process::Output;

use crate::common::{Env, stderr};

/// One scenario: a name, whether it must run alone, and its body, which
/// panics (asserts) on failure.
pub struct Scenario {
    pub name: &'static str,
    /// Acts on every VM or on the daemon: run alone, after the pool.
    pub global: bool,
    /// Gets a private copy of the artifact cache, which it may break.
    pub own_cache: bool,
    /// Drives a daemon running as a throwaway user of its own, and starts
    /// the root helper itself.
    pub unprivileged: bool,
    /// Needs a daemon running as root, even where the suite runs the rest
    /// as its owner.
    pub as_root: bool,
    pub run: fn(&Env),
}

impl Scenario {
    pub const fn new(name: &'static str, run: fn(&Env)) -> Self {
        Self {
            name,
            global: false,
            own_cache: false,
            unprivileged: false,
            as_root: false,
            run,
        }
    }

    pub const fn unprivileged(mut self) -> Self {
        self.unprivileged = true;
        self
    }

    pub const fn needs_root(mut self) -> Self {
        self.as_root = true;
        self
    }

    pub const fn global(mut self) -> Self {
        self.global = true;
        self
    }

    pub const fn own_cache(mut self) -> Self {
        self.own_cache = true;
        self
    }
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

pub fn show(env: &Env, vm: &str) -> serde_json::Value {
    serde_json::from_str(&env.ok(&["vm", "show", vm])).unwrap()
}

/// Runs banger, insists it failed, and returns its stderr.
pub fn fails(env: &Env, args: &[&str]) -> String {
    let out = env.banger(args);
    assert!(
        !out.status.success(),
        "banger {args:?} should have failed; printed: {}",
        text(&out)
    );
    stderr(&out)
}

/// The daemon log, checked not to contain `needle`.
pub fn assert_log_lacks(env: &Env, needle: &str, why: &str) {
    let log = std::fs::read_to_string(env.log()).unwrap();
    assert!(
        !log.contains(needle),
        "{why}: the log says {needle:?}:\n{log}"
    );
}

/// The transient files a running VM has and a stopped one must not.
pub fn assert_no_runtime_files(env: &Env, vm: &str) {
    let id = show(env, vm)["id"].as_str().unwrap().to_owned();
    let dir = env.path(&format!("state/vms/{id}"));
    for file in ["handles.json", "vmm.pid", "vmm.sock"] {
        assert!(
            !dir.join(file).exists(),
            "{file} left in {} of a VM that is not running",
            dir.display()
        );
    }
}

/// What VMs leave on the host, as seen from the installation's namespace.
#[derive(Debug, PartialEq, Eq)]
pub struct Leftovers {
    pub vms: String,
    pub taps: Vec<String>,
    pub rules: Vec<String>,
    /// banger's nftables tables (present while a guest is connected).
    pub tables: Vec<String>,
    pub vm_dirs: Vec<String>,
    pub vmm_processes: Vec<u32>,
}

impl Leftovers {
    pub fn none() -> Self {
        Self {
            vms: "[]\n".to_owned(),
            taps: Vec::new(),
            rules: Vec::new(),
            tables: Vec::new(),
            vm_dirs: Vec::new(),
            vmm_processes: Vec::new(),
        }
    }

    /// No tap, rule or VMM process: what a stopped or failed VM may leave.
    pub fn assert_nothing_running(&self) {
        assert!(
            self.taps.is_empty()
                && self.rules.is_empty()
                && self.tables.is_empty()
                && self.vmm_processes.is_empty(),
            "a stopped VM left these running: {self:?}"
        );
    }
}

pub fn leftovers(env: &Env) -> Leftovers {
    let ip_links = text(&env.in_netns("ip", &["-br", "link"]));
    Leftovers {
        vms: env.ok(&["vm", "list", "-o", "json"]),
        taps: links(&ip_links, false),
        rules: banger_rules(|table| text(&env.in_netns("iptables", &["-w", "-t", table, "-S"]))),
        tables: banger_tables(&text(&env.in_netns("nft", &["list", "tables"]))),
        vm_dirs: std::fs::read_dir(env.path("state/vms"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default(),
        vmm_processes: banger_sys::process::groups_mentioning(
            Path::new("/proc"),
            &env.path("state/vms").to_string_lossy(),
        ),
    }
}

/// Links named like banger's: taps (`bgt...`) and, with `bridges`, the
/// bridge, which a namespace keeps once made.
fn links(ip_br_link: &str, bridges: bool) -> Vec<String> {
    ip_br_link
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("bgt") || (bridges && n.starts_with("banger")))
        .map(str::to_owned)
        .collect()
}

fn banger_rules(list: impl Fn(&str) -> String) -> Vec<String> {
    ["filter", "nat"]
        .iter()
        .flat_map(|table| {
            list(table)
                .lines()
                .filter(|l| l.contains("banger:"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// banger's nftables tables (`banger-<bridge>`) in `nft list tables`.
pub fn banger_tables(list: &str) -> Vec<String> {
    list.lines()
        .filter(|l| l.contains(" banger-"))
        .map(str::to_owned)
        .collect()
}

/// The host namespace's banger links, rules and tables, and this run's test
/// namespaces still present.
#[allow(clippy::disallowed_methods, reason = "the suite inspects the host")]
pub fn host_network_leftovers() -> Vec<String> {
    let run = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .map(|o| text(&o))
            .unwrap_or_default()
    };
    let mut leaks: Vec<String> = links(&run("ip", &["-br", "link"]), true)
        .into_iter()
        .map(|t| format!("link {t} in the host namespace"))
        .collect();
    leaks.extend(
        banger_rules(|table| run("iptables", &["-w", "-t", table, "-S"]))
            .into_iter()
            .map(|r| format!("host rule {r}")),
    );
    leaks.extend(
        banger_tables(&run("nft", &["list", "tables"]))
            .into_iter()
            .map(|t| format!("host nftables {t}")),
    );
    let ours = format!("bgtest-{}-", std::process::id());
    leaks.extend(
        run("ip", &["netns", "list"])
            .lines()
            .filter(|l| l.starts_with(&ours))
            .map(|l| format!("network namespace {l}")),
    );
    leaks
}

/// The daemon log's tail and each VM's console tail: what a failing
/// scenario prints so its cause can be read without rerunning it.
pub fn failure_context(env: &Env) -> String {
    let mut out = String::new();
    let tail = |path: &Path, n: usize| {
        std::fs::read_to_string(path).map_or_else(
            |e| format!("    ({e})\n"),
            |t| {
                let lines: Vec<&str> = t.lines().collect();
                lines[lines.len().saturating_sub(n)..]
                    .iter()
                    .map(|l| format!("    {l}\n"))
                    .collect()
            },
        )
    };
    out.push_str(&format!("  daemon log tail ({}):\n", env.log().display()));
    out.push_str(&tail(&env.log(), 25));
    if let Ok(dirs) = std::fs::read_dir(env.path("state/vms")) {
        for dir in dirs.flatten() {
            let console = dir.path().join("console.log");
            out.push_str(&format!("  console tail ({}):\n", console.display()));
            out.push_str(&tail(&console, 15));
        }
    }
    out
}

/// A cache of the scenario's own at `to`: hard links to the shared one's
/// files, so a scenario may replace an artifact without touching others.
pub fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            link_tree(&src, &dst);
        } else if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Hands the tree at `dir` to `uid`:`gid`.
#[allow(clippy::disallowed_methods, reason = "test setup runs chown")]
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    let out = std::process::Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "chown: {}", stderr(&out));
}

/// A copy of the shared cache's kernel, initramfs and image at `to`, owned
/// by `uid`:`gid` as a real owner's cache is (the daemon hard-links an
/// image to pin it, which the kernel refuses on a file of root's).
#[allow(clippy::disallowed_methods, reason = "cp keeps the image sparse")]
pub fn copy_cache_for(from: &Path, to: &Path, uid: u32, gid: u32) {
    std::fs::create_dir_all(to.join("images")).unwrap();
    for part in [
        "kernels",
        "initramfs",
        "images/debian-bookworm",
        "kvm-probe.json",
    ] {
        // The initramfs and the KVM verdict are made by a first boot: a
        // cold cache has neither yet, and the owner's daemon makes its own.
        if !from.join(part).exists() && ["initramfs", "kvm-probe.json"].contains(&part) {
            continue;
        }
        let out = std::process::Command::new("cp")
            .args(["-R", "--sparse=always"])
            .arg(from.join(part))
            .arg(to.join(part))
            .output()
            .unwrap();
        assert!(out.status.success(), "cp {part}: {}", stderr(&out));
    }
    chown_tree(to, uid, gid);
}

/// `/dev/net/tun` is 0666 wherever udev runs (Debian's and Ubuntu's rule;
/// opening it grants nothing: attaching to a tap needs its owner's uid,
/// creating one CAP_NET_ADMIN); a container without udev leaves it 0600.
/// Set the distribution's mode, so the owner's QEMU can open its own tap.
pub fn tun_for_everyone() {
    use std::os::unix::fs::PermissionsExt;
    let tun = Path::new("/dev/net/tun");
    let mode = std::fs::metadata(tun).unwrap().permissions().mode();
    if mode & 0o666 != 0o666 {
        std::fs::set_permissions(tun, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
}

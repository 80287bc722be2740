//! VMs for real: the release binaries create, boot (QEMU, TCG here), SSH
//! into, stop, start and delete VMs, each test in a private network
//! namespace of its own (its bridge, taps and NAT rules vanish with it).
//!
//! The kernel and image come from the shared cache that `artifacts.rs`
//! also uses (`~/.cache/banger-test/`), built on a cold run.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "integration tests: each file is a test crate of its own"
)]

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

use common::{Env, cache_root, kill, stderr};

/// Pulls the catalog kernel and image into the shared cache once.
fn cache() -> &'static Path {
    static CACHE: OnceLock<std::path::PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        assert!(
            banger_testutil::have_root("the VM tests"),
            "VM tests need root (bridges, taps, network namespaces)"
        );
        let root = cache_root();
        std::fs::create_dir_all(&root).unwrap();
        let env = Env::persistent(&root);
        env.ok(&["kernel", "pull", "generic-6.1"]);
        env.ok(&["image", "pull", "debian-bookworm"]);
        env.ok(&["daemon", "stop"]);
        root.join("cache")
    })
}

/// TCG guests take both cores: tests boot one at a time, except the one
/// that boots three at once on purpose.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn vm_env() -> Env {
    let env = Env::isolated_with_cache(cache());
    // Three TCG guests booting together on two cores need more than a minute.
    env.write_config("boot_timeout_secs = 600\nstop_timeout_secs = 60\n");
    env
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// What a VM leaves on the host, as seen from the test's namespace.
#[derive(Debug, PartialEq, Eq)]
struct Leftovers {
    vms: String,
    taps: Vec<String>,
    rules: Vec<String>,
    vm_dirs: Vec<String>,
    vmm_processes: Vec<u32>,
}

fn leftovers(env: &Env) -> Leftovers {
    let links = text(&env.in_netns("ip", &["-br", "link"]));
    let taps = links
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("bgt"))
        .map(str::to_owned)
        .collect();
    let mut rules = Vec::new();
    for table in ["filter", "nat"] {
        let out = env.in_netns("iptables", &["-w", "-t", table, "-S"]);
        rules.extend(
            text(&out)
                .lines()
                .filter(|l| l.contains("banger:"))
                .map(str::to_owned),
        );
    }
    let vm_dirs = std::fs::read_dir(env.path("state/vms"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let vmm_processes = banger_sys::process::groups_mentioning(
        Path::new("/proc"),
        &env.path("state/vms").to_string_lossy(),
    );
    Leftovers {
        vms: env.ok(&["vm", "list", "-o", "json"]),
        taps,
        rules,
        vm_dirs,
        vmm_processes,
    }
}

fn nothing_left() -> Leftovers {
    Leftovers {
        vms: "[]\n".to_owned(),
        taps: Vec::new(),
        rules: Vec::new(),
        vm_dirs: Vec::new(),
        vmm_processes: Vec::new(),
    }
}

fn show(env: &Env, vm: &str) -> serde_json::Value {
    serde_json::from_str(&env.ok(&["vm", "show", vm])).unwrap()
}

/// `vm run --rm` prints the command's output, passes its exit code back,
/// and leaves no VM, tap, NAT rule, VMM process or VM directory behind.
#[test]
fn vm_run_rm_passes_output_and_exit_code_and_leaves_nothing() {
    let env = vm_env();
    let _one = one_at_a_time();

    let out = env.banger(&[
        "vm",
        "run",
        "--rm",
        "--name",
        "e2e-run",
        "--",
        "cat",
        "/etc/hostname",
    ]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(text(&out), "e2e-run\n");

    let out = env.banger(&["vm", "run", "--rm", "--nat", "--", "sh", "-c", "exit 7"]);
    assert_eq!(code(&out), Some(7), "{}", stderr(&out));

    assert_eq!(leftovers(&env), nothing_left());
}

/// Files written before a stop are there after the next start, on the
/// work disk and in the overlay; `vm set` resizes a stopped VM; the first
/// connection ever made with banger's known_hosts is trusted without TOFU;
/// NAT rules exist only while the VM runs.
#[test]
fn writes_survive_stop_and_start_and_set_changes_the_vcpus() {
    let env = vm_env();
    let _one = one_at_a_time();
    env.ok(&["vm", "create", "--name", "keeper", "--nat", "--vcpu", "1"]);
    let vm = show(&env, "keeper");
    assert_eq!(vm["state"], "running");
    let ip = vm["ip"].as_str().unwrap().to_owned();

    // The very first SSH connection, by the system ssh with banger's files.
    let kh = env.path("state/ssh/known_hosts");
    let key = env.path("state/ssh/id_ed25519");
    let first = env.in_netns(
        "ssh",
        &[
            "-i",
            &key.to_string_lossy(),
            "-o",
            &format!("UserKnownHostsFile={}", kh.display()),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            &format!("root@{ip}"),
            "true",
        ],
    );
    assert!(first.status.success(), "first ssh: {}", stderr(&first));

    let rules = leftovers(&env).rules;
    assert_eq!(rules.len(), 3, "NAT rules while running: {rules:?}");

    env.ok(&[
        "vm",
        "ssh",
        "keeper",
        "--",
        "sh",
        "-c",
        "echo on-work-disk > /root/kept && echo in-overlay > /etc/banger-kept",
    ]);
    assert_eq!(env.ok(&["vm", "stop", "keeper"]), "keeper stopped\n");
    let log = std::fs::read_to_string(env.log()).unwrap();
    assert!(
        !log.contains("did not power off"),
        "the guest ignored its poweroff:\n{log}"
    );
    let stopped = leftovers(&env);
    assert!(
        stopped.taps.is_empty() && stopped.rules.is_empty(),
        "{stopped:?}"
    );
    assert!(stopped.vmm_processes.is_empty(), "{stopped:?}");

    // Resizing needs a stopped VM; it cannot shrink the work disk.
    env.ok(&["vm", "set", "keeper", "--vcpu", "2"]);
    let shrink = env.banger(&["vm", "set", "keeper", "--disk-size", "1G"]);
    assert!(!shrink.status.success());
    assert!(
        stderr(&shrink).contains("can only grow"),
        "{}",
        stderr(&shrink)
    );

    env.ok(&["vm", "start", "keeper"]);
    // The console log spans both boots.
    let console = env.ok(&["vm", "logs", "keeper"]);
    assert_eq!(
        console
            .matches("banger-init: switching to /sbin/init")
            .count(),
        2,
        "{console}"
    );
    let out = env.ok(&[
        "vm",
        "ssh",
        "keeper",
        "--",
        "sh",
        "-c",
        "cat /root/kept /etc/banger-kept; nproc",
    ]);
    assert_eq!(out, "on-work-disk\nin-overlay\n2\n");
    let busy = env.banger(&["vm", "set", "keeper", "--vcpu", "1"]);
    assert!(stderr(&busy).contains("is running"), "{}", stderr(&busy));
    let refused = env.banger(&["vm", "delete", "keeper"]);
    assert!(
        stderr(&refused).contains("is running"),
        "{}",
        stderr(&refused)
    );

    env.ok(&["vm", "delete", "-f", "keeper"]);
    assert_eq!(leftovers(&env), nothing_left());
    let kh_text = std::fs::read_to_string(&kh).unwrap();
    assert!(!kh_text.contains(&ip), "known_hosts keeps {ip}: {kh_text}");
}

/// Bad names never reach the store, whether sent by the CLI or straight
/// to the API; names are exact (a prefix of another is a different name);
/// references accept unambiguous prefixes.
#[test]
fn names_are_checked_everywhere_and_matched_exactly() {
    let env = vm_env();
    let bad = [
        "has space",
        "new\nline",
        "dot.ted",
        "sl/ash",
        "co:lon",
        "eq=ual",
        "Upper",
        "ünï",
        "-lead",
        "trail-",
        &"a".repeat(64),
        "box/../evil",
        "",
    ];
    for name in bad {
        let out = env.banger(&["vm", "create", "--no-start", &format!("--name={name}")]);
        assert!(!out.status.success(), "CLI accepted {name:?}");
        assert!(
            stderr(&out).contains("vm name"),
            "{name:?}: {}",
            stderr(&out)
        );
    }
    // The daemon does not even start for a refused name.
    assert!(env.daemon_pid().is_none(), "a bad name reached the daemon");
    env.ok(&["vm", "list"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for name in bad {
        let body = serde_json::json!({ "name": name, "no_start": true }).to_string();
        let resp = rt
            .block_on(banger_testutil::raw_request(
                &env.socket(),
                "POST",
                "/v1/vms",
                &[("content-type", "application/json")],
                body,
            ))
            .unwrap();
        assert_eq!(resp.status, 400, "API accepted {name:?}");
        let err: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(err["code"], "invalid_argument", "{name:?}");
    }
    assert_eq!(leftovers(&env), nothing_left());

    env.ok(&["vm", "create", "--no-start", "--name", "beta-sandbox"]);
    env.ok(&["vm", "create", "--no-start", "--name", "beta"]);
    let dup = env.banger(&["vm", "create", "--no-start", "--name", "beta"]);
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));

    assert_eq!(show(&env, "beta")["name"], "beta");
    assert_eq!(show(&env, "beta-s")["name"], "beta-sandbox");
    let id = show(&env, "beta")["id"].as_str().unwrap().to_owned();
    assert_eq!(show(&env, &id[..6])["name"], "beta");
    let ambiguous = env.banger(&["vm", "show", "bet"]);
    assert!(
        stderr(&ambiguous).contains("ambiguous"),
        "{}",
        stderr(&ambiguous)
    );
    let missing = env.banger(&["vm", "show", "gamma"]);
    assert!(stderr(&missing).contains("no vm"), "{}", stderr(&missing));

    let vms: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["vm", "list", "-o", "json"])).unwrap();
    assert!(vms.iter().all(|v| v["state"] == "created"));
    assert_ne!(vms[0]["ip"], vms[1]["ip"]);
    let mut pruned: Vec<String> = env
        .ok(&["vm", "prune", "-f"])
        .lines()
        .map(str::to_owned)
        .collect();
    pruned.sort();
    assert_eq!(pruned, ["vm beta deleted", "vm beta-sandbox deleted"]);
    assert_eq!(leftovers(&env), nothing_left());
}

/// A SIGKILLed daemon leaves its VMs running; the next command starts a
/// new daemon that adopts them, and they still answer SSH.
#[test]
fn a_killed_daemons_vms_are_adopted_by_the_next_one() {
    let env = vm_env();
    let _one = one_at_a_time();
    env.ok(&["vm", "create", "--name", "survivor"]);
    let before = show(&env, "survivor");
    let pid = env.daemon_pid().unwrap();
    kill(pid, libc::SIGKILL);
    banger_testutil::wait_until(std::time::Duration::from_secs(5), || {
        !banger_sys::pid_alive(pid)
    });

    let after = show(&env, "survivor");
    assert_ne!(
        env.daemon_pid(),
        Some(pid),
        "a new daemon must have started"
    );
    assert_eq!(after["state"], "running");
    assert_eq!(after["pid"], before["pid"]);
    assert_eq!(
        env.ok(&["vm", "ssh", "survivor", "--", "cat", "/etc/hostname"]),
        "survivor\n"
    );
    // With its SSH server gone, a stop falls back to the power button,
    // which the guest honours: no kill is needed.
    env.ok(&[
        "vm",
        "ssh",
        "survivor",
        "--",
        "systemctl",
        "stop",
        "ssh.socket",
        "ssh.service",
    ]);
    assert_eq!(env.ok(&["vm", "stop", "survivor"]), "survivor stopped\n");
    let log = std::fs::read_to_string(env.log()).unwrap();
    assert!(
        !log.contains("killing it"),
        "the stop had to kill the VM:\n{log}"
    );
    env.ok(&["vm", "delete", "survivor"]);
    assert_eq!(leftovers(&env), nothing_left());
}

/// Three creates started together all boot, with distinct addresses.
#[test]
fn three_creates_at_once_all_succeed_with_distinct_addresses() {
    let env = vm_env();
    let _one = one_at_a_time();
    env.ok(&["daemon", "start"]);
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=3)
            .map(|n| {
                let env = &env;
                s.spawn(move || {
                    env.banger(&[
                        "vm",
                        "create",
                        "--name",
                        &format!("par-{n}"),
                        "--vcpu",
                        "1",
                        "--memory",
                        "512",
                    ])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        assert!(out.status.success(), "{}", stderr(out));
    }
    let mut ips: Vec<String> = (1..=3)
        .map(|n| {
            show(&env, &format!("par-{n}"))["ip"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "{ips:?}");
    for n in 1..=3 {
        let name = format!("par-{n}");
        assert_eq!(
            env.ok(&["vm", "ssh", &name, "--", "hostname"]),
            format!("{name}\n")
        );
        env.ok(&["vm", "delete", "-f", &name]);
    }
    assert_eq!(leftovers(&env), nothing_left());
}

/// A start that fails (here: sshd cannot answer within a 1 s timeout) is
/// rolled back step by step and the error is recorded on the VM.
#[test]
fn a_failed_start_is_rolled_back_and_recorded() {
    let env = vm_env();
    let _one = one_at_a_time();
    env.write_config("boot_timeout_secs = 1\n");
    let out = env.banger(&["vm", "create", "--name", "too-slow"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("did not answer"), "{}", stderr(&out));
    let vm = show(&env, "too-slow");
    assert_eq!(vm["state"], "error");
    assert!(
        vm["last_error"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{vm}"
    );
    assert_eq!(vm["pid"], serde_json::Value::Null);
    let left = leftovers(&env);
    assert!(left.taps.is_empty() && left.rules.is_empty(), "{left:?}");
    assert!(left.vmm_processes.is_empty(), "{left:?}");
    env.ok(&["vm", "delete", "too-slow"]);
    assert_eq!(leftovers(&env), nothing_left());
}

/// `banger doctor` reports the KVM probe's verdict with its reason, and
/// guests run under KVM exactly when the probe boot reached userspace.
#[test]
fn doctor_reports_a_real_kvm_probe() {
    let env = vm_env();
    env.write_config("");
    let report: serde_json::Value =
        serde_json::from_str(&env.ok(&["doctor", "-o", "json"])).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let kvm = checks.iter().find(|c| c["name"] == "kvm").unwrap();
    assert!(!kvm["detail"].as_str().unwrap().is_empty(), "{report}");
    let expected = if kvm["ok"] == true { "kvm" } else { "tcg" };
    assert_eq!(report["accel"], expected, "{report}");
    for tool in ["qemu-system-x86_64", "mke2fs", "ssh", "ip", "iptables"] {
        let c = checks.iter().find(|c| c["name"] == tool).unwrap();
        assert_eq!(c["ok"], true, "{tool}: {c}");
    }
    // The verdict is cached for this host boot.
    let cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("cache/kvm-probe.json")).unwrap()).unwrap();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(cached["boot_id"], boot_id.trim());
    assert_eq!(cached["usable"], kvm["ok"]);
}

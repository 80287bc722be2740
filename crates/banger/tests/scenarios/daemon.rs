//! The control plane: parallel creates, a killed daemon's VMs adopted by
//! the next one, prune, doctor.

use std::process::Output;

use crate::common::{Env, kill, stderr};
use crate::support::{Leftovers, Scenario, assert_log_lacks, code, leftovers, show, text};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        // Alone: three TCG guests booting at once are all two cores take
        // (one, starved beside a fourth, once calibrated its APIC timer
        // as unusable and hung in SMP bring-up).
        Scenario::new("three-creates-at-once-get-distinct-addresses", parallel).global(),
        Scenario::new("doctor-reports-a-real-kvm-probe", doctor),
        Scenario::new(
            "a-running-vm-keeps-its-vmm-across-a-config-change",
            vmm_change,
        ),
        Scenario::new("sigkilled-daemons-vms-are-adopted", adoption).global(),
        Scenario::new("prune-deletes-only-what-is-not-running", prune).global(),
    ]
}

/// Three creates started together all boot, with distinct addresses.
fn parallel(env: &Env) {
    env.ok(&["daemon", "start"]);
    let outs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=3)
            .map(|n| {
                s.spawn(move || {
                    env.banger(&["vm", "create", "--vcpu", "1", &format!("--name=par-{n}")])
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
            show(env, &format!("par-{n}"))["ip"]
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
    assert_eq!(leftovers(env), Leftovers::none());
}

/// A SIGKILLed daemon leaves its VMs running; the next command starts a
/// new daemon that adopts them, and they still answer SSH. With its SSH
/// server stopped, the guest still stops cleanly on the power button.
fn adoption(env: &Env) {
    env.ok(&["vm", "create", "--name", "survivor", "--nat"]);
    let before = show(env, "survivor");
    let pid = env.daemon_pid().unwrap();
    kill(pid, libc::SIGKILL);
    banger_testutil::wait_until(std::time::Duration::from_secs(5), || {
        !banger_sys::pid_alive(pid)
    });

    let after = show(env, "survivor");
    assert_ne!(
        env.daemon_pid(),
        Some(pid),
        "a new daemon must have started"
    );
    assert_eq!(after["state"], "running");
    assert_eq!(after["pid"], before["pid"]);
    assert_eq!(
        leftovers(env).rules.len(),
        3,
        "NAT rules lost with the daemon"
    );
    assert_eq!(
        env.ok(&["vm", "ssh", "survivor", "--", "cat", "/etc/hostname"]),
        "survivor\n"
    );
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
    assert_log_lacks(env, "killing it", "the stop had to kill the VM");
    leftovers(env).assert_nothing_running();
    env.ok(&["vm", "delete", "survivor"]);
    assert_eq!(leftovers(env), Leftovers::none());
}

/// `vm prune` asks first (and deletes nothing when not told yes); `-f`
/// deletes every VM that is not running (never started, or stopped) and
/// leaves the running one.
fn prune(env: &Env) {
    env.ok(&["vm", "create", "--name", "busy"]);
    env.ok(&["vm", "create", "--no-start", "--name", "idle-1"]);
    env.ok(&["vm", "create", "--name", "idle-2"]);
    env.ok(&["vm", "stop", "idle-2"]);

    let asked = env.banger(&["vm", "prune"]);
    assert_eq!(code(&asked), Some(1), "{}", stderr(&asked));
    assert!(stderr(&asked).contains("idle-1"), "{}", stderr(&asked));
    assert_eq!(text(&asked), "nothing deleted\n");

    let mut pruned: Vec<String> = env
        .ok(&["vm", "prune", "-f"])
        .lines()
        .map(str::to_owned)
        .collect();
    pruned.sort();
    assert_eq!(pruned, ["vm idle-1 deleted", "vm idle-2 deleted"]);
    let left: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["vm", "list", "-o", "json"])).unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["name"], "busy");
    assert_eq!(env.ok(&["vm", "prune", "-f"]), "no stopped vms\n");
    env.ok(&["vm", "delete", "-f", "busy"]);
    assert_eq!(leftovers(env), Leftovers::none());
}

/// A VM started under QEMU stays QEMU's after the config switches to
/// Firecracker and the daemon restarts: adopted, reachable, stopped
/// cleanly by its own driver; only a new start meets the new VMM (and,
/// with no usable KVM here, is refused).
fn vmm_change(env: &Env) {
    env.ok(&["vm", "create", "--name", "switch"]);
    env.write_config("vmm = \"firecracker\"\nfirecracker_bin = \"/bin/true\"\n");
    env.ok(&["daemon", "restart"]);
    assert_eq!(show(env, "switch")["state"], "running");
    assert_eq!(
        text(&env.banger(&["vm", "ssh", "switch", "--", "echo", "still"])).trim(),
        "still"
    );
    env.ok(&["vm", "stop", "switch"]);
    assert_eq!(show(env, "switch")["state"], "stopped");
    leftovers(env).assert_nothing_running();
    let err = crate::support::fails(env, &["vm", "start", "switch"]);
    assert!(err.contains("needs KVM"), "{err}");
    leftovers(env).assert_nothing_running();
    env.ok(&["vm", "delete", "switch"]);
    assert_eq!(leftovers(env), Leftovers::none());
}

/// `banger doctor` reports the KVM probe's verdict with its reason, and
/// guests run under KVM exactly when the probe boot reached userspace.
fn doctor(env: &Env) {
    let report: serde_json::Value =
        serde_json::from_str(&env.ok(&["doctor", "-o", "json"])).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let kvm = checks.iter().find(|c| c["name"] == "kvm").unwrap();
    assert!(!kvm["detail"].as_str().unwrap().is_empty(), "{report}");
    let usable = kvm["status"] == "pass";
    let expected = if usable { "kvm" } else { "tcg" };
    assert_eq!(report["accel"], expected, "{report}");
    for tool in [
        "qemu-system-x86_64",
        "mke2fs",
        "ssh",
        "ip",
        "iptables",
        "vmm-binaries",
    ] {
        let c = checks.iter().find(|c| c["name"] == tool).unwrap();
        assert_eq!(c["status"], "pass", "{tool}: {c}");
    }
    // Root opens any /dev/kvm; the suite's owner is in no kvm group, so
    // where only root may open it the row names the fix.
    let device = checks.iter().find(|c| c["name"] == "kvm-device");
    assert_eq!(
        device.is_some(),
        std::path::Path::new("/dev/kvm").exists(),
        "{report}"
    );
    if let Some(device) = device {
        // Guests use KVM only where the daemon's user can open it.
        assert!(!usable || device["status"] == "pass", "{report}");
        let fixable = || {
            device["detail"]
                .as_str()
                .unwrap()
                .contains("usermod -aG kvm")
        };
        match env.user() {
            None => assert_eq!(device["status"], "pass", "{device}"),
            Some(_) => assert!(device["status"] == "pass" || fixable(), "{device}"),
        }
    }
    // The verdict is cached for this host boot.
    let cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("cache/kvm-probe.json")).unwrap()).unwrap();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(cached["boot_id"], boot_id.trim());
    // The cache may say usable where this daemon's user cannot open
    // /dev/kvm (the verdict is the host's); never the other way round.
    assert!(!usable || cached["usable"] == true, "{cached}");
    // No Firecracker here: reported, with a hint, and not essential under
    // the default vmm = "auto".
    let fc = checks.iter().find(|c| c["name"] == "firecracker").unwrap();
    assert_eq!(fc["essential"], false, "{fc}");
    if fc["status"] == "fail" {
        assert!(
            fc["detail"]
                .as_str()
                .unwrap()
                .starts_with("not found on PATH"),
            "{fc}"
        );
    }
    // Wherever a Firecracker is installed, doctor proves it takes banger's
    // whole configuration of a VM; a refusal fails the suite under CI.
    let api = checks.iter().find(|c| c["name"] == "firecracker-api");
    match (banger_sys::wait::find_in_path("firecracker"), api) {
        (None, api) => assert!(api.is_none(), "{report}"),
        (Some(_), None) => panic!("firecracker is installed, and doctor did not try it: {report}"),
        (Some(_), Some(api)) if api["status"] == "fail" => {
            let message =
                format!("the installed firecracker refuses banger's configuration: {api}");
            assert!(std::env::var_os("CI").is_none(), "{message}");
            eprintln!("warning: {message}");
        }
        (Some(_), Some(_)) => {}
    }
    let vmm = checks.iter().find(|c| c["name"] == "vmm").unwrap();
    let expected_vmm = if usable && fc["status"] != "fail" {
        "firecracker"
    } else {
        "qemu"
    };
    assert!(
        vmm["detail"].as_str().unwrap().starts_with(expected_vmm),
        "{vmm}"
    );
}

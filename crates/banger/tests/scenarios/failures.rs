//! Starts that fail: each is rolled back step by step, leaves no tap, rule,
//! process, socket or handle file, and is recorded on the VM.

use crate::common::Env;
use crate::support::{Leftovers, Scenario, assert_no_runtime_files, fails, leftovers, show, text};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("start-failing-midway-is-rolled-back", midway).own_cache(),
        Scenario::new("boot-timeout-is-rolled-back", timeout),
        Scenario::new(
            "firecracker-without-kvm-is-refused-before-anything",
            firecracker,
        ),
    ]
}

/// `vmm = "firecracker"` on a host whose KVM cannot run guests (this one):
/// `vm create` fails at once, saying why, with no VM, tap or file made. A
/// binary that exists stands in for Firecracker, so the refusal is the
/// KVM probe's, not a missing binary's.
fn firecracker(env: &Env) {
    env.write_config("vmm = \"firecracker\"\nfirecracker_bin = \"/bin/true\"\n");
    let err = fails(env, &["vm", "create", "--name", "fc"]);
    assert!(
        err.contains("vmm = \"firecracker\" needs KVM, and KVM cannot run guests on this host"),
        "{err}"
    );
    assert!(
        env.ok(&["vm", "list", "-o", "json"]).trim() == "[]",
        "a VM was stored"
    );
    assert!(
        std::fs::read_dir(env.path("state/vms")).map_or(true, |mut d| d.next().is_none()),
        "a VM directory was made"
    );
    assert_eq!(leftovers(env), Leftovers::none());
    // doctor agrees, and exits 1: under this config KVM is essential.
    let out = env.banger(&["doctor", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            check("kvm")["status"].clone(),
            check("kvm")["essential"].clone()
        ),
        ("fail".into(), true.into())
    );
    let fc = check("firecracker");
    assert_eq!(fc["status"], "fail", "{fc}");
    assert!(
        fc["detail"]
            .as_str()
            .unwrap()
            .contains("printed no version"),
        "{fc}"
    );
    // The rehearsal drove it through a start's calls, and it answered none.
    let api = check("firecracker-api");
    assert_eq!(
        (api["status"].as_str(), api["essential"].as_bool()),
        (Some("fail"), Some(true)),
        "{api}"
    );
    assert!(
        api["detail"]
            .as_str()
            .unwrap()
            .contains("exited before its API socket answered"),
        "{api}"
    );
    assert_eq!(
        leftovers(env),
        Leftovers::none(),
        "the rehearsal left something"
    );
    // accel = "kvm" overrides the probe: the create goes ahead, and the
    // VMM's own failure speaks, with nothing left behind.
    env.write_config("vmm = \"firecracker\"\nfirecracker_bin = \"/bin/true\"\naccel = \"kvm\"\n");
    env.ok(&["daemon", "restart"]);
    let err = fails(env, &["vm", "create", "--name", "fc"]);
    assert!(
        err.contains("firecracker exited before its API socket answered"),
        "{err}"
    );
    env.ok(&["vm", "delete", "fc"]);
    assert_eq!(leftovers(env), Leftovers::none());
    env.write_config("vmm = \"firecracker\"\nfirecracker_bin = \"no-such-firecracker\"\n");
    env.ok(&["daemon", "restart"]);
    let err = fails(env, &["vm", "create", "--name", "fc"]);
    assert!(
        err.contains("no-such-firecracker is not installed"),
        "{err}"
    );
}

/// A kernel QEMU cannot load fails the start after the tap and the NAT
/// rules were made: both are undone. A kernel that is gone fails before
/// anything is made, naming the file.
fn midway(env: &Env) {
    env.ok(&["vm", "create", "--no-start", "--nat", "--name", "broken"]);
    // Replace the kernel in this scenario's own cache (a new file, not a
    // write through the hard link into the shared one).
    let kernel = env.path("cache/kernels/generic-6.1/bzImage");
    let garbage = kernel.with_extension("new");
    std::fs::write(&garbage, b"not a kernel").unwrap();
    std::fs::rename(&garbage, &kernel).unwrap();

    let err = fails(env, &["vm", "start", "broken"]);
    assert!(err.contains("qemu"), "the error does not name qemu: {err}");
    let vm = show(env, "broken");
    assert_eq!(vm["state"], "error", "{vm}");
    assert!(vm["last_error"].as_str().unwrap().contains("qemu"), "{vm}");
    leftovers(env).assert_nothing_running();
    assert_no_runtime_files(env, "broken");
    let log = std::fs::read_to_string(env.log()).unwrap();
    assert!(
        log.contains("remove NAT rules"),
        "no NAT undo logged:\n{log}"
    );

    std::fs::remove_file(&kernel).unwrap();
    let err = fails(env, &["vm", "start", "broken"]);
    assert!(err.contains("kernel generic-6.1 is missing"), "{err}");
    leftovers(env).assert_nothing_running();

    env.ok(&["vm", "delete", "broken"]);
    assert_eq!(leftovers(env), Leftovers::none());
}

/// sshd cannot answer within a 1 s boot timeout: the running VMM is
/// killed and everything after it undone; the error is on the VM.
fn timeout(env: &Env) {
    env.write_config("boot_timeout_secs = 1\n");
    let err = fails(env, &["vm", "create", "--nat", "--name", "too-slow"]);
    assert!(err.contains("did not answer"), "{err}");
    let vm = show(env, "too-slow");
    assert_eq!(vm["state"], "error");
    assert!(
        vm["last_error"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{vm}"
    );
    assert_eq!(vm["pid"], serde_json::Value::Null);
    leftovers(env).assert_nothing_running();
    assert_no_runtime_files(env, "too-slow");
    env.ok(&["vm", "delete", "too-slow"]);
    assert_eq!(leftovers(env), Leftovers::none());
}

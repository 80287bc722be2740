//! Starts that fail: each is rolled back step by step, leaves no tap, rule,
//! process, socket or handle file, and is recorded on the VM.

use crate::common::Env;
use crate::support::{Leftovers, Scenario, assert_no_runtime_files, fails, leftovers, show};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("start-failing-midway-is-rolled-back", midway).own_cache(),
        Scenario::new("boot-timeout-is-rolled-back", timeout),
    ]
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

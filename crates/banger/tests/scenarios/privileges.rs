//! Least privilege: the daemon and its VMMs run as an unprivileged user,
//! and the host network goes through the root helper, `bangerd-root`.

use std::path::Path;

use crate::common::{Env, stderr};
use crate::support::{Leftovers, Scenario, code, fails, leftovers, text, tun_for_everyone};

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario::new("unprivileged-daemon-through-the-root-helper", unprivileged).unprivileged()]
}

/// Without a helper a VM start fails in one line that names the fix, and
/// leaves nothing. With one: `vm run --rm`, a NAT VM's create, stop, start
/// and delete all work, nothing of banger's but the helper runs as root,
/// and nothing is left afterwards.
fn unprivileged(env: &Env) {
    let (uid, _) = env.user().unwrap();
    tun_for_everyone();

    let err = fails(env, &["vm", "create", "--name", "early"]);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: starting a VM needs banger's root helper, and none answers at ")
            && last.contains("run `sudo banger system install`"),
        "{err}"
    );
    assert_eq!(leftovers(env), Leftovers::none());
    assert_eq!(doctor(env, "privileges")["status"], "fail");

    env.start_helper();
    let privileges = doctor(env, "privileges");
    assert_eq!(privileges["status"], "pass", "{privileges}");
    assert_eq!(doctor(env, "tun")["status"], "pass");
    // The throwaway user is in no kvm group: where the host has a
    // /dev/kvm only root opens, the row says so, and how to fix it.
    if Path::new("/dev/kvm").exists() {
        let kvm = doctor(env, "kvm-device");
        let user_opens = kvm["status"] == "pass";
        assert!(
            user_opens || kvm["detail"].as_str().unwrap().contains("usermod -aG kvm"),
            "{kvm}"
        );
    }
    let out = env.banger(&["vm", "run", "--rm", "--", "id", "-u"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(
        text(&out),
        "0\n",
        "the guest's root is root inside the guest"
    );
    assert_eq!(leftovers(env), Leftovers::none());

    env.ok(&["vm", "create", "--nat", "--name", "low"]);
    let running = leftovers(env);
    assert_eq!(running.rules.len(), 3, "{running:?}");
    let daemon = env.daemon_pid().expect("a daemon runs");
    assert_eq!(uids(daemon), [uid; 4], "the daemon's uids");
    let vmms = banger_testutil::pids_mentioning(&env.path("state/vms"));
    assert_eq!(vmms.len(), 1, "{running:?}");
    assert_eq!(uids(vmms[0]), [uid; 4], "the VMM's uids");

    env.ok(&["vm", "stop", "low"]);
    leftovers(env).assert_nothing_running();
    env.ok(&["vm", "start", "low"]);
    env.ok(&["vm", "stop", "low"]);
    env.ok(&["vm", "delete", "low"]);
    assert_eq!(leftovers(env), Leftovers::none());

    // Every helper call came from the owner and was served.
    let log = std::fs::read_to_string(env.path("helper.log")).unwrap();
    let calls: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(calls.len() >= 10, "{log}");
    for call in &calls {
        assert_eq!(call["peer_uid"], uid, "{call}");
        assert_eq!(call["outcome"], "ok", "{call}");
        assert!(
            call["op_id"].as_str().is_some_and(|id| id != "bangerd"),
            "{call}"
        );
    }
}

/// The doctor's check `name`.
fn doctor(env: &Env, name: &str) -> serde_json::Value {
    let out = env.banger(&["doctor", "-o", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
        .clone()
}

/// The real, effective, saved and file-system uids of `pid`.
fn uids(pid: u32) -> [u32; 4] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let ids: Vec<u32> = line[4..]
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    ids.try_into().unwrap()
}

//! The benchmark harness still works: one quick run, every figure present.
//! Its numbers are never asserted (speed is shown by `scripts/bench`).

use crate::common::{Env, stderr};
use crate::support::Scenario;

pub fn scenarios() -> Vec<Scenario> {
    // banger-bench drives daemons of its own as root, over this cache.
    vec![
        Scenario::new("bench-harness-runs-in-quick-mode", quick)
            .global()
            .needs_root(),
    ]
}

#[allow(clippy::disallowed_methods, reason = "runs the bench binary")]
fn quick(env: &Env) {
    let out_dir = env.path("bench");
    let out = std::process::Command::new(env.bin("banger-bench"))
        .arg("--quick")
        .arg("--out")
        .arg(&out_dir)
        .env("BANGER_CACHE_DIR", env.path("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "banger-bench --quick: {}",
        stderr(&out)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("median"), "{table}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("latest.json")).unwrap()).unwrap();
    assert_eq!(report["quick"], true);
    let figures = report["figures"].as_array().unwrap();
    let names: Vec<&str> = figures
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for wanted in [
        "banger's overhead",
        "end to end",
        "as its owner through bangerd-root",
        "root-helper call",
        "plain qemu boot",
        "4 at once",
        "RSS, idle",
        "10 VMs defined",
        "vm list",
    ] {
        assert!(
            names.iter().any(|n| n.contains(wanted)),
            "no {wanted:?} in {names:?}"
        );
    }
    for f in figures {
        let median = f["median"].as_f64();
        assert!(median.is_some_and(|m| m > 0.0), "no measurement: {f}");
    }
}

//! Rules over the whole workspace that no single crate can check: which
//! crate may depend on which (the table in docs/ARCHITECTURE.md), and how
//! large the daemon's files and functions may grow.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "an integration test of the workspace; it runs cargo itself"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The rule table of docs/ARCHITECTURE.md: crate -> what it may depend on.
fn rules(architecture: &str) -> BTreeMap<String, BTreeSet<String>> {
    let section = architecture
        .split("### Crate dependency rules")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has a '### Crate dependency rules' section");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| crate"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            let allowed = cells[1]
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect();
            (cells[0].to_owned(), allowed)
        })
        .collect()
}

/// Each workspace crate's normal dependencies on workspace crates, from
/// `cargo metadata`.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let ours: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap())
                .filter(|d| ours.contains(d))
                .map(str::to_owned)
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

/// Every dependency outside its crate's row, and every crate without one.
fn violations(
    rules: &BTreeMap<String, BTreeSet<String>>,
    deps: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for (krate, uses) in deps {
        let Some(allowed) = rules.get(krate) else {
            wrong.push(format!("{krate} has no row in the dependency rules"));
            continue;
        };
        for dep in uses.difference(allowed) {
            wrong.push(format!(
                "{krate} depends on {dep}, which its row does not allow"
            ));
        }
    }
    wrong
}

#[test]
fn crates_depend_only_as_the_architecture_allows() {
    let text = std::fs::read_to_string(workspace().join("docs/ARCHITECTURE.md")).unwrap();
    let rules = rules(&text);
    assert!(rules.len() >= 10, "the rule table was not read: {rules:?}");
    let wrong = violations(&rules, &dependencies());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_dependency_check_can_fail() {
    let rules = rules(
        "### Crate dependency rules\n\n| crate | may depend on |\n|---|---|\n\
         | banger-api | |\n| banger-net | banger-api |\n",
    );
    let deps = BTreeMap::from([
        (
            "banger-api".to_owned(),
            BTreeSet::from(["banger-net".to_owned()]),
        ),
        (
            "banger-net".to_owned(),
            BTreeSet::from(["banger-api".to_owned()]),
        ),
        ("banger-new".to_owned(), BTreeSet::new()),
    ]);
    assert_eq!(
        violations(&rules, &deps),
        [
            "banger-api depends on banger-net, which its row does not allow",
            "banger-new has no row in the dependency rules",
        ]
    );
}

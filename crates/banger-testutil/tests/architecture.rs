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

/// The daemon's size limits: a file this long mixes concerns, a function
/// this long mixes steps.
const MAX_FILE_LINES: usize = 400;
const MAX_FN_LINES: usize = 80;

/// A file's lines before its `#[cfg(test)] mod tests`.
fn non_test_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod tests"))
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

/// Each function in rustfmt-formatted `lines` longer than `max` lines, as
/// (first line, length, signature): a function runs from its `fn` line to
/// the first line after it that closes a block at the `fn`'s indentation.
fn long_functions(lines: &[&str], max: usize) -> Vec<(usize, usize, String)> {
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let is_fn = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "pub(super) fn ",
            "async fn ",
            "pub async fn ",
        ]
        .iter()
        .any(|p| trimmed.starts_with(p));
        if !is_fn || trimmed.ends_with(';') {
            continue;
        }
        let close = " ".repeat(indent) + "}";
        let Some(len) = lines[i + 1..]
            .iter()
            .position(|l| *l == close || l.starts_with(&(close.clone() + ")")))
        else {
            continue;
        };
        if len + 2 > max {
            long.push((i + 1, len + 2, trimmed.to_owned()));
        }
    }
    long
}

#[test]
fn the_daemons_files_and_functions_stay_small() {
    let src = workspace().join("crates/banger-daemon/src");
    let mut too_big = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines = non_test_lines(&text);
            let name = path.strip_prefix(&src).unwrap().display().to_string();
            if lines.len() > MAX_FILE_LINES {
                too_big.push(format!(
                    "{name}: {} lines outside its tests (at most {MAX_FILE_LINES})",
                    lines.len()
                ));
            }
            for (at, len, sig) in long_functions(&lines, MAX_FN_LINES) {
                too_big.push(format!(
                    "{name}:{at}: {len} lines (at most {MAX_FN_LINES}): {sig}"
                ));
            }
        }
    }
    too_big.sort();
    assert!(too_big.is_empty(), "split these:\n{}", too_big.join("\n"));
}

#[test]
fn the_size_check_can_fail() {
    let body = "        step();\n".repeat(MAX_FN_LINES);
    let text = format!(
        "fn short() {{\n}}\n\nimpl X {{\n    pub fn long(&self) {{\n{body}    }}\n}}\n\n#[cfg(test)]\nmod tests {{\n    fn ignored() {{\n{body}    }}\n}}\n"
    );
    let lines = non_test_lines(&text);
    let long = long_functions(&lines, MAX_FN_LINES);
    assert_eq!(long.len(), 1, "{long:?}");
    assert_eq!(long[0].0, 5);
    assert_eq!(long[0].1, MAX_FN_LINES + 2);
}

//! Records the git commit and the build time for `--version`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let repo = manifest_dir.join("../..");
    let commit = git(&repo, &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    // SOURCE_DATE_EPOCH makes reproducible builds reproducible.
    let built = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|secs| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap_or_else(SystemTime::now);
    println!("cargo:rustc-env=BANGER_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=BANGER_BUILT_AT={}",
        humantime::format_rfc3339_seconds(built)
    );
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let git_dir = repo.join(".git");
    for rel in ["HEAD", "index", "packed-refs"] {
        rerun_if_exists(&git_dir.join(rel));
    }
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD"))
        && let Some(reference) = head.strip_prefix("ref: ")
    {
        rerun_if_exists(&git_dir.join(reference.trim()));
    }
}

fn rerun_if_exists(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "build scripts cannot depend on banger-sys"
)]
fn git(repo: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

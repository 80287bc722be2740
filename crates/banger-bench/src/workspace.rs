//! The workspace loop: a bench repository of a few thousand files cut from
//! the kernel sources banger already installs, carried by `vm run PATH` and
//! `vm workspace prepare`, against the shell pipeline a user would write,
//! plus `vm exec` against `vm ssh` and a ten-file export.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Install;
use crate::figures::Figure;

const SOURCES: &str = "/usr/src/linux-source-6.1.tar.xz";
/// Subtrees of the kernel sources: about 5,000 files, 50 MB.
const SUBTREES: [&str; 3] = [
    "linux-source-6.1/fs",
    "linux-source-6.1/net",
    "linux-source-6.1/kernel",
];

/// The bench repository, committed, in `work`; its file count and size.
fn bench_repo(install: &Install, work: &Path) -> Result<(PathBuf, String), String> {
    let repo = work.join("bench-repo");
    std::fs::create_dir_all(&repo).map_err(|e| e.to_string())?;
    let mut args = vec![
        "-xJf".to_owned(),
        SOURCES.to_owned(),
        "--strip-components=1".to_owned(),
    ];
    args.extend(SUBTREES.iter().map(|s| (*s).to_owned()));
    let out = Command::new("tar")
        .args(&args)
        .current_dir(&repo)
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cut the bench repository from {SOURCES}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    install.sh_env(
        "git init -q && git add -A && git -c user.name=bench -c user.email=bench@localhost commit -q -m bench",
        &repo,
    )?;
    let size = install.sh_env(
        "printf '%s files, %s' \"$(git ls-files | wc -l)\" \"$(du -sh --exclude=.git . | cut -f1)\"",
        &repo,
    )?;
    Ok((repo, size))
}

/// Waits (at most a minute) until the guest deletes no old tree in the
/// background: a prepare leaves that work to its emulated CPUs, and the
/// next figure would pay for it.
fn quiet(install: &Install) -> Result<(), String> {
    let wait = "for i in $(seq 600); do grep -qsx rm /proc/[0-9]*/comm || exit 0; sleep 0.1; done";
    install
        .ok(&["vm", "ssh", "wsbench", "--", "sh", "-c", wait])
        .map(drop)
}

fn timed(f: impl FnOnce() -> Result<(), String>) -> Result<Duration, String> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

/// The workspace figures; `e2e` is this run's `vm run --rm -- true`.
pub fn figures(
    install: &Install,
    work: &Path,
    e2e: &Figure,
    runs: usize,
) -> Result<Vec<Figure>, String> {
    let (repo, size) = bench_repo(install, work)?;
    let repo_s = repo.to_str().ok_or("bench path is not UTF-8")?.to_owned();
    eprintln!("bench repository: {size}");
    let mut figs = Vec::new();

    let mut run = Vec::new();
    for _ in 0..runs {
        run.push(install.timed(&["vm", "run", "--rm", &repo_s, "--", "true"])?);
    }
    let run = Figure::durations(&format!("vm run --rm BENCH_REPO -- true ({size})"), &run);
    let ratio = Figure::ratio("vm run with BENCH_REPO / vm run without", &run, e2e);
    figs.extend([run, ratio]);

    install.ok(&["vm", "create", "--name", "wsbench"])?;
    let (mut prepare, mut pipeline) = (Vec::new(), Vec::new());
    let banger = install.bin("banger");
    let pipe = format!(
        "git ls-files -z | tar --null -T - -c | '{}' vm ssh wsbench -- sh -c 'rm -rf /root/plain && mkdir -p /root/plain && tar -x -C /root/plain'",
        banger.display()
    );
    let prep = ["vm", "workspace", "prepare", "wsbench", repo_s.as_str()];
    // Every figure rides the VM's SSH master: none pays the key exchange.
    install.ok(&["vm", "ssh", "wsbench", "--", "true"])?;
    // A first prepare (the guest's workspace removed beforehand, untimed)
    // carries the history too; a prepare again leaves out the objects the
    // guest already holds.
    let mut first = Vec::new();
    for _ in 0..runs {
        quiet(install)?;
        install.ok(&["vm", "ssh", "wsbench", "--", "rm", "-rf", "/root/repo"])?;
        first.push(install.timed(&prep)?);
        quiet(install)?;
        pipeline.push(timed(|| install.sh_env(&pipe, &repo).map(drop))?);
        quiet(install)?;
        prepare.push(install.timed(&prep)?);
    }
    let first = Figure::durations("vm workspace prepare, first (guest holds nothing)", &first);
    let prepare = Figure::durations("vm workspace prepare again, checkout unchanged", &prepare);
    let pipeline = Figure::durations("git ls-files | tar | ssh tar -x (baseline)", &pipeline);
    let first_ratio = Figure::ratio("first prepare / baseline pipeline", &first, &pipeline);
    let ratio = Figure::ratio("prepare again / baseline pipeline", &prepare, &pipeline);
    figs.extend([first, prepare, pipeline, first_ratio, ratio]);

    let (mut exec, mut ssh) = (Vec::new(), Vec::new());
    quiet(install)?;
    for _ in 0..runs.max(15) {
        exec.push(install.timed(&["vm", "exec", "wsbench", "--", "true"])?);
        ssh.push(install.timed(&["vm", "ssh", "wsbench", "--", "true"])?);
    }
    let exec = Figure::durations("vm exec VM -- true", &exec);
    let ssh = Figure::durations("vm ssh VM -- true", &ssh);
    let ratio = Figure::ratio("exec / ssh", &exec, &ssh);
    figs.extend([exec, ssh, ratio]);

    let edit =
        "for f in $(git ls-files 'fs/*.c' | head -n 10); do echo '/* edited */' >> \"$f\"; done";
    install.ok(&["vm", "exec", "wsbench", "--", "sh", "-c", edit])?;
    let mut export = Vec::new();
    for _ in 0..runs {
        export.push(install.timed(&["vm", "workspace", "export", "wsbench"])?);
    }
    figs.push(Figure::durations(
        "vm workspace export, 10 files changed",
        &export,
    ));
    install.ok(&["vm", "delete", "-f", "wsbench"])?;
    Ok(figs)
}

//! banger's benchmark harness. Drives the release binaries beside it, in
//! a private network namespace and a fresh state directory over the
//! artifact cache (`BANGER_CACHE_DIR`), and reports each figure as the
//! median of several runs with min and max: a table on stdout and JSON
//! under `--out` (default `target/bench/`). Needs root (namespace, bridge,
//! taps). Run through `scripts/bench`; `--quick` does one run of each with
//! fewer VMs, only to prove the harness works. The registry figures need
//! Debian's docker-registry, skopeo and umoci.

#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark: it drives banger, ip and qemu as a user would and reports on the terminal"
)]

mod figures;
mod network;
mod oci;
mod owner;
mod plain;
mod workspace;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

use figures::{Figure, Unit};

const NETNS_ENV: &str = "BANGER_BENCH_NETNS";

struct Opts {
    runs: usize,
    quick: bool,
    /// Only the isolation rows (no VM).
    net_only: bool,
    /// VMs in the store for the list benchmark.
    list_vms: usize,
    out: PathBuf,
    bins: PathBuf,
}

fn usage() -> ! {
    eprintln!(
        "usage: banger-bench [--runs N] [--quick] [--net-only] [--out DIR] [--bin-dir DIR]\n\
         needs root; BANGER_CACHE_DIR must be (or will become) a cache with the default kernel and image"
    );
    std::process::exit(2)
}

fn opts() -> Opts {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut o = Opts {
        runs: 5,
        quick: false,
        net_only: false,
        list_vms: 100,
        out: PathBuf::from("target/bench"),
        bins: exe.parent().map(Path::to_owned).unwrap_or_default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => {
                o.runs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| usage());
            }
            "--quick" => o.quick = true,
            "--net-only" => o.net_only = true,
            "--out" => o.out = it.next().map_or_else(|| usage(), PathBuf::from),
            "--bin-dir" => o.bins = it.next().map_or_else(|| usage(), PathBuf::from),
            _ => usage(),
        }
    }
    if o.quick {
        o.runs = 1;
        o.list_vms = 10;
    }
    o
}

fn main() -> ExitCode {
    let opts = opts();
    if std::env::var_os(NETNS_ENV).is_none() {
        return in_private_netns();
    }
    match bench(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("banger-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs this same command again inside a network namespace of its own,
/// removed afterwards with everything still running in it.
fn in_private_netns() -> ExitCode {
    if banger_sys::euid() != 0 {
        eprintln!("banger-bench needs root (a network namespace, a bridge, taps)");
        return ExitCode::FAILURE;
    }
    let ns = format!("banger-bench-{}", std::process::id());
    if !run_quiet("ip", &["netns", "add", &ns]) {
        eprintln!("ip netns add {ns} failed");
        return ExitCode::FAILURE;
    }
    let status = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(std::env::current_exe().unwrap_or_default())
        .args(std::env::args_os().skip(1))
        .env(NETNS_ENV, &ns)
        .status();
    if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: killing what was left in our own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    run_quiet("ip", &["netns", "del", &ns]);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Runs `program args`, insisting on success; its stderr in the error.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A fresh banger installation over the shared artifact cache.
struct Install {
    dir: tempfile::TempDir,
    bins: PathBuf,
    /// Who runs its commands, when not root ([`owner`]).
    owner: Option<owner::Owner>,
}

impl Install {
    fn new(bins: &Path) -> Result<Self, String> {
        for bin in ["banger", "bangerd"] {
            if !bins.join(bin).is_file() {
                return Err(format!(
                    "{} is missing: cargo build --release --workspace --bins",
                    bins.join(bin).display()
                ));
            }
        }
        Ok(Self {
            dir: tempfile::Builder::new()
                .prefix("banger-bench-")
                .tempdir()
                .map_err(|e| format!("temp dir: {e}"))?,
            bins: bins.to_owned(),
            owner: None,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.with_env(&self.bins.join("banger"));
        c.args(args);
        c
    }

    /// `program`, run as the installation's user with its directories.
    fn with_env(&self, program: &Path) -> Command {
        let d = self.dir.path();
        let mut c = match &self.owner {
            Some(owner) => owner.command(program, d),
            None => Command::new(program),
        };
        c.env("BANGER_CONFIG_DIR", d.join("config"))
            .env("BANGER_STATE_DIR", d.join("state"))
            .env("BANGER_RUNTIME_DIR", d.join("run"))
            .env("BANGER_DAEMON_BIN", self.bins.join("bangerd"))
            .stdin(Stdio::null());
        c
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    /// Runs a shell script in `dir` as banger's commands run, insisting on
    /// success; returns stdout.
    fn sh_env(&self, script: &str, dir: &Path) -> Result<String, String> {
        let mut c = self.with_env(Path::new("sh"));
        let out = c
            .args(["-c", script])
            .current_dir(dir)
            .output()
            .map_err(|e| format!("sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn run(&self, args: &[&str]) -> Result<Output, String> {
        self.command(args)
            .output()
            .map_err(|e| format!("run banger: {e}"))
    }

    /// Runs banger, insisting on success; returns stdout.
    fn ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self.run(args)?;
        if !out.status.success() {
            return Err(format!(
                "banger {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Wall time of a successful banger command.
    fn timed(&self, args: &[&str]) -> Result<Duration, String> {
        let t = Instant::now();
        self.ok(args)?;
        Ok(t.elapsed())
    }

    fn show(&self, vm: &str) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.ok(&["vm", "show", vm])?).map_err(|e| e.to_string())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/bangerd.log")).unwrap_or_default()
    }

    /// The daemon's resident set, from /proc.
    fn daemon_rss_kib(&self) -> Result<f64, String> {
        let status: serde_json::Value =
            serde_json::from_str(&self.ok(&["daemon", "status", "-o", "json"])?)
                .map_err(|e| e.to_string())?;
        let pid = status["daemon"]["pid"]
            .as_u64()
            .ok_or_else(|| format!("no pid in {status}"))?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
        figures::vm_rss_kib(&text).ok_or_else(|| format!("no VmRSS for pid {pid}"))
    }

    /// Creates `n` VMs named `prefix-i` without starting them, `at_once`
    /// of them concurrently; returns the wall time.
    fn create_stopped(&self, prefix: &str, n: usize) -> Result<Duration, String> {
        let t = Instant::now();
        let children: Vec<_> = (0..n)
            .map(|i| {
                self.command(&[
                    "vm",
                    "create",
                    "--no-start",
                    &format!("--name={prefix}-{i}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        for mut child in children {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("vm create failed: {}", err.trim()));
            }
        }
        Ok(t.elapsed())
    }

    fn delete(&self, prefix: &str, n: usize) -> Result<(), String> {
        for i in 0..n {
            self.ok(&["vm", "delete", "-f", &format!("{prefix}-{i}")])?;
        }
        Ok(())
    }
}

fn bench(opts: &Opts) -> Result<(), String> {
    let install = Install::new(&opts.bins)?;
    let runs = opts.runs;
    if opts.net_only {
        let figs = network::figures(install.dir.path(), runs)?;
        print!("{}", figures::table(&figs, runs, "none"));
        return Ok(());
    }
    eprintln!("preparing: the default kernel and image, one warm-up VM");
    install.ok(&["kernel", "pull", "generic-6.1"])?;
    install.ok(&["image", "pull", "debian-bookworm"])?;
    // The warm-up makes the initramfs and probes KVM once; its guest
    // reports the kernel command line banger used, for the plain boot.
    let cmdline = install.ok(&["vm", "run", "--rm", "--", "cat", "/proc/cmdline"])?;
    install.ok(&["vm", "create", "--no-start", "--name", "shape"])?;
    let shape = install.show("shape")?;
    install.ok(&["vm", "delete", "shape"])?;
    let accel = figures::last_field(&install.log(), "\"accel\":\"").unwrap_or_default();

    let mut figs = Vec::new();

    eprintln!("the guests' isolation: nft writes and a NAT stream, in namespaces of its own");
    figs.extend(network::figures(install.dir.path(), runs)?);

    eprintln!(
        "vm run --rm -- true as root, and as its owner through bangerd-root, alternately, {runs} runs"
    );
    let owner = owner::OwnerBench::start(&opts.bins, &cache_dir())?;
    let (mut e2e, mut as_owner) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        e2e.push(install.timed(&["vm", "run", "--rm", "--", "true"])?);
        as_owner.push(owner.run()?);
    }
    let overhead = figures::logged_millis(&install.log(), "before_vmm_ms", runs);
    figs.push(Figure::new(
        "create request -> VMM spawned (banger's overhead)",
        Unit::Ms,
        overhead,
    ));
    let e2e = Figure::durations("vm run --rm -- true, end to end", &e2e);

    eprintln!("plain qemu, same kernel and image, to sshd answering, {runs} runs");
    let plain = plain::boot_times(&install, &shape, &cmdline, runs)?;
    let plain = Figure::durations("plain qemu boot to sshd answering", &plain);
    let ratio = Figure::ratio("vm run --rm -- true / plain qemu boot", &e2e, &plain);
    let as_owner = owner.figures(&as_owner, &e2e)?;
    eprintln!("workspaces: vm run PATH, prepare, exec, export, {runs} runs");
    let ws = workspace::figures(&install, install.dir.path(), &e2e, runs)?;
    figs.extend([e2e, plain, ratio]);
    figs.extend(as_owner);
    figs.extend(ws);

    eprintln!("vm create --no-start: 1 alone, 4 at once, {runs} runs");
    let (mut one, mut four) = (Vec::new(), Vec::new());
    for r in 0..runs {
        one.push(install.create_stopped(&format!("one{r}"), 1)?);
        install.delete(&format!("one{r}"), 1)?;
        four.push(install.create_stopped(&format!("four{r}"), 4)?);
        install.delete(&format!("four{r}"), 4)?;
    }
    let one = Figure::durations("vm create --no-start, 1 alone", &one);
    let four = Figure::durations("vm create --no-start, 4 at once (wall)", &four);
    let ratio = Figure::ratio("4 at once / 1 alone (1.0 = no serialisation)", &four, &one);
    figs.extend([one, four, ratio]);

    eprintln!("daemon memory, idle and with 10 VMs defined");
    install.ok(&["daemon", "restart"])?;
    install.ok(&["vm", "list"])?;
    let idle = sample_rss(&install)?;
    install.create_stopped("mem", 10)?;
    let ten = sample_rss(&install)?;
    install.delete("mem", 10)?;
    figs.push(Figure::new("daemon RSS, idle", Unit::Mib, idle));
    figs.push(Figure::new("daemon RSS, 10 VMs defined", Unit::Mib, ten));

    let n = opts.list_vms;
    eprintln!("vm list --output json with {n} VMs");
    for batch in 0..n.div_ceil(10) {
        install.create_stopped(&format!("l{batch}"), 10.min(n - batch * 10))?;
    }
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&install.ok(&["vm", "list", "--output", "json"])?)
            .map_err(|e| e.to_string())?;
    if listed.len() != n {
        return Err(format!("vm list shows {} VMs, not {n}", listed.len()));
    }
    let mut list = Vec::new();
    for _ in 0..runs.max(5) {
        list.push(install.timed(&["vm", "list", "--output", "json"])?);
    }
    figs.push(Figure::durations(
        &format!("vm list --output json, {n} VMs (CLI round trip)"),
        &list,
    ));

    eprintln!("image pull from a registry on loopback vs skopeo + umoci + mkfs.ext4, {runs} runs");
    figs.extend(oci::figures(&install, &cache_dir(), runs)?);
    install.ok(&["daemon", "stop"])?;

    let report = figures::report(&figs, runs, opts.quick, &accel);
    print!("{}", figures::table(&figs, runs, &accel));
    let path = figures::write_json(&opts.out, &report)?;
    println!("written: {}", path.display());
    Ok(())
}

/// The artifact cache the installation uses (banger's own resolution).
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BANGER_CACHE_DIR") {
        return dir.into();
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_default()
        .join("banger")
}

/// Five samples of the daemon's RSS 100 ms apart, in MiB.
fn sample_rss(install: &Install) -> Result<Vec<f64>, String> {
    (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            install.daemon_rss_kib().map(|k| k / 1024.0)
        })
        .collect()
}

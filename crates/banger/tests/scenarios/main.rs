//! The end-to-end scenario suite: the release binaries against real VMs
//! (QEMU, TCG here), each scenario in an installation and a network
//! namespace of its own, so bridges, taps and NAT rules never touch the
//! host.
//!
//! `cargo test -p banger --test scenarios -- [--jobs N] [--list] [FILTER...]`
//! (`BANGER_E2E_JOBS`, `BANGER_E2E_BIN_DIR` work too). Independent
//! scenarios run `N` at a time (default 2); global ones (acting on every
//! VM, or on the daemon) run alone afterwards. A failure prints the
//! scenario's daemon log tail and each VM's console tail.
//!
//! The kernel and image come from the shared cache under
//! `~/.cache/banger-test/`, keyed by recipe hash and built on a cold run.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test runner: it reports on stdout and panics on broken setup"
)]

mod bench;
#[path = "../common/mod.rs"]
mod common;
mod daemon;
mod failures;
mod images;
mod lifecycle;
mod names;
mod privileges;
mod support;
mod workspace;

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Env;
use support::Scenario;

fn all() -> Vec<Scenario> {
    let mut all = Vec::new();
    all.extend(lifecycle::scenarios());
    all.extend(names::scenarios());
    all.extend(failures::scenarios());
    all.extend(daemon::scenarios());
    all.extend(images::scenarios());
    all.extend(workspace::scenarios());
    all.extend(privileges::scenarios());
    all.extend(bench::scenarios());
    all
}

struct Args {
    jobs: usize,
    list: bool,
    filters: Vec<String>,
}

fn args() -> Args {
    let mut parsed = Args {
        jobs: std::env::var("BANGER_E2E_JOBS")
            .ok()
            .and_then(|j| j.parse().ok())
            .unwrap_or(2),
        list: false,
        filters: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--jobs" | "-j" => {
                let n = it.next().and_then(|n| n.parse().ok());
                parsed.jobs = n.filter(|n| *n > 0).unwrap_or_else(|| {
                    eprintln!("--jobs needs a positive number");
                    std::process::exit(2)
                });
            }
            "--list" => parsed.list = true,
            // What cargo test passes to every test binary.
            a if a.starts_with('-') => {}
            filter => parsed.filters.push(filter.to_owned()),
        }
    }
    parsed
}

/// The release binaries, beside the debug ones unless overridden.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BANGER_E2E_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let debug = Path::new(env!("CARGO_BIN_EXE_banger")).parent().unwrap();
    debug.parent().unwrap().join("release")
}

thread_local! {
    /// The last panic on this thread, for the report.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

struct Outcome {
    name: &'static str,
    passed: bool,
    secs: f64,
}

fn main() {
    let args = args();
    let mut scenarios = all();
    if !args.filters.is_empty() {
        scenarios.retain(|s| args.filters.iter().any(|f| s.name.contains(f.as_str())));
    }
    if args.list {
        for s in &scenarios {
            println!("{}{}", s.name, if s.global { " (global)" } else { "" });
        }
        return;
    }
    let started = Instant::now();
    let bins = bin_dir();
    let suite = Suite::prepare(&bins);
    // Set once the suite is ready: a panic while preparing it is printed.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| {
                info.payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
            })
            .unwrap_or_default();
        PANIC.with(|p| *p.borrow_mut() = Some(format!("panicked at {at}:\n{msg}")));
    }));

    let (parallel, global): (Vec<_>, Vec<_>) = scenarios.iter().partition(|s| !s.global);
    println!(
        "\nrunning {} scenarios ({} in parallel, {} jobs; {} global), binaries from {}\n{}",
        scenarios.len(),
        parallel.len(),
        args.jobs,
        global.len(),
        bins.display(),
        suite.owner.as_ref().map_or_else(
            || "daemons run as root (BANGER_E2E_AS_ROOT)".to_owned(),
            |(u, _)| format!(
                "daemons run as {} (uid {}) through bangerd-root, but for scenarios that need root",
                u.name, u.uid
            )
        )
    );

    let outcomes = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..args.jobs.min(parallel.len().max(1)) {
            s.spawn(|| {
                while let Some(sc) = parallel.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = suite.run(sc);
                    outcomes.lock().unwrap().push(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap();
    for sc in global {
        outcomes.push(suite.run(sc));
    }
    let leaks = suite.host_leftovers();
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let mut failed = outcomes.len() - passed;
    if leaks.is_empty() {
        println!("after the suite: no banger process, namespace, tap or rule left");
    } else {
        failed += 1;
        println!("after the suite, left behind:\n  {}", leaks.join("\n  "));
    }
    let mut slowest: Vec<_> = outcomes.iter().collect();
    slowest.sort_by(|a, b| b.secs.total_cmp(&a.secs));
    println!(
        "slowest: {}",
        slowest
            .iter()
            .take(3)
            .map(|o| format!("{} {:.1} s", o.name, o.secs))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The same line as libtest's, which scripts/test counts.
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    // Before exiting: the suite's user and directories go with it.
    drop(suite);
    if failed > 0 {
        std::process::exit(101);
    }
}

/// The directory every installation lives under: traversable (not
/// listable) by others, so an unprivileged daemon reaches its own.
fn suite_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::Builder::new()
        .prefix("banger-e2e-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    root
}

/// What every scenario shares: the binaries, the artifact cache and one
/// directory under which all their installations live.
struct Suite {
    bins: PathBuf,
    cache: PathBuf,
    /// The user whose daemons (through the root helper) run every scenario
    /// not marked `needs_root`, with a copy of the cache of their own; `None`
    /// runs them as root (`BANGER_E2E_AS_ROOT=1`).
    owner: Option<(common::TestUser, PathBuf)>,
    root: tempfile::TempDir,
    print: Mutex<()>,
    /// The host namespace's banger links and rules before the suite: a VM
    /// `scripts/setup` left running (and its bridge) is not the suite's.
    before: Vec<String>,
}

impl Suite {
    fn prepare(bins: &Path) -> Self {
        assert!(
            banger_testutil::have_root("the scenario suite"),
            "the scenarios need root (bridges, taps, network namespaces)"
        );
        let root = common::cache_root();
        std::fs::create_dir_all(&root).unwrap();
        // Pulls the catalog kernel and image into the shared cache once.
        let env = Env::persistent(&root).using(bins);
        env.ok(&["kernel", "pull", "generic-6.1"]);
        env.ok(&["image", "pull", "debian-bookworm"]);
        env.ok(&["daemon", "stop"]);
        let suite_dir = suite_root();
        // The supported mode: daemons as their owner, the network through
        // bangerd-root.
        let owner = std::env::var_os("BANGER_E2E_AS_ROOT").is_none().then(|| {
            support::tun_for_everyone();
            let user = common::TestUser::create();
            let cache = suite_dir.path().join("cache-owner");
            support::copy_cache_for(&root.join("cache"), &cache, user.uid, user.gid);
            (user, cache)
        });
        Self {
            bins: bins.to_owned(),
            cache: root.join("cache"),
            owner,
            root: suite_dir,
            print: Mutex::new(()),
            before: support::host_network_leftovers(),
        }
    }

    fn run(&self, sc: &Scenario) -> Outcome {
        let started = Instant::now();
        let user = sc.unprivileged.then(common::TestUser::create);
        let owner = self
            .owner
            .as_ref()
            .filter(|_| !sc.as_root && !sc.unprivileged);
        let own = self.root.path().join(format!("cache-{}", sc.name));
        let cache = match (&user, owner) {
            (Some(user), _) => {
                support::copy_cache_for(&self.cache, &own, user.uid, user.gid);
                own.clone()
            }
            (None, Some((owner, shared))) if sc.own_cache => {
                support::link_tree(shared, &own);
                support::chown_tree(&own, owner.uid, owner.gid);
                own.clone()
            }
            (None, Some((_, shared))) => shared.clone(),
            (None, None) if sc.own_cache => {
                support::link_tree(&self.cache, &own);
                own.clone()
            }
            (None, None) => self.cache.clone(),
        };
        let mut env = Env::isolated_in(self.root.path(), &cache).using(&self.bins);
        if let Some(user) = &user {
            env = env.run_by(user.uid, user.gid);
        }
        if let Some((owner, _)) = owner {
            env = env.run_by(owner.uid, owner.gid);
            env.start_helper();
        }
        // Three TCG guests booting at once beside another scenario's take
        // about 20 s here; a broken boot should fail well before CI's limit.
        env.write_config("boot_timeout_secs = 300\nstop_timeout_secs = 60\n");
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| (sc.run)(&env)));
        let secs = started.elapsed().as_secs_f64();
        {
            let _out = self.print.lock().unwrap_or_else(|e| e.into_inner());
            match &result {
                Ok(()) => println!("scenario {} ... ok ({secs:.1} s)", sc.name),
                Err(_) => {
                    let why = PANIC
                        .with(|p| p.borrow_mut().take())
                        .unwrap_or_else(|| "panicked".to_owned());
                    println!("scenario {} ... FAILED ({secs:.1} s)\n{why}", sc.name);
                    println!("{}", support::failure_context(&env));
                }
            }
        }
        drop(env);
        drop(user);
        if cache == own {
            let _ = std::fs::remove_dir_all(&cache);
        }
        Outcome {
            name: sc.name,
            passed: result.is_ok(),
            secs,
        }
    }

    /// What the whole run left on the host: processes started under the
    /// suite's directory, its network namespaces, taps or NAT rules in
    /// the host's own namespace that were not there before it.
    fn host_leftovers(&self) -> Vec<String> {
        // Dropped installations kill what they started; give it a moment.
        let root = self.root.path().to_string_lossy().into_owned();
        banger_testutil::wait_until(Duration::from_secs(5), || {
            banger_sys::process::groups_mentioning(Path::new("/proc"), &root).is_empty()
        });
        let mut leaks: Vec<String> =
            banger_sys::process::groups_mentioning(Path::new("/proc"), &root)
                .into_iter()
                .map(|g| format!("process group {g} under {root}"))
                .collect();
        leaks.extend(
            support::host_network_leftovers()
                .into_iter()
                .filter(|l| !self.before.contains(l)),
        );
        leaks
    }
}

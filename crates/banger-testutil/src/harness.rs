//! A libtest-shaped runner for test binaries that need their own `main`
//! (to act as a fake program, or as a peer under another uid, when run
//! with a marker): the same `test NAME ... ok` and `test result:` lines,
//! so `scripts/test` counts them like any other.

use std::time::Instant;

/// A named test.
pub type Test = (&'static str, fn());

/// Runs the `tests` whose names contain one of the non-flag `args` (all
/// when none), one after another; exits 101 when any failed.
#[allow(clippy::print_stdout, reason = "libtest's lines go to stdout")]
pub fn run(tests: &[Test], args: &[String]) {
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let started = Instant::now();
    let chosen: Vec<&Test> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let mut failed = Vec::new();
    for (name, test) in &chosen {
        let result = std::panic::catch_unwind(test);
        println!(
            "test {name} ... {}",
            if result.is_ok() { "ok" } else { "FAILED" }
        );
        if result.is_err() {
            failed.push(*name);
        }
    }
    let passed = chosen.len() - failed.len();
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        tests.len() - chosen.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

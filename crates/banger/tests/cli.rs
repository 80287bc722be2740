//! The CLI and the daemon as a user meets them: the release-shaped binaries
//! run as processes against an isolated state directory.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "integration tests: each file is a test crate of its own"
)]

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use banger_testutil::wait_until;
use common::{Env, bangerd_bin, kill, stderr};

#[test]
fn vm_list_on_empty_state_starts_the_daemon_and_prints_an_empty_table() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    assert_eq!(env.daemon_pid(), None);
    assert_eq!(
        env.ok(&["vm", "list"]),
        "NAME  STATE  IP  IMAGE  WORKSPACE  CREATED  ID\n"
    );
    let pid = env
        .daemon_pid()
        .expect("vm list must have started the daemon");
    assert!(banger_sys::pid_alive(pid));
    assert_eq!(env.ok(&["vm", "list", "--output", "json"]).trim(), "[]");
    assert_eq!(env.ok(&["vm", "ls", "-o", "json"]).trim(), "[]");
    assert_eq!(
        env.daemon_pid(),
        Some(pid),
        "the second call reuses the daemon"
    );
    for dir in ["state", "cache", "run"] {
        let mode = std::fs::metadata(env.path(dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{dir}");
    }
    let mode = std::fs::metadata(env.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(env.path("state/state.db").is_file());
}

/// The daemon the CLI starts inherits none of the caller's environment but
/// what places its directories, and a fixed PATH.
#[test]
fn a_started_daemon_gets_a_clean_environment() {
    let env = Env::new();
    let out = env
        .command(&env.bin("banger"), &["vm", "list"])
        .env("LD_LIBRARY_PATH", "/nonexistent-banger-leak")
        .env(
            "PATH",
            format!(
                "/nonexistent-banger-path:{}",
                std::env::var("PATH").unwrap()
            ),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = env.daemon_pid().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let vars: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        !vars.iter().any(|v| v.starts_with("LD_LIBRARY_PATH=")),
        "{vars:?}"
    );
    assert!(
        vars.contains(&format!("PATH={}", banger_client::autostart::DAEMON_PATH)),
        "{vars:?}"
    );
    assert!(
        vars.iter().any(|v| v.starts_with("BANGER_STATE_DIR=")),
        "{vars:?}"
    );
}

#[test]
fn sigkilled_daemon_is_replaced_on_the_next_command() {
    let env = Env::new();
    env.ok(&["vm", "list"]);
    let first = env.daemon_pid().unwrap();
    kill(first, libc::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), || {
        !banger_sys::pid_alive(first)
    }));
    assert!(
        env.socket().exists(),
        "a SIGKILLed daemon leaves its socket behind"
    );

    assert_eq!(env.ok(&["vm", "list", "-o", "json"]).trim(), "[]");
    let second = env.daemon_pid().unwrap();
    assert_ne!(first, second);
    assert!(banger_sys::pid_alive(second));
}

#[test]
fn second_bangerd_refuses_clearly_and_leaves_the_first_untouched() {
    let env = Env::new();
    env.ok(&["daemon", "start"]);
    let first = env.daemon_pid().unwrap();
    let out = env.command(&bangerd_bin(), &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("another bangerd (pid {first}) is already serving")),
        "{err}"
    );
    assert!(err.contains(&env.socket().display().to_string()), "{err}");
    assert_eq!(env.daemon_pid(), Some(first));
    assert!(env.socket().exists());
    let status = env.ok(&["daemon", "status", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["daemon"]["pid"], first);
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let env = Env::new();
    env.ok(&["daemon", "start"]);
    let pid = env.daemon_pid().unwrap();
    kill(pid, libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(10), || {
        !banger_sys::pid_alive(pid)
    }));
    assert!(!env.socket().exists(), "socket removed on clean shutdown");
    let log = std::fs::read_to_string(env.log()).unwrap();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("bangerd stopped"), "{log}");
}

#[test]
fn daemon_start_stop_restart_and_status() {
    let env = Env::new();
    let out = env.banger(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));

    assert!(
        env.ok(&["daemon", "start"])
            .starts_with("bangerd started (pid ")
    );
    let first = env.daemon_pid().unwrap();
    assert!(
        env.ok(&["daemon", "start"])
            .starts_with("bangerd already running")
    );
    let status = env.ok(&["daemon", "status"]);
    assert!(status.contains(&format!("pid:     {first}")), "{status}");

    let restarted = env.ok(&["daemon", "restart"]);
    assert!(
        restarted.contains(&format!("bangerd stopped (pid {first})")),
        "{restarted}"
    );
    let second = env.daemon_pid().unwrap();
    assert_ne!(first, second);
    assert!(!banger_sys::pid_alive(first));

    assert_eq!(
        env.ok(&["daemon", "stop"]),
        format!("bangerd stopped (pid {second})\n")
    );
    assert!(!banger_sys::pid_alive(second));
    assert!(!env.socket().exists());
    assert_eq!(env.ok(&["daemon", "stop"]), "bangerd is not running\n");
    assert_eq!(env.banger(&["daemon", "status"]).status.code(), Some(3));
}

#[test]
fn concurrent_commands_on_a_fresh_state_share_one_daemon() {
    let env = Env::new();
    let results: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| env.banger(&["vm", "list", "-o", "json"])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &results {
        assert!(out.status.success(), "{}", stderr(out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    }
    let pid = env.daemon_pid().unwrap();
    // Losers of the race exit at once; only the winner stays.
    let run_dir = env.path("run");
    let daemons = wait_until(Duration::from_secs(5), || {
        bangerd_processes(&run_dir) == vec![pid]
    });
    assert!(
        daemons,
        "expected only pid {pid}, found {:?}",
        bangerd_processes(&run_dir)
    );
}

/// Live bangerd processes whose environment points at `run_dir`.
fn bangerd_processes(run_dir: &Path) -> Vec<u32> {
    let needle = format!("BANGER_RUNTIME_DIR={}", run_dir.display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if comm.trim() == "bangerd"
            && banger_sys::pid_alive(pid)
            && environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn version_flag_is_one_line_and_version_command_reports_the_daemon() {
    let env = Env::new();
    let line = env.ok(&["--version"]);
    assert_eq!(line.lines().count(), 1, "{line}");
    let line = line.trim_end();
    let rest = line
        .strip_prefix(&format!("banger {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, built) = rest.split_once(", built ").unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
    let built = built.strip_suffix(')').unwrap();
    assert!(
        built.len() == 20 && built.ends_with('Z') && &built[10..11] == "T",
        "{built}"
    );

    let text = env.ok(&["version"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("banger {}", env!("CARGO_PKG_VERSION")));
    assert!(lines[1].starts_with("commit: "), "{text}");
    assert!(lines[2].starts_with("built:  "), "{text}");
    assert_eq!(lines[3], "daemon: not running");
    assert_eq!(
        env.daemon_pid(),
        None,
        "`version` must not start the daemon"
    );

    env.ok(&["daemon", "start"]);
    let text = env.ok(&["version"]);
    let pid = env.daemon_pid().unwrap();
    assert!(
        text.contains(&format!("daemon: bangerd {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains(&format!("pid {pid}")), "{text}");

    let out = env
        .command(&bangerd_bin(), &["--version"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("bangerd "),
        "bangerd --version"
    );
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    let env = Env::new();
    assert!(env.ok(&["completion", "bash"]).contains("_banger()"));
    assert!(
        env.ok(&["completion", "zsh"])
            .starts_with("#compdef banger")
    );
    assert!(
        env.ok(&["completion", "fish"])
            .contains("complete -c banger")
    );
    let out = env.banger(&["completion", "tcsh"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("tcsh"));
}

#[test]
fn bad_config_value_is_an_error_naming_key_and_file_and_starts_nothing() {
    let env = Env::new();
    env.write_config("log_level = \"loud\"\n");
    let out = env.banger(&["vm", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("`log_level`"), "{err}");
    assert!(
        err.contains(&env.path("config/config.toml").display().to_string()),
        "{err}"
    );
    assert_eq!(env.daemon_pid(), None);
}

#[test]
fn unknown_config_key_is_a_warning_and_the_command_runs() {
    let env = Env::new();
    env.write_config("log_level = \"debug\"\nlog_levle = \"info\"\n");
    let out = env.banger(&["vm", "list", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: config file"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("unknown key `log_levle`"),
        "{}",
        stderr(&out)
    );
    // The daemon logs the warning too, and honours log_level = debug.
    let log = std::fs::read_to_string(env.log()).unwrap();
    assert!(log.contains("unknown key `log_levle`"), "{log}");
    assert!(
        log.contains("\"request completed\""),
        "debug request lines expected: {log}"
    );
}

#[test]
fn store_from_a_newer_banger_is_refused_with_a_clear_error() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("state")).unwrap();
    let db = env.path("state/state.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 999;")
            .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let out = env.banger(&["vm", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("schema version 999"), "{err}");
    assert!(err.contains("upgrade banger"), "{err}");
    assert!(err.contains(&env.log().display().to_string()), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert_eq!(env.daemon_pid(), None);
}

#[test]
fn daemon_logs_prints_json_lines_with_op_ids() {
    let env = Env::new();
    env.write_config("log_level = \"debug\"\n");
    env.ok(&["vm", "list"]);
    let text = env.ok(&["daemon", "logs", "-n", "0"]);
    let mut with_op = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["fields"]["message"] == "request completed" {
            assert!(
                v["span"]["op_id"].as_str().unwrap().starts_with("op-"),
                "{line}"
            );
            with_op += 1;
        }
    }
    assert!(with_op >= 2, "ping and list requests expected: {text}");
    assert_eq!(env.ok(&["daemon", "logs", "-n", "1"]).lines().count(), 1);
}

#[test]
fn help_teaches_the_commands() {
    let env = Env::new();
    let help = env.ok(&["--help"]);
    for word in ["vm", "daemon", "version", "completion", "BANGER_STATE_DIR"] {
        assert!(help.contains(word), "{word} missing from --help: {help}");
    }
    let help = env.ok(&["daemon", "status", "--help"]);
    assert!(
        help.contains("Exits 0 when it runs, 3 when it does not"),
        "{help}"
    );
}

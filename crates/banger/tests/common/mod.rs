//! The harness shared by the CLI's end-to-end tests: an isolated banger
//! installation driven through the real binaries.

#![allow(dead_code, reason = "each test crate uses a different part")]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use banger_testutil::wait_until;

/// One isolated banger installation: its own four directories.
pub struct Env {
    dir: tempfile::TempDir,
    /// Directories that outlive the test (a shared artifact cache), if any.
    fixed: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl Env {
    pub fn new() -> Self {
        let bangerd = bangerd_bin();
        assert!(
            bangerd.is_file(),
            "{} is missing: build the workspace first (`cargo build --workspace`)",
            bangerd.display()
        );
        Self {
            dir: tempfile::tempdir().unwrap(),
            fixed: None,
        }
    }

    /// An installation whose config, state and cache live under `root`
    /// and survive the test; only the runtime directory is fresh.
    pub fn persistent(root: &Path) -> Self {
        let mut env = Self::new();
        env.fixed = Some((root.join("config"), root.join("state"), root.join("cache")));
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        if let Some((config, state, cache)) = &self.fixed {
            for (prefix, dir) in [("config", config), ("state", state), ("cache", cache)] {
                if rel == prefix {
                    return dir.clone();
                }
                if let Some(rest) = rel.strip_prefix(&format!("{prefix}/")) {
                    return dir.join(rest);
                }
            }
        }
        self.dir.path().join(rel)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("run/bangerd.sock")
    }

    pub fn log(&self) -> PathBuf {
        self.path("state/bangerd.log")
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "the test drives the binaries under test"
    )]
    pub fn command(&self, program: &Path, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .env("BANGER_CONFIG_DIR", self.path("config"))
            .env("BANGER_STATE_DIR", self.path("state"))
            .env("BANGER_CACHE_DIR", self.path("cache"))
            .env("BANGER_RUNTIME_DIR", self.path("run"))
            .env("BANGER_DAEMON_BIN", bangerd_bin())
            .env_remove("BANGER_LOG");
        cmd
    }

    pub fn banger(&self, args: &[&str]) -> Output {
        self.command(Path::new(env!("CARGO_BIN_EXE_banger")), args)
            .output()
            .unwrap()
    }

    /// Runs banger and insists it succeeded; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.banger(args);
        assert!(
            out.status.success(),
            "banger {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The pid recorded by the running daemon, if one runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        banger_sys::InstanceLock::holder(&self.path("state/bangerd.lock"))
    }

    pub fn write_config(&self, text: &str) {
        std::fs::create_dir_all(self.path("config")).unwrap();
        std::fs::write(self.path("config/config.toml"), text).unwrap();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            kill(pid, libc::SIGKILL);
            wait_until(Duration::from_secs(5), || !banger_sys::pid_alive(pid));
        }
    }
}

pub fn bangerd_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_banger")).with_file_name("bangerd")
}

pub fn kill(pid: u32, signal: i32) {
    // SAFETY: sending a signal to a daemon this test started.
    unsafe { libc::kill(i32::try_from(pid).unwrap(), signal) };
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

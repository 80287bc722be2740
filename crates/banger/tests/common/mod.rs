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
    /// A shared artifact cache under an otherwise fresh installation.
    cache: Option<PathBuf>,
    /// The network namespace every command runs in, if any.
    netns: Option<Netns>,
    /// Where `banger` and `bangerd` are: the debug build unless `using`.
    bin_dir: PathBuf,
    /// The unprivileged user (uid, gid) every command runs as, if not root.
    user: Option<(u32, u32)>,
    /// The root helper, once started.
    helper: std::sync::Mutex<Option<std::process::Child>>,
}

impl Env {
    pub fn new() -> Self {
        let env = Self::in_dir(tempfile::tempdir().unwrap());
        let debug = env.bin_dir.clone();
        env.using(&debug)
    }

    /// Binaries default to the debug build, unchecked until `using`.
    fn in_dir(dir: tempfile::TempDir) -> Self {
        Self {
            dir,
            fixed: None,
            cache: None,
            netns: None,
            bin_dir: bangerd_bin().parent().unwrap().to_owned(),
            user: None,
            helper: std::sync::Mutex::new(None),
        }
    }

    /// Drives the `banger` and `bangerd` found in `bin_dir` instead.
    pub fn using(mut self, bin_dir: &Path) -> Self {
        for bin in ["banger", "bangerd"] {
            let path = bin_dir.join(bin);
            assert!(
                path.is_file(),
                "{} is missing: build the workspace first (`cargo build --workspace --bins`, with --release for the scenarios)",
                path.display()
            );
        }
        self.bin_dir = bin_dir.to_owned();
        self
    }

    /// A fresh installation under `parent` over the shared artifact
    /// `cache`, whose every command (and so its daemon and VMs) runs in a
    /// private network namespace removed when the Env is dropped.
    pub fn isolated_in(parent: &Path, cache: &Path) -> Self {
        let mut env = Self::in_dir(tempfile::tempdir_in(parent).unwrap());
        env.cache = Some(cache.to_owned());
        env.netns = Some(Netns::new());
        env
    }

    /// Runs every command (and so the daemon and its VMMs) as `uid`:`gid`,
    /// which owns the installation's directories; the Env's own directory
    /// stays root's, and holds the root helper's socket (see
    /// [`Env::start_helper`]). The cache must already be the user's.
    pub fn run_by(mut self, uid: u32, gid: u32) -> Self {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["config", "state", "run", "home"] {
            let dir = self.path(sub);
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        self.user = Some((uid, gid));
        self
    }

    /// The user (uid, gid) commands run as, if not root.
    pub fn user(&self) -> Option<(u32, u32)> {
        self.user
    }

    /// Hands what the test made as root at `path` (all of it, and each
    /// directory between it and the Env's own) to the Env's user, as if
    /// they had made it: their git refuses a checkout of someone else's.
    /// Nothing for an Env run by root.
    #[allow(clippy::disallowed_methods, reason = "test setup runs chown")]
    pub fn give(&self, path: &Path) {
        let Some((uid, gid)) = self.user else {
            return;
        };
        let root = self.dir.path();
        assert!(
            path.starts_with(root)
                && path != root
                && !path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir),
            "{} is not inside the Env",
            path.display()
        );
        let out = std::process::Command::new("chown")
            .args(["-R", "-h", &format!("{uid}:{gid}")])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "chown: {}", stderr(&out));
        for dir in path.ancestors().skip(1).take_while(|d| *d != root) {
            std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).unwrap();
        }
    }

    /// The root helper's socket, for an Env [`Env::run_by`].
    pub fn helper_socket(&self) -> PathBuf {
        self.path("helper/bangerd-root.sock")
    }

    /// Starts `bangerd-root` (as root, in the Env's namespace) for the
    /// Env's user; it ends with the namespace.
    #[allow(
        clippy::disallowed_methods,
        reason = "the test runs the helper under test"
    )]
    pub fn start_helper(&self) {
        let (uid, _) = self.user.expect("an Env run_by a user");
        let ns = self.netns.as_ref().expect("an Env isolated_in a namespace");
        let socket = self.helper_socket();
        let log = std::fs::File::create(self.path("helper.log")).unwrap();
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(self.bin("bangerd-root"))
            .args(["--owner", &uid.to_string(), "--socket"])
            .arg(&socket)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn bangerd-root");
        *self.helper.lock().unwrap() = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), || socket.exists()),
            "bangerd-root did not listen: {}",
            std::fs::read_to_string(self.path("helper.log")).unwrap_or_default()
        );
    }

    /// Runs `program args` in the Env's network namespace.
    pub fn in_netns(&self, program: &str, args: &[&str]) -> Output {
        self.netns
            .as_ref()
            .expect("an Env made by isolated_with_cache")
            .run(program, args)
    }

    /// Starts `program args` in the Env's network namespace, in the
    /// background (the namespace's removal kills it at the latest).
    #[allow(clippy::disallowed_methods, reason = "a test server in the namespace")]
    pub fn spawn_in_netns(&self, program: &str, args: &[&str]) -> std::process::Child {
        let ns = self
            .netns
            .as_ref()
            .expect("an Env made by isolated_with_cache");
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0, program])
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run ip netns exec")
    }

    /// An installation whose config, state and cache live under `root`
    /// and survive the test; only the runtime directory is fresh.
    pub fn persistent(root: &Path) -> Self {
        let mut env = Self::in_dir(tempfile::tempdir().unwrap());
        env.fixed = Some((root.join("config"), root.join("state"), root.join("cache")));
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        if let Some(cache) = &self.cache {
            if rel == "cache" {
                return cache.clone();
            }
            if let Some(rest) = rel.strip_prefix("cache/") {
                return cache.join(rest);
            }
        }
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

    /// A binary beside the `banger` this Env drives.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
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
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", &ns.0].map(Into::into));
        }
        if let Some((uid, gid)) = self.user {
            let (uid, gid) = (uid.to_string(), gid.to_string());
            argv.extend(
                [
                    "setpriv",
                    "--reuid",
                    &uid,
                    "--regid",
                    &gid,
                    "--clear-groups",
                    "--",
                ]
                .map(Into::into),
            );
        }
        argv.push(program.into());
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        if self.user.is_some() {
            // The test's own directory may be closed to the user (as
            // /root is), and a program that reads its cwd (python -m)
            // would fail in it.
            cmd.env("HOME", self.path("home"))
                .env("BANGER_HELPER_SOCKET", self.helper_socket())
                .current_dir(self.path("home"));
        }
        cmd.args(args)
            .env("BANGER_CONFIG_DIR", self.path("config"))
            .env("BANGER_STATE_DIR", self.path("state"))
            .env("BANGER_CACHE_DIR", self.path("cache"))
            .env("BANGER_RUNTIME_DIR", self.path("run"))
            .env("BANGER_DAEMON_BIN", self.bin_dir.join("bangerd"))
            .env_remove("BANGER_LOG");
        cmd
    }

    pub fn banger(&self, args: &[&str]) -> Output {
        self.command(&self.bin_dir.join("banger"), args)
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
        if let Some(mut helper) = self.helper.lock().unwrap().take() {
            let _ = helper.kill();
            let _ = helper.wait();
        }
        if let Some(pid) = self.daemon_pid() {
            kill(pid, libc::SIGKILL);
            wait_until(Duration::from_secs(5), || !banger_sys::pid_alive(pid));
        }
        // VMMs outlive daemons by design; a test's must not outlive it.
        let state = self.path("state");
        for pgid in
            banger_sys::process::groups_mentioning(Path::new("/proc"), &state.to_string_lossy())
        {
            kill_group(pgid);
        }
    }
}

pub use banger_testutil::netns::Netns;

pub fn kill_group(pgid: u32) {
    // SAFETY: signalling a process group this test's installation started.
    unsafe { libc::kill(-i32::try_from(pgid).unwrap(), libc::SIGKILL) };
}

/// The shared artifact cache (kernel and image), keyed by their recipes.
/// The shared cache of the real kernel and golden image, keyed by their
/// recipes and by the source of the code that builds them, so a change to
/// either is built afresh without anyone bumping a version by hand.
pub fn cache_root() -> PathBuf {
    use banger_artifacts::catalog::Catalog;
    use sha2::{Digest, Sha256};
    let catalog = Catalog::embedded();
    let mut hasher = Sha256::new();
    hasher.update(catalog.kernels[0].recipe_hash());
    hasher.update(catalog.images[0].recipe_hash());
    let builder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../banger-artifacts/src");
    for file in BUILDER_SOURCES {
        let text = std::fs::read(builder.join(file))
            .unwrap_or_else(|e| panic!("read the builder's source {file}: {e}"));
        hasher.update(file.as_bytes());
        hasher.update(&text);
    }
    let key: String = hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache/banger-test").join(key)
}

/// The files of banger-artifacts whose code decides what a kernel or image
/// build produces.
const BUILDER_SOURCES: &[&str] = &["kernel.rs", "image.rs", "ext4.rs"];

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

/// A throwaway system user (no login), removed on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// `bgtest<pid>u<n>`, with no home.
    pub fn create() -> Self {
        Self::with_home(None)
    }

    /// `bgtest<pid>u<n>`, whose home is `home` (made, and the user's).
    #[allow(clippy::disallowed_methods, reason = "test setup runs useradd")]
    pub fn with_home(home: Option<&Path>) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = &format!("bgtest{}u{n}", std::process::id());
        let mut cmd = std::process::Command::new("useradd");
        cmd.args(["--system", "--user-group", "--shell", "/usr/sbin/nologin"]);
        match home {
            Some(home) => cmd.arg("--create-home").arg("--home-dir").arg(home),
            None => cmd.arg("--no-create-home"),
        };
        let out = cmd.arg(name).output().expect("run useradd (passwd)");
        assert!(out.status.success(), "useradd {name}: {}", stderr(&out));
        let id = |flag: &str| -> u32 {
            let out = std::process::Command::new("id")
                .args([flag, name])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        Self {
            name: name.to_owned(),
            uid: id("-u"),
            gid: id("-g"),
        }
    }
}

impl Drop for TestUser {
    #[allow(clippy::disallowed_methods, reason = "test cleanup runs userdel")]
    fn drop(&mut self) {
        // A process of theirs still running makes userdel refuse: say so
        // (the suite's leftover check then names the process).
        match std::process::Command::new("userdel")
            .arg(&self.name)
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("userdel {}: {}", self.name, stderr(&out)),
            Err(e) => eprintln!("userdel {}: {e}", self.name),
        }
    }
}

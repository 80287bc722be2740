//! A network namespace of the test's own: every network test runs in one,
//! so nothing it creates or sends reaches the host's namespace.

use std::process::Output;

/// A network namespace (loopback up), deleted on drop with everything
/// still running in it.
#[derive(Debug)]
pub struct Netns(pub String);

impl Netns {
    /// Creates `bgtest-<pid>-<n>`.
    #[allow(clippy::disallowed_methods, reason = "test setup runs ip")]
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("bgtest-{}-{n}", std::process::id());
        let out = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip (iproute2)");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Self(name);
        let up = ns.run("ip", &["link", "set", "lo", "up"]);
        assert!(up.status.success(), "bring lo up in {}", ns.0);
        ns
    }

    /// Runs `program args` inside the namespace; returns its output.
    #[allow(clippy::disallowed_methods, reason = "tests inspect the namespace")]
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.0, program])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    /// What `program args` printed inside the namespace (stdout).
    pub fn text(&self, program: &str, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(program, args).stdout).into_owned()
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    #[allow(clippy::disallowed_methods, reason = "test cleanup runs ip")]
    fn drop(&mut self) {
        if let Ok(out) = std::process::Command::new("ip")
            .args(["netns", "pids", &self.0])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    banger_sys::process::kill(pid);
                }
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
}

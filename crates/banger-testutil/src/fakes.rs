//! Recording fakes of the daemon's seams ([`Runner`], [`Vmm`], [`Network`])
//! for unit tests of the logic above them. Each appends one line per call
//! to a shared [`Calls`] log, so a test asserts the order of calls across
//! all three. They prove orderings and branches, never that the real
//! implementation works: the integration tests do that.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use banger_net::{NetError, Network, Subnet};
use banger_sys::{Cancel, Cmd, RunError, Runner};
use banger_vmm::{BootSpec, VmFiles, Vmm, VmmError};

/// The calls every fake sharing it made, in order.
pub type Calls = Arc<Mutex<Vec<String>>>;

fn record(calls: &Calls, call: String) {
    calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(call);
}

/// A [`Network`] that records `ensure_bridge <bridge>`, `add_tap <tap>`,
/// `remove_tap <tap>`, `check_tap <tap>`, `add_nat <tag>` and
/// `remove_nat <tag>`; the call starting with `fail` fails.
#[derive(Debug)]
pub struct FakeNet {
    calls: Calls,
    fail: Option<String>,
}

impl FakeNet {
    /// A network where every call succeeds.
    pub fn new(calls: &Calls) -> Self {
        Self {
            calls: calls.clone(),
            fail: None,
        }
    }

    /// A network where the call starting with `call` fails.
    pub fn failing(calls: &Calls, call: &str) -> Self {
        Self {
            calls: calls.clone(),
            fail: Some(call.to_owned()),
        }
    }

    fn step(&self, call: String) -> Result<(), NetError> {
        let fails = self.fail.as_ref().is_some_and(|f| call.starts_with(f));
        record(&self.calls, call);
        if fails {
            return Err(NetError::Invalid {
                what: "step",
                value: self.fail.clone().unwrap_or_default(),
                why: "made to fail",
            });
        }
        Ok(())
    }
}

impl Network for FakeNet {
    fn ensure_bridge(&self, bridge: &str, _: &Subnet) -> Result<(), NetError> {
        self.step(format!("ensure_bridge {bridge}"))
    }
    fn add_tap(&self, tap: &str, _: &str, _: u32) -> Result<(), NetError> {
        self.step(format!("add_tap {tap}"))
    }
    fn remove_tap(&self, tap: &str) -> Result<(), NetError> {
        self.step(format!("remove_tap {tap}"))
    }
    fn check_tap(&self, tap: &str, _: &str) -> Result<(), NetError> {
        self.step(format!("check_tap {tap}"))
    }
    fn add_nat(&self, tag: &str, _: Ipv4Addr, _: &str) -> Result<(), NetError> {
        self.step(format!("add_nat {tag}"))
    }
    fn remove_nat(&self, tag: &str, _: Ipv4Addr, _: &str) -> Result<(), NetError> {
        self.step(format!("remove_nat {tag}"))
    }
    fn set_firewall(
        &self,
        _: &str,
        _: &Subnet,
        guests: &[banger_net::Guest],
    ) -> Result<(), NetError> {
        let taps: Vec<&str> = guests.iter().map(|g| g.tap.as_str()).collect();
        self.step(format!("set_firewall [{}]", taps.join(" ")))
    }
}

/// The pid every [`FakeVmm`] reports.
pub const FAKE_PID: u32 = 4242;

type OnStart = Box<dyn Fn(&BootSpec) + Send + Sync>;

/// A [`Vmm`] whose process is a flag. Records `<name> start`,
/// `<name> power button` and `<name> kill`. Knobs (all off by default):
/// `boots` (a start leaves it up; off: it dies during boot), `findable`
/// (`recover_pid` finds it while up, as from a pidfile),
/// `obeys_power_button` (the power button stops it), `appends` (its
/// console log may be rotated).
pub struct FakeVmm {
    name: &'static str,
    calls: Calls,
    /// Whether the VMM process is up.
    pub alive: AtomicBool,
    /// Whether a start leaves it up.
    pub boots: AtomicBool,
    /// Whether `recover_pid` finds it while it is up.
    pub findable: AtomicBool,
    /// Whether the power button stops it.
    pub obeys_power_button: AtomicBool,
    /// Whether it appends to the console log.
    pub appends: bool,
    on_start: Option<OnStart>,
}

impl std::fmt::Debug for FakeVmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeVmm")
            .field("name", &self.name)
            .field("alive", &self.alive)
            .finish_non_exhaustive()
    }
}

impl FakeVmm {
    /// A stopped VMM called `name` (as handles record it).
    pub fn new(name: &'static str, calls: &Calls) -> Self {
        Self {
            name,
            calls: calls.clone(),
            alive: AtomicBool::new(false),
            boots: AtomicBool::new(false),
            findable: AtomicBool::new(false),
            obeys_power_button: AtomicBool::new(false),
            appends: false,
            on_start: None,
        }
    }

    /// Calls `check` with every start's spec.
    #[must_use]
    pub fn on_start(mut self, check: impl Fn(&BootSpec) + Send + Sync + 'static) -> Self {
        self.on_start = Some(Box::new(check));
        self
    }

    /// Sets a knob.
    pub fn set(flag: &AtomicBool, on: bool) {
        flag.store(on, Ordering::SeqCst);
    }

    /// Whether the VMM process is up.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
}

impl Vmm for FakeVmm {
    fn name(&self) -> &'static str {
        self.name
    }
    fn kernel_file(&self) -> &'static str {
        "bzImage"
    }
    fn start(&self, spec: &BootSpec) -> Result<u32, VmmError> {
        record(&self.calls, format!("{} start", self.name));
        if let Some(check) = &self.on_start {
            check(spec);
        }
        Self::set(&self.alive, self.boots.load(Ordering::SeqCst));
        Ok(FAKE_PID)
    }
    fn recover_pid(&self, _: &VmFiles) -> Option<u32> {
        (self.findable.load(Ordering::SeqCst) && self.is_alive()).then_some(FAKE_PID)
    }
    fn request_shutdown(&self, _: &VmFiles) -> Result<(), VmmError> {
        record(&self.calls, format!("{} power button", self.name));
        if self.obeys_power_button.load(Ordering::SeqCst) {
            Self::set(&self.alive, false);
        }
        Ok(())
    }
    fn is_running(&self, _: &VmFiles, pid: u32) -> bool {
        pid == FAKE_PID && self.is_alive()
    }
    fn kill(&self, _: u32) {
        record(&self.calls, format!("{} kill", self.name));
        Self::set(&self.alive, false);
    }
    fn console_appends(&self) -> bool {
        self.appends
    }
}

type Respond = Box<dyn Fn(&Cmd) -> Result<(), RunError> + Send + Sync>;

/// A [`Runner`] that records `run <program>` and answers with `respond`.
pub struct FakeRunner {
    calls: Calls,
    respond: Respond,
}

impl std::fmt::Debug for FakeRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRunner").finish_non_exhaustive()
    }
}

impl FakeRunner {
    /// A runner whose commands all end as `respond` says.
    pub fn new(
        calls: &Calls,
        respond: impl Fn(&Cmd) -> Result<(), RunError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            calls: calls.clone(),
            respond: Box::new(respond),
        }
    }

    /// A runner for code that must run no command: each one panics.
    pub fn none(calls: &Calls) -> Self {
        Self::new(calls, |cmd| {
            panic!("no command expected, got {}", cmd.display())
        })
    }
}

impl Runner for FakeRunner {
    fn run(&self, cmd: &Cmd, _: &Path, _: &Cancel) -> Result<(), RunError> {
        let program = cmd
            .program
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        record(&self.calls, format!("run {program}"));
        (self.respond)(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fakes_share_one_ordered_log() {
        let calls = Calls::default();
        let net = FakeNet::failing(&calls, "add_nat");
        let vmm = FakeVmm::new("qemu", &calls);
        FakeVmm::set(&vmm.obeys_power_button, true);
        FakeVmm::set(&vmm.alive, true);
        net.add_tap("bgt1", "b", 0).unwrap();
        assert!(net.add_nat("ab", Ipv4Addr::LOCALHOST, "b").is_err());
        vmm.request_shutdown(&VmFiles::new("/x")).unwrap();
        assert!(!vmm.is_running(&VmFiles::new("/x"), FAKE_PID));
        let runner = FakeRunner::new(&calls, |_| Ok(()));
        runner
            .run(
                &Cmd::new("/usr/bin/ssh"),
                Path::new("/dev/null"),
                &Cancel::new(),
            )
            .unwrap();
        assert_eq!(
            *calls.lock().unwrap(),
            ["add_tap bgt1", "add_nat ab", "qemu power button", "run ssh"]
        );
    }
}

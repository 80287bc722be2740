use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use banger_api::SshTarget;

use crate::vms::testkit::kit;
use crate::vms::workspace::guest::{GuestError, GuestShell, Session};

/// A guest whose master is a socket file this fake makes, alive as told.
#[derive(Debug, Default)]
struct FakeMaster {
    alive: AtomicBool,
    seen: Mutex<Vec<String>>,
}

impl GuestShell for FakeMaster {
    fn run(&self, _: &SshTarget, _: &Session<'_>, _: &mut dyn Read) -> Result<Vec<u8>, GuestError> {
        Ok(Vec::new())
    }

    fn open_master(&self, target: &SshTarget, control: &Path, _log: &Path) -> bool {
        assert!(!control.exists(), "a stale socket is removed first");
        assert_eq!(target.control_path, None);
        std::fs::write(control, "").unwrap();
        self.alive.store(true, Ordering::SeqCst);
        self.seen.lock().unwrap().push("open".into());
        true
    }

    fn master_alive(&self, _control: &Path) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn close_master(&self, _control: &Path) {
        self.seen.lock().unwrap().push("close".into());
    }
}

#[test]
fn a_running_vm_gets_one_master_reopened_when_dead_and_closed_with_the_vm() {
    let fake = Arc::new(FakeMaster::default());
    let kit = kit("").with_guest_shell(fake.clone());
    kit.run_web("vmm");
    let target = kit.vms.ssh_target("web").unwrap();
    let path = target.control_path.clone().unwrap();
    assert!(path.ends_with("/ssh.mux"), "{path}");
    let args = target.ssh_args();
    assert_eq!(
        args[..4],
        [
            "-o",
            "ControlMaster=no",
            "-o",
            &format!("ControlPath={path}")
        ]
    );
    assert_eq!(kit.vms.ssh_target("web").unwrap(), target);
    assert_eq!(*fake.seen.lock().unwrap(), ["open"]);

    // A master that died leaves its socket: it is replaced.
    fake.alive.store(false, Ordering::SeqCst);
    assert_eq!(kit.vms.ssh_target("web").unwrap(), target);
    assert_eq!(*fake.seen.lock().unwrap(), ["open", "open"]);

    kit.vms.kill("web").unwrap();
    assert_eq!(*fake.seen.lock().unwrap(), ["open", "open", "close"]);
    assert!(!Path::new(&path).exists());
}

#[test]
fn a_vm_whose_master_cannot_open_is_reached_directly() {
    // The kit's default shell opens no master.
    #[derive(Debug)]
    struct NoMaster;
    impl GuestShell for NoMaster {
        fn run(
            &self,
            _: &SshTarget,
            _: &Session<'_>,
            _: &mut dyn Read,
        ) -> Result<Vec<u8>, GuestError> {
            Ok(Vec::new())
        }
    }
    let kit = kit("").with_guest_shell(Arc::new(NoMaster));
    kit.run_web("vmm");
    let target = kit.vms.ssh_target("web").unwrap();
    assert_eq!(target.control_path, None);
    assert!(!target.ssh_args().iter().any(|a| a.contains("Control")));
}

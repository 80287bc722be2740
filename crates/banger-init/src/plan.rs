//! The steps from the initramfs to the image's init.

use std::path::{Path, PathBuf};

use crate::cmdline::{self, Device};
use crate::sys::{MountFlags, Sys};

const BASE: &str = "/mnt/base";
const OVERLAY: &str = "/mnt/overlay";
const NEWROOT: &str = "/newroot";

/// A failed step, with what it was doing.
#[derive(Debug)]
pub struct InitError(pub String);

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn step<T>(what: impl FnOnce() -> String, r: std::io::Result<T>) -> Result<T, InitError> {
    r.map_err(|e| InitError(format!("{}: {e}", what())))
}

/// The line a probe boot prints (`banger.probe` on the command line): the
/// host's KVM check looks for it on the console.
pub const PROBE_MARKER: &str = "banger-init: probe ok";

/// How a run ended, when it did not exec the image's init.
#[derive(Debug)]
pub enum Exit {
    /// A probe boot reached userspace; the VM should stop.
    Probe,
    /// A step failed.
    Failed(InitError),
}

/// Runs every step; returns only when it cannot exec the image's init.
pub fn run(sys: &dyn Sys) -> Exit {
    match assemble(sys) {
        Ok(Next::Probe) => {
            sys.say(PROBE_MARKER.trim_start_matches("banger-init: "));
            Exit::Probe
        }
        Ok(Next::Exec(init)) => {
            sys.say(&format!("switching to {}", init.display()));
            let err = sys.exec(&init);
            Exit::Failed(InitError(format!("exec {}: {err}", init.display())))
        }
        Err(e) => Exit::Failed(e),
    }
}

/// What to do once the early mounts are done.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Exec the image's init, the root already switched.
    Exec(PathBuf),
    /// Only report that userspace was reached.
    Probe,
}

/// Mounts everything and switches root; returns what to do next.
pub fn assemble(sys: &dyn Sys) -> Result<Next, InitError> {
    for dir in ["/dev", "/proc", "/sys"] {
        step(|| format!("mkdir {dir}"), sys.mkdir(Path::new(dir)))?;
    }
    step(
        || "mount devtmpfs on /dev".into(),
        sys.mount(
            "devtmpfs",
            Path::new("/dev"),
            "devtmpfs",
            MountFlags::None,
            "",
        ),
    )?;
    step(
        || "mount proc on /proc".into(),
        sys.mount("proc", Path::new("/proc"), "proc", MountFlags::None, ""),
    )?;
    step(
        || "mount sysfs on /sys".into(),
        sys.mount("sysfs", Path::new("/sys"), "sysfs", MountFlags::None, ""),
    )?;
    let text = step(
        || "read /proc/cmdline".into(),
        sys.read_to_string(Path::new("/proc/cmdline")),
    )?;
    if text.split_whitespace().any(|w| w == "banger.probe") {
        return Ok(Next::Probe);
    }
    let plan = cmdline::parse(&text).map_err(InitError)?;

    let base = resolve(sys, &plan.base)?;
    let overlay = resolve(sys, &plan.overlay)?;
    if base == overlay {
        return Err(InitError(format!(
            "base and overlay are the same disk, {}",
            base.display()
        )));
    }
    for dir in [BASE, OVERLAY, NEWROOT] {
        step(|| format!("mkdir {dir}"), sys.mkdir(Path::new(dir)))?;
    }
    let base_src = base.display().to_string();
    step(
        || format!("mount {base_src} read-only on {BASE}"),
        sys.mount(&base_src, Path::new(BASE), "ext4", MountFlags::ReadOnly, ""),
    )?;
    let overlay_src = overlay.display().to_string();
    step(
        || format!("mount {overlay_src} on {OVERLAY}"),
        sys.mount(
            &overlay_src,
            Path::new(OVERLAY),
            "ext4",
            MountFlags::None,
            "",
        ),
    )?;
    for dir in ["upper", "work"] {
        let path = Path::new(OVERLAY).join(dir);
        step(|| format!("mkdir {}", path.display()), sys.mkdir(&path))?;
    }
    let options = format!("lowerdir={BASE},upperdir={OVERLAY}/upper,workdir={OVERLAY}/work");
    step(
        || format!("mount overlay on {NEWROOT} ({options})"),
        sys.mount(
            "overlay",
            Path::new(NEWROOT),
            "overlay",
            MountFlags::None,
            &options,
        ),
    )?;
    let init = plan.init;
    // The image's init must exist in the assembled tree before we commit.
    let in_new = Path::new(NEWROOT).join(init.strip_prefix("/").unwrap_or(&init));
    if !sys.exists(&in_new) {
        return Err(InitError(format!(
            "{} does not exist in the image",
            init.display()
        )));
    }
    // The image's init mounts its own; ours would hide them.
    for dir in ["/proc", "/sys", "/dev"] {
        step(|| format!("unmount {dir}"), sys.umount(Path::new(dir)))?;
    }
    step(|| format!("chdir {NEWROOT}"), sys.chdir(Path::new(NEWROOT)))?;
    step(
        || format!("move {NEWROOT} to /"),
        sys.mount(".", Path::new("/"), "", MountFlags::Move, ""),
    )?;
    step(|| "chroot .".into(), sys.chroot(Path::new(".")))?;
    step(|| "chdir /".into(), sys.chdir(Path::new("/")))?;
    Ok(Next::Exec(init))
}

fn resolve(sys: &dyn Sys, device: &Device) -> Result<PathBuf, InitError> {
    match device {
        Device::Path(p) => Ok(p.clone()),
        Device::Label(label) => {
            let devices = sys.block_devices();
            devices
                .iter()
                .find(|d| sys.ext4_label(d).as_deref() == Some(label))
                .cloned()
                .ok_or_else(|| {
                    InitError(format!(
                        "no disk with label {label:?} among {}",
                        devices
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records every call; fails the one named in `fail`.
    #[derive(Default)]
    struct Fake {
        calls: RefCell<Vec<String>>,
        cmdline: String,
        labels: Vec<(&'static str, &'static str)>,
        fail: Option<&'static str>,
        missing: Vec<&'static str>,
    }

    impl Fake {
        fn record(&self, call: String) -> std::io::Result<()> {
            let failing = self.fail.is_some_and(|f| call.starts_with(f));
            self.calls.borrow_mut().push(call);
            if failing {
                Err(std::io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                Ok(())
            }
        }
    }

    impl Sys for Fake {
        fn mkdir(&self, path: &Path) -> std::io::Result<()> {
            self.record(format!("mkdir {}", path.display()))
        }
        fn mount(
            &self,
            source: &str,
            target: &Path,
            fstype: &str,
            flags: MountFlags,
            data: &str,
        ) -> std::io::Result<()> {
            self.record(
                format!(
                    "mount {source} {} {fstype} {flags:?} {data}",
                    target.display()
                )
                .trim_end()
                .to_owned(),
            )
        }
        fn umount(&self, target: &Path) -> std::io::Result<()> {
            self.record(format!("umount {}", target.display()))
        }
        fn chdir(&self, path: &Path) -> std::io::Result<()> {
            self.record(format!("chdir {}", path.display()))
        }
        fn chroot(&self, path: &Path) -> std::io::Result<()> {
            self.record(format!("chroot {}", path.display()))
        }
        fn exec(&self, path: &Path) -> std::io::Error {
            let _ = self.record(format!("exec {}", path.display()));
            std::io::Error::from_raw_os_error(libc::ENOENT)
        }
        fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
            if path == Path::new("/proc/cmdline") {
                Ok(self.cmdline.clone())
            } else {
                Ok(String::new())
            }
        }
        fn exists(&self, path: &Path) -> bool {
            !self.missing.iter().any(|m| Path::new(m) == path)
        }
        fn block_devices(&self) -> Vec<PathBuf> {
            self.labels.iter().map(|(d, _)| PathBuf::from(d)).collect()
        }
        fn ext4_label(&self, device: &Path) -> Option<String> {
            self.labels
                .iter()
                .find(|(d, _)| Path::new(d) == device)
                .map(|(_, l)| (*l).to_owned())
        }
        fn say(&self, _: &str) {}
    }

    #[test]
    fn mounts_base_read_only_then_overlay_then_switches_root() {
        let fake = Fake {
            cmdline: "console=ttyS0 banger.base=LABEL=rootfs banger.overlay=LABEL=overlay".into(),
            labels: vec![("/dev/vda", "overlay"), ("/dev/vdb", "rootfs")],
            ..Fake::default()
        };
        let next = assemble(&fake).unwrap();
        assert_eq!(next, Next::Exec(PathBuf::from("/sbin/init")));
        let calls = fake.calls.borrow();
        let pos = |needle: &str| {
            calls
                .iter()
                .position(|c| c.starts_with(needle))
                .unwrap_or_else(|| panic!("{needle} missing: {calls:#?}"))
        };
        // Labels, not probe order, decide which disk is which.
        assert!(
            calls.contains(&"mount /dev/vdb /mnt/base ext4 ReadOnly".to_owned()),
            "{calls:#?}"
        );
        assert!(
            calls.contains(&"mount /dev/vda /mnt/overlay ext4 None".to_owned()),
            "{calls:#?}"
        );
        assert!(pos("mount /dev/vdb") < pos("mount /dev/vda"));
        assert!(calls.contains(
            &"mount overlay /newroot overlay None lowerdir=/mnt/base,upperdir=/mnt/overlay/upper,workdir=/mnt/overlay/work".to_owned()
        ));
        assert!(pos("mkdir /mnt/overlay/upper") < pos("mount overlay"));
        assert!(pos("mount overlay") < pos("umount /proc"));
        assert!(pos("chdir /newroot") < pos("mount . / "));
        assert!(pos("mount . / ") < pos("chroot ."));
        assert_eq!(calls.last().unwrap(), "chdir /");
    }

    #[test]
    fn a_failed_step_is_named_and_nothing_after_it_runs() {
        let fake = Fake {
            cmdline: "banger.base=/dev/vda banger.overlay=/dev/vdb".into(),
            fail: Some("mount /dev/vdb"),
            ..Fake::default()
        };
        let Exit::Failed(err) = run(&fake) else {
            panic!("expected a failure");
        };
        assert_eq!(
            err.0,
            "mount /dev/vdb on /mnt/overlay: Invalid argument (os error 22)"
        );
        let calls = fake.calls.borrow();
        assert_eq!(
            calls.last().unwrap(),
            "mount /dev/vdb /mnt/overlay ext4 None"
        );
        assert!(
            !calls
                .iter()
                .any(|c| c.starts_with("exec") || c.starts_with("chroot"))
        );
    }

    #[test]
    fn missing_label_lists_the_disks_seen() {
        let fake = Fake {
            cmdline: "banger.base=LABEL=rootfs banger.overlay=/dev/vdb".into(),
            labels: vec![("/dev/vda", "work")],
            ..Fake::default()
        };
        let err = assemble(&fake).unwrap_err();
        assert_eq!(err.0, "no disk with label \"rootfs\" among /dev/vda");
    }

    #[test]
    fn init_missing_from_the_image_stops_before_switching() {
        let fake = Fake {
            cmdline: "banger.base=/dev/vda banger.overlay=/dev/vdb banger.init=/sbin/nope".into(),
            missing: vec!["/newroot/sbin/nope"],
            ..Fake::default()
        };
        let err = assemble(&fake).unwrap_err();
        assert_eq!(err.0, "/sbin/nope does not exist in the image");
        assert!(!fake.calls.borrow().iter().any(|c| c.starts_with("chroot")));
    }

    #[test]
    fn probe_boot_stops_after_the_early_mounts() {
        let fake = Fake {
            cmdline: "console=ttyS0 banger.probe".into(),
            ..Fake::default()
        };
        assert!(matches!(run(&fake), Exit::Probe));
        let calls = fake.calls.borrow();
        assert!(
            calls
                .iter()
                .all(|c| !c.contains("/mnt") && !c.starts_with("exec")),
            "{calls:#?}"
        );
    }

    #[test]
    fn same_disk_twice_is_refused() {
        let fake = Fake {
            cmdline: "banger.base=/dev/vda banger.overlay=/dev/vda".into(),
            ..Fake::default()
        };
        assert!(assemble(&fake).unwrap_err().0.contains("same disk"));
    }
}

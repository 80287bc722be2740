//! The steps from the initramfs to the image's init.

use std::path::{Path, PathBuf};

use crate::abi::{self, Device};
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

pub use crate::abi::PROBE_MARKER;

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
    if abi::is_probe(&text) {
        return Ok(Next::Probe);
    }
    let plan = abi::parse(&text).map_err(|e| InitError(e.to_string()))?;

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
    let in_new = |p: &Path| Path::new(NEWROOT).join(p.strip_prefix("/").unwrap_or(p));
    let has_sshd = ["/usr/sbin/sshd", "/sbin/sshd"]
        .iter()
        .any(|p| sys.exists(&in_new(Path::new(p))));
    if !sys.exists(&in_new(&init)) || !has_sshd {
        first_boot(sys)?;
    }
    // The image's init must exist in the assembled tree before we commit.
    if !sys.exists(&in_new(&init)) {
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

/// Installs systemd and sshd with the image's package manager, chrooted
/// in the new root with the early mounts bound into it. An image banger
/// knows no installer for is left as it is (the caller then finds no
/// init, or boots one without sshd).
fn first_boot(sys: &dyn Sys) -> Result<(), InitError> {
    let os_release = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| sys.read_to_string(&Path::new(NEWROOT).join(p)).ok())
        .unwrap_or_default();
    let Some(install) = crate::firstboot::plan_for(&os_release) else {
        sys.say("first boot: no systemd or no sshd, and no installer for this distribution");
        return Ok(());
    };
    sys.say(&format!(
        "first boot: installing systemd and an SSH server with the image's package manager ({})",
        install.family
    ));
    let mut bound = Vec::new();
    let mut result = Ok(());
    for dir in ["/dev", "/proc", "/sys"] {
        let target = Path::new(NEWROOT).join(&dir[1..]);
        result =
            step(|| format!("mkdir {}", target.display()), sys.mkdir(&target)).and_then(|()| {
                step(
                    || format!("bind {dir} into {}", target.display()),
                    sys.mount(dir, &target, "", MountFlags::Bind, ""),
                )
            });
        if result.is_err() {
            break;
        }
        bound.push(target);
    }
    if result.is_ok() {
        for argv in &install.commands {
            let shown = argv.join(" ");
            sys.say(&format!("first boot: {shown}"));
            result = match sys.run_in(Path::new(NEWROOT), argv, &crate::firstboot::ENV) {
                Ok(0) => Ok(()),
                Ok(code) => Err(InitError(format!(
                    "first boot: `{shown}` exited with {code} (its output is above); a --nat VM reaches the image's package mirror"
                ))),
                Err(e) => Err(InitError(format!("first boot: run `{shown}`: {e}"))),
            };
            if result.is_err() {
                break;
            }
        }
    }
    for target in bound.iter().rev() {
        let _ = sys.umount(target);
    }
    if result.is_ok() {
        sys.say("first boot: done");
    }
    result
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
        os_release: &'static str,
        /// Exit code of every command run in the new root.
        run_code: i32,
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
            } else if path == Path::new("/newroot/etc/os-release") {
                Ok(self.os_release.to_owned())
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
        fn run_in(&self, root: &Path, argv: &[&str], env: &[(&str, &str)]) -> std::io::Result<i32> {
            assert!(env.iter().any(|(k, _)| *k == "PATH"));
            self.record(format!("run in {}: {}", root.display(), argv.join(" ")))?;
            Ok(self.run_code)
        }
    }

    /// Where the first call starting with `needle` is.
    fn position(calls: &[String], needle: &str) -> usize {
        calls
            .iter()
            .position(|c| c.starts_with(needle))
            .unwrap_or_else(|| panic!("{needle} missing: {calls:#?}"))
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
        let pos = |needle: &str| position(&calls, needle);
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
        let calls = fake.calls.borrow();
        assert!(!calls.iter().any(|c| c.starts_with("chroot")));
        // No os-release: no installer was tried.
        assert!(!calls.iter().any(|c| c.starts_with("run in")), "{calls:#?}");
    }

    #[test]
    fn an_image_without_init_or_sshd_gets_them_installed_before_the_switch() {
        let fake = Fake {
            cmdline: "banger.base=/dev/vda banger.overlay=/dev/vdb".into(),
            missing: vec!["/newroot/usr/sbin/sshd", "/newroot/sbin/sshd"],
            os_release: "ID=debian\nVERSION_ID=\"12\"\n",
            ..Fake::default()
        };
        assert_eq!(
            assemble(&fake).unwrap(),
            Next::Exec(PathBuf::from("/sbin/init"))
        );
        let calls = fake.calls.borrow();
        let pos = |needle: &str| position(&calls, needle);
        assert!(pos("mount overlay") < pos("mount /proc /newroot/proc  Bind"));
        assert!(pos("mount /sys /newroot/sys  Bind") < pos("run in /newroot: apt-get update"));
        assert!(
            pos("run in /newroot: apt-get update")
                < pos(
                    "run in /newroot: apt-get install -y --no-install-recommends systemd-sysv openssh-server"
                )
        );
        assert!(pos("run in /newroot: apt-get install") < pos("umount /newroot/dev"));
        assert!(pos("umount /newroot/dev") < pos("umount /proc"));
        assert_eq!(calls.last().unwrap(), "chdir /");
    }

    #[test]
    fn a_failed_install_is_named_unbinds_and_stops_the_boot() {
        let fake = Fake {
            cmdline: "banger.base=/dev/vda banger.overlay=/dev/vdb".into(),
            missing: vec!["/newroot/sbin/init"],
            os_release: "ID=ubuntu\nID_LIKE=debian\n",
            run_code: 100,
            ..Fake::default()
        };
        let Exit::Failed(err) = run(&fake) else {
            panic!("expected a failure");
        };
        assert!(
            err.0
                .starts_with("first boot: `apt-get update` exited with 100"),
            "{}",
            err.0
        );
        let calls = fake.calls.borrow();
        assert_eq!(calls.iter().filter(|c| c.starts_with("run in")).count(), 1);
        for dir in ["dev", "proc", "sys"] {
            assert!(
                calls.contains(&format!("umount /newroot/{dir}")),
                "{calls:#?}"
            );
        }
        assert!(
            !calls
                .iter()
                .any(|c| c.starts_with("exec") || c.starts_with("chroot"))
        );
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

//! Whether KVM can really run a guest here.
//!
//! `/dev/kvm` opening is not enough: on nested "PVM" hosts it opens and
//! creates VMs, yet a standard guest kernel dies early in boot (or QEMU
//! aborts setting an MSR). So the probe boots banger's own kernel and
//! initramfs under KVM with `banger.probe`, and KVM counts as usable only
//! when banger-init's marker reaches the console.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use banger_init::abi::{PROBE_FLAG, PROBE_MARKER};
use banger_sys::{Cancel, Cmd, RunError, Runner};

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmVerdict {
    /// Whether guests should run under KVM.
    pub usable: bool,
    /// Why, in words for `banger doctor`.
    pub reason: String,
}

/// Boots `kernel` with `initramfs` under KVM in `dir` (which receives the
/// console and QEMU's output) and waits up to `timeout` for the marker.
pub fn probe_kvm(
    runner: &Arc<dyn Runner>,
    qemu: &Path,
    kernel: &Path,
    initramfs: &Path,
    dir: &Path,
    timeout: Duration,
) -> KvmVerdict {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return KvmVerdict {
            usable: false,
            reason: format!("/dev/kvm cannot be opened: {e}"),
        };
    }
    let console = dir.join("kvm-probe-console.log");
    let log = dir.join("kvm-probe-qemu.log");
    let _ = std::fs::remove_file(&console);
    let _ = std::fs::remove_file(&log);
    let mut serial = std::ffi::OsString::from("file:");
    serial.push(&console);
    let cmd = Cmd::new(qemu)
        .args(["-M", "microvm,acpi=on", "-accel", "kvm", "-cpu", "host"])
        .args(["-m", "256", "-smp", "1", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-no-reboot", "-serial"])
        .arg(serial)
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 {PROBE_FLAG}"));
    let cancel = Cancel::new();
    let timer = {
        let cancel = cancel.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            if done_rx.recv_timeout(timeout).is_err() {
                cancel.cancel();
            }
        });
        (t, done_tx)
    };
    let result = runner.run(&cmd, &log, &cancel);
    let _ = timer.1.send(());
    let _ = timer.0.join();
    let console_text = std::fs::read_to_string(&console).unwrap_or_default();
    let qemu_text = std::fs::read_to_string(&log).unwrap_or_default();
    verdict(&result, &console_text, &qemu_text, timeout)
}

/// Judges a probe run from its result, the guest console and QEMU's output.
pub fn verdict(
    result: &Result<(), RunError>,
    console: &str,
    qemu_output: &str,
    timeout: Duration,
) -> KvmVerdict {
    if console.contains(PROBE_MARKER) {
        return KvmVerdict {
            usable: true,
            reason: "a KVM guest booted banger's kernel to userspace".to_owned(),
        };
    }
    let last = |text: &str| {
        text.lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
    };
    let reason = match result {
        Err(RunError::Cancelled) => format!(
            "a KVM guest did not reach userspace in {} s (last console line: {})",
            timeout.as_secs(),
            last(console).unwrap_or_else(|| "none".to_owned())
        ),
        Err(RunError::Start { source, .. }) => format!("QEMU could not be started: {source}"),
        _ => format!(
            "a KVM guest died before userspace: {}",
            last(qemu_output)
                .or_else(|| last(console))
                .unwrap_or_else(|| "no output".to_owned())
        ),
    };
    KvmVerdict {
        usable: false,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_means_usable_whatever_else_happened() {
        let v = verdict(
            &Ok(()),
            "[0.5] banger-init: probe ok\nreboot",
            "",
            Duration::from_secs(30),
        );
        assert!(v.usable, "{v:?}");
    }

    #[test]
    fn a_qemu_abort_is_reported_with_its_last_line() {
        let failed = Err(RunError::Cancelled);
        let v = verdict(&failed, "", "", Duration::from_secs(30));
        assert!(!v.usable);
        assert!(
            v.reason.contains("did not reach userspace in 30 s"),
            "{v:?}"
        );

        let status = std::process::ExitStatus::default();
        let failed = Err(RunError::Failed {
            command: "qemu".into(),
            status,
            log: "/l".into(),
        });
        let v = verdict(
            &failed,
            "",
            "qemu: error: failed to set MSR 0x10a to 0x0\n\n",
            Duration::from_secs(30),
        );
        assert!(!v.usable);
        assert!(
            v.reason.ends_with("failed to set MSR 0x10a to 0x0"),
            "{v:?}"
        );
    }
}

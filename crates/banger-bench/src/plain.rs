//! The baseline: banger's kernel and image booted by a plain QEMU command
//! line (no banger, no initramfs, no overlay: the image's root file
//! system directly, writes discarded) on a tap on banger's bridge, timed
//! to the same readiness point banger waits for, sshd's banner.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Install;

const TAP: &str = "bgbench0";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// What the plain boot takes from banger's own: the guest address plan
/// and the TSC hint, both read off the kernel command line banger used.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    ip: Ipv4Addr,
    gateway: String,
    netmask: String,
    tsc: Option<String>,
}

/// From `... tsc_early_khz=N ... ip=<vm>::<gw>:<mask>:<host>:eth0:off`,
/// an address of the bridge's /24 that banger does not hand out first.
fn plan(cmdline: &str) -> Result<Plan, String> {
    let ip = cmdline
        .split_whitespace()
        .find_map(|t| t.strip_prefix("ip="))
        .ok_or_else(|| format!("no ip= in the guest's command line: {cmdline}"))?;
    let parts: Vec<&str> = ip.split(':').collect();
    let (gateway, netmask) = match parts.as_slice() {
        [_, _, gw, mask, ..] => ((*gw).to_owned(), (*mask).to_owned()),
        _ => return Err(format!("cannot read ip={ip}")),
    };
    let gw: Ipv4Addr = gateway
        .parse()
        .map_err(|_| format!("bad gateway {gateway}"))?;
    let [a, b, c, _] = gw.octets();
    Ok(Plan {
        ip: Ipv4Addr::new(a, b, c, 254),
        gateway,
        netmask,
        tsc: cmdline
            .split_whitespace()
            .find(|t| t.starts_with("tsc_early_khz="))
            .map(str::to_owned),
    })
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BANGER_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("banger");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/banger")
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Boots the plain command line `runs` times; returns spawn-to-banner
/// times.
pub fn boot_times(
    install: &Install,
    shape: &serde_json::Value,
    cmdline: &str,
    runs: usize,
) -> Result<Vec<Duration>, String> {
    let plan = plan(cmdline)?;
    let cache = cache_dir();
    let kernel = cache.join(format!(
        "kernels/{}/bzImage",
        shape["kernel"].as_str().unwrap_or("generic-6.1")
    ));
    let rootfs = cache.join(format!(
        "images/{}/rootfs.ext4",
        shape["image"].as_str().unwrap_or("debian-bookworm")
    ));
    let kvm = install.log().contains("\"accel\":\"kvm\"");
    ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
    let result = (|| {
        ip(&["link", "set", TAP, "master", "banger0"])?;
        ip(&["link", "set", TAP, "up"])?;
        (0..runs)
            .map(|_| boot_once(&plan, shape, &kernel, &rootfs, kvm))
            .collect()
    })();
    let _ = ip(&["link", "del", TAP]);
    result
}

fn boot_once(
    plan: &Plan,
    shape: &serde_json::Value,
    kernel: &Path,
    rootfs: &Path,
    kvm: bool,
) -> Result<Duration, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let console = dir.path().join("console.log");
    let append = format!(
        "console=ttyS0 panic=-1 {} root=/dev/vda rw ip={}::{}:{}:plain:eth0:off",
        plan.tsc.as_deref().unwrap_or(""),
        plan.ip,
        plan.gateway,
        plan.netmask
    );
    let (accel, cpu) = if kvm { ("kvm", "host") } else { ("tcg", "max") };
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-M", "microvm,acpi=on", "-accel", accel, "-cpu", cpu])
        .args(["-smp", &shape["vcpus"].as_u64().unwrap_or(1).to_string()])
        .args([
            "-m",
            &shape["memory_mib"].as_u64().unwrap_or(512).to_string(),
        ])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .arg("-chardev")
        .arg(format!("file,id=console,path={}", console.display()))
        .args(["-serial", "chardev:console"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", &append])
        .arg("-drive")
        .arg(format!(
            "id=root,format=raw,if=none,cache=writeback,snapshot=on,file={}",
            rootfs.display()
        ))
        .args(["-device", "virtio-blk-device,drive=root"])
        .args([
            "-netdev",
            &format!("tap,id=net0,ifname={TAP},script=no,downscript=no"),
        ])
        .args([
            "-device",
            "virtio-net-device,netdev=net0,mac=02:ba:ff:ff:ff:01",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = qemu.spawn().map_err(|e| format!("run qemu: {e}"))?;
    let addr = SocketAddr::from((plan.ip, 22));
    let ready = loop {
        if sshd_answers(addr) {
            break Ok(started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            break Err(format!("plain qemu exited ({status}): {}", err.trim()));
        }
        if started.elapsed() > BOOT_TIMEOUT {
            break Err(format!(
                "plain qemu: sshd did not answer on {addr} within {} s; console: {}",
                BOOT_TIMEOUT.as_secs(),
                console.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    ready
}

/// Whether an SSH server at `addr` sends its banner.
fn sshd_answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut banner = [0u8; 4];
    s.read_exact(&mut banner).is_ok() && &banner == b"SSH-"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_follows_bangers_command_line() {
        let p = plan(
            "console=ttyS0 panic=-1 tsc_early_khz=2600000 banger.base=LABEL=rootfs \
             ip=10.77.0.2::10.77.0.1:255.255.255.0:vm-x:eth0:off",
        )
        .unwrap();
        assert_eq!(
            p,
            Plan {
                ip: Ipv4Addr::new(10, 77, 0, 254),
                gateway: "10.77.0.1".into(),
                netmask: "255.255.255.0".into(),
                tsc: Some("tsc_early_khz=2600000".into()),
            }
        );
        assert!(plan("console=ttyS0").unwrap_err().contains("no ip="));
    }
}

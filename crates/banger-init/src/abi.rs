//! The guest boot ABI: everything the host and banger-init must agree on.
//! The daemon writes the kernel command line with [`BootPlan::cmdline`]
//! and [`GuestNet`], and labels the disks with [`ROOT_LABEL`] and
//! [`OVERLAY_LABEL`]; banger-init reads the same line with [`parse`]. A
//! key renamed on one side only fails the round-trip test below, not a
//! boot.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The image's shared root file system (read-only): `banger.base=`.
pub const BASE_KEY: &str = "banger.base";
/// The VM's own overlay disk (read-write): `banger.overlay=`.
pub const OVERLAY_KEY: &str = "banger.overlay";
/// The image's init, when not [`DEFAULT_INIT`]: `banger.init=`.
pub const INIT_KEY: &str = "banger.init";
/// A probe boot: banger-init prints [`PROBE_MARKER`] and resets.
pub const PROBE_FLAG: &str = "banger.probe";
/// The line a probe boot prints: the host's KVM check looks for it on the
/// console.
pub const PROBE_MARKER: &str = "banger-init: probe ok";
/// The ext4 label of every image's root file system.
pub const ROOT_LABEL: &str = "rootfs";
/// The ext4 label of every VM's overlay disk.
pub const OVERLAY_LABEL: &str = "banger-overlay";
/// Default init when `banger.init` is absent.
pub const DEFAULT_INIT: &str = "/sbin/init";

/// A block device: a path under `/dev`, or the ext4 volume label to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// `/dev/vda`.
    Path(PathBuf),
    /// `LABEL=rootfs`: the virtio disk whose ext4 superblock has this label.
    Label(String),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Label(l) => write!(f, "LABEL={l}"),
        }
    }
}

/// What to assemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    /// The image's shared root file system, mounted read-only.
    pub base: Device,
    /// The VM's own overlay disk, mounted read-write.
    pub overlay: Device,
    /// The image's init, exec'd as PID 1 in the new root.
    pub init: PathBuf,
}

impl BootPlan {
    /// The plan every banger VM boots: both disks found by label, the
    /// image's own init.
    pub fn by_labels() -> Self {
        Self {
            base: Device::Label(ROOT_LABEL.to_owned()),
            overlay: Device::Label(OVERLAY_LABEL.to_owned()),
            init: PathBuf::from(DEFAULT_INIT),
        }
    }

    /// The plan's words on the kernel command line.
    pub fn cmdline(&self) -> String {
        let mut line = format!("{BASE_KEY}={} {OVERLAY_KEY}={}", self.base, self.overlay);
        if self.init != std::path::Path::new(DEFAULT_INIT) {
            line.push_str(&format!(" {INIT_KEY}={}", self.init.display()));
        }
        line
    }
}

/// The guest's static address, as the kernel's `ip=` parameter configures
/// it before init runs (no DHCP in the guest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNet {
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// The host's address on the bridge.
    pub gateway: Ipv4Addr,
    /// The bridge subnet's mask.
    pub netmask: Ipv4Addr,
    /// The guest's hostname (a VM name: a DNS label).
    pub hostname: String,
}

impl std::fmt::Display for GuestNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ip={}::{}:{}:{}:eth0:off",
            self.ip, self.gateway, self.netmask, self.hostname
        )
    }
}

/// Whether the command line asks for a probe boot.
pub fn is_probe(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == PROBE_FLAG)
}

/// A command line banger-init cannot boot from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdlineError {
    /// A required key is absent.
    Missing(&'static str),
    /// A device is neither `/dev/<name>` nor `LABEL=<1 to 16 bytes>`.
    BadDevice(String),
    /// `banger.init=` is not an absolute path without `..`.
    BadInit(String),
}

impl std::fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(key) => write!(f, "{key}= is missing from the kernel command line"),
            Self::BadDevice(v) => write!(
                f,
                "{v}: expected /dev/<name> or LABEL=<label> (an ext4 label is 1 to 16 bytes)"
            ),
            Self::BadInit(v) => write!(f, "{INIT_KEY}={v}: must be an absolute path without .."),
        }
    }
}

impl std::error::Error for CmdlineError {}

/// Parses `banger.base=`, `banger.overlay=` and `banger.init=` from the
/// kernel command line. Both disks are required.
pub fn parse(cmdline: &str) -> Result<BootPlan, CmdlineError> {
    let mut base = None;
    let mut overlay = None;
    let mut init = PathBuf::from(DEFAULT_INIT);
    for word in cmdline.split_whitespace() {
        let Some((key, v)) = word.split_once('=') else {
            continue;
        };
        match key {
            BASE_KEY => base = Some(device(v)?),
            OVERLAY_KEY => overlay = Some(device(v)?),
            INIT_KEY => {
                if !v.starts_with('/') || v.contains("..") {
                    return Err(CmdlineError::BadInit(v.to_owned()));
                }
                init = PathBuf::from(v);
            }
            _ => {}
        }
    }
    Ok(BootPlan {
        base: base.ok_or(CmdlineError::Missing(BASE_KEY))?,
        overlay: overlay.ok_or(CmdlineError::Missing(OVERLAY_KEY))?,
        init,
    })
}

fn device(value: &str) -> Result<Device, CmdlineError> {
    let bad = || CmdlineError::BadDevice(value.to_owned());
    if let Some(label) = value.strip_prefix("LABEL=") {
        if label.is_empty() || label.len() > 16 {
            return Err(bad());
        }
        return Ok(Device::Label(label.to_owned()));
    }
    let ok = value.strip_prefix("/dev/").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'-' || b == b'_')
    }) && !value.contains("..");
    if !ok {
        return Err(bad());
    }
    Ok(Device::Path(PathBuf::from(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_labels_and_default_init() {
        let plan =
            parse("console=ttyS0 banger.base=/dev/vda banger.overlay=LABEL=overlay quiet").unwrap();
        assert_eq!(plan.base, Device::Path("/dev/vda".into()));
        assert_eq!(plan.overlay, Device::Label("overlay".into()));
        assert_eq!(plan.init, PathBuf::from("/sbin/init"));
        let plan = parse(
            "banger.base=LABEL=rootfs banger.overlay=/dev/vdb banger.init=/lib/systemd/systemd",
        )
        .unwrap();
        assert_eq!(plan.init, PathBuf::from("/lib/systemd/systemd"));
    }

    #[test]
    fn refuses_missing_disks_and_odd_values() {
        assert!(
            parse("banger.overlay=/dev/vdb")
                .unwrap_err()
                .to_string()
                .contains("banger.base=")
        );
        assert!(
            parse("banger.base=/dev/vda")
                .unwrap_err()
                .to_string()
                .contains("banger.overlay=")
        );
        for bad in [
            "banger.base=/etc/passwd",
            "banger.base=/dev/../etc",
            "banger.base=LABEL=",
            "banger.base=/dev/",
        ] {
            assert!(
                parse(&format!("{bad} banger.overlay=/dev/vdb")).is_err(),
                "{bad}"
            );
        }
        assert!(
            parse("banger.base=/dev/vda banger.overlay=/dev/vdb banger.init=sbin/init").is_err()
        );
    }

    #[test]
    fn what_the_host_writes_is_what_init_reads() {
        let plans = [
            BootPlan::by_labels(),
            BootPlan {
                base: Device::Path("/dev/vda".into()),
                overlay: Device::Label("x".into()),
                init: "/lib/systemd/systemd".into(),
            },
        ];
        for plan in plans {
            let net = GuestNet {
                ip: Ipv4Addr::new(10, 77, 0, 2),
                gateway: Ipv4Addr::new(10, 77, 0, 1),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                hostname: "web".into(),
            };
            let line = format!("console=ttyS0 {} {net}", plan.cmdline());
            assert_eq!(parse(&line), Ok(plan), "{line}");
            assert!(!is_probe(&line));
        }
        assert!(is_probe(&format!("console=ttyS0 {PROBE_FLAG}")));
    }

    #[test]
    fn the_labels_fit_ext4() {
        for label in [ROOT_LABEL, OVERLAY_LABEL] {
            assert!(device(&format!("LABEL={label}")).is_ok(), "{label}");
        }
    }
}

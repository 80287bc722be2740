//! The kernel command line parameters banger-init reads.

use std::path::PathBuf;

/// A block device: a path under `/dev`, or the ext4 volume label to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// `/dev/vda`.
    Path(PathBuf),
    /// `LABEL=rootfs`: the virtio disk whose ext4 superblock has this label.
    Label(String),
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

/// Default init when `banger.init` is absent.
pub const DEFAULT_INIT: &str = "/sbin/init";

/// Parses `banger.base=`, `banger.overlay=` and `banger.init=` from the
/// kernel command line. Both disks are required.
pub fn parse(cmdline: &str) -> Result<BootPlan, String> {
    let mut base = None;
    let mut overlay = None;
    let mut init = PathBuf::from(DEFAULT_INIT);
    for word in cmdline.split_whitespace() {
        if let Some(v) = word.strip_prefix("banger.base=") {
            base = Some(device(v)?);
        } else if let Some(v) = word.strip_prefix("banger.overlay=") {
            overlay = Some(device(v)?);
        } else if let Some(v) = word.strip_prefix("banger.init=") {
            if !v.starts_with('/') || v.contains("..") {
                return Err(format!(
                    "banger.init={v}: must be an absolute path without .."
                ));
            }
            init = PathBuf::from(v);
        }
    }
    Ok(BootPlan {
        base: base.ok_or("banger.base= is missing from the kernel command line")?,
        overlay: overlay.ok_or("banger.overlay= is missing from the kernel command line")?,
        init,
    })
}

fn device(value: &str) -> Result<Device, String> {
    if let Some(label) = value.strip_prefix("LABEL=") {
        if label.is_empty() || label.len() > 16 {
            return Err(format!("{value}: an ext4 label is 1 to 16 bytes"));
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
        return Err(format!("{value}: expected /dev/<name> or LABEL=<label>"));
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
                .contains("banger.base=")
        );
        assert!(
            parse("banger.base=/dev/vda")
                .unwrap_err()
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
}

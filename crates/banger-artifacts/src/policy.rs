//! What an image's tree may hold, whichever way it arrives: a tarball
//! import, a registry pull (after flattening) and a catalog build all pass
//! the same checks, so no path into an image is weaker than another.
//!
//! Setuid and setgid bits, foreign owners and file capabilities are kept:
//! a guest's `su` and `sudo` need them, and they act only inside the guest.
//! Device nodes are not: a block device or `/dev/mem` in an image is never
//! needed, so only the character devices every Linux has are accepted.

use tar::EntryType;

/// Character devices an image may carry.
const ALLOWED_CHAR_DEVICES: [(u32, u32); 8] = [
    (1, 3), // null
    (1, 5), // zero
    (1, 7), // full
    (1, 8), // random
    (1, 9), // urandom
    (5, 0), // tty
    (5, 1), // console
    (5, 2), // ptmx
];

/// Why an archive entry's path or kind is refused (the tar scan and the
/// OCI flatten share these rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A path starting with `/`.
    #[error("absolute path")]
    Absolute,
    /// A path over the limit, in bytes.
    #[error("path longer than {0} bytes")]
    PathTooLong(usize),
    /// A `..` component.
    #[error("`..` path component")]
    DotDot,
    /// A component ext4 cannot store.
    #[error("name component of {len} bytes, longer than the {max} ext4 can store")]
    NameTooLong {
        /// Its length.
        len: usize,
        /// ext4's limit.
        max: usize,
    },
    /// A block device node.
    #[error("block devices are not allowed in an image")]
    BlockDevice,
    /// A character device whose numbers cannot be read.
    #[error("character device with unreadable device numbers")]
    UnreadableDevice,
    /// A character device outside [`ALLOWED_CHAR_DEVICES`].
    #[error(
        "character device {major}:{minor} is not one of the usual ones (null, zero, full, random, urandom, tty, console, ptmx)"
    )]
    UnusualDevice {
        /// Its major number.
        major: u32,
        /// Its minor number.
        minor: u32,
    },
}

/// Refuses a device node outside [`ALLOWED_CHAR_DEVICES`]. `major` and
/// `minor` are read from the header only for devices.
pub fn check_device(kind: EntryType, header: &tar::Header) -> Result<(), Refusal> {
    match kind {
        EntryType::Block => Err(Refusal::BlockDevice),
        EntryType::Char => {
            let (Some(major), Some(minor)) = (
                header.device_major().ok().flatten(),
                header.device_minor().ok().flatten(),
            ) else {
                return Err(Refusal::UnreadableDevice);
            };
            if ALLOWED_CHAR_DEVICES.contains(&(major, minor)) {
                Ok(())
            } else {
                Err(Refusal::UnusualDevice { major, minor })
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(kind: EntryType, major: u32, minor: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h
    }

    #[test]
    fn only_the_usual_character_devices_pass() {
        let null = device(EntryType::Char, 1, 3);
        assert!(check_device(EntryType::Char, &null).is_ok());
        let mem = device(EntryType::Char, 1, 1);
        assert!(
            check_device(EntryType::Char, &mem)
                .unwrap_err()
                .to_string()
                .contains("1:1")
        );
        let sda = device(EntryType::Block, 8, 0);
        assert!(
            check_device(EntryType::Block, &sda)
                .unwrap_err()
                .to_string()
                .contains("block devices")
        );
        assert!(check_device(EntryType::Regular, &tar::Header::new_gnu()).is_ok());
    }
}

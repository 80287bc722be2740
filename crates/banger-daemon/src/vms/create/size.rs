//! A VM's shape (vCPUs, memory, work disk): its limits, and whether the
//! host has room for it.

use crate::vms::VmError;

const DEFAULT_VCPUS: u32 = 2;
const DEFAULT_MEMORY_MIB: u32 = 1024;
const DEFAULT_DISK_BYTES: u64 = 8 << 30;
const MIN_DISK_BYTES: u64 = 64 << 20;
const MAX_DISK_BYTES: u64 = 16 << 40;

/// A VM's requested shape, checked.
#[derive(Debug, Clone, Copy)]
pub(in crate::vms) struct Size {
    pub(in crate::vms) vcpus: u32,
    pub(in crate::vms) memory_mib: u32,
    pub(in crate::vms) disk_bytes: u64,
}

impl Size {
    pub(in crate::vms) fn checked(
        vcpus: Option<u32>,
        memory_mib: Option<u32>,
        disk_bytes: Option<u64>,
        current_disk: Option<u64>,
    ) -> Result<Self, VmError> {
        let size = Self {
            vcpus: vcpus.unwrap_or(DEFAULT_VCPUS),
            memory_mib: memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
            disk_bytes: disk_bytes.unwrap_or(DEFAULT_DISK_BYTES),
        };
        if !(1..=64).contains(&size.vcpus) {
            return Err(VmError::Invalid(format!(
                "vcpus must be 1 to 64, got {}",
                size.vcpus
            )));
        }
        if !(128..=1_048_576).contains(&size.memory_mib) {
            return Err(VmError::Invalid(format!(
                "memory must be 128 MiB to 1 TiB, got {} MiB",
                size.memory_mib
            )));
        }
        if !(MIN_DISK_BYTES..=MAX_DISK_BYTES).contains(&size.disk_bytes) {
            return Err(VmError::Invalid(format!(
                "disk size must be 64 MiB to 16 TiB, got {} bytes",
                size.disk_bytes
            )));
        }
        if let Some(current) = current_disk
            && size.disk_bytes < current
        {
            return Err(VmError::Invalid(format!(
                "the work disk can only grow: it is {current} bytes, asked for {}",
                size.disk_bytes
            )));
        }
        Ok(size)
    }
}

impl Size {
    /// Refuses a shape this host has no room for: a work disk growing by
    /// `disk_growth` bytes beyond what its file system has free (disks
    /// are sparse, but a guest that fills one must not fill the host's),
    /// more vCPUs than the host has, more memory than the host has.
    /// `running_memory_mib` is what running VMs already hold; 0 when the
    /// VM is not about to start. vCPUs of different VMs share the host's
    /// CPUs by time, so only one VM's count is bounded; memory is not
    /// shared, so the sum is.
    pub(in crate::vms) fn check_room(
        &self,
        room: &banger_sys::host::Room,
        disk_growth: u64,
        running_memory_mib: u64,
    ) -> Result<(), VmError> {
        let full = VmError::NoRoom;
        if disk_growth > room.free_disk_bytes {
            return Err(full(format!(
                "the work disk needs {} more but the host has {} free for VMs",
                gib(disk_growth),
                gib(room.free_disk_bytes)
            )));
        }
        if self.vcpus > room.cpus {
            return Err(full(format!(
                "{} vCPUs asked for but the host has {} CPUs",
                self.vcpus, room.cpus
            )));
        }
        let wanted = running_memory_mib + u64::from(self.memory_mib);
        if wanted > room.memory_mib {
            return Err(full(if running_memory_mib == 0 {
                format!(
                    "{} MiB of memory asked for but the host has {} MiB",
                    self.memory_mib, room.memory_mib
                )
            } else {
                format!(
                    "{} MiB of memory asked for but running VMs already hold {running_memory_mib} of the host's {} MiB",
                    self.memory_mib, room.memory_mib
                )
            }));
        }
        Ok(())
    }
}

fn gib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "a figure for people")]
    let g = bytes as f64 / f64::from(1u32 << 30);
    format!("{g:.1} GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_with_messages_naming_the_field() {
        assert!(Size::checked(None, None, None, None).is_ok());
        for (v, m, d, cur, needle) in [
            (Some(0), None, None, None, "vcpus"),
            (Some(65), None, None, None, "vcpus"),
            (None, Some(64), None, None, "memory"),
            (None, None, Some(1 << 20), None, "disk size"),
            (None, None, Some(1 << 30), Some(2 << 30), "only grow"),
        ] {
            let err = Size::checked(v, m, d, cur).unwrap_err();
            assert!(matches!(err, VmError::Invalid(_)), "{err:?}");
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn a_shape_the_host_has_no_room_for_is_refused_naming_what() {
        let room = banger_sys::host::Room {
            free_disk_bytes: 20 << 30,
            memory_mib: 4096,
            cpus: 2,
        };
        let size = |vcpus, memory_mib, disk_bytes| Size {
            vcpus,
            memory_mib,
            disk_bytes,
        };
        size(2, 1024, 8 << 30)
            .check_room(&room, 8 << 30, 0)
            .unwrap();
        size(2, 1024, 8 << 30)
            .check_room(&room, 8 << 30, 3072)
            .unwrap();
        for (s, growth, running, says) in [
            (
                size(2, 1024, 1 << 40),
                1 << 40,
                0,
                "1024.0 GiB more but the host has 20.0 GiB free",
            ),
            (
                size(4, 1024, 8 << 30),
                0,
                0,
                "4 vCPUs asked for but the host has 2",
            ),
            (
                size(1, 8192, 8 << 30),
                0,
                0,
                "8192 MiB of memory asked for but the host has 4096",
            ),
            (
                size(1, 2048, 8 << 30),
                0,
                3072,
                "running VMs already hold 3072 of the host's 4096 MiB",
            ),
        ] {
            let err = s.check_room(&room, growth, running).unwrap_err();
            assert!(matches!(err, VmError::NoRoom(_)), "{err:?}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}

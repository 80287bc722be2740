//! Facts about the host that guests need.

/// The host's TSC frequency in kHz, from `/proc/cpuinfo` text (the first
/// `cpu MHz` line).
///
/// A TCG guest's TSC ticks at the host's rate, and telling its kernel so
/// (`tsc_early_khz=`) skips calibrating against the emulated PIT: under
/// load that calibration sometimes fails ("tsc: Unable to calibrate
/// against PIT") and the boot then stalls for good, seen in about one
/// TCG boot in thirty here.
pub fn tsc_khz(cpuinfo: &str) -> Option<u64> {
    let mhz = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim();
    let (int, frac) = mhz.split_once('.').unwrap_or((mhz, ""));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
    let khz = int.parse::<u64>().ok()? * 1000 + frac.parse::<u64>().ok()?;
    (khz > 0).then_some(khz)
}

/// [`tsc_khz`] of this host.
pub fn host_tsc_khz() -> Option<u64> {
    tsc_khz(&std::fs::read_to_string("/proc/cpuinfo").ok()?)
}

/// What the host has room for: the numbers a VM's disk and memory are
/// checked against before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// Bytes an unprivileged writer may still use on the VM directory's
    /// file system.
    pub free_disk_bytes: u64,
    /// The host's memory, in MiB (`MemTotal`).
    pub memory_mib: u64,
    /// CPUs this process may run on.
    pub cpus: u32,
}

/// The `MemTotal` of `/proc/meminfo` text, in MiB.
pub fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Free bytes for unprivileged writers on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero statvfs is a valid value for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// [`Room`] on this host, for VMs kept under `vm_dir`.
pub fn room(vm_dir: &std::path::Path) -> std::io::Result<Room> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    Ok(Room {
        free_disk_bytes: free_bytes(vm_dir)?,
        memory_mib: mem_total_mib(&meminfo).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no MemTotal in /proc/meminfo",
            )
        })?,
        cpus: std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
    })
}

/// Whether this process may open the device (or file) at `path` for
/// reading and writing, as a VMM opens `/dev/kvm` and `/dev/net/tun`.
pub fn opens_rw(path: &std::path::Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_mib() {
        let text = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";
        assert_eq!(mem_total_mib(text), Some(24000));
        assert_eq!(mem_total_mib("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn free_bytes_of_a_real_directory_and_an_error_for_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn reads_the_first_cpu_mhz_line() {
        let text = "processor\t: 0\nmodel name\t: X\ncpu MHz\t\t: 2596.122\ncpu MHz\t\t: 1.0\n";
        assert_eq!(tsc_khz(text), Some(2_596_122));
        assert_eq!(tsc_khz("cpu MHz : 3000\n"), Some(3_000_000));
        assert_eq!(tsc_khz("cpu MHz : 2400.5\n"), Some(2_400_500));
        assert_eq!(tsc_khz("model name : X\n"), None);
        assert_eq!(tsc_khz("cpu MHz : fast\n"), None);
    }

    #[test]
    fn this_host_has_a_tsc_rate() {
        assert!(host_tsc_khz().is_some_and(|k| k > 100_000));
    }
}

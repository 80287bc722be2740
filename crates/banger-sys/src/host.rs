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

#[cfg(test)]
mod tests {
    use super::*;

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

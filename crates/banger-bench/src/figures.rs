//! Figures: samples summarised as median, min and max; the table and the
//! JSON report; the few log and /proc parsers the harness needs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ms,
    Mib,
    Ratio,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ms => "ms",
            Self::Mib => "MiB",
            Self::Ratio => "x",
        }
    }
}

/// One measured quantity and its samples, in measurement order.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub unit: Unit,
    pub samples: Vec<f64>,
}

impl Figure {
    pub fn new(name: &str, unit: Unit, samples: Vec<f64>) -> Self {
        Self {
            name: name.to_owned(),
            unit,
            samples,
        }
    }

    pub fn durations(name: &str, samples: &[Duration]) -> Self {
        Self::new(
            name,
            Unit::Ms,
            samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        )
    }

    /// Run by run, `num` over `den` (both measured in the same runs).
    pub fn ratio(name: &str, num: &Self, den: &Self) -> Self {
        Self::new(
            name,
            Unit::Ratio,
            num.samples
                .iter()
                .zip(&den.samples)
                .filter(|(_, d)| **d > 0.0)
                .map(|(n, d)| n / d)
                .collect(),
        )
    }

    fn sorted(&self) -> Vec<f64> {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        s
    }

    /// The middle sample (the lower of the two middle ones for an even
    /// count, so the figure is always one that was measured).
    pub fn median(&self) -> Option<f64> {
        let s = self.sorted();
        s.get(s.len().saturating_sub(1) / 2).copied()
    }

    pub fn min(&self) -> Option<f64> {
        self.sorted().first().copied()
    }

    pub fn max(&self) -> Option<f64> {
        self.sorted().last().copied()
    }
}

fn fmt(v: Option<f64>, unit: Unit) -> String {
    match (v, unit) {
        (None, _) => "-".to_owned(),
        (Some(v), Unit::Ratio) => format!("{v:.2}"),
        (Some(v), Unit::Mib) => format!("{v:.1}"),
        (Some(v), _) => format!("{v:.0}"),
    }
}

/// The table printed at the end of a run.
pub fn table(figs: &[Figure], runs: usize, accel: &str) -> String {
    let m = machine();
    let mut out = format!(
        "\nbanger bench: {} cores ({}), {}, accel {accel}, {runs} run(s) per figure\n\n",
        m.cores, m.cpu, m.qemu
    );
    let width = figs.iter().map(|f| f.name.len()).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "{:width$}  {:>9}  {:>9}  {:>9}  unit",
        "figure", "median", "min", "max"
    );
    for f in figs {
        let _ = writeln!(
            out,
            "{:width$}  {:>9}  {:>9}  {:>9}  {}",
            f.name,
            fmt(f.median(), f.unit),
            fmt(f.min(), f.unit),
            fmt(f.max(), f.unit),
            f.unit.as_str()
        );
    }
    out
}

struct Machine {
    cores: usize,
    cpu: String,
    qemu: String,
}

#[allow(clippy::disallowed_methods, reason = "asks qemu its version")]
fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let qemu = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .replace("QEMU emulator version", "QEMU")
        })
        .unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        cpu,
        qemu,
    }
}

/// The JSON report: the machine, then every figure with its samples.
pub fn report(figs: &[Figure], runs: usize, quick: bool, accel: &str) -> serde_json::Value {
    let m = machine();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    serde_json::json!({
        "unix_time": unix,
        "machine": { "cores": m.cores, "cpu": m.cpu, "qemu": m.qemu },
        "accel": accel,
        "runs": runs,
        "quick": quick,
        "figures": figs.iter().map(|f| serde_json::json!({
            "name": f.name,
            "unit": f.unit.as_str(),
            "median": f.median(),
            "min": f.min(),
            "max": f.max(),
            "samples": f.samples,
        })).collect::<Vec<_>>(),
    })
}

/// Writes `bench-<unix time>.json` and `latest.json` under `dir`.
pub fn write_json(dir: &Path, report: &serde_json::Value) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    let path = dir.join(format!("bench-{}.json", report["unix_time"]));
    for p in [&path, &dir.join("latest.json")] {
        std::fs::write(p, &text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(path)
}

/// The last `n` values of the numeric JSON field `field` in a JSON-lines
/// log.
pub fn logged_millis(log: &str, field: &str, n: usize) -> Vec<f64> {
    let key = format!("\"{field}\":");
    let all: Vec<f64> = log
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find(&key)? + key.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect();
    all[all.len().saturating_sub(n)..].to_vec()
}

/// The string after the last `prefix` in `text`, up to the next quote.
pub fn last_field(text: &str, prefix: &str) -> Option<String> {
    let rest = &text[text.rfind(prefix)? + prefix.len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// `VmRSS` from a /proc/<pid>/status text, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max_are_measured_samples() {
        let f = Figure::new("x", Unit::Ms, vec![5.0, 1.0, 3.0, 4.0]);
        assert_eq!(f.median(), Some(3.0));
        assert_eq!((f.min(), f.max()), (Some(1.0), Some(5.0)));
        assert_eq!(Figure::new("e", Unit::Ms, vec![]).median(), None);
    }

    #[test]
    fn ratios_pair_runs_and_skip_zero_denominators() {
        let a = Figure::new("a", Unit::Ms, vec![10.0, 30.0, 8.0]);
        let b = Figure::new("b", Unit::Ms, vec![5.0, 10.0, 0.0]);
        assert_eq!(Figure::ratio("r", &a, &b).samples, [2.0, 3.0]);
    }

    #[test]
    fn logged_fields_are_read_from_the_last_lines() {
        let log = concat!(
            "{\"fields\":{\"message\":\"vmm running\",\"before_vmm_ms\":509,\"vmm_setup_ms\":51}}\n",
            "{\"fields\":{\"message\":\"other\"}}\n",
            "{\"fields\":{\"message\":\"vmm running\",\"before_vmm_ms\":83}}\n",
        );
        assert_eq!(logged_millis(log, "before_vmm_ms", 1), [83.0]);
        assert_eq!(logged_millis(log, "before_vmm_ms", 5), [509.0, 83.0]);
        assert_eq!(
            last_field("\"accel\":\"kvm\" \"accel\":\"tcg\"", "\"accel\":\""),
            Some("tcg".to_owned())
        );
    }

    #[test]
    fn rss_comes_from_the_vmrss_line() {
        let status = "Name:\tbangerd\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(vm_rss_kib(status), Some(12345.0));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
    }
}

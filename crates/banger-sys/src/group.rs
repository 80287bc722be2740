//! Process groups recorded for a later daemon: a build runs in a group of
//! its own, and its staging directory records the group's id, the
//! leader's start time and the boot, so a daemon that starts after a crash
//! stops exactly that group, and never an unrelated process that happens
//! to mention the same path (a user's `du` or `tail` of it).

use std::path::Path;
use std::time::Duration;

/// A process group as recorded while its build ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// The group id (the leader's pid).
    pub pgid: u32,
    /// The leader's start time, in clock ticks since boot (`/proc/<pid>/stat`).
    pub start_ticks: u64,
    /// The boot it ran in (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
}

/// (pgid, start time) of a `/proc/<pid>/stat` line.
fn stat_fields(stat: &str) -> Option<(u32, u64)> {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
    // majflt cmajflt utime stime cutime cstime priority nice threads
    // itrealvalue starttime: after the comm, pgrp is the 3rd field and
    // starttime the 20th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

fn boot_id(proc_root: &Path) -> Option<String> {
    std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))
        .ok()
        .map(|s| s.trim().to_owned())
}

impl GroupRecord {
    /// The group led by `pid`, read from `proc_root`.
    pub fn of(proc_root: &Path, pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
        let (pgid, start_ticks) = stat_fields(&stat)?;
        Some(Self {
            pgid,
            start_ticks,
            boot_id: boot_id(proc_root)?,
        })
    }

    /// Writes the record to `path` (a temporary sibling, then a rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            format!("{} {} {}\n", self.pgid, self.start_ticks, self.boot_id),
        )?;
        std::fs::rename(&tmp, path)
    }

    /// The record at `path`, if there is a well-formed one.
    pub fn read(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut parts = text.split_whitespace();
        let record = Self {
            pgid: parts.next()?.parse().ok()?,
            start_ticks: parts.next()?.parse().ok()?,
            boot_id: parts.next()?.to_owned(),
        };
        (record.pgid > 1 && parts.next().is_none()).then_some(record)
    }

    /// The processes of this group still running, judged from `proc_root`.
    /// None when the boot changed or the group id now leads another group
    /// (its leader started at another time); otherwise the members that
    /// started no earlier than the recorded leader (a group id cannot be
    /// handed out again while any member of the group lives).
    pub fn members(&self, proc_root: &Path) -> Vec<u32> {
        if boot_id(proc_root).as_deref() != Some(self.boot_id.as_str()) {
            return Vec::new();
        }
        let read = |pid: u32| {
            std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))
                .ok()
                .and_then(|s| stat_fields(&s))
        };
        if let Some((_, start)) = read(self.pgid)
            && start != self.start_ticks
        {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir(proc_root) else {
            return Vec::new();
        };
        let mut members: Vec<u32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                read(*pid)
                    .is_some_and(|(pgid, start)| pgid == self.pgid && start >= self.start_ticks)
                    && crate::process::pid_alive_in(proc_root, *pid)
            })
            .collect();
        members.sort_unstable();
        members
    }

    /// Stops the group on this host: SIGTERM (a build cleans up after
    /// itself), up to `grace` for it to go, then SIGKILL. Returns whether
    /// any member was found.
    pub fn stop(&self, grace: Duration) -> bool {
        let proc_root = Path::new("/proc");
        if self.members(proc_root).is_empty() {
            return false;
        }
        signal_group(self.pgid, libc::SIGTERM);
        let gone = crate::wait::poll_until(grace, Duration::from_millis(20), || {
            self.members(proc_root).is_empty()
        });
        if !gone {
            signal_group(self.pgid, libc::SIGKILL);
        }
        true
    }
}

/// Sends `signal` to process group `pgid`.
pub fn signal_group(pgid: u32, signal: i32) {
    if let Ok(pgid) = i32::try_from(pgid)
        && pgid > 1
    {
        // SAFETY: kill with a negative pid signals a process group; no
        // memory is involved.
        unsafe { libc::kill(-pgid, signal) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /proc with one boot id and `(pid, pgid, start)` processes.
    fn fake_proc(procs: &[(u32, u32, u64)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/kernel/random")).unwrap();
        std::fs::write(dir.path().join("sys/kernel/random/boot_id"), "boot-1\n").unwrap();
        for (pid, pgid, start) in procs {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            let fields: Vec<String> = (0..13).map(|i| i.to_string()).collect();
            std::fs::write(
                d.join("stat"),
                format!(
                    "{pid} (a b) c) S 1 {pgid} 1 0 -1 {} {start} 0\n",
                    fields.join(" ")
                ),
            )
            .unwrap();
        }
        dir
    }

    fn record(pgid: u32, start_ticks: u64) -> GroupRecord {
        GroupRecord {
            pgid,
            start_ticks,
            boot_id: "boot-1".into(),
        }
    }

    #[test]
    fn the_recorded_group_is_found_with_its_orphans() {
        let proc = fake_proc(&[
            (100, 100, 500),
            (101, 100, 510),
            (102, 100, 520),
            (200, 200, 10),
        ]);
        assert_eq!(GroupRecord::of(proc.path(), 100), Some(record(100, 500)));
        assert_eq!(record(100, 500).members(proc.path()), [100, 101, 102]);
        // The leader died; its children are still the build's.
        let proc = fake_proc(&[(101, 100, 510), (300, 300, 5)]);
        assert_eq!(record(100, 500).members(proc.path()), [101]);
    }

    #[test]
    fn a_reused_group_id_or_another_boot_is_never_the_build() {
        // Another process leads group 100 now, started at another time.
        let proc = fake_proc(&[(100, 100, 900), (101, 100, 910)]);
        assert!(record(100, 500).members(proc.path()).is_empty());
        let proc = fake_proc(&[(100, 100, 500)]);
        let other_boot = GroupRecord {
            boot_id: "boot-0".into(),
            ..record(100, 500)
        };
        assert!(other_boot.members(proc.path()).is_empty());
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".build-group");
        record(4242, 77).write(&path).unwrap();
        assert_eq!(GroupRecord::read(&path), Some(record(4242, 77)));
        for bad in ["", "1 2 boot", "x 2 boot", "5 2", "5 2 boot extra"] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(GroupRecord::read(&path), None, "{bad:?}");
        }
    }
}

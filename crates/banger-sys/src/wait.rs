//! The small seams every waiting or locking caller shares: polling a
//! condition under a deadline, taking a lock a panicked holder poisoned,
//! and finding a program on `PATH`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Asks `done` every `every` until it holds or `timeout` has passed, and
/// returns whether it held. `done` is always asked once more at the
/// deadline, so a condition that became true during the last pause counts.
pub fn poll_until(timeout: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

/// Locks `m`, even when a thread panicked while holding it: every value
/// banger guards stays consistent across a panic (plain maps and markers),
/// and one panicked request must not wedge the daemon.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where `tool` is: itself when absolute (and a file), else the first file
/// of that name on `PATH`, then in `/usr/sbin` and `/sbin` (often missing
/// from a user's `PATH`, and where `ip` and `mkfs.ext4` live).
pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    let p = Path::new(tool);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|c| c.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_until_reports_whether_the_condition_held_in_time() {
        let mut asked = 0;
        assert!(poll_until(
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                asked += 1;
                asked == 3
            }
        ));
        assert_eq!(asked, 3);
        let started = Instant::now();
        assert!(!poll_until(
            Duration::from_millis(30),
            Duration::from_millis(5),
            || false
        ));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn lock_survives_a_poisoned_mutex() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }

    #[test]
    fn find_in_path_takes_absolute_paths_only_when_they_exist() {
        assert_eq!(find_in_path("/bin/sh"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(find_in_path("/nonexistent/tool"), None);
        assert!(find_in_path("sh").is_some());
        assert_eq!(find_in_path("no-such-tool-banger"), None);
    }
}

//! A running VM's transient handles: in memory, and in the VM's
//! `handles.json` so a restarted daemon can find its VMM again.

use serde::{Deserialize, Serialize};

use super::dir::VmDir;

/// What identifies a running VM's host-side pieces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handles {
    /// The VMM's pid.
    pub pid: u32,
    /// The host tap.
    pub tap: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// The driver that started it.
    pub vmm: String,
}

/// Writes `handles` atomically (temp file and rename).
pub fn write(dir: &VmDir, handles: &Handles) -> std::io::Result<()> {
    let path = dir.handles();
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(handles).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

/// Reads `handles.json`; `None` when missing or unreadable.
pub fn read(dir: &VmDir) -> Option<Handles> {
    serde_json::from_slice(&std::fs::read(dir.handles()).ok()?).ok()
}

/// Removes `handles.json`; a missing one is fine.
pub fn remove(dir: &VmDir) -> std::io::Result<()> {
    match std::fs::remove_file(dir.handles()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tolerates_absence() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = VmDir::new(tmp.path());
        assert!(read(&dir).is_none());
        let h = Handles {
            pid: 42,
            tap: "bgt0a".into(),
            accel: "tcg".into(),
            vmm: "qemu".into(),
        };
        write(&dir, &h).unwrap();
        assert_eq!(read(&dir), Some(h));
        remove(&dir).unwrap();
        remove(&dir).unwrap();
        std::fs::write(dir.handles(), b"{torn").unwrap();
        assert!(read(&dir).is_none());
    }
}

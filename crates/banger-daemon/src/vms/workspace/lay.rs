//! A workspace laid in before the first boot: for a VM created with a
//! workspace disk and never started, the checkout is written into that
//! disk on the host (`mke2fs -d` from the tar) instead of over SSH into a
//! running guest, so `vm run PATH` costs a boot plus a disk build. The
//! disk is banger's own until the first boot, like the work disk, so
//! e2fsprogs may write it; the tar is checked entry by entry first, by the
//! same rules as an image.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use banger_api::workspace::END_MARKER;
use banger_api::{PrepareWorkspaceQuery, Vm, VmState};
use banger_store::VmRecord;
use banger_sys::io_at;

use super::super::{Vms, disks, failed_by, remove_temp};
use crate::vms::VmError;

impl Vms {
    /// Whether a prepare of `vm` is laid into its workspace disk on the
    /// host: a VM never started that has one, and a work tree as it is
    /// (`--from` and `--branch` need git in the guest).
    pub(super) fn lays_in(&self, vm: &VmRecord, query: &PrepareWorkspaceQuery) -> bool {
        vm.state == VmState::Created
            && query.checkout.is_none()
            && query.branch.is_none()
            && self.dir(&vm.id).disks().repo.exists()
    }

    /// Writes the checkout `tar` carries into `vm`'s workspace disk, under
    /// the VM's lifecycle lock (a start must not boot a half-built disk).
    pub(super) fn lay_in(
        &self,
        vm: &VmRecord,
        query: &PrepareWorkspaceQuery,
        tar: &mut dyn Read,
    ) -> Result<Vm, VmError> {
        let vm = self.unless_busy(vm, |vm| {
            if vm.state != VmState::Created || self.handles(&vm.id).is_some() {
                return Err(VmError::Busy(vm.name));
            }
            let path = self.dir(&vm.id).path().join("workspace.tar");
            let result = self.build_disk(&vm, &path, tar);
            remove_temp(&path);
            result.map(|()| vm)
        })?;
        self.record_workspace(vm, query, self.settings.workspace_guest_path.clone())
    }

    fn build_disk(&self, vm: &VmRecord, path: &Path, tar: &mut dyn Read) -> Result<(), VmError> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_at("create", path))
            .map_err(|e| failed_by(&e))?;
        std::io::copy(tar, &mut file)
            .map_err(|e| VmError::Invalid(format!("the workspace stream broke: {e}")))?;
        strip_end_marker(&mut file).map_err(|e| match e {
            MarkerError::Missing => VmError::Invalid(
                "the workspace stream ended early: its last entry is not the end marker".into(),
            ),
            MarkerError::Io(e) => VmError::Internal(format!("{}: {e}", path.display())),
        })?;
        drop(file);
        let summary = banger_artifacts::tarscan::scan(path).map_err(|e| match e {
            banger_artifacts::tarscan::TarError::Refused { .. } => {
                VmError::Invalid(format!("the workspace: {e}"))
            }
            other => failed_by(&other),
        })?;
        let dir = self.dir(&vm.id);
        disks::fill_repo(
            &self.runner,
            &dir.disks(),
            path,
            (summary.bytes, summary.entries, vm.disk_bytes),
            &dir.create_log(),
        )
        .map_err(|e| failed_by(&e))
    }
}

#[derive(Debug)]
enum MarkerError {
    Missing,
    Io(std::io::Error),
}

/// Checks that the tar in `file` ends with the end marker entry (then the
/// two zero blocks that end an archive) and cuts that entry off, so the
/// disk does not hold it: the stream was whole.
fn strip_end_marker(file: &mut std::fs::File) -> Result<(), MarkerError> {
    const BLOCK: u64 = 512;
    let len = file.metadata().map_err(MarkerError::Io)?.len();
    if len < 3 * BLOCK || len % BLOCK != 0 {
        return Err(MarkerError::Missing);
    }
    let mut tail = [0u8; 3 * 512];
    file.seek(SeekFrom::Start(len - 3 * BLOCK))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(MarkerError::Io)?;
    let header = tar::Header::from_byte_slice(&tail[..512]);
    let is_marker = header.path_bytes().as_ref() == END_MARKER.as_bytes()
        && header.entry_type() == tar::EntryType::Regular
        && header.size().ok() == Some(0)
        && verify_cksum(&tail[..512])
        && tail[512..].iter().all(|b| *b == 0);
    if !is_marker {
        return Err(MarkerError::Missing);
    }
    file.set_len(len - 3 * BLOCK).map_err(MarkerError::Io)?;
    file.seek(SeekFrom::End(0))
        .and_then(|_| file.write_all(&[0u8; 1024]))
        .map_err(MarkerError::Io)
}

/// A tar header's checksum: the sum of its bytes with the checksum field
/// counted as spaces.
fn verify_cksum(block: &[u8]) -> bool {
    let header = tar::Header::from_byte_slice(block);
    let Ok(stored) = header.cksum() else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == stored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(last: &str) -> std::fs::File {
        let mut b = tar::Builder::new(tempfile::tempfile().unwrap());
        for name in ["a.txt", last] {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, std::io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn only_a_stream_that_ends_with_the_marker_is_whole() {
        let mut whole = tar_with(END_MARKER);
        strip_end_marker(&mut whole).unwrap();
        whole.seek(SeekFrom::Start(0)).unwrap();
        let names: Vec<String> = tar::Archive::new(&whole)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.txt"]);

        let mut cut = tar_with("b.txt");
        assert!(matches!(
            strip_end_marker(&mut cut),
            Err(MarkerError::Missing)
        ));
        let mut empty = tempfile::tempfile().unwrap();
        assert!(matches!(
            strip_end_marker(&mut empty),
            Err(MarkerError::Missing)
        ));
    }
}

//! A workspace laid in before the first boot: for a VM created with a
//! workspace disk and never started, the checkout is written into that
//! disk on the host (`mke2fs -d`) instead of over SSH into a running
//! guest, so `vm run PATH` costs a boot plus a disk build. The disk is
//! banger's own until the first boot, like the work disk, so e2fsprogs
//! may write it.
//!
//! The client's bytes never reach `mke2fs`: it reads archives through
//! libarchive, which guesses filters and formats from the bytes (a first
//! entry named like a gzip header would be decompressed, a PAX key the
//! tar crate ignores would rename an entry). The upload is checked entry
//! by entry by the image rules, then written again by banger: fresh GNU
//! headers (root-owned; mode, mtime, size), no extensions, a `./` first,
//! only directories, regular files and symlinks.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use banger_api::workspace::END_MARKER;
use banger_api::{PrepareWorkspaceQuery, Vm, VmState};
use banger_artifacts::tarscan;
use banger_store::VmRecord;

use super::super::{Vms, disks, failed, failed_by, remove_temp};
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

    /// Writes the checkout `tar` carries into `vm`'s workspace disk. The
    /// upload is taken and checked first; only the disk build runs under
    /// the VM's lifecycle lock (a start must not boot a half-built disk).
    pub(super) fn lay_in(
        &self,
        vm: &VmRecord,
        query: &PrepareWorkspaceQuery,
        tar: &mut dyn Read,
    ) -> Result<Vm, VmError> {
        let dir = self.dir(&vm.id);
        let upload = dir.path().join("workspace.upload.tar");
        let clean = dir.path().join("workspace.tar");
        // Left by a daemon that died mid-upload; this VM's workspace lock
        // is held, so no other upload writes them.
        remove_temp(&upload);
        remove_temp(&clean);
        let result = receive(tar, &upload, vm.disk_bytes)
            .and_then(|()| check_and_rewrite(&upload, &clean))
            .and_then(|summary| {
                remove_temp(&upload);
                self.unless_busy(vm, |vm| {
                    if vm.state != VmState::Created || self.handles(&vm.id).is_some() {
                        return Err(VmError::Busy(vm.name));
                    }
                    disks::fill_repo(
                        &self.runner,
                        &dir.disks(),
                        &clean,
                        (summary.bytes, summary.entries, vm.disk_bytes),
                        &dir.create_log(),
                    )
                    .map_err(|e| failed_by(&e))?;
                    Ok(vm)
                })
            });
        remove_temp(&upload);
        remove_temp(&clean);
        self.record_workspace(result?, query, self.settings.workspace_guest_path.clone())
    }
}

/// Copies the upload to `path`, at most `max` bytes: a client error is
/// the client's (400), a write error the host's.
fn receive(tar: &mut dyn Read, path: &Path, max: u64) -> Result<(), VmError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| failed(format!("create {}: {e}", path.display())))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = tar
            .read(&mut buf)
            .map_err(|e| VmError::Invalid(format!("the workspace stream broke: {e}")))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max {
            return Err(VmError::Invalid(format!(
                "the workspace is larger than the VM's disk size ({max} bytes): create it with a larger --disk-size"
            )));
        }
        file.write_all(&buf[..n])
            .map_err(|e| failed(format!("write {}: {e}", path.display())))?;
    }
    file.sync_all()
        .map_err(|e| failed(format!("write {}: {e}", path.display())))
}

/// Why an upload could not be rewritten.
#[derive(Debug, thiserror::Error)]
enum RewriteError {
    #[error("the workspace stream ended early: its last entry is not the end marker")]
    NoMarker,
    #[error("the workspace's entry {0:?} is not a directory, regular file or symlink")]
    Kind(String),
    #[error("the workspace: {0}")]
    Read(#[source] std::io::Error),
    #[error("write the checked workspace: {0}")]
    Write(#[source] std::io::Error),
}

/// Checks `upload` by the image rules, then writes its entries again at
/// `clean` (see the module doc); the summary of what was checked.
fn check_and_rewrite(upload: &Path, clean: &Path) -> Result<tarscan::TarSummary, VmError> {
    let summary = tarscan::scan(upload).map_err(|e| match e {
        tarscan::TarError::Refused { .. } => VmError::Invalid(format!("the workspace: {e}")),
        tarscan::TarError::Io { ref source, .. }
            if source.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            VmError::Invalid("the workspace stream ended inside an entry".into())
        }
        other => failed_by(&other),
    })?;
    rewrite(upload, clean).map_err(|e| match e {
        RewriteError::Write(_) => failed_by(&e),
        _ => VmError::Invalid(e.to_string()),
    })?;
    Ok(summary)
}

fn rewrite(upload: &Path, clean: &Path) -> Result<(), RewriteError> {
    let input = File::open(upload).map_err(RewriteError::Read)?;
    let output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(clean)
        .map_err(RewriteError::Write)?;
    let mut out = tar::Builder::new(BufWriter::new(output));
    let fresh = |mode: u32, mtime: u64, kind: tar::EntryType| {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(mode & 0o7777);
        h.set_mtime(mtime);
        h.set_entry_type(kind);
        h.set_size(0);
        h
    };
    // A first block banger wrote: no filter or other format bids on it.
    let mut root = fresh(0o755, 0, tar::EntryType::Directory);
    out.append_data(&mut root, "./", std::io::empty())
        .map_err(RewriteError::Write)?;
    let mut marker_seen = false;
    let mut archive = tar::Archive::new(BufReader::new(input));
    for entry in archive.entries().map_err(RewriteError::Read)? {
        let mut entry = entry.map_err(RewriteError::Read)?;
        let path = entry.path_bytes().into_owned();
        if marker_seen {
            // Something after the marker: not a stream the CLI wrote.
            return Err(RewriteError::NoMarker);
        }
        if path == END_MARKER.as_bytes() {
            marker_seen = true;
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(&path).to_owned();
        let h = entry.header();
        let (mode, mtime) = (
            h.mode().map_err(RewriteError::Read)?,
            h.mtime().map_err(RewriteError::Read)?,
        );
        let written = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut header = fresh(mode, mtime, tar::EntryType::Regular);
                header.set_size(entry.size());
                out.append_data(&mut header, &name, &mut entry)
            }
            tar::EntryType::Directory => {
                let mut header = fresh(mode, mtime, tar::EntryType::Directory);
                out.append_data(&mut header, &name, std::io::empty())
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| std::ffi::OsStr::from_bytes(&t).to_owned())
                    .ok_or_else(|| RewriteError::Kind(name.to_string_lossy().into_owned()))?;
                let mut header = fresh(0o777, mtime, tar::EntryType::Symlink);
                out.append_link(&mut header, &name, &target)
            }
            _ => return Err(RewriteError::Kind(name.to_string_lossy().into_owned())),
        };
        written.map_err(|e| {
            // A short read of the upload is the client's; the rest ours.
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                RewriteError::Read(e)
            } else {
                RewriteError::Write(e)
            }
        })?;
    }
    if !marker_seen {
        return Err(RewriteError::NoMarker);
    }
    out.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(RewriteError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of `entries` (name, type, data), headers as given.
    fn raw_tar(entries: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(1000);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn rewritten(tar: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let dir = tempfile::tempdir().unwrap();
        let (upload, clean) = (dir.path().join("u.tar"), dir.path().join("c.tar"));
        std::fs::write(&upload, tar).unwrap();
        rewrite(&upload, &clean).map(|()| std::fs::read(&clean).unwrap())
    }

    #[test]
    fn what_mke2fs_reads_is_what_banger_wrote() {
        use tar::EntryType::Regular;
        let marker = END_MARKER.as_bytes();
        // A first entry named like a gzip header: libarchive would take
        // the whole stream for gzip.
        let gzip_named: &[u8] = b"\x1f\x8b\x08\x04rest";
        let clean = rewritten(&raw_tar(&[
            (gzip_named, Regular, b"data"),
            (b"src/main.rs", Regular, b"fn main() {}"),
            (marker, Regular, b""),
        ]))
        .unwrap();
        assert_eq!(&clean[..2], b"./", "banger's own first block");
        let mut seen = Vec::new();
        for e in tar::Archive::new(&clean[..]).entries().unwrap() {
            let mut e = e.unwrap();
            assert_eq!(e.header().uid().unwrap(), 0);
            assert!(e.header().as_gnu().is_some());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push((e.path_bytes().into_owned(), data));
        }
        assert_eq!(
            seen,
            [
                (b"./".to_vec(), vec![]),
                (gzip_named.to_vec(), b"data".to_vec()),
                (b"src/main.rs".to_vec(), b"fn main() {}".to_vec()),
            ],
            "the marker is cut off"
        );

        let no_marker = raw_tar(&[(b"a", Regular, b"x")]);
        assert!(matches!(rewritten(&no_marker), Err(RewriteError::NoMarker)));
        let after = raw_tar(&[(marker, Regular, b""), (b"late", Regular, b"x")]);
        assert!(matches!(rewritten(&after), Err(RewriteError::NoMarker)));
        let fifo = raw_tar(&[(b"pipe", tar::EntryType::Fifo, b""), (marker, Regular, b"")]);
        assert!(matches!(rewritten(&fifo), Err(RewriteError::Kind(_))));
    }
}

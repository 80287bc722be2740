//! A VM's own disks: the overlay (its writable root layer, carrying the
//! per-VM settings from the start) and the work disk mounted at /root.
//! Neither copies the shared rootfs: both are sparse files.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_artifacts::ext4;
use banger_init::abi::OVERLAY_LABEL;
use banger_sys::{Cancel, Cmd, IoAt, RunError, Runner, io_at};

use super::remove_temp;

mod work;
pub use work::{WorkFiles, gitconfig, grow_work, make_work};

/// ext4 label of the work disk, found by the guest's fstab.
pub const WORK_LABEL: &str = "banger-work";
/// ext4 label of a workspace disk, found by the guest's fstab.
pub const REPO_LABEL: &str = "banger-repo";
/// The overlay's size: room for everything the guest writes outside /root.
/// Sparse, so it costs what is written.
pub const OVERLAY_BYTES: u64 = 8 << 30;

/// What goes into a VM's overlay at create time.
#[derive(Debug)]
pub struct GuestSettings<'a> {
    /// Hostname (a validated DNS label).
    pub name: &'a str,
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// The sshd host key pair (private, public).
    pub host_key: (&'a [u8], &'a [u8]),
    /// Resolvers for the guest's `/etc/resolv.conf`; none leaves the
    /// image's file as it is.
    pub nameservers: &'a [Ipv4Addr],
    /// Where a workspace disk is mounted, for a VM that has one (a path
    /// the config checked: plain components, no spaces).
    pub workspace: Option<&'a str>,
}

/// The overlay's initial tree as a tarball (owned by root, whatever user
/// the daemon runs as): `upper/` holds the per-VM files, `work/` is
/// overlayfs's scratch directory.
pub fn overlay_tar(settings: &GuestSettings<'_>) -> std::io::Result<Vec<u8>> {
    let name = settings.name;
    let ip = settings.ip;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{name}.vm {name}\n"
    );
    let mut fstab = format!(
        "# Written by banger at create time.\nLABEL={WORK_LABEL}\t/root\text4\tdefaults,x-systemd.growfs\t0\t0\n"
    );
    if let Some(path) = settings.workspace {
        // Required (no nofail): a command must never run before its
        // workspace is mounted.
        fstab.push_str(&format!(
            "LABEL={REPO_LABEL}\t{path}\text4\tdefaults,x-systemd.growfs\t0\t0\n"
        ));
    }
    // Only the per-VM key is served: the image may carry keys shared by
    // every VM made from it.
    // MaxSessions: every session of banger's shares the daemon's one
    // control master connection, and sshd's default allows 10 on one.
    let sshd = "# Written by banger: serve only this VM's own host key.\nHostKey /etc/ssh/ssh_host_ed25519_key\nMaxSessions 100\n";
    let mut b = tar::Builder::new(Vec::new());
    for dir in [
        "upper",
        "upper/etc",
        "upper/etc/ssh",
        "upper/etc/ssh/sshd_config.d",
        "work",
    ] {
        append(&mut b, dir, 0o755, None)?;
    }
    let hostname = format!("{name}\n");
    let files: [(&str, u32, &[u8]); 6] = [
        ("upper/etc/hostname", 0o644, hostname.as_bytes()),
        ("upper/etc/hosts", 0o644, hosts.as_bytes()),
        ("upper/etc/fstab", 0o644, fstab.as_bytes()),
        (
            "upper/etc/ssh/sshd_config.d/banger.conf",
            0o644,
            sshd.as_bytes(),
        ),
        (
            "upper/etc/ssh/ssh_host_ed25519_key",
            0o600,
            settings.host_key.0,
        ),
        (
            "upper/etc/ssh/ssh_host_ed25519_key.pub",
            0o644,
            settings.host_key.1,
        ),
    ];
    for (path, mode, data) in files {
        append(&mut b, path, mode, Some(data))?;
    }
    if !settings.nameservers.is_empty() {
        let mut resolv = String::from(
            "# Written by banger at create time: the host's resolvers, reached through NAT.\n",
        );
        for ns in settings.nameservers {
            resolv.push_str(&format!("nameserver {ns}\n"));
        }
        append(
            &mut b,
            "upper/etc/resolv.conf",
            0o644,
            Some(resolv.as_bytes()),
        )?;
    }
    b.into_inner()
}

fn append(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: Option<&[u8]>,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mode(mode);
    h.set_mtime(0);
    match data {
        Some(data) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data)
        }
        None => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, path, std::io::empty())
        }
    }
}

/// The VM's disk files ([`super::dir::VmDir::disks`] names them).
#[derive(Debug, Clone)]
pub struct DiskFiles {
    /// The overlay disk.
    pub overlay: PathBuf,
    /// The work disk.
    pub work: PathBuf,
    /// The workspace disk, for a VM created with one.
    pub repo: PathBuf,
}

/// Why a VM's disk could not be written or grown.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] IoAt),
    /// A disk tool failed.
    #[error("{what}")]
    Run {
        /// What it was doing.
        what: &'static str,
        /// How it failed.
        #[source]
        source: RunError,
    },
}

fn run(
    runner: &Arc<dyn Runner>,
    cmd: &Cmd,
    log: &Path,
    what: &'static str,
) -> Result<(), DiskError> {
    runner
        .run(cmd, log, &Cancel::new())
        .map_err(|source| DiskError::Run { what, source })
}

/// Writes the overlay disk from `settings`.
pub fn make_overlay(
    runner: &Arc<dyn Runner>,
    disks: &DiskFiles,
    settings: &GuestSettings<'_>,
    log: &Path,
) -> Result<(), DiskError> {
    let tar = overlay_tar(settings).map_err(io_at("build the overlay tree for", &disks.overlay))?;
    let tar_path = disks.overlay.with_extension("tar");
    std::fs::write(&tar_path, tar).map_err(io_at("write", &tar_path))?;
    let result = run(
        runner,
        &ext4::mkfs_from_tar(&tar_path, &disks.overlay, OVERLAY_BYTES, OVERLAY_LABEL),
        log,
        "make the overlay disk",
    );
    remove_temp(&tar_path);
    result
}

/// Writes an empty workspace disk of `size_bytes` (sparse), for a VM born
/// with a workspace: its fstab mounts it, and the first prepare, before
/// the first boot, replaces it with one holding the checkout.
pub fn make_repo(
    runner: &Arc<dyn Runner>,
    disks: &DiskFiles,
    size_bytes: u64,
    log: &Path,
) -> Result<(), DiskError> {
    run(
        runner,
        &ext4::mkfs_empty(&disks.repo, size_bytes, REPO_LABEL),
        log,
        "make the workspace disk",
    )
}

/// Writes the workspace disk from `tar` (a checkout the CLI packed and
/// [`banger_artifacts::tarscan::scan`] passed): its content plus
/// `free_bytes` free, sparse. Built beside the old disk and renamed over
/// it, so a failure leaves the old one.
pub fn fill_repo(
    runner: &Arc<dyn Runner>,
    disks: &DiskFiles,
    tar: &Path,
    (content, entries, free_bytes): (u64, u64, u64),
    log: &Path,
) -> Result<(), DiskError> {
    let size = ext4::size_for(content, entries, free_bytes >> 20);
    let next = disks.repo.with_extension("ext4.next");
    let result = run(
        runner,
        &ext4::mkfs_from_tar(tar, &next, size, REPO_LABEL),
        log,
        "write the workspace disk",
    )
    .and_then(|()| {
        std::fs::rename(&next, &disks.repo)
            .map_err(io_at("replace", &disks.repo))
            .map_err(DiskError::from)
    });
    if result.is_err() {
        remove_temp(&next);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_the_work_disk_touches_only_the_file_length() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work.ext4");
        std::fs::write(&work, b"guest-written bytes").unwrap();
        grow_work(&work, 1 << 20).unwrap();
        let bytes = std::fs::read(&work).unwrap();
        assert_eq!(bytes.len(), 1 << 20);
        assert!(bytes.starts_with(b"guest-written bytes"));
        // Never shrinks.
        grow_work(&work, 10).unwrap();
        assert_eq!(std::fs::metadata(&work).unwrap().len(), 1 << 20);
        // A symlink in its place is refused, not followed.
        let link = dir.path().join("link.ext4");
        std::os::unix::fs::symlink(&work, &link).unwrap();
        assert!(grow_work(&link, 2 << 20).is_err());
        assert_eq!(std::fs::metadata(&work).unwrap().len(), 1 << 20);
    }

    #[test]
    fn a_workspace_disk_is_mounted_at_the_workspace_path_only_when_made() {
        let fstab = &overlay_files_with(&[], Some("/root/repo"))["upper/etc/fstab"].1;
        assert!(
            fstab
                .contains("LABEL=banger-repo\t/root/repo\text4\tdefaults,x-systemd.growfs\t0\t0\n"),
            "{fstab}"
        );
        assert!(
            !overlay_files(&[])["upper/etc/fstab"]
                .1
                .contains("banger-repo")
        );
    }

    #[test]
    fn the_gitconfig_says_what_it_was_given_to_git_itself() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gitconfig");
        let name = r#"Dev "The \ Slash" O'Neil ünï"#;
        std::fs::write(&file, gitconfig(Some(name), Some("dev@example.com"))).unwrap();
        let get = |key: &str| {
            let out = Cmd::new("git")
                .args(["config", "--file"])
                .arg(&file)
                .arg(key)
                .to_command()
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
        };
        assert_eq!(get("user.name"), name);
        assert_eq!(get("user.email"), "dev@example.com");
        assert_eq!(get("core.checkStat"), "minimal");
        assert!(!gitconfig(None, None).contains("[user]"));
    }

    #[test]
    fn the_guest_grows_its_work_file_system_itself() {
        let files = overlay_files(&[]);
        let fstab = &files["upper/etc/fstab"].1;
        assert!(
            fstab.contains("/root\text4\tdefaults,x-systemd.growfs\t"),
            "{fstab}"
        );
    }

    fn overlay_files(
        nameservers: &[Ipv4Addr],
    ) -> std::collections::BTreeMap<String, (u32, String)> {
        overlay_files_with(nameservers, None)
    }

    fn overlay_files_with(
        nameservers: &[Ipv4Addr],
        workspace: Option<&str>,
    ) -> std::collections::BTreeMap<String, (u32, String)> {
        let tar = overlay_tar(&GuestSettings {
            name: "web",
            ip: Ipv4Addr::new(10, 77, 0, 9),
            host_key: (b"PRIVATE", b"ssh-ed25519 PUB web"),
            nameservers,
            workspace,
        })
        .unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut seen = std::collections::BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            seen.insert(
                entry.path().unwrap().display().to_string(),
                (h.mode().unwrap(), text),
            );
        }
        seen
    }

    #[test]
    fn overlay_tree_holds_the_vms_settings_owned_by_root() {
        let seen = overlay_files(&[]);
        assert_eq!(seen["upper/etc/hostname"].1, "web\n");
        assert!(seen["upper/etc/hosts"].1.contains("10.77.0.9\tweb.vm web"));
        assert!(
            seen["upper/etc/fstab"]
                .1
                .contains("LABEL=banger-work\t/root\text4")
        );
        assert_eq!(
            seen["upper/etc/ssh/ssh_host_ed25519_key"],
            (0o600, "PRIVATE".into())
        );
        assert!(seen.contains_key("work"));
        assert!(
            !seen.contains_key("upper/etc/resolv.conf"),
            "no resolvers, no file"
        );
        let natted = overlay_files(&[Ipv4Addr::new(10, 255, 255, 53), Ipv4Addr::new(9, 9, 9, 9)]);
        assert_eq!(
            natted["upper/etc/resolv.conf"].1,
            "# Written by banger at create time: the host's resolvers, reached through NAT.\nnameserver 10.255.255.53\nnameserver 9.9.9.9\n"
        );
    }
}

//! Root file system tarballs, checked entry by entry before `mke2fs` sees
//! them: nothing may point outside the tree, and every name must be one
//! ext4 can hold. Also cuts the work seed (the tree's `/root`) out of one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::policy::Refusal;

/// Longest name of one path component ext4 stores.
const MAX_NAME: usize = 255;
/// Longest whole path accepted.
const MAX_PATH: usize = 4096;

/// Errors reading or refusing a tarball.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The tarball.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// An entry is refused.
    #[error("tar entry {entry:?} refused: {reason}")]
    Refused {
        /// The entry's name, as in the archive (lossy UTF-8).
        entry: String,
        /// Why.
        reason: String,
    },
}

/// What a scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TarSummary {
    /// Number of entries.
    pub entries: u64,
    /// Sum of the regular files' sizes.
    pub bytes: u64,
}

/// What an earlier entry made at a path, for the checks of later ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Dir,
    File,
    Symlink,
    Other,
}

/// Checks every entry of the tarball at `path`: its path ([`check_path`]),
/// its type and devices ([`crate::policy`]), no entry written through a
/// symbolic link an earlier entry made, and hard links only to regular
/// files made earlier. The same rules as a flattened registry image.
pub fn scan(path: &Path) -> Result<TarSummary, TarError> {
    let io = |source| TarError::Io {
        path: path.to_owned(),
        source,
    };
    // The same bounds as a registry pull: a huge PAX or long-name record
    // (free to make in a sparse file) is refused before it is read.
    let guarded = crate::oci::limits::Guarded::new(
        BufReader::new(File::open(path).map_err(io)?),
        crate::oci::limits::UnpackLimits::default(),
        crate::oci::limits::Budget::default(),
    );
    let mut archive = tar::Archive::new(guarded);
    let mut summary = TarSummary::default();
    let mut seen: HashMap<Vec<u8>, Seen> = HashMap::new();
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |reason: String| TarError::Refused {
            entry: name.clone(),
            reason,
        };
        check_path(&raw).map_err(|r| refuse(r.to_string()))?;
        let parts = normalize(&raw);
        for depth in 1..parts.len() {
            match seen.get(&parts[..depth].join(&b'/')) {
                Some(Seen::Symlink) => {
                    return Err(refuse(format!(
                        "its parent {:?} is a symbolic link: the entry would be written through it",
                        String::from_utf8_lossy(&parts[..depth].join(&b'/'))
                    )));
                }
                Some(Seen::File | Seen::Other) => {
                    return Err(refuse(format!(
                        "its parent {:?} is not a directory",
                        String::from_utf8_lossy(&parts[..depth].join(&b'/'))
                    )));
                }
                Some(Seen::Dir) | None => {}
            }
        }
        let kind = entry.header().entry_type();
        crate::policy::check_device(kind, entry.header()).map_err(|r| refuse(r.to_string()))?;
        // mke2fs reads the archive with libarchive, which takes device
        // numbers from these PAX keys over the header's: refused, so what
        // was checked is what is built.
        if let Some(pax) = entry.pax_extensions().map_err(io)? {
            for ext in pax {
                let key = ext.map_err(io)?.key_bytes().to_vec();
                if key.starts_with(b"SCHILY.dev") {
                    return Err(refuse(format!(
                        "PAX key {} overrides the header's device numbers",
                        String::from_utf8_lossy(&key)
                    )));
                }
            }
        }
        let made = match kind {
            EntryType::Regular | EntryType::Continuous => Seen::File,
            EntryType::Directory => Seen::Dir,
            EntryType::Symlink => Seen::Symlink,
            EntryType::Char | EntryType::Block | EntryType::Fifo => Seen::Other,
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("hard link without a target".into()))?;
                check_path(&target).map_err(|r| {
                    refuse(format!(
                        "hard link target {:?}: {r}",
                        String::from_utf8_lossy(&target)
                    ))
                })?;
                if seen.get(&normalize(&target).join(&b'/')) != Some(&Seen::File) {
                    return Err(refuse(format!(
                        "hard link to {:?}, which is not a regular file an earlier entry made",
                        String::from_utf8_lossy(&target)
                    )));
                }
                Seen::File
            }
            other => return Err(refuse(format!("unsupported entry type {other:?}"))),
        };
        if !parts.is_empty() {
            seen.insert(parts.join(&b'/'), made);
        }
        summary.entries += 1;
        if kind.is_file() {
            summary.bytes += entry.header().size().map_err(io)?;
        }
    }
    Ok(summary)
}

/// Checks one archive path: relative, no `..`, every component at most 255
/// bytes (ext4's limit; `mke2fs` otherwise fails with an unrelated message).
pub fn check_path(raw: &[u8]) -> Result<(), Refusal> {
    if raw.first() == Some(&b'/') {
        return Err(Refusal::Absolute);
    }
    if raw.len() > MAX_PATH {
        return Err(Refusal::PathTooLong(MAX_PATH));
    }
    for component in raw.split(|b| *b == b'/') {
        if component == b".." {
            return Err(Refusal::DotDot);
        }
        if component.len() > MAX_NAME {
            return Err(Refusal::NameTooLong {
                len: component.len(),
                max: MAX_NAME,
            });
        }
    }
    Ok(())
}

/// The path relative to the tree's root, without `./` prefixes or empty
/// and `.` components.
fn normalize(raw: &[u8]) -> Vec<&[u8]> {
    raw.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

/// Writes to `dst` a tarball of the tree's `/root`, re-rooted at `.`, with
/// owners and modes kept. Returns how many entries it holds. The source
/// must have passed [`scan`].
pub fn extract_work_seed(src: &Path, dst: &Path) -> Result<u64, TarError> {
    let io_src = |source| TarError::Io {
        path: src.to_owned(),
        source,
    };
    let io_dst = |source| TarError::Io {
        path: dst.to_owned(),
        source,
    };
    let guarded = crate::oci::limits::Guarded::new(
        BufReader::new(File::open(src).map_err(io_src)?),
        crate::oci::limits::UnpackLimits::default(),
        crate::oci::limits::Budget::default(),
    );
    let mut archive = tar::Archive::new(guarded);
    let mut out = tar::Builder::new(BufWriter::new(File::create(dst).map_err(io_dst)?));
    out.mode(tar::HeaderMode::Complete);
    let mut count = 0;
    for entry in archive.entries().map_err(io_src)? {
        let entry = entry.map_err(io_src)?;
        let raw = entry.path_bytes().into_owned();
        let parts = normalize(&raw);
        if parts.first() != Some(&&b"root"[..]) {
            continue;
        }
        let rel: Vec<u8> = if parts.len() == 1 {
            b".".to_vec()
        } else {
            parts[1..].join(&b'/')
        };
        let rel = PathBuf::from(String::from_utf8_lossy(&rel).into_owned());
        let mut header = entry.header().clone();
        match header.entry_type() {
            EntryType::Link => {
                // A hard link to outside /root cannot exist in the seed.
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target_parts = normalize(&target);
                if target_parts.first() != Some(&&b"root"[..]) || target_parts.len() < 2 {
                    continue;
                }
                let target = PathBuf::from(
                    String::from_utf8_lossy(&target_parts[1..].join(&b'/')).into_owned(),
                );
                out.append_link(&mut header, &rel, &target)
                    .map_err(io_dst)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target = PathBuf::from(String::from_utf8_lossy(&target).into_owned());
                out.append_link(&mut header, &rel, &target)
                    .map_err(io_dst)?;
            }
            _ => out.append_data(&mut header, &rel, entry).map_err(io_dst)?,
        }
        count += 1;
    }
    out.into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(io_dst)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_testutil::raw_tar as hostile_tar;

    #[test]
    fn check_path_refuses_escapes_and_overlong_names() {
        assert!(check_path(b"./etc/passwd").is_ok());
        assert!(check_path(b"etc/").is_ok());
        assert!(check_path(b"./").is_ok());
        assert_eq!(check_path(b"/etc/passwd").unwrap_err(), Refusal::Absolute);
        assert_eq!(check_path(b"./../escape").unwrap_err(), Refusal::DotDot);
        assert_eq!(check_path(b"a/b/../../../c").unwrap_err(), Refusal::DotDot);
        assert!(check_path(b"a/..b/c..").is_ok());
        assert!(
            check_path(&[b'x'; 256])
                .unwrap_err()
                .to_string()
                .contains("longer than the 255")
        );
    }

    #[test]
    fn scan_names_the_refused_entry() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("t.tar");
        for (entries, expect) in [
            (
                vec![
                    (&b"./ok"[..], EntryType::Regular, &b""[..]),
                    (b"../escape", EntryType::Regular, b""),
                ],
                "\"../escape\" refused: `..`",
            ),
            (
                vec![(&b"/etc/evil"[..], EntryType::Regular, &b""[..])],
                "\"/etc/evil\" refused: absolute",
            ),
            (
                vec![(&b"./h"[..], EntryType::Link, &b"../../etc/shadow"[..])],
                "hard link target",
            ),
        ] {
            hostile_tar(&tar, &entries).unwrap();
            let err = scan(&tar).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
        hostile_tar(
            &tar,
            &[
                (b"./ok", EntryType::Regular, b""),
                (b"./dev", EntryType::Directory, b""),
                (b"./ok-too", EntryType::Link, b"ok"),
            ],
        )
        .unwrap();
        assert_eq!(scan(&tar).unwrap().entries, 3);
    }

    /// What libarchive (mke2fs) would read differently, and records no
    /// one needs whole, are refused before they are read.
    #[test]
    fn scan_refuses_pax_device_overrides_and_huge_records() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("t.tar");
        let mut out = Vec::new();
        let record = b"21 SCHILY.devmajor=8\n";
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(EntryType::XHeader);
        pax.set_size(record.len() as u64);
        pax.set_cksum();
        out.extend_from_slice(pax.as_bytes());
        out.extend_from_slice(record);
        out.resize(out.len().div_ceil(512) * 512, 0);
        let mut null = tar::Header::new_ustar();
        null.set_path("dev/null").unwrap();
        null.set_entry_type(EntryType::Char);
        null.set_device_major(1).unwrap();
        null.set_device_minor(3).unwrap();
        null.set_size(0);
        null.set_cksum();
        out.extend_from_slice(null.as_bytes());
        out.extend_from_slice(&[0; 1024]);
        std::fs::write(&tar, &out).unwrap();
        let err = scan(&tar).unwrap_err().to_string();
        assert!(err.contains("SCHILY.devmajor overrides"), "{err}");

        let mut long = tar::Header::new_gnu();
        long.set_entry_type(EntryType::GNULongName);
        long.set_size(1 << 34);
        long.set_cksum();
        std::fs::write(&tar, long.as_bytes()).unwrap();
        let err = scan(&tar).unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(
            chain.contains("GNU long-name record of 17179869184 bytes"),
            "{chain}"
        );
    }

    /// A tarball import is held to the registry pull's rules.
    #[test]
    fn scan_refuses_what_a_registry_pull_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("t.tar");
        let devices = |kind, major, minor| {
            let mut b = tar::Builder::new(File::create(&tar).unwrap());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o666);
            h.set_size(0);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            h.set_cksum();
            b.append_data(&mut h, "dev/x", &b""[..]).unwrap();
            b.into_inner().unwrap();
        };
        devices(EntryType::Block, 8, 0);
        assert!(
            scan(&tar)
                .unwrap_err()
                .to_string()
                .contains("block devices are not allowed")
        );
        devices(EntryType::Char, 1, 1);
        assert!(
            scan(&tar)
                .unwrap_err()
                .to_string()
                .contains("character device 1:1")
        );
        devices(EntryType::Char, 1, 3);
        assert_eq!(scan(&tar).unwrap().entries, 1);
        for (entries, expect) in [
            (
                vec![
                    (&b"./etc"[..], EntryType::Symlink, &b"/etc"[..]),
                    (b"./etc/cron.d", EntryType::Regular, b""),
                ],
                "\"etc\" is a symbolic link",
            ),
            (
                vec![
                    (&b"./f"[..], EntryType::Regular, &b""[..]),
                    (b"./f/g", EntryType::Regular, b""),
                ],
                "is not a directory",
            ),
            (
                vec![(&b"./h"[..], EntryType::Link, &b"etc/shadow"[..])],
                "which is not a regular file an earlier entry made",
            ),
            (
                vec![
                    (&b"./d"[..], EntryType::Directory, &b""[..]),
                    (b"./h", EntryType::Link, b"d"),
                ],
                "which is not a regular file",
            ),
        ] {
            hostile_tar(&tar, &entries).unwrap();
            let err = scan(&tar).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
    }

    #[test]
    fn work_seed_is_root_re_rooted_with_modes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("rootfs.tar");
        let mut b = tar::Builder::new(File::create(&src).unwrap());
        let mut add = |path: &str, mode: u32, data: &[u8], kind: EntryType| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append_data(&mut h, path, data).unwrap();
        };
        add("./root/", 0o700, b"", EntryType::Directory);
        add("./root/.bashrc", 0o644, b"PS1=x\n", EntryType::Regular);
        add("./root/.ssh/", 0o700, b"", EntryType::Directory);
        add(
            "./etc/passwd",
            0o644,
            b"root:x:0:0::/root:/bin/sh\n",
            EntryType::Regular,
        );
        add("./rootless", 0o644, b"", EntryType::Regular);
        b.into_inner().unwrap();

        let seed = dir.path().join("seed.tar");
        assert_eq!(extract_work_seed(&src, &seed).unwrap(), 3);
        let mut names = Vec::new();
        for e in tar::Archive::new(File::open(&seed).unwrap())
            .entries()
            .unwrap()
        {
            let e = e.unwrap();
            names.push((
                e.path().unwrap().display().to_string(),
                e.header().mode().unwrap(),
            ));
        }
        assert_eq!(
            names,
            [
                (".".into(), 0o700),
                (".bashrc".into(), 0o644),
                (".ssh".into(), 0o700)
            ]
        );
    }
}

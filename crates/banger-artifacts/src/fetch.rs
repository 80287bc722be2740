//! Downloads: fetched with curl, checked against their SHA-256 before
//! anything made from them is published, and unpacked as bundles that may
//! hold only the files the caller names.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use banger_sys::Cmd;
use sha2::{Digest, Sha256};

use crate::catalog::{Download, hex};
use crate::kernel::{BuildEnv, BuildError, io_err};

/// Fetches `download` to `dst` and checks its SHA-256.
pub fn fetch(download: &Download, dst: &Path, env: BuildEnv<'_>) -> Result<(), BuildError> {
    let url = &download.url;
    if !["https://", "http://", "file://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        return Err(BuildError::Scheme(url.clone()));
    }
    env.runner.run(
        &Cmd::new("curl")
            .args(["--fail", "--silent", "--show-error", "--location"])
            .args(["--proto", "=https,http,file", "--retry", "2", "-o"])
            .arg(dst)
            .arg("--")
            .arg(url),
        env.log,
        env.cancel,
    )?;
    verify(dst, download)
}

/// Checks that the file at `path` has the SHA-256 `download` promises.
pub fn verify(path: &Path, download: &Download) -> Result<(), BuildError> {
    let mut reader = BufReader::new(File::open(path).map_err(io_err("open", path))?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = hex(&hasher.finalize());
    if actual != download.sha256.to_ascii_lowercase() {
        return Err(BuildError::Checksum {
            url: download.url.clone(),
            expected: download.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// Unpacks the tarball `bundle` into `out`. It may hold only regular files
/// named in `allowed` (at its top level, `./` prefixes aside); every name
/// in `required` must be there. Returns the names found.
pub fn unpack_bundle(
    bundle: &Path,
    out: &Path,
    allowed: &[&str],
    required: &[&str],
) -> Result<Vec<String>, BuildError> {
    let io = io_err("read bundle", bundle);
    let mut archive = tar::Archive::new(BufReader::new(File::open(bundle).map_err(io)?));
    let mut found = Vec::new();
    for entry in archive.entries().map_err(io_err("read bundle", bundle))? {
        let mut entry = entry.map_err(io_err("read bundle", bundle))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw)
            .trim_start_matches("./")
            .to_owned();
        if name.is_empty() || entry.header().entry_type().is_dir() && name == "." {
            continue;
        }
        let refuse =
            |why: &str| BuildError::Bundle(format!("bundle entry {name:?} refused: {why}"));
        if !allowed.contains(&name.as_str()) {
            return Err(refuse(&format!("only {} may be in it", allowed.join(", "))));
        }
        if !entry.header().entry_type().is_file() {
            return Err(refuse("not a regular file"));
        }
        if found.contains(&name) {
            return Err(refuse("appears twice"));
        }
        let dst = out.join(&name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dst)
            .map_err(io_err("create", &dst))?;
        std::io::copy(&mut entry, &mut file).map_err(io_err("write", &dst))?;
        found.push(name);
    }
    if let Some(missing) = required.iter().find(|r| !found.iter().any(|f| f == *r)) {
        return Err(BuildError::Bundle(format!("bundle lacks {missing}")));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_sys::{Cancel, HostRunner};

    fn bundle(path: &Path, files: &[(&str, &[u8])]) -> Download {
        Download {
            url: format!("file://{}", path.display()),
            sha256: banger_testutil::tar_of(path, files).unwrap(),
        }
    }

    fn env<'a>(log: &'a Path, cancel: &'a Cancel) -> BuildEnv<'a> {
        BuildEnv {
            runner: &HostRunner,
            progress: &crate::progress::NoProgress,
            cancel,
            log,
        }
    }

    #[test]
    fn fetch_verifies_and_unpacks_only_allowed_files() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("k.tar");
        let download = bundle(&src, &[("./vmlinux", b"\x7fELF"), ("bzImage", b"bz")]);
        let cancel = Cancel::new();
        let log = dir.path().join("log");
        let got = dir.path().join("got.tar");
        fetch(&download, &got, env(&log, &cancel)).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let names = unpack_bundle(
            &got,
            &out,
            &["vmlinux", "bzImage", "config"],
            &["vmlinux", "bzImage"],
        )
        .unwrap();
        assert_eq!(names, ["vmlinux", "bzImage"]);
        assert_eq!(std::fs::read(out.join("bzImage")).unwrap(), b"bz");
    }

    #[test]
    fn checksum_mismatch_names_url_and_both_sums() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("k.tar");
        let mut download = bundle(&src, &[("vmlinux", b"x")]);
        download.sha256 = "00".repeat(32);
        let cancel = Cancel::new();
        let err = fetch(
            &download,
            &dir.path().join("got"),
            env(&dir.path().join("log"), &cancel),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&download.url), "{text}");
        assert!(text.contains(&"00".repeat(32)), "{text}");
    }

    #[test]
    fn bundle_with_a_stray_or_missing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let src = dir.path().join("b.tar");
        banger_testutil::raw_tar(
            &src,
            &[
                (b"rootfs.ext4", tar::EntryType::Regular, b""),
                (b"../../etc/cron.d/evil", tar::EntryType::Regular, b""),
            ],
        )
        .unwrap();
        let err = unpack_bundle(&src, &out, &["rootfs.ext4"], &["rootfs.ext4"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"../../etc/cron.d/evil\" refused"),
            "{err}"
        );

        let out2 = dir.path().join("out2");
        std::fs::create_dir(&out2).unwrap();
        bundle(&src, &[("work-seed.ext4", b"x")]);
        let err = unpack_bundle(
            &src,
            &out2,
            &["rootfs.ext4", "work-seed.ext4"],
            &["rootfs.ext4"],
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "bundle lacks rootfs.ext4");
    }

    #[test]
    fn unsupported_scheme_is_refused_before_any_download() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = Cancel::new();
        let download = Download {
            url: "ftp://mirror/k.tar".into(),
            sha256: "00".into(),
        };
        let err = fetch(
            &download,
            &dir.path().join("x"),
            env(&dir.path().join("log"), &cancel),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not https://"), "{err}");
    }
}

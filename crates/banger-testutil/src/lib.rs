//! Helpers shared by banger's tests. Never a dependency of shipped code.

pub mod fakes;
pub mod harness;
pub mod netns;
pub mod oci;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Polls `condition` every 10 ms until it holds or `timeout` passes;
/// returns whether it held. Tests use this instead of bare sleeps.
/// The live processes whose command line mentions `path`.
pub fn pids_mentioning(path: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| banger_sys::process::cmdline_mentions(*pid, path))
                .collect()
        })
        .unwrap_or_default()
}

pub fn wait_until(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    banger_sys::wait::poll_until(timeout, Duration::from_millis(10), condition)
}

/// A stopped VM row with the default shape (1 vCPU, 512 MiB, 1 GiB disk, no
/// NAT) at 10.77.0.2 on tap `bgt0`, for tests that need one in the store.
pub fn stopped_vm(id: &str, name: &str, image: &str) -> banger_store::VmRecord {
    banger_store::VmRecord {
        id: id.into(),
        // `stored`: a test may need a row from before id-shaped names were
        // refused.
        name: banger_api::names::VmName::stored(name).expect("a vm name"),
        state: banger_api::VmState::Stopped,
        image: banger_api::names::ArtifactName::new(image).expect("an image name"),
        kernel: banger_api::names::ArtifactName::new("generic-6.1").expect("a kernel name"),
        vcpus: 1,
        memory_mib: 512,
        disk_bytes: 1 << 30,
        nat: false,
        ip: std::net::Ipv4Addr::new(10, 77, 0, 2),
        tap: "bgt0".into(),
        last_error: None,
        created_at: "2026-11-24T08:00:00Z".into(),
        updated_at: "2026-11-24T08:00:00Z".into(),
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    banger_sys::euid() == 0
}

/// Whether the test may do what only root can: see [`skip`].
pub fn have_root(test: &str) -> bool {
    is_root() || !skip(test, "needs root")
}

/// Records that `test` cannot run here because of `why` and returns true.
/// With `CI` set it panics instead, so a CI run never counts a skipped test
/// as passing. Each skip is appended to the file `BANGER_SKIP_LOG` names
/// (scripts/test counts them in its last line).
pub fn skip(test: &str, why: &str) -> bool {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} {why} and CI is set: a CI run may not skip it"
    );
    eprintln!("skipping {test}: {why}");
    if let Some(log) = std::env::var_os("BANGER_SKIP_LOG") {
        use std::io::Write;
        let line = format!("{test}: {why}\n");
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            eprintln!(
                "cannot record the skip in {}: {e}",
                Path::new(&log).display()
            );
        }
    }
    true
}

/// A response as raw parts.
#[derive(Debug)]
pub struct RawResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Sends one HTTP/1.1 request with arbitrary method, target, headers and
/// body over the unix socket at `socket`.
pub async fn raw_request(
    socket: &Path,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> std::io::Result<RawResponse> {
    let stream = UnixStream::connect(socket).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    let conn = tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .header("host", "bangerd");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Full::new(body.into()))
        .map_err(std::io::Error::other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    drop(sender);
    let _ = conn.await;
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// One raw tar entry: name, type, link target.
pub type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8]);

/// Writes a tarball with raw GNU headers, bypassing the `tar` crate's own
/// path checks, as a hostile archive would be made.
pub fn raw_tar(path: &Path, entries: &[RawEntry<'_>]) -> std::io::Result<()> {
    let mut out = Vec::new();
    for (name, kind, link) in entries {
        let mut header = tar::Header::new_gnu();
        if let Some(gnu) = header.as_gnu_mut() {
            gnu.name[..name.len()].copy_from_slice(name);
            gnu.linkname[..link.len()].copy_from_slice(link);
        }
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(0);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
    }
    out.extend_from_slice(&[0u8; 1024]);
    std::fs::write(path, out)
}

/// Writes a tarball of regular files `(name, content)` to `path` and
/// returns its SHA-256 in lower-case hex.
pub fn tar_of(path: &Path, files: &[(&str, &[u8])]) -> std::io::Result<String> {
    use sha2::Digest;
    let mut b = tar::Builder::new(std::fs::File::create(path)?);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data)?;
    }
    b.into_inner()?;
    let digest = sha2::Sha256::digest(std::fs::read(path)?);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

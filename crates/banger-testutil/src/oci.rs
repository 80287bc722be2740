//! OCI images for tests: layouts written byte by byte, to be pushed with
//! `skopeo` into Debian's `docker-registry` on loopback.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::Digest;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

fn sha(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// An image's layers: uncompressed tars and how each is stored.
pub type Layers = Vec<(Vec<u8>, Compression)>;

/// Writes one image's blobs (layers, config, manifest) under `blobs`;
/// returns the manifest's digest and size.
fn write_image(
    blobs: &Path,
    layers: &[(Vec<u8>, Compression)],
    config: &serde_json::Value,
    arch: &str,
) -> std::io::Result<(String, usize)> {
    std::fs::create_dir_all(blobs)?;
    let put = |bytes: &[u8]| -> std::io::Result<(String, usize)> {
        let digest = sha(bytes);
        std::fs::write(blobs.join(&digest[7..]), bytes)?;
        Ok((digest, bytes.len()))
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (raw, compression) in layers {
        diff_ids.push(sha(raw));
        let (bytes, media) = match compression {
            Compression::None => (raw.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(raw)?;
                (gz.finish()?, "application/vnd.oci.image.layer.v1.tar+gzip")
            }
            Compression::Zstd => (
                ruzstd::encoding::compress_to_vec(
                    &raw[..],
                    ruzstd::encoding::CompressionLevel::Fastest,
                ),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        let (digest, size) = put(&bytes)?;
        descs.push(json!({ "mediaType": media, "digest": digest, "size": size }));
    }
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    })
    .to_string();
    let (config_digest, config_size) = put(config.as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
        "layers": descs,
    })
    .to_string();
    put(manifest.as_bytes())
}

fn write_index(dir: &Path, media: &str, digest: &str, size: usize) -> std::io::Result<()> {
    std::fs::write(
        dir.join("index.json"),
        json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media,
                "digest": digest,
                "size": size,
                "annotations": { "org.opencontainers.image.ref.name": "latest" },
            }],
        })
        .to_string(),
    )?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
}

/// Writes an OCI image layout into `dir` (tagged `latest`) of `layers`
/// (uncompressed tars, stored as asked) with the image config's `config`
/// part (`Env`, `WorkingDir`, `User`).
pub fn write_layout(
    dir: &Path,
    layers: &[(Vec<u8>, Compression)],
    config: &serde_json::Value,
) -> std::io::Result<()> {
    let (digest, size) = write_image(&dir.join("blobs/sha256"), layers, config, "amd64")?;
    write_index(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &digest,
        size,
    )
}

/// Writes a multi-platform image (an image index, tagged `latest`): one
/// linux image per `(architecture, layers)`. Push it with `--all`.
pub fn write_index_layout(dir: &Path, images: &[(&str, Layers)]) -> std::io::Result<()> {
    let blobs = dir.join("blobs/sha256");
    let mut manifests = Vec::new();
    for (arch, layers) in images {
        let (digest, size) = write_image(&blobs, layers, &json!({}), arch)?;
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "platform": { "architecture": arch, "os": "linux" },
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    })
    .to_string();
    let digest = sha(index.as_bytes());
    std::fs::write(blobs.join(&digest[7..]), &index)?;
    write_index(
        dir,
        "application/vnd.oci.image.index.v1+json",
        &digest,
        index.len(),
    )
}

/// `skopeo` arguments that push the layout in `layout` to `destination`
/// (`127.0.0.1:<port>/repo:tag`) over plain HTTP.
pub fn skopeo_push_args(layout: &Path, destination: &str) -> Vec<String> {
    vec![
        "--insecure-policy".into(),
        "copy".into(),
        "--dest-tls-verify=false".into(),
        format!("oci:{}:latest", layout.display()),
        format!("docker://{destination}"),
    ]
}

/// Writes a `docker-registry` config serving from `dir` on
/// `127.0.0.1:<port>`; returns its path.
pub fn registry_config(dir: &Path, port: u16) -> std::io::Result<PathBuf> {
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )?;
    Ok(config)
}

/// Debian's `docker-registry` serving from `dir` on loopback; killed on
/// drop.
#[derive(Debug)]
pub struct Registry {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Registry {
    /// Starts one and waits (20 s at most) until it listens.
    #[allow(clippy::disallowed_methods, reason = "tests run the registry directly")]
    pub fn start(dir: &Path) -> std::io::Result<Self> {
        let port = free_port()?;
        let config = registry_config(dir, port)?;
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("docker-registry (Debian package docker-registry; scripts/test installs it): {e}"),
                )
            })?;
        let registry = Self { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::other(
                    "the registry did not listen within 20 s",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

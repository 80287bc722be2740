//! Talking to a registry with `oci-client`: the manifest (an index
//! resolved to linux/amd64), the image config, and the layer blobs into
//! the cache, their digests verified as they stream.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use banger_sys::Cancel;
use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::blobs::BlobCache;
use super::flatten::Layer;

/// Layer media types banger unpacks (OCI and Docker's).
const LAYER_TYPES: [&str; 5] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Plain HTTP even off loopback (loopback registries always may).
    pub insecure: bool,
    /// Docker's `config.json`, for credentials; `None` for anonymous.
    pub docker_config: Option<PathBuf>,
    /// What the layers may unpack to.
    pub limits: super::limits::UnpackLimits,
}

/// What a pull fetched.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The image manifest's digest.
    pub manifest_digest: String,
    /// The image config (JSON).
    pub config: serde_json::Value,
    /// The layers, in order, in the blob cache.
    pub layers: Vec<Layer>,
    /// Bytes downloaded (0 when every blob was cached).
    pub downloaded: u64,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not an image reference.
    #[error("{reference:?} is not an image reference: {why}")]
    Reference {
        /// What was given.
        reference: String,
        /// The parser's words.
        why: String,
    },
    /// The registry refused or failed.
    #[error("{what} from {registry}: {why}")]
    Registry {
        /// What was asked.
        what: String,
        /// Which registry.
        registry: String,
        /// The client's words.
        why: String,
    },
    /// The image cannot be a VM's root file system.
    #[error("{0}")]
    Unsupported(String),
    /// The local cache failed.
    #[error("blob cache")]
    Cache(#[source] crate::oci::blobs::BlobError),
    /// The pull's I/O runtime could not start.
    #[error("start an I/O runtime")]
    Runtime(#[source] std::io::Error),
    /// The pull was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// Whether `registry` (`host[:port]`) is this machine.
fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(h, port)| !h.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Credentials for `registry` from Docker's `config.json` (`auths` with a
/// base64 `user:password`), else anonymous.
pub fn credentials(docker_config: Option<&Path>, registry: &str) -> RegistryAuth {
    let Some(text) = docker_config.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return RegistryAuth::Anonymous;
    };
    let Ok(config) = serde_json::from_str::<serde_json::Value>(&text) else {
        return RegistryAuth::Anonymous;
    };
    let docker_hub = matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    );
    let keys = [
        registry.to_owned(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
    ];
    let entry = config["auths"].as_object().and_then(|auths| {
        auths.iter().find_map(|(key, value)| {
            let hit = keys.contains(key) || docker_hub && key.contains("index.docker.io");
            hit.then_some(value)
        })
    });
    entry
        .and_then(|e| e["auth"].as_str())
        .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(u, p)| RegistryAuth::Basic(u.to_owned(), p.to_owned()))
        })
        .unwrap_or(RegistryAuth::Anonymous)
}

/// Parses an image reference (`registry/repo:tag`, `repo@sha256:...`).
pub fn parse_reference(text: &str) -> Result<Reference, FetchError> {
    text.parse::<Reference>()
        .map_err(|e| FetchError::Reference {
            reference: text.to_owned(),
            why: e.to_string(),
        })
}

/// Counts bytes on their way to the file and stops on cancel.
struct Counting<'a, W> {
    inner: W,
    /// The blob's declared size: a registry that sends more is cut off.
    limit: u64,
    written: &'a AtomicU64,
    cancel: &'a Cancel,
    report: &'a (dyn Fn(u64) + Sync),
    reported: std::time::Instant,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counting<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.cancel.is_cancelled() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "cancelled",
            )));
        }
        let this = &mut *self;
        if this.written.load(Ordering::Relaxed) + buf.len() as u64 > this.limit {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the registry sent more than the {} bytes the manifest declares",
                    this.limit
                ),
            )));
        }
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            let total = this.written.fetch_add(*n as u64, Ordering::Relaxed) + *n as u64;
            // Twice a second: enough for a progress bar, not a log flood.
            if this.reported.elapsed() >= std::time::Duration::from_millis(500) {
                this.reported = std::time::Instant::now();
                (this.report)(total);
            }
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Progress of one layer's download.
#[derive(Debug, Clone)]
pub struct LayerProgress {
    /// 1-based layer number.
    pub index: usize,
    /// Number of layers.
    pub of: usize,
    /// Its digest.
    pub digest: String,
    /// Bytes so far.
    pub done: u64,
    /// Its size.
    pub size: u64,
    /// Taken from the cache, not downloaded.
    pub cached: bool,
}

/// One fetch: what to get, where to put it, whom to tell.
pub struct Fetch<'a> {
    /// The image.
    pub reference: &'a Reference,
    /// How to reach its registry.
    pub options: &'a PullOptions,
    /// Where layers go.
    pub cache: &'a BlobCache,
    /// Stops the download.
    pub cancel: &'a Cancel,
    /// Told each layer's digest before its download starts, so a cache
    /// prune leaves it alone.
    pub in_use: &'a (dyn Fn(&str) + Sync),
    /// Told each layer's progress.
    pub progress: &'a (dyn Fn(LayerProgress) + Sync),
}

impl std::fmt::Debug for Fetch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetch")
            .field("reference", &self.reference.whole())
            .field("options", self.options)
            .finish_non_exhaustive()
    }
}

impl Fetch<'_> {
    /// Fetches the manifest and config and every layer missing from the
    /// cache.
    pub fn run(&self) -> Result<Fetched, FetchError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(FetchError::Runtime)?;
        runtime.block_on(fetch_async(self))
    }
}

async fn fetch_async(fetch: &Fetch<'_>) -> Result<Fetched, FetchError> {
    let Fetch {
        reference,
        options,
        cache,
        cancel,
        in_use,
        progress,
    } = *fetch;
    let registry = reference.resolve_registry().to_owned();
    let protocol = if options.insecure || is_loopback(&registry) {
        ClientProtocol::HttpsExcept(vec![registry.clone()])
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        connect_timeout: Some(std::time::Duration::from_secs(15)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..ClientConfig::default()
    });
    let auth = credentials(options.docker_config.as_deref(), reference.registry());
    let registry_err = |what: &str| {
        let (what, registry) = (what.to_owned(), registry.clone());
        move |e: oci_client::errors::OciDistributionError| FetchError::Registry {
            what,
            registry,
            why: e.to_string(),
        }
    };
    let (manifest, manifest_digest, config) = client
        .pull_manifest_and_config(reference, &auth)
        .await
        .map_err(registry_err(&format!(
            "the manifest of {}",
            reference.whole()
        )))?;
    let config: serde_json::Value = serde_json::from_str(&config)
        .map_err(|e| FetchError::Unsupported(format!("the image config is not JSON: {e}")))?;
    let (os, arch) = (
        config["os"].as_str().unwrap_or("linux"),
        config["architecture"].as_str().unwrap_or("amd64"),
    );
    if os != "linux" || arch != "amd64" {
        return Err(FetchError::Unsupported(format!(
            "the image is for {os}/{arch}; banger's VMs are linux/amd64"
        )));
    }
    for layer in &manifest.layers {
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(FetchError::Unsupported(format!(
                "layer {} has media type {}, which banger cannot unpack",
                layer.digest, layer.media_type
            )));
        }
    }
    // What the manifest declares is what will be downloaded (each blob is
    // cut off at its size): held to the pull's bound before any byte.
    let declared: u64 = manifest
        .layers
        .iter()
        .map(|l| u64::try_from(l.size).unwrap_or(u64::MAX))
        .fold(0, u64::saturating_add);
    if declared > fetch.options.limits.max_bytes {
        return Err(FetchError::Unsupported(format!(
            "the image's layers declare {declared} bytes, more than the {} a pull may take (config image_max_unpacked_gib)",
            fetch.options.limits.max_bytes
        )));
    }
    let of = manifest.layers.len();
    let mut layers = Vec::with_capacity(of);
    let mut downloaded = 0;
    for (i, desc) in manifest.layers.iter().enumerate() {
        in_use(&desc.digest);
        let path = cache.path(&desc.digest).map_err(FetchError::Cache)?;
        let size = u64::try_from(desc.size).unwrap_or(0);
        let report = |done: u64, cached: bool| {
            progress(LayerProgress {
                index: i + 1,
                of,
                digest: desc.digest.clone(),
                done,
                size,
                cached,
            });
        };
        if cache.contains(&desc.digest) {
            report(size, true);
        } else {
            report(0, false);
            downloaded += download(&client, reference, desc, cache, cancel, &|n| {
                report(n, false)
            })
            .await
            .map_err(|e| match e {
                DownloadError::Cancelled => FetchError::Cancelled,
                DownloadError::Cache(m) => FetchError::Cache(m),
                DownloadError::Registry(e) => registry_err(&format!("layer {}", desc.digest))(e),
            })?;
            report(size, false);
        }
        layers.push(Layer {
            path,
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
        });
    }
    Ok(Fetched {
        manifest_digest,
        config,
        layers,
        downloaded,
    })
}

enum DownloadError {
    Cancelled,
    Cache(crate::oci::blobs::BlobError),
    Registry(oci_client::errors::OciDistributionError),
}

async fn download(
    client: &Client,
    reference: &Reference,
    desc: &OciDescriptor,
    cache: &BlobCache,
    cancel: &Cancel,
    report: &(dyn Fn(u64) + Sync),
) -> Result<u64, DownloadError> {
    let temp = cache.temp(&desc.digest).map_err(DownloadError::Cache)?;
    let file = tokio::fs::File::create(&temp)
        .await
        .map_err(|e| DownloadError::Cache(banger_sys::io_at("create", &temp)(e).into()))?;
    let written = AtomicU64::new(0);
    let writer = Counting {
        inner: tokio::io::BufWriter::new(file),
        limit: u64::try_from(desc.size).unwrap_or(0),
        written: &written,
        cancel,
        report,
        reported: std::time::Instant::now(),
    };
    // pull_blob checks the digest of what streamed through.
    let pulled = client.pull_blob(reference, desc, writer).await;
    let result = match pulled {
        Ok(()) => cache
            .commit(&temp, &desc.digest)
            .map(|_| written.load(Ordering::Relaxed))
            .map_err(DownloadError::Cache),
        Err(_) if cancel.is_cancelled() => Err(DownloadError::Cancelled),
        Err(e) => Err(DownloadError::Registry(e)),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_cut_off_past_its_declared_size() {
        use tokio::io::AsyncWriteExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let written = AtomicU64::new(0);
        let cancel = Cancel::new();
        let mut writer = Counting {
            inner: tokio::io::sink(),
            limit: 8,
            written: &written,
            cancel: &cancel,
            report: &|_| {},
            reported: std::time::Instant::now(),
        };
        rt.block_on(writer.write_all(b"12345678")).unwrap();
        let err = rt.block_on(writer.write_all(b"9")).unwrap_err();
        assert!(
            err.to_string()
                .contains("more than the 8 bytes the manifest declares"),
            "{err}"
        );
        assert_eq!(written.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn loopback_registries_are_recognised_with_or_without_port() {
        for yes in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "127.0.0.2",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "docker.io",
            "ghcr.io",
            "10.0.0.1:5000",
            "localhost.example:5000",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn credentials_come_from_the_matching_auths_entry() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        // "me:secret" and "hub:pw"
        std::fs::write(
            &config,
            r#"{"auths":{"registry.example:5000":{"auth":"bWU6c2VjcmV0"},"https://index.docker.io/v1/":{"auth":"aHViOnB3"}}}"#,
        )
        .unwrap();
        let basic = |a: RegistryAuth| match a {
            RegistryAuth::Basic(u, p) => Some((u, p)),
            _ => None,
        };
        assert_eq!(
            basic(credentials(Some(&config), "registry.example:5000")),
            Some(("me".into(), "secret".into()))
        );
        assert_eq!(
            basic(credentials(Some(&config), "docker.io")),
            Some(("hub".into(), "pw".into()))
        );
        assert!(basic(credentials(Some(&config), "ghcr.io")).is_none());
        assert!(basic(credentials(None, "docker.io")).is_none());
        assert!(basic(credentials(Some(&dir.path().join("none")), "docker.io")).is_none());
    }
}

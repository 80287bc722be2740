//! `image pull <oci-ref>`: any OCI or Docker registry image as a VM's root
//! file system, without root or a container engine.
//!
//! - [`registry`]: the manifest, config and layer blobs, with `oci-client`.
//! - [`blobs`]: the content-addressed layer cache shared by every pull.
//! - [`flatten`]: the layers as one tarball, whiteouts applied and hostile
//!   entries refused, for the same `mke2fs -d` the Debian build uses.

pub mod blobs;
pub mod flatten;
pub mod limits;
pub mod registry;

use std::path::Path;

use crate::image::{self, ImageManifest, ImageSource, Meta, OciOrigin};
use crate::kernel::{BuildEnv, BuildError};
use crate::progress::Stages;

pub use blobs::{BlobCache, BlobHold, BlobsInUse};
pub use registry::{FetchError, PullOptions};

/// An image name for `reference` when the user gives none: its last path
/// component and tag (`127.0.0.1:5000/team/app:v2` -> `app-v2`), in the
/// characters image names allow.
pub fn default_name(reference: &str) -> String {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let (repo, tag) = last.split_once(':').unwrap_or((last, "latest"));
    let mut name: String = format!("{repo}-{tag}")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("..") {
        name = name.replace("..", ".");
    }
    let name = name.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    name.chars().take(63).collect()
}

fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "a progress figure")]
    let m = bytes as f64 / f64::from(1u32 << 20);
    format!("{m:.1} MiB")
}

/// Pulls `reference` into `out` as image `name` booting `kernel`: layers
/// into `cache` (each digest announced to `in_use` first), flattened,
/// then built into `rootfs.ext4` and the work seed.
#[allow(clippy::too_many_arguments, reason = "one pull's inputs, passed once")]
pub fn pull(
    name: &str,
    reference: &str,
    kernel: &str,
    options: &PullOptions,
    cache: &BlobCache,
    in_use: &(dyn Fn(&str) + Sync),
    out: &Path,
    env: BuildEnv<'_>,
) -> Result<ImageManifest, BuildError> {
    let fetch_err = |e: FetchError| match e {
        FetchError::Cancelled => BuildError::Run(banger_sys::RunError::Cancelled),
        other => BuildError::Registry(other),
    };
    let parsed = registry::parse_reference(reference).map_err(fetch_err)?;
    let mut stages = Stages::new(env.progress, 5);
    stages.begin(format!("fetching {}", parsed.whole()));
    let report = |p: registry::LayerProgress| {
        let short = p.digest.get(7..19).unwrap_or(&p.digest);
        stages.update(if p.cached {
            format!(
                "layer {}/{} {short}: cached ({})",
                p.index,
                p.of,
                mib(p.size)
            )
        } else {
            format!(
                "layer {}/{} {short}: {} of {}",
                p.index,
                p.of,
                mib(p.done),
                mib(p.size)
            )
        });
    };
    let fetched = registry::Fetch {
        reference: &parsed,
        options,
        cache,
        cancel: env.cancel,
        in_use,
        progress: &report,
    }
    .run()
    .map_err(fetch_err)?;
    stages.begin(format!(
        "flattening {} layers ({} downloaded)",
        fetched.layers.len(),
        mib(fetched.downloaded)
    ));
    let tar = out.join("rootfs.tar");
    let flat = flatten::flatten(&fetched.layers, &tar, options.limits)?;
    let config = &fetched.config["config"];
    let text = |key: &str| {
        config[key]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let origin = OciOrigin {
        reference: parsed.whole(),
        manifest_digest: fetched.manifest_digest.clone(),
        env: config["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        working_dir: text("WorkingDir"),
        user: text("User"),
        has_init: flat.has_init,
        has_sshd: flat.has_sshd,
        first_boot: flat
            .os_release
            .as_deref()
            .and_then(banger_init::firstboot::plan_for)
            .map(|install| install.family.to_owned()),
    };
    image::from_tar(
        &tar,
        out,
        &mut stages,
        env,
        Meta {
            name,
            source: ImageSource::Oci,
            recipe_hash: None,
            kernel,
            headroom_mib: 256,
            oci: Some(origin),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid_image_names() {
        assert_eq!(default_name("127.0.0.1:5000/test:latest"), "test-latest");
        assert_eq!(
            default_name("docker.io/library/debian:bookworm"),
            "debian-bookworm"
        );
        assert_eq!(default_name("ghcr.io/Team/App"), "app-latest");
        assert_eq!(default_name("r/app@sha256:abc"), "app-latest");
        assert_eq!(default_name("r/app:1..2"), "app-1.2");
        for r in ["127.0.0.1:5000/test:latest", "r/_x:y", "r/APP:V1+build"] {
            let n = default_name(r);
            assert_valid_image_name(&n);
        }
    }

    fn assert_valid_image_name(name: &str) {
        assert!(!name.is_empty() && name.len() <= 63, "{name}");
        assert!(
            name.starts_with(|c: char| c.is_ascii_alphanumeric()),
            "{name}"
        );
        assert!(
            name.chars().all(|c| c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, '.' | '_' | '-')),
            "{name}"
        );
        assert!(!name.contains(".."), "{name}");
    }
}

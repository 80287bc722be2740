//! Registry pulls: the golden Debian tree pushed (one gzip layer) into
//! Debian's `docker-registry` inside the bench's namespace, pulled by
//! banger into an image, against the usual tools on the same input:
//! `skopeo copy` + `umoci unpack` + `mkfs.ext4 -d`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_testutil::oci::{self, Compression};

use crate::Install;
use crate::figures::Figure;
use crate::run;

fn timed(program: &str, args: &[&str]) -> Result<Duration, String> {
    let t = Instant::now();
    run(program, args)?;
    Ok(t.elapsed())
}

fn start_registry(work: &Path) -> Result<oci::Registry, String> {
    run("ip", &["link", "set", "lo", "up"])?;
    oci::Registry::start(work).map_err(|e| e.to_string())
}

/// The golden image's tree as a tarball, through a read-only loop mount
/// in a mount namespace of its own.
fn golden_tar(rootfs: &Path, work: &Path) -> Result<Vec<u8>, String> {
    let mnt = work.join("mnt");
    let tar = work.join("golden.tar");
    std::fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount -o loop,ro "$1" "$2" && tar --numeric-owner --xattrs --xattrs-include=security.capability -C "$2" -cf "$3" ."#)
        .arg("golden-tar")
        .args([rootfs, &mnt, &tar])
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "export the golden tree: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let bytes = std::fs::read(&tar).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&tar);
    Ok(bytes)
}

/// The figures: banger's pull with a cold and a warm blob cache, the
/// skopeo + umoci + mkfs.ext4 baseline, and the cold ratio.
pub fn figures(install: &Install, cache_dir: &Path, runs: usize) -> Result<Vec<Figure>, String> {
    let work = tempfile::Builder::new()
        .prefix("banger-bench-oci-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let w = work.path();
    let registry = start_registry(w)?;
    let port = registry.port;
    let layout = w.join("layout");
    let tree = golden_tar(&cache_dir.join("images/debian-bookworm/rootfs.ext4"), w)?;
    oci::write_layout(
        &layout,
        &[(tree, Compression::Gzip)],
        &serde_json::json!({ "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] }),
    )
    .map_err(|e| e.to_string())?;
    let reference = format!("127.0.0.1:{port}/golden:latest");
    let push = oci::skopeo_push_args(&layout, &reference);
    run(
        "skopeo",
        &push.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;

    let (mut cold, mut warm, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        install.ok(&["image", "cache", "prune"])?;
        cold.push(install.timed(&["image", "pull", &reference, "--name", "oci-bench"])?);
        install.ok(&["image", "delete", "oci-bench"])?;
        warm.push(install.timed(&["image", "pull", &reference, "--name", "oci-bench"])?);
        install.ok(&["image", "delete", "oci-bench"])?;

        let base = w.join("baseline");
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).map_err(|e| e.to_string())?;
        let dir = base.join("oci");
        let bundle = base.join("bundle");
        let img = base.join("rootfs.ext4");
        let mut total = timed(
            "skopeo",
            &[
                "--insecure-policy",
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{reference}"),
                &format!("oci:{}:latest", dir.display()),
            ],
        )?;
        total += timed(
            "umoci",
            &[
                "unpack",
                "--image",
                &format!("{}:latest", dir.display()),
                &bundle.to_string_lossy(),
            ],
        )?;
        total += timed(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-d",
                &bundle.join("rootfs").to_string_lossy(),
                &img.to_string_lossy(),
                "2G",
            ],
        )?;
        baseline.push(total);
        let _ = std::fs::remove_dir_all(&base);
    }
    install.ok(&["image", "cache", "prune"])?;
    let cold = Figure::durations(
        "image pull <registry ref>, cold blob cache (golden Debian, 1 gzip layer)",
        &cold,
    );
    let warm = Figure::durations("image pull <registry ref>, layer cached", &warm);
    let baseline = Figure::durations(
        "skopeo copy + umoci unpack + mkfs.ext4 -d, same image",
        &baseline,
    );
    let ratio = Figure::ratio(
        "banger cold pull / skopeo + umoci + mkfs.ext4",
        &cold,
        &baseline,
    );
    Ok(vec![cold, warm, baseline, ratio])
}

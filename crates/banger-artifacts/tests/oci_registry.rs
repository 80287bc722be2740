//! `oci::pull` against a real registry: Debian's `docker-registry` (the
//! CNCF distribution server) on loopback, images the test builds as OCI
//! layouts and pushes with `skopeo`, the result checked with `debugfs`.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "tests: a failed step should panic with its cause; the registry and skopeo are run directly"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use banger_artifacts::kernel::BuildEnv;
use banger_artifacts::oci::{self, BlobCache, PullOptions};
use banger_artifacts::{Progress, Stage};
use banger_sys::{Cancel, HostRunner};
use banger_testutil::oci::{self as oci_util, Compression};
use serde_json::json;
use tar::{EntryType, Header};

/// A registry of the test's own, with the directory it serves from.
struct Registry {
    _inner: oci_util::Registry,
    port: u16,
    _dir: tempfile::TempDir,
}

fn registry() -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let inner = oci_util::Registry::start(dir.path()).unwrap();
    Registry {
        port: inner.port,
        _inner: inner,
        _dir: dir,
    }
}

/// One entry: (name, type, mode, uid, gid, data or link target).
type Entry<'a> = (&'a str, EntryType, u32, u64, u64, &'a [u8]);

fn layer(entries: &[Entry<'_>], raw_names: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, mode, uid, gid, data) in entries {
        let mut h = Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(*mode);
        h.set_uid(*uid);
        h.set_gid(*gid);
        h.set_mtime(1_700_000_000);
        match kind {
            EntryType::Link | EntryType::Symlink => {
                h.set_size(0);
                if raw_names {
                    let gnu = h.as_gnu_mut().unwrap();
                    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                    gnu.linkname[..data.len()].copy_from_slice(data);
                    h.set_cksum();
                    b.append(&h, std::io::empty()).unwrap();
                } else {
                    b.append_link(&mut h, name, std::str::from_utf8(data).unwrap())
                        .unwrap();
                }
            }
            _ => {
                h.set_size(data.len() as u64);
                if raw_names {
                    let gnu = h.as_gnu_mut().unwrap();
                    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_cksum();
                    b.append(&h, *data).unwrap();
                } else {
                    b.append_data(&mut h, name, *data).unwrap();
                }
            }
        }
    }
    b.into_inner().unwrap()
}

/// Pushes `layers` (gzip and zstd in turn) to the registry as `repo:tag`.
fn push(port: u16, repo_tag: &str, layers: &[Vec<u8>]) {
    let dir = tempfile::tempdir().unwrap();
    let layers: Vec<(Vec<u8>, Compression)> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                l.clone(),
                if i % 2 == 0 {
                    Compression::Gzip
                } else {
                    Compression::Zstd
                },
            )
        })
        .collect();
    oci_util::write_layout(
        dir.path(),
        &layers,
        &json!({ "Env": ["PATH=/usr/bin:/bin", "GREETING=hello"], "WorkingDir": "/srv", "User": "1000:1000" }),
    )
    .unwrap();
    let out = Command::new("skopeo")
        .args(oci_util::skopeo_push_args(
            dir.path(),
            &format!("127.0.0.1:{port}/{repo_tag}"),
        ))
        .output()
        .expect("skopeo (Debian package skopeo; scripts/test installs it)");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Default)]
struct Recorded(Mutex<Vec<String>>);

impl Progress for Recorded {
    fn stage(&self, stage: Stage) {
        self.0.lock().unwrap().push(stage.name);
    }
}

fn pull(
    reference: &str,
    cache: &Path,
    out: &Path,
) -> (
    Result<banger_artifacts::image::ImageManifest, String>,
    Vec<String>,
) {
    pull_with(reference, cache, out, &PullOptions::default())
}

fn pull_with(
    reference: &str,
    cache: &Path,
    out: &Path,
    options: &PullOptions,
) -> (
    Result<banger_artifacts::image::ImageManifest, String>,
    Vec<String>,
) {
    std::fs::create_dir_all(out).unwrap();
    let progress = Recorded::default();
    let log = out.join("pull.log");
    let result = oci::pull(
        "test-latest",
        reference,
        "generic-6.1",
        options,
        &BlobCache::new(cache),
        &|_| {},
        out,
        BuildEnv {
            runner: &HostRunner,
            progress: &progress,
            cancel: &Cancel::new(),
            log: &log,
        },
    )
    .map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    });
    (result, progress.0.into_inner().unwrap())
}

fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (mode, uid, gid, links, inode) of `path` in `image`.
fn stat(image: &Path, path: &str) -> (String, u32, u32, u32, u32) {
    let text = debugfs(image, &format!("stat {path}"));
    let field = |key: &str| {
        text.split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .unwrap_or_else(|| panic!("no {key} in stat {path}:\n{text}"))
            .to_owned()
    };
    (
        field("Mode:"),
        field("User:").parse().unwrap(),
        field("Group:").parse().unwrap(),
        field("Links:").parse().unwrap(),
        field("Inode:").parse().unwrap(),
    )
}

#[test]
fn a_layered_image_becomes_an_ext4_matching_its_layers_and_a_second_pull_downloads_nothing() {
    let reg = registry();
    let base = layer(
        &[
            ("etc", EntryType::Directory, 0o755, 0, 0, b""),
            (
                "etc/os-release",
                EntryType::Regular,
                0o644,
                0,
                0,
                b"ID=test\n",
            ),
            (
                "etc/gone",
                EntryType::Regular,
                0o644,
                0,
                0,
                b"to be whited out",
            ),
            ("opt", EntryType::Directory, 0o755, 0, 0, b""),
            ("opt/old", EntryType::Regular, 0o644, 0, 0, b"lower"),
            ("usr", EntryType::Directory, 0o755, 0, 0, b""),
            ("usr/bin", EntryType::Directory, 0o755, 0, 0, b""),
            (
                "usr/bin/tool",
                EntryType::Regular,
                0o4755,
                0,
                0,
                b"setuid tool",
            ),
            ("home", EntryType::Directory, 0o755, 0, 0, b""),
            ("home/dev", EntryType::Directory, 0o750, 1000, 1000, b""),
            (
                "home/dev/notes",
                EntryType::Regular,
                0o600,
                1000,
                1000,
                b"mine",
            ),
        ],
        false,
    );
    let top = layer(
        &[
            ("etc/.wh.gone", EntryType::Regular, 0o644, 0, 0, b""),
            ("opt/.wh..wh..opq", EntryType::Regular, 0o644, 0, 0, b""),
            ("opt/new", EntryType::Regular, 0o644, 0, 0, b"upper"),
            (
                "usr/bin/tool-link",
                EntryType::Link,
                0o4755,
                0,
                0,
                b"usr/bin/tool",
            ),
        ],
        false,
    );
    push(reg.port, "test:latest", &[base, top]);

    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let reference = format!("127.0.0.1:{}/test:latest", reg.port);
    let (manifest, stages) = pull(&reference, &cache, &work.path().join("one"));
    let manifest = manifest.unwrap();
    let img = work.path().join("one/rootfs.ext4");
    assert_eq!(debugfs(&img, "cat /etc/os-release"), "ID=test\n");
    assert!(debugfs(&img, "ls /etc").contains("os-release"));
    assert!(
        !debugfs(&img, "ls /etc").contains("gone"),
        "the whiteout was ignored"
    );
    let opt = debugfs(&img, "ls /opt");
    assert!(
        opt.contains("new") && !opt.contains("old"),
        "opaque dir: {opt}"
    );
    let tool = stat(&img, "/usr/bin/tool");
    assert_eq!((tool.0.as_str(), tool.1, tool.2), ("04755", 0, 0));
    let link = stat(&img, "/usr/bin/tool-link");
    assert_eq!(
        (link.3, link.4),
        (2, tool.4),
        "the cross-layer hard link is not one inode"
    );
    let notes = stat(&img, "/home/dev/notes");
    assert_eq!((notes.0.as_str(), notes.1, notes.2), ("0600", 1000, 1000));
    let oci = manifest.oci.unwrap();
    assert_eq!(oci.env, ["PATH=/usr/bin:/bin", "GREETING=hello"]);
    assert_eq!(oci.working_dir.as_deref(), Some("/srv"));
    assert_eq!(oci.user.as_deref(), Some("1000:1000"));
    assert!(oci.manifest_digest.starts_with("sha256:"));
    assert!(!oci.has_init && !oci.has_sshd);
    let why = oci.cannot_boot().unwrap();
    assert!(
        why.contains("no /sbin/init (systemd) and no /usr/sbin/sshd"),
        "{why}"
    );
    assert!(
        stages
            .iter()
            .any(|s| s.starts_with("layer 2/2") && s.contains(" of ")),
        "{stages:?}"
    );
    assert!(
        !work.path().join("one/rootfs.tar").exists(),
        "the flattened tar was kept"
    );

    // The same image again: every layer from the cache.
    let (again, stages) = pull(&reference, &cache, &work.path().join("two"));
    again.unwrap();
    let layer_lines: Vec<&String> = stages.iter().filter(|s| s.starts_with("layer ")).collect();
    assert_eq!(layer_lines.len(), 2, "{stages:?}");
    assert!(
        layer_lines.iter().all(|s| s.contains("cached")),
        "{stages:?}"
    );
    assert!(
        stages.iter().any(|s| s.contains("(0.0 MiB downloaded)")),
        "{stages:?}"
    );
    assert_eq!(
        debugfs(&work.path().join("two/rootfs.ext4"), "cat /opt/new"),
        "upper"
    );
    // A cache prune frees the blobs; dry first.
    let blobs = BlobCache::new(&cache);
    let dry = blobs.prune(&Default::default(), true).unwrap();
    assert_eq!(dry.blobs, 2);
    assert_eq!(blobs.prune(&Default::default(), false).unwrap(), dry);
    assert_eq!(blobs.prune(&Default::default(), true).unwrap().blobs, 0);
}

#[test]
fn init_and_sshd_are_found_through_usrmerge_symlinks() {
    let reg = registry();
    let tree = layer(
        &[
            ("usr", EntryType::Directory, 0o755, 0, 0, b""),
            ("usr/sbin", EntryType::Directory, 0o755, 0, 0, b""),
            ("usr/lib", EntryType::Directory, 0o755, 0, 0, b""),
            ("usr/lib/systemd", EntryType::Directory, 0o755, 0, 0, b""),
            (
                "usr/lib/systemd/systemd",
                EntryType::Regular,
                0o755,
                0,
                0,
                b"init",
            ),
            (
                "usr/sbin/init",
                EntryType::Symlink,
                0o777,
                0,
                0,
                b"../lib/systemd/systemd",
            ),
            ("usr/sbin/sshd", EntryType::Regular, 0o755, 0, 0, b"sshd"),
            ("sbin", EntryType::Symlink, 0o777, 0, 0, b"usr/sbin"),
            (
                "usr/lib/os-release",
                EntryType::Regular,
                0o644,
                0,
                0,
                b"ID=debian\nVERSION_ID=\"12\"\n",
            ),
            ("etc", EntryType::Directory, 0o755, 0, 0, b""),
            (
                "etc/os-release",
                EntryType::Symlink,
                0o777,
                0,
                0,
                b"../usr/lib/os-release",
            ),
        ],
        false,
    );
    push(reg.port, "bootable:latest", &[tree]);
    let work = tempfile::tempdir().unwrap();
    let (manifest, _) = pull(
        &format!("127.0.0.1:{}/bootable:latest", reg.port),
        &work.path().join("cache"),
        &work.path().join("out"),
    );
    let oci = manifest.unwrap().oci.unwrap();
    assert!(oci.has_init && oci.has_sshd, "{oci:?}");
    assert_eq!(oci.cannot_boot(), None);
    // os-release found through its link: banger-init could install what
    // is missing, though nothing is.
    assert_eq!(oci.first_boot.as_deref(), Some("debian"));
    assert_eq!(oci.installs_at_first_boot(), None);
    // A dangling /sbin/init is no init.
    let dangling = layer(
        &[
            ("sbin", EntryType::Directory, 0o755, 0, 0, b""),
            (
                "sbin/init",
                EntryType::Symlink,
                0o777,
                0,
                0,
                b"/lib/systemd/systemd",
            ),
            ("usr", EntryType::Directory, 0o755, 0, 0, b""),
            ("usr/sbin", EntryType::Directory, 0o755, 0, 0, b""),
            ("usr/sbin/sshd", EntryType::Regular, 0o755, 0, 0, b"sshd"),
        ],
        false,
    );
    push(reg.port, "dangling:latest", &[dangling]);
    let (manifest, _) = pull(
        &format!("127.0.0.1:{}/dangling:latest", reg.port),
        &work.path().join("cache"),
        &work.path().join("out2"),
    );
    let oci = manifest.unwrap().oci.unwrap();
    assert!(!oci.has_init && oci.has_sshd, "{oci:?}");
    // No os-release: no installer, so it cannot boot.
    assert_eq!(oci.first_boot, None);
    assert!(
        oci.cannot_boot()
            .unwrap()
            .contains("no /sbin/init (systemd):")
    );
}

#[test]
fn hostile_layers_pulled_from_a_registry_are_refused_by_layer_and_entry() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<Entry<'_>>, &str)> = vec![
        (
            "dotdot",
            vec![("../evil", EntryType::Regular, 0o644, 0, 0, b"x")],
            "entry \"../evil\" refused: `..` path component",
        ),
        (
            "absolute",
            vec![("/etc/evil", EntryType::Regular, 0o644, 0, 0, b"x")],
            "entry \"/etc/evil\" refused: absolute path",
        ),
        (
            "hardlink",
            vec![("l", EntryType::Link, 0o644, 0, 0, b"../../etc/shadow")],
            "hard link target \"../../etc/shadow\"",
        ),
        (
            "device",
            vec![("dev/sda", EntryType::Block, 0o660, 0, 0, b"")],
            "block devices are not allowed",
        ),
    ];
    for (repo, entries, want) in cases {
        push(
            reg.port,
            &format!("{repo}:latest"),
            &[layer(&entries, true)],
        );
        let out = work.path().join(repo);
        let (result, _) = pull(
            &format!("127.0.0.1:{}/{repo}:latest", reg.port),
            &work.path().join("cache"),
            &out,
        );
        let err = result.unwrap_err();
        assert!(
            err.contains("layer 1 (sha256:") && err.contains(want),
            "{repo}: {err}"
        );
        assert!(
            !out.join("rootfs.ext4").exists(),
            "{repo}: an image was written"
        );
    }
    // Layers declaring more than a pull may take: refused before any
    // download, nothing written to the cache.
    push(
        reg.port,
        "heavy:latest",
        &[layer(
            &[("f", EntryType::Regular, 0o644, 0, 0, b"x")],
            false,
        )],
    );
    let options = PullOptions {
        limits: oci::limits::UnpackLimits {
            max_bytes: 64,
            ..oci::limits::UnpackLimits::default()
        },
        ..PullOptions::default()
    };
    let heavy_cache = work.path().join("heavy-cache");
    let (result, _) = pull_with(
        &format!("127.0.0.1:{}/heavy:latest", reg.port),
        &heavy_cache,
        &work.path().join("heavy"),
        &options,
    );
    let err = result.unwrap_err();
    assert!(err.contains("more than the 64 a pull may take"), "{err}");
    let cached = std::fs::read_dir(&heavy_cache).map_or(0, |d| d.count());
    assert_eq!(cached, 0, "a blob was downloaded");
    // Through a symlink a lower layer made.
    let lower = layer(&[("etc", EntryType::Symlink, 0o777, 0, 0, b"/tmp")], false);
    let upper = layer(
        &[("etc/passwd", EntryType::Regular, 0o644, 0, 0, b"x")],
        false,
    );
    push(reg.port, "through:latest", &[lower, upper]);
    let (result, _) = pull(
        &format!("127.0.0.1:{}/through:latest", reg.port),
        &work.path().join("cache"),
        &work.path().join("through"),
    );
    let err = result.unwrap_err();
    assert!(
        err.contains("layer 2 (sha256:") && err.contains("its parent \"etc\" is a symbolic link"),
        "{err}"
    );
}

#[test]
fn a_multi_platform_image_resolves_to_linux_amd64() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let one = |text: &'static [u8]| {
        vec![(
            layer(&[("arch", EntryType::Regular, 0o644, 0, 0, text)], false),
            Compression::Gzip,
        )]
    };
    oci_util::write_index_layout(
        dir.path(),
        &[("arm64", one(b"arm64\n")), ("amd64", one(b"amd64\n"))],
    )
    .unwrap();
    let mut args =
        oci_util::skopeo_push_args(dir.path(), &format!("127.0.0.1:{}/multi:latest", reg.port));
    args.insert(2, "--all".to_owned());
    let out = Command::new("skopeo").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let work = tempfile::tempdir().unwrap();
    let (manifest, _) = pull(
        &format!("127.0.0.1:{}/multi:latest", reg.port),
        &work.path().join("cache"),
        &work.path().join("out"),
    );
    manifest.unwrap();
    assert_eq!(
        debugfs(&work.path().join("out/rootfs.ext4"), "cat /arch"),
        "amd64\n"
    );
}

#[test]
fn registry_errors_name_the_reference_and_the_registry() {
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    let (result, _) = pull(
        &format!("127.0.0.1:{}/absent:latest", reg.port),
        &work.path().join("cache"),
        &work.path().join("x"),
    );
    let err = result.unwrap_err();
    assert!(
        err.contains(&format!("from 127.0.0.1:{}", reg.port)),
        "{err}"
    );
    let (result, _) = pull(
        "Not A Reference",
        &work.path().join("cache"),
        &work.path().join("y"),
    );
    assert!(result.unwrap_err().contains("is not an image reference"));
    let _: PathBuf = work.path().to_owned();
}

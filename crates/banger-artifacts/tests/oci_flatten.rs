//! Flattening layers: whiteouts, opaque directories, hard links across
//! layers, owners and modes, and every hostile entry refused by name.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "integration tests: each file is a test crate of its own"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use banger_artifacts::oci::flatten::{FlattenError, Layer, flatten};
use banger_artifacts::oci::limits::UnpackLimits;
use tar::{EntryType, Header};

/// One entry of a test layer.
#[derive(Clone)]
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, u64, &'a [u8]),
    Owned(&'a str, u32, u64, u64, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Block(&'a str),
    /// Raw bytes as the name, bypassing the tar crate's checks.
    Raw(&'a [u8], EntryType, &'a [u8]),
}

fn header(kind: EntryType, mode: u32, uid: u64, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

fn layer_tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(p, mode) => {
                let mut h = header(EntryType::Directory, *mode, 0, 0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::File(p, mode, uid, data) | E::Owned(p, mode, uid, _, data) => {
                let mut h = header(EntryType::Regular, *mode, *uid, data.len() as u64);
                if let E::Owned(_, _, _, gid, _) = e {
                    h.set_gid(*gid);
                }
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Symlink(p, target) => {
                let mut h = header(EntryType::Symlink, 0o777, 0, 0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Hardlink(p, target) => {
                let mut h = header(EntryType::Link, 0o644, 0, 0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Char(p, major, minor) => {
                let mut h = header(EntryType::Char, 0o666, 0, 0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::Block(p) => {
                let mut h = header(EntryType::Block, 0o660, 0, 0);
                h.set_device_major(8).unwrap();
                h.set_device_minor(0).unwrap();
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::Raw(name, kind, link) => {
                let mut h = header(*kind, 0o644, 0, 0);
                if let Some(gnu) = h.as_gnu_mut() {
                    gnu.name[..name.len()].copy_from_slice(name);
                    gnu.linkname[..link.len()].copy_from_slice(link);
                }
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Writes `layers` into `dir`, compressed in turn as gzip, zstd and none.
fn layers(dir: &Path, layers: &[&[E<'_>]]) -> Vec<Layer> {
    layers
        .iter()
        .enumerate()
        .map(|(i, entries)| {
            let raw = layer_tar(entries);
            let (bytes, media) = match i % 3 {
                0 => {
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(&raw).unwrap();
                    (
                        gz.finish().unwrap(),
                        "application/vnd.oci.image.layer.v1.tar+gzip",
                    )
                }
                1 => (
                    ruzstd::encoding::compress_to_vec(
                        &raw[..],
                        ruzstd::encoding::CompressionLevel::Fastest,
                    ),
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                ),
                _ => (raw, "application/vnd.oci.image.layer.v1.tar"),
            };
            let path = dir.join(format!("layer{i}"));
            std::fs::write(&path, bytes).unwrap();
            Layer {
                path,
                media_type: media.to_owned(),
                digest: format!("sha256:{i:064}"),
            }
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    data: Vec<u8>,
    link: String,
}

fn read_out(path: &Path) -> (Vec<String>, BTreeMap<String, Out>) {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut order = Vec::new();
    let mut map = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let h = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap())
            .unwrap_or_default();
        order.push(name.clone());
        map.insert(
            name,
            Out {
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                data,
                link,
            },
        );
    }
    (order, map)
}

/// The flattened tarball: its entry names in order, and each entry.
type Flat = (Vec<String>, BTreeMap<String, Out>);

fn run(entries: &[&[E<'_>]]) -> (tempfile::TempDir, Result<Flat, FlattenError>) {
    let dir = tempfile::tempdir().unwrap();
    let ls = layers(dir.path(), entries);
    let out: PathBuf = dir.path().join("out.tar");
    let result = flatten(&ls, &out, UnpackLimits::default()).map(|_| read_out(&out));
    (dir, result)
}

#[test]
fn whiteouts_opaque_dirs_and_replacements_apply_to_lower_layers_only() {
    let (_d, r) = run(&[
        &[
            E::Dir("etc", 0o755),
            E::File("etc/keep", 0o644, 0, b"keep"),
            E::File("etc/gone", 0o644, 0, b"gone"),
            E::Dir("etc/sub", 0o755),
            E::File("etc/sub/deep", 0o644, 0, b"deep"),
            E::Dir("opq", 0o755),
            E::File("opq/old", 0o644, 0, b"old"),
            E::Dir("was-dir", 0o755),
            E::File("was-dir/child", 0o644, 0, b"c"),
        ],
        &[
            E::File("etc/.wh.gone", 0o644, 0, b""),
            E::File("etc/.wh.sub", 0o644, 0, b""),
            E::File("opq/new", 0o644, 0, b"new"),
            E::File("opq/.wh..wh..opq", 0o644, 0, b""),
            E::File("was-dir", 0o600, 0, b"now a file"),
            E::File("etc/keep", 0o640, 0, b"replaced"),
        ],
    ]);
    let (order, out) = r.unwrap();
    let names: Vec<&str> = out.keys().map(String::as_str).collect();
    assert_eq!(names, ["etc", "etc/keep", "opq", "opq/new", "was-dir"]);
    assert_eq!(out["etc/keep"].data, b"replaced");
    assert_eq!(out["etc/keep"].mode, 0o640);
    assert_eq!(out["was-dir"].kind, EntryType::Regular);
    // Directories come first, parents before children.
    assert_eq!(&order[..2], ["etc", "opq"]);
    assert!(!order.iter().any(|n| n.contains(".wh.")));
}

#[test]
fn owners_modes_links_and_devices_are_kept() {
    let (_d, r) = run(&[
        &[
            E::Dir("usr", 0o755),
            E::Dir("usr/bin", 0o755),
            E::File("usr/bin/sudo", 0o4755, 0, b"suid"),
            E::Owned("home-file", 0o640, 1000, 1001, b"mine"),
            E::Symlink("bin", "usr/bin"),
            E::Dir("dev", 0o755),
            E::Char("dev/null", 1, 3),
            E::File("implied/parent/file", 0o644, 0, b"x"),
        ],
        &[E::Hardlink("usr/bin/sudo-link", "usr/bin/sudo")],
    ]);
    let (_, out) = r.unwrap();
    assert_eq!(out["usr/bin/sudo"].mode, 0o4755);
    assert_eq!((out["home-file"].uid, out["home-file"].gid), (1000, 1001));
    assert_eq!(out["bin"].kind, EntryType::Symlink);
    assert_eq!(out["bin"].link, "usr/bin");
    assert_eq!(out["dev/null"].kind, EntryType::Char);
    assert_eq!(out["usr/bin/sudo-link"].kind, EntryType::Link);
    assert_eq!(out["usr/bin/sudo-link"].link, "usr/bin/sudo");
    // Parents a layer only implied are made, root's, 0755.
    assert_eq!(out["implied"].kind, EntryType::Directory);
    assert_eq!(
        (out["implied/parent"].mode, out["implied/parent"].uid),
        (0o755, 0)
    );
}

#[test]
fn a_link_whose_target_was_later_deleted_or_replaced_keeps_the_old_data() {
    let (_d, r) = run(&[
        &[
            E::File("a", 0o644, 0, b"first a"),
            E::File("b", 0o644, 0, b"first b"),
        ],
        &[
            E::Hardlink("a-link", "a"),
            E::Hardlink("a-link2", "a"),
            E::Hardlink("b-link", "b"),
        ],
        &[
            E::File(".wh.a", 0o644, 0, b""),
            E::File("b", 0o644, 0, b"second b"),
        ],
    ]);
    let (_, out) = r.unwrap();
    assert!(!out.contains_key("a"));
    assert_eq!(out["a-link"].kind, EntryType::Regular);
    assert_eq!(out["a-link"].data, b"first a");
    assert_eq!(out["a-link2"].kind, EntryType::Link);
    assert_eq!(out["a-link2"].link, "a-link");
    assert_eq!(out["b"].data, b"second b");
    assert_eq!(out["b-link"].data, b"first b");
}

fn refused(entries: &[&[E<'_>]]) -> String {
    let (_d, r) = run(entries);
    match r {
        Err(e @ FlattenError::Refused { .. }) => e.to_string(),
        other => panic!("not refused: {:?}", other.map(|(o, _)| o)),
    }
}

#[test]
fn hostile_entries_are_refused_naming_layer_and_entry() {
    let long = "n".repeat(256);
    let cases: Vec<(Vec<Vec<E<'_>>>, &str)> = vec![
        (
            vec![vec![E::Raw(b"../escape", EntryType::Regular, b"")]],
            "entry \"../escape\" refused: `..` path component",
        ),
        (
            vec![vec![E::Raw(b"/etc/abs", EntryType::Regular, b"")]],
            "entry \"/etc/abs\" refused: absolute path",
        ),
        (
            vec![vec![E::Raw(b"x", EntryType::Link, b"../../etc/shadow")]],
            "hard link target \"../../etc/shadow\"",
        ),
        (
            vec![vec![E::Raw(b"y", EntryType::Link, b"/etc/shadow")]],
            "hard link target \"/etc/shadow\": absolute path",
        ),
        (
            vec![vec![E::Hardlink("z", "nowhere")]],
            "hard link to \"nowhere\", which no earlier entry made",
        ),
        (
            vec![
                vec![E::Symlink("etc", "/tmp")],
                vec![E::File("etc/passwd", 0o644, 0, b"x")],
            ],
            "layer 2 (sha256:0000000000000000000000000000000000000000000000000000000000000001): entry \"etc/passwd\" refused: its parent \"etc\" is a symbolic link",
        ),
        (
            vec![vec![E::Block("dev/sda")]],
            "block devices are not allowed",
        ),
        (
            vec![vec![E::Char("dev/mem", 1, 1)]],
            "character device 1:1 is not one of the usual ones",
        ),
        (
            vec![vec![E::File(long.as_str(), 0o644, 0, b"")]],
            "longer than the 255 ext4 can store",
        ),
    ];
    for (layers, want) in cases {
        let slices: Vec<&[E<'_>]> = layers.iter().map(Vec::as_slice).collect();
        let err = refused(&slices);
        assert!(err.contains(want), "{err}\n  does not contain {want}");
        assert!(err.starts_with("layer "), "{err}");
    }
}

#[test]
fn a_corrupt_layer_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad");
    std::fs::write(&path, b"not gzip at all").unwrap();
    let err = flatten(
        &[Layer {
            path,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: "sha256:bad".into(),
        }],
        &dir.path().join("out.tar"),
        UnpackLimits::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("layer 1 (sha256:bad):"),
        "{err}"
    );
}

/// A layer declaring a 1 GiB GNU long name is refused at its header (the
/// `tar` crate would have read the record whole), and a pull's layers
/// together are held to one entry count.
#[test]
fn a_hostile_layer_is_refused_at_the_bound_it_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long-name.tar");
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::GNULongName);
    header.set_size(1 << 30);
    header.set_cksum();
    std::fs::write(&path, header.as_bytes()).unwrap();
    let layer = |path: PathBuf, digest: &str| Layer {
        path,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        digest: digest.into(),
    };
    let err = flatten(
        &[layer(path, "sha256:long")],
        &dir.path().join("out.tar"),
        UnpackLimits::default(),
    )
    .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.starts_with("layer 1 (sha256:long):"), "{chain}");
    assert!(
        chain.contains("GNU long-name record of 1073741824 bytes"),
        "{chain}"
    );

    let limits = UnpackLimits {
        max_entries: 5,
        ..UnpackLimits::default()
    };
    let three: Vec<E<'_>> = vec![
        E::File("a", 0o644, 0, b"1"),
        E::File("b", 0o644, 0, b"2"),
        E::File("c", 0o644, 0, b"3"),
    ];
    let ls = layers(dir.path(), &[&three, &three]);
    let err = flatten(&ls, &dir.path().join("out.tar"), limits).unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.starts_with("layer 2 "), "{chain}");
    assert!(chain.contains("more than 5 tar entries"), "{chain}");
}

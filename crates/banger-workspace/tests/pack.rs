//! Packing real checkouts made with real git.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "integration tests: each file is a test crate of its own; the setup runs the user's own git"
)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_api::workspace::HeldFile;
use banger_workspace::{Base, Contents, Held, Repo, RepoError, Snapshot, pack};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "protocol.file.allow=always",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// A checkout with a commit, an edit, an untracked file, an ignored one and
/// a deleted one.
fn checkout() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("repo");
    std::fs::create_dir(&top).unwrap();
    git(&top, &["init", "-q"]);
    write(&top.join("src/main.c"), b"int main;\n");
    write(&top.join(".gitignore"), b"build/\n");
    write(&top.join("gone.txt"), b"bye\n");
    git(&top, &["add", "-A"]);
    git(&top, &["commit", "-q", "-m", "first"]);
    write(&top.join("src/main.c"), b"int main(void);\n");
    write(&top.join("notes.md"), b"untracked\n");
    write(&top.join("build/out.o"), b"ignored\n");
    std::fs::remove_file(top.join("gone.txt")).unwrap();
    (tmp, top)
}

/// Each entry's path, type, owner and content.
fn entries(tar: &[u8]) -> BTreeMap<Vec<u8>, (tar::EntryType, u64, Vec<u8>)> {
    let mut seen = BTreeMap::new();
    for entry in tar::Archive::new(tar).entries().unwrap() {
        let mut e = entry.unwrap();
        let kind = e.header().entry_type();
        let uid = e.header().uid().unwrap();
        let path = e.path_bytes().into_owned();
        let body = if kind == tar::EntryType::Symlink {
            e.link_name_bytes().unwrap().into_owned()
        } else {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut b).unwrap();
            b
        };
        seen.insert(path, (kind, uid, body));
    }
    seen
}

fn packed(top: &Path, contents: Contents) -> BTreeMap<Vec<u8>, (tar::EntryType, u64, Vec<u8>)> {
    let repo = Repo::open(top).unwrap();
    let snap = Snapshot::take(&repo).unwrap();
    let mut out = Vec::new();
    pack(
        &repo,
        &snap,
        contents,
        (contents == Contents::WorkTree)
            .then(|| Base::of(&repo).unwrap())
            .as_ref(),
        &mut out,
    )
    .unwrap();
    entries(&out)
}

#[test]
fn the_work_tree_as_the_user_sees_it_goes_with_git_owned_by_root() {
    let (_tmp, top) = checkout();
    // Opened from a subdirectory: the top is used.
    assert_eq!(Repo::open(&top.join("src")).unwrap().top(), top);
    let seen = packed(&top, Contents::WorkTree);
    assert_eq!(seen[&b"src/main.c"[..]].2, b"int main(void);\n");
    assert_eq!(seen[&b"notes.md"[..]].2, b"untracked\n");
    assert!(seen.contains_key(&b".gitignore"[..]));
    assert!(seen.contains_key(&b".git/HEAD"[..]));
    assert!(seen.contains_key(&b".git/index"[..]));
    assert!(
        !seen.keys().any(|k| k.starts_with(b"build")),
        "ignored files stay"
    );
    assert!(
        !seen.contains_key(&b"gone.txt"[..]),
        "deleted files stay deleted"
    );
    assert!(seen.values().all(|(_, uid, _)| *uid == 0));

    let git_only = packed(&top, Contents::GitOnly);
    let marker = banger_api::workspace::END_MARKER.as_bytes();
    assert!(
        git_only
            .keys()
            .all(|k| k.starts_with(b".git/") || k == b".git" || k == marker)
    );
    assert!(git_only.contains_key(&b".git/HEAD"[..]));
}

#[test]
fn odd_names_and_escaping_symlinks_are_carried_as_they_are() {
    let (tmp, top) = checkout();
    let names: [&[u8]; 5] = [
        b"with space.txt",
        b"new\nline",
        b"-leading-dash",
        "ünïcode".as_bytes(),
        b"bad\xffutf8",
    ];
    for name in names {
        write(&top.join(OsStr::from_bytes(name)), name);
    }
    std::fs::write(tmp.path().join("secret"), b"host only").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret"), top.join("escape")).unwrap();
    let seen = packed(&top, Contents::WorkTree);
    for name in names {
        assert_eq!(seen[name].2, name, "{:?}", String::from_utf8_lossy(name));
    }
    let (kind, _, target) = &seen[&b"escape"[..]];
    assert_eq!(*kind, tar::EntryType::Symlink);
    assert_eq!(target, tmp.path().join("secret").as_os_str().as_bytes());
    assert!(
        !seen.values().any(|(_, _, body)| body == b"host only"),
        "never followed"
    );
}

#[test]
fn a_submodules_checkout_is_carried() {
    let (tmp, top) = checkout();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    git(&lib, &["init", "-q"]);
    write(&lib.join("lib.c"), b"lib\n");
    git(&lib, &["add", "-A"]);
    git(&lib, &["commit", "-q", "-m", "lib"]);
    git(
        &top,
        &[
            "submodule",
            "add",
            "-q",
            lib.to_str().unwrap(),
            "vendor/lib",
        ],
    );
    let seen = packed(&top, Contents::WorkTree);
    assert_eq!(seen[&b"vendor/lib/lib.c"[..]].2, b"lib\n");
    assert!(
        seen.contains_key(&b"vendor/lib/.git"[..]),
        "the gitdir link"
    );
    assert!(
        seen.keys()
            .any(|k| k.starts_with(b".git/modules/vendor/lib/"))
    );
}

#[test]
fn what_cannot_be_a_workspace_is_named() {
    let (tmp, top) = checkout();
    let missing = Repo::open(&tmp.path().join("nope")).unwrap_err();
    assert!(matches!(missing, RepoError::Path { .. }), "{missing}");
    let file = Repo::open(&top.join("notes.md")).unwrap_err();
    assert!(matches!(file, RepoError::NotADirectory(_)), "{file}");
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    // git must not find the temp dir's parents' repositories either.
    let err = Repo::open(&plain).unwrap_err();
    assert!(matches!(err, RepoError::NotARepository(_)), "{err}");
    assert!(
        err.to_string().contains("not inside a git work tree"),
        "{err}"
    );
    let bare = tmp.path().join("bare.git");
    git(
        tmp.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    assert!(matches!(Repo::open(&bare).unwrap_err(), RepoError::Bare(_)));
    let linked = tmp.path().join("linked");
    git(&top, &["worktree", "add", "-q", linked.to_str().unwrap()]);
    let err = Repo::open(&linked).unwrap_err();
    assert!(matches!(err, RepoError::GitFile(_)), "{err}");
    assert!(err.to_string().contains("linked worktree"), "{err}");

    let repo = Repo::open(&top).unwrap();
    assert_eq!(repo.resolve("HEAD").unwrap().len(), 40);
    for bad in ["no-such-ref", "--output=/tmp/x", ""] {
        assert!(
            matches!(repo.resolve(bad).unwrap_err(), RepoError::UnknownRef(_)),
            "{bad}"
        );
    }
    for bad in ["a..b", "-x", "with space", "end.lock"] {
        assert!(
            matches!(
                repo.check_new_branch(bad).unwrap_err(),
                RepoError::BadBranch(_)
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        repo.check_new_branch("main").unwrap_err(),
        RepoError::BranchExists(_)
    ));
    repo.check_new_branch("feature/x").unwrap();
}

#[test]
fn the_fingerprint_moves_with_head_and_the_work_tree_only() {
    let (_tmp, top) = checkout();
    let repo = Repo::open(&top).unwrap();
    let first = Snapshot::take(&repo).unwrap();
    assert_eq!(
        first.fingerprint,
        Snapshot::take(&repo).unwrap().fingerprint
    );
    assert_eq!(first.branch.as_deref(), Some("main"));
    write(&top.join("build/more.o"), b"ignored\n");
    assert_eq!(
        first.fingerprint,
        Snapshot::take(&repo).unwrap().fingerprint,
        "ignored files"
    );
    write(&top.join("notes.md"), b"untracked, longer now\n");
    let edited = Snapshot::take(&repo).unwrap();
    assert_ne!(first.fingerprint, edited.fingerprint);
    git(&top, &["commit", "-q", "-a", "-m", "second"]);
    let committed = Snapshot::take(&repo).unwrap();
    assert_ne!(edited.fingerprint, committed.fingerprint);
    assert_ne!(first.head, committed.head);
}

#[test]
fn a_big_file_is_streamed_not_held() {
    let (_tmp, top) = checkout();
    let big = std::fs::File::create(top.join("big.bin")).unwrap();
    big.set_len(2 << 30).unwrap();
    drop(big);
    let repo = Repo::open(&top).unwrap();
    let snap = Snapshot::take(&repo).unwrap();
    let done = pack(
        &repo,
        &snap,
        Contents::WorkTree,
        Some(&Base::of(&repo).unwrap()),
        std::io::sink(),
    )
    .unwrap();
    assert!(done.bytes >= 2 << 30);
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    assert!(
        usage.ru_maxrss < 256 * 1024,
        "peak RSS {} KiB",
        usage.ru_maxrss
    );
}

#[test]
fn credentials_stay_on_the_host_and_the_stream_ends_with_its_marker() {
    let (_tmp, top) = checkout();
    git(
        &top,
        &[
            "config",
            "http.https://github.com/.extraheader",
            "AUTHORIZATION: basic c2VjcmV0",
        ],
    );
    git(&top, &["config", "credential.helper", "store"]);
    git(
        &top,
        &[
            "remote",
            "add",
            "origin",
            "https://x-access-token:ghs_secret@github.com/o/r.git",
        ],
    );
    git(
        &top,
        &["remote", "add", "mirror", "ssh://git@example.com/r.git"],
    );
    git(&top, &["config", "core.editor", "vim"]);
    let seen = packed(&top, Contents::WorkTree);
    let config = String::from_utf8(seen[&b".git/config"[..]].2.clone()).unwrap();
    assert!(
        !config.contains("secret") && !config.contains("c2VjcmV0"),
        "{config}"
    );
    assert!(!config.contains("credential"), "{config}");
    assert!(
        config.contains("url = https://github.com/o/r.git"),
        "{config}"
    );
    assert!(
        config.contains("url = ssh://git@example.com/r.git"),
        "{config}"
    );
    assert!(config.contains("editor = vim"), "{config}");
    // The host's own config is untouched.
    let host = std::fs::read_to_string(top.join(".git/config")).unwrap();
    assert!(host.contains("ghs_secret") && host.contains("extraheader"));

    // The marker lives in `.git`: a file of the work tree with the old
    // marker's name is the user's and goes; a stale marker or manifest in
    // the host's `.git` does not.
    write(&top.join(".banger-workspace-end"), b"mine\n");
    write(&top.join(".git/banger-end"), b"stale");
    write(&top.join(".git/banger-held"), b"ab/cd\n");
    let repo = Repo::open(&top).unwrap();
    let snap = Snapshot::take(&repo).unwrap();
    let mut out = Vec::new();
    pack(
        &repo,
        &snap,
        Contents::WorkTree,
        Some(&Base::of(&repo).unwrap()),
        &mut out,
    )
    .unwrap();
    let names: Vec<Vec<u8>> = tar::Archive::new(&out[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect();
    let marker = banger_api::workspace::END_MARKER.as_bytes();
    assert_eq!(names.last().unwrap(), marker);
    assert_eq!(names.iter().filter(|n| n.as_slice() == marker).count(), 1);
    assert!(!names.iter().any(|n| n == b".git/banger-held"));
    assert_eq!(entries(&out)[&b".banger-workspace-end"[..]].2, b"mine\n");
}

#[test]
fn a_nested_clone_goes_with_its_git_and_borrowed_objects_are_refused() {
    let (tmp, top) = checkout();
    let nested = top.join("nested");
    std::fs::create_dir(&nested).unwrap();
    git(&nested, &["init", "-q"]);
    write(&nested.join("inner.txt"), b"inner\n");
    git(&nested, &["add", "-A"]);
    git(&nested, &["commit", "-q", "-m", "inner"]);
    let seen = packed(&top, Contents::WorkTree);
    assert_eq!(seen[&b"nested/inner.txt"[..]].2, b"inner\n");
    assert!(
        seen.contains_key(&b"nested/.git/HEAD"[..]),
        "the nested .git whole"
    );

    let shared = tmp.path().join("shared");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--shared",
            top.to_str().unwrap(),
            shared.to_str().unwrap(),
        ],
    );
    let err = Repo::open(&shared).unwrap_err();
    assert!(err.to_string().contains("borrows objects"), "{err}");
}

#[test]
fn the_base_a_guest_exports_against_matches_the_carried_tree() {
    let (tmp, top) = checkout();
    let repo = Repo::open(&top).unwrap();
    // Every file under .git, with its length: none may be added or changed.
    let git_files = |top: &Path| {
        let out = Command::new("find")
            .arg(top.join(".git"))
            .args(["-type", "f", "-printf", "%P %s\n"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let before = git_files(&top);
    let snap = Snapshot::take(&repo).unwrap();
    let mut out = Vec::new();
    pack(
        &repo,
        &snap,
        Contents::WorkTree,
        Some(&Base::of(&repo).unwrap()),
        &mut out,
    )
    .unwrap();
    // The host's repository gained nothing.
    assert_eq!(git_files(&top), before);
    let guest = tmp.path().join("guest");
    std::fs::create_dir(&guest).unwrap();
    tar::Archive::new(&out[..]).unpack(&guest).unwrap();
    // As the guest's prepare does.
    std::fs::remove_file(guest.join(banger_api::workspace::END_MARKER)).unwrap();
    let base = std::fs::read_to_string(guest.join(".git/refs/banger/prepared")).unwrap();
    assert_eq!(base.trim().len(), 40, "{base}");
    // The carried tree, staged whole, is exactly the base.
    git(&guest, &["add", "-A"]);
    git(
        &guest,
        &["diff", "--cached", "--quiet", "refs/banger/prepared"],
    );
    // And differs once the guest edits.
    write(&guest.join("notes.md"), b"edited in the guest\n");
    git(&guest, &["add", "-A"]);
    let out = Command::new("git")
        .arg("-C")
        .arg(&guest)
        .args(["diff", "--cached", "--quiet", "refs/banger/prepared"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// What a workspace disk is built from: mke2fs reads the pack (through
/// libarchive), odd names, links and all, and the tree comes back whole.
#[test]
fn mke2fs_builds_a_disk_from_the_pack() {
    let (tmp, top) = checkout();
    for name in [
        &b"-leading-dash"[..],
        b"new\nline",
        b"bad\xffutf8",
        "ünï code".as_bytes(),
    ] {
        write(&top.join(OsStr::from_bytes(name)), b"odd\n");
    }
    std::os::unix::fs::symlink("/etc/hostname", top.join("escape")).unwrap();
    write(
        &top.join(format!("deep/{}/file", "d".repeat(120))),
        b"long\n",
    );
    let repo = Repo::open(&top).unwrap();
    let snap = Snapshot::take(&repo).unwrap();
    let tar = tmp.path().join("ws.tar");
    let base = Base::of(&repo).unwrap();
    pack(
        &repo,
        &snap,
        Contents::WorkTree,
        Some(&base),
        std::fs::File::create(&tar).unwrap(),
    )
    .unwrap();
    let disk = tmp.path().join("repo.ext4");
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&tar)
        .arg(&disk)
        .arg("65536k")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mke2fs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let debugfs = |request: &str| {
        let out = Command::new("debugfs")
            .args(["-R", request])
            .arg(&disk)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(debugfs("ls -p /src").contains("/main.c/"));
    let top_level = debugfs("ls -p /");
    for name in ["/-leading-dash/", "/escape/", "/.git/", "/notes.md/"] {
        assert!(top_level.contains(name), "{name} in {top_level}");
    }
    let link = debugfs("stat /escape");
    assert!(link.contains("Type: symlink"), "{link}");
    assert!(link.contains("Fast link dest: \"/etc/hostname\""), "{link}");
    assert_eq!(
        debugfs(&format!("cat /deep/{}/file", "d".repeat(120))),
        "long\n"
    );
    assert!(debugfs("ls -p /.git/refs/banger").contains("/prepared/"));
}

#[test]
fn the_identity_is_the_repositorys_own() {
    let (_tmp, top) = checkout();
    git(&top, &["config", "user.name", "Local \"Quoted\" Name"]);
    git(&top, &["config", "user.email", "local@example.com"]);
    assert_eq!(
        banger_workspace::identity(&top),
        (
            Some("Local \"Quoted\" Name".to_owned()),
            Some("local@example.com".to_owned())
        )
    );
}

/// Every file under `dir`, relative to it, as text.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                out.push(rel.to_str().unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}

/// A work tree's stream, leaving out what `held` names.
fn holding(repo: &Repo, snap: &Snapshot, base: &Base, held: &Held) -> Vec<u8> {
    let mut out = Vec::new();
    banger_workspace::pack_for_guest(repo, snap, Contents::WorkTree, Some(base), held, &mut out)
        .unwrap();
    out
}

/// Object files the receiver holds are left out of the stream and listed
/// in a manifest before the end marker; what it does not hold (the base's
/// new objects, a name that is not content-addressed) still goes.
#[test]
fn objects_the_receiver_holds_are_left_out_and_listed() {
    let (_tmp, top) = checkout();
    git(&top, &["gc", "-q"]);
    write(&top.join("later.txt"), b"after the gc\n");
    git(&top, &["add", "later.txt"]);
    git(&top, &["commit", "-q", "-m", "later"]);
    let objects = top.join(".git/objects");
    let mut listed = files_under(&objects);
    assert!(
        listed
            .iter()
            .any(|n| n.starts_with("pack/pack-") && n.ends_with(".pack")),
        "{listed:?}"
    );
    std::fs::create_dir_all(objects.join("info")).unwrap();
    std::fs::write(objects.join("info/commit-graph"), b"not content-named").unwrap();
    listed.extend([
        "info/commit-graph".to_owned(),
        "../../etc/passwd".to_owned(),
    ]);

    let repo = Repo::open(&top).unwrap();
    let snap = Snapshot::take(&repo).unwrap();
    let base = Base::of(&repo).unwrap();
    let pack_holding = |objects| {
        let held = Held {
            objects,
            ..Held::default()
        };
        holding(&repo, &snap, &base, &held)
    };
    let out = pack_holding(banger_workspace::held_paths(&listed));
    let order: Vec<Vec<u8>> = tar::Archive::new(&out[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect();
    let seen = entries(&out);
    let content_named: Vec<&String> = listed
        .iter()
        .filter(|n| banger_api::workspace::is_object_name(n))
        .collect();
    for name in &content_named {
        let key = format!(".git/objects/{name}");
        assert!(!seen.contains_key(key.as_bytes()), "{key} was sent");
    }
    assert!(seen.contains_key(&b".git/objects/info/commit-graph"[..]));
    let manifest = String::from_utf8(seen[&b".git/banger-held"[..]].2.clone()).unwrap();
    let mut in_manifest: Vec<&str> = manifest.lines().collect();
    in_manifest.sort_unstable();
    in_manifest.dedup();
    assert_eq!(
        in_manifest,
        content_named.iter().map(|s| s.as_str()).collect::<Vec<_>>()
    );
    // The base's own objects (the edited file's blob, its trees and
    // commit) are not held, so they go.
    assert!(
        seen.keys()
            .any(|k| k.starts_with(b".git/objects/") && !k.starts_with(b".git/objects/info")),
        "the base's objects were left out too"
    );
    let n = order.len();
    assert_eq!(order[n - 2], b".git/banger-held");
    assert_eq!(order[n - 1], banger_api::workspace::END_MARKER.as_bytes());

    // Nothing held: no manifest.
    let out = pack_holding(Default::default());
    assert!(!entries(&out).contains_key(&b".git/banger-held"[..]));
}

/// The guest's listing of what its last prepare carried, unchanged: what
/// git prints for `ls-tree -r` with quoted names, in the host's checkout
/// (whose index matches the base for tracked, unedited files).
fn listing(top: &Path) -> Vec<HeldFile> {
    let out = Command::new("git")
        .arg("-C")
        .arg(top)
        .args(["-c", "core.quotePath=true", "ls-files", "-s"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (meta, path) = l.split_once('\t').unwrap();
            let meta: Vec<&str> = meta.split(' ').collect();
            HeldFile {
                mode: meta[0].to_owned(),
                blob: meta[1].to_owned(),
                path: path.to_owned(),
            }
        })
        .collect()
}

/// Work-tree files the guest holds with the mode and blob the base has
/// are left out and listed, NUL-ended, in their own manifest; an edited
/// file, one whose mode differs, and one the guest does not hold still
/// go. Odd names are matched through git's quoting.
#[test]
fn work_tree_files_the_receiver_holds_are_left_out_and_listed() {
    let (_tmp, top) = checkout();
    let odd = OsStr::from_bytes(b"new\nline \xc3\xbc");
    write(&top.join(odd), b"odd\n");
    write(&top.join("run.sh"), b"#!/bin/sh\n");
    write(&top.join("same.txt"), b"same\n");
    // Files whose blob may not be their bytes, or whose edits git does
    // not look at: never held.
    write(&top.join("conv.dat"), b"converted\n");
    write(&top.join("skip.txt"), b"skipped\n");
    write(
        &top.join(".git/info/attributes"),
        b"conv.dat text eol=crlf\n",
    );
    git(&top, &["add", "-A"]);
    git(&top, &["commit", "-q", "-m", "second"]);
    git(&top, &["update-index", "--skip-worktree", "skip.txt"]);
    let mut held = listing(&top);
    // As the guest had them: run.sh was not executable then, and the
    // guest never held notes.md.
    std::fs::set_permissions(
        top.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    write(&top.join("same.txt"), b"edited on the host\n");
    held.retain(|f| f.path != "notes.md");
    assert!(
        held.iter().any(|f| f.path == "\"new\\nline \\303\\274\""),
        "{held:?}"
    );

    let repo = Repo::open(&top).unwrap();
    let snap = Snapshot::take(&repo).unwrap();
    let base = Base::of(&repo).unwrap();
    let files = base.held_files(&repo, &held).unwrap();
    let mut expect: Vec<PathBuf> = vec![
        PathBuf::from(".gitignore"),
        PathBuf::from("src/main.c"),
        PathBuf::from(odd),
    ];
    let mut got: Vec<PathBuf> = files.keys().cloned().collect();
    got.sort();
    expect.sort();
    assert_eq!(got, expect);

    let out = holding(
        &repo,
        &snap,
        &base,
        &Held {
            files: files.clone(),
            prepared: Some("c0ffee".repeat(6) + "c0ff"),
            ..Held::default()
        },
    );
    let seen = entries(&out);
    for rel in &expect {
        assert!(
            !seen.contains_key(rel.as_os_str().as_bytes()),
            "{rel:?} was sent"
        );
    }
    for sent in ["run.sh", "same.txt", "notes.md"] {
        assert!(seen.contains_key(sent.as_bytes()), "{sent} was not sent");
    }
    let manifest = &seen[banger_api::workspace::HELD_FILES_MANIFEST.as_bytes()].2;
    let mut in_manifest: Vec<&[u8]> = manifest.split(|b| *b == 0).collect();
    assert_eq!(
        in_manifest.pop(),
        Some(&b""[..]),
        "every name ends with a NUL"
    );
    assert_eq!(
        in_manifest.remove(0),
        ("c0ffee".repeat(6) + "c0ff").as_bytes()
    );
    in_manifest.sort_unstable();
    let mut want: Vec<&[u8]> = expect.iter().map(|p| p.as_os_str().as_bytes()).collect();
    want.sort_unstable();
    assert_eq!(in_manifest, want);

    // Without the guest's prepared commit nothing is left out.
    let whole = entries(&holding(
        &repo,
        &snap,
        &base,
        &Held {
            files: files.clone(),
            ..Held::default()
        },
    ));
    assert!(whole.contains_key(&b".gitignore"[..]));
    // The guest's copy not executable where the host's now is: sent.
    std::fs::set_permissions(
        top.join(".gitignore"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let held_exec = Held {
        files,
        prepared: Some("c0ffee".repeat(6) + "c0ff"),
        ..Held::default()
    };
    assert!(entries(&holding(&repo, &snap, &base, &held_exec)).contains_key(&b".gitignore"[..]));
    // A listing nothing matches holds nothing.
    assert!(base.held_files(&repo, &[]).unwrap().is_empty());
}

/// Loose objects travel to a guest as one pack with its index (a guest
/// pays per file it creates); one of a megabyte or more goes as its own
/// file; the unpacked repository is whole. To a disk built on the host
/// they go as they are.
#[test]
fn loose_objects_travel_as_one_pack_and_big_ones_as_files() {
    let (tmp, top) = checkout();
    // Incompressible, so its loose object stays over the threshold.
    let mut big = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while big.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    write(&top.join("big.bin"), &big);
    git(&top, &["add", "big.bin"]);
    git(&top, &["commit", "-q", "-m", "big"]);
    let loose_on_host = files_under(&top.join(".git/objects"))
        .into_iter()
        .filter(|n| !n.starts_with("info") && !n.starts_with("pack"))
        .count();
    assert!(loose_on_host > 5, "{loose_on_host}");

    let repo = Repo::open(&top).unwrap();
    let snap = Snapshot::take(&repo).unwrap();
    let base = Base::of(&repo).unwrap();
    // For a disk built on the host, every object goes as it is.
    let mut out = Vec::new();
    pack(&repo, &snap, Contents::WorkTree, Some(&base), &mut out).unwrap();
    let sent = entries(&out);
    let as_files = sent
        .keys()
        .filter(|k| k.starts_with(b".git/objects/") && k.len() == ".git/objects/".len() + 41)
        .count();
    // The base's new objects (blobs, trees, its commit) go too.
    assert!(as_files > loose_on_host, "{as_files} of {loose_on_host}");
    assert!(!sent.keys().any(|k| k.starts_with(b".git/objects/pack/")));
    // For a guest, as one pack.
    let out = holding(&repo, &snap, &base, &Default::default());
    let seen = entries(&out);
    let objects: Vec<String> = seen
        .keys()
        .filter_map(|k| std::str::from_utf8(k).ok())
        .filter_map(|k| k.strip_prefix(".git/objects/"))
        .filter(|k| seen[format!(".git/objects/{k}").as_bytes()].0 == tar::EntryType::Regular)
        .map(str::to_owned)
        .collect();
    let packs: Vec<&String> = objects.iter().filter(|n| n.starts_with("pack/")).collect();
    assert_eq!(packs.len(), 2, "one pack and its index: {objects:?}");
    assert!(
        packs.iter().any(|n| n.ends_with(".pack")) && packs.iter().any(|n| n.ends_with(".idx"))
    );
    let loose: Vec<&String> = objects.iter().filter(|n| !n.starts_with("pack/")).collect();
    assert_eq!(loose.len(), 1, "only the big blob goes loose: {loose:?}");

    let guest = tmp.path().join("guest");
    std::fs::create_dir(&guest).unwrap();
    tar::Archive::new(&out[..]).unpack(&guest).unwrap();
    std::fs::remove_file(guest.join(banger_api::workspace::END_MARKER)).unwrap();
    git(&guest, &["fsck", "--no-dangling", "--no-progress"]);
    git(&guest, &["cat-file", "-e", "refs/banger/prepared"]);
    git(&guest, &["diff", "--quiet", "HEAD", "--", "big.bin"]);

    // What the receiver holds (by object name, however it keeps them) is
    // left out and listed; when it holds them all, no pack is made.
    let all: Vec<String> = {
        let out = Command::new("git")
            .arg("-C")
            .arg(&guest)
            .args([
                "cat-file",
                "--batch-all-objects",
                "--batch-check=%(objectname)",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|id| format!("{}/{}", &id[..2], &id[2..]))
            .collect()
    };
    let held = Held {
        objects: banger_workspace::held_paths(&all),
        ..Held::default()
    };
    let out = holding(&repo, &snap, &base, &held);
    let seen = entries(&out);
    assert!(
        !seen
            .keys()
            .any(|k| k.starts_with(b".git/objects/") && seen[k].0 == tar::EntryType::Regular),
        "objects the receiver holds were sent"
    );
    let manifest = String::from_utf8(seen[&b".git/banger-held"[..]].2.clone()).unwrap();
    let mut listed: Vec<&str> = manifest.lines().collect();
    listed.sort_unstable();
    let mut expected: Vec<&str> = all.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);
}

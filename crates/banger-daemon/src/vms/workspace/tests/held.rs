//! The objects a re-prepare may leave out.

use std::time::Duration;

use super::*;

#[test]
fn held_objects_are_the_guests_content_named_files_and_none_without_a_workspace() {
    let loose = format!("ab/{}", "c".repeat(38));
    let pack = format!("pack/pack-{}.pack", "d".repeat(40));
    let listing =
        format!("{loose}\ninfo/commit-graph\n../../etc/passwd\n{pack}\npack/pack-x.keep\n");
    let (k, guest) = with_guest(
        kit(""),
        FakeGuest {
            output: listing.into_bytes(),
            ..FakeGuest::default()
        },
    );
    k.run_web("vmm");
    // No workspace yet: nothing held, no session.
    assert_eq!(
        k.vms.held_objects("web").unwrap().names,
        Vec::<String>::new()
    );
    assert!(guest.seen.lock().unwrap().is_empty());

    k.vms
        .prepare_workspace("web", &query(), &mut &b""[..])
        .unwrap();
    assert_eq!(k.vms.held_objects("web").unwrap().names, [loose, pack]);
    let seen = guest.seen.lock().unwrap().clone();
    assert_eq!(seen[1].1, ["/root/repo"]);

    // A listing that fails sends everything, rather than failing the
    // prepare.
    *guest.answer.lock().unwrap() = Some(GuestError::TimedOut(Duration::from_secs(1)));
    assert_eq!(
        k.vms.held_objects("web").unwrap().names,
        Vec::<String>::new()
    );
}

/// A command run here, standing for the guest: `HOME` is the test's own.
fn here(program: &str, args: &[&str], home: &std::path::Path) -> banger_sys::Cmd {
    banger_sys::Cmd::new(program)
        .args(args)
        .env("HOME", home)
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
}

fn run_here(cmd: banger_sys::Cmd, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .to_command()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn inode(path: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

/// A workspace as a prepare left it, then edited by the guest: one file
/// changed, one marked skip-worktree.
fn guest_workspace(home: &std::path::Path, dest: &std::path::Path) {
    std::fs::create_dir_all(home).unwrap();
    std::fs::create_dir_all(dest.join("src")).unwrap();
    for (name, body) in [
        ("src/kept.rs", "kept\n"),
        ("sp ace.txt", "spaced\n"),
        ("ü.txt", "quoted\n"),
        ("edited.txt", "as prepared\n"),
        ("gone.txt", "bye\n"),
    ] {
        std::fs::write(dest.join(name), body).unwrap();
    }
    let git = |args: &[&str]| {
        let mut all = vec!["-C", dest.to_str().unwrap()];
        all.extend(args);
        let out = run_here(here("git", &all, home), b"");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "prepared"]);
    git(&["update-ref", "refs/banger/prepared", "HEAD"]);
    // The guest's own edit: never held; nor a file git is told not to
    // look at, edited or not.
    std::fs::write(dest.join("edited.txt"), "the guest's edit\n").unwrap();
    git(&["update-index", "--skip-worktree", "gone.txt"]);
}

/// The host's next tree: `.git` as the guest has it, edited.txt carried
/// with the host's content, new.txt new, gone.txt gone, the rest held as
/// `manifest` says.
fn stream(dest: &std::path::Path, manifest: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".git", dest.join(".git")).unwrap();
    let mut add = |name: &str, body: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, body).unwrap();
    };
    add("edited.txt", b"the host's\n");
    add("new.txt", b"new\n");
    add(banger_api::workspace::HELD_FILES_MANIFEST, manifest);
    add(banger_api::workspace::END_MARKER, b"");
    b.into_inner().unwrap()
}

/// The guest's own scripts, run by sh here in a directory standing for
/// the guest's workspace: the listing names the files unchanged since
/// the prepare, and the next prepare links those its stream left out
/// (the same inode) while what it carries replaces the rest. A file the
/// listing named that is gone by then fails the prepare, and the tree
/// stays as it was.
#[test]
fn a_prepare_links_the_files_the_guests_listing_said_it_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, dest) = (tmp.path().join("home"), tmp.path().join("ws"));
    guest_workspace(&home, &dest);

    let dest_s = dest.to_str().unwrap();
    let out = run_here(
        here("sh", &["-c", scripts::HELD, "held", dest_s], &home),
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    let listed = super::super::held::parse(&String::from_utf8_lossy(&out.stdout));
    let mut paths: Vec<&str> = listed.files.iter().map(|f| f.path.as_str()).collect();
    paths.sort_unstable();
    // As git quotes them: the guest's names need not be UTF-8.
    assert_eq!(paths, ["\"\\303\\274.txt\"", "sp ace.txt", "src/kept.rs"]);

    // The host's next tree: kept.rs and "sp ace.txt" held, edited.txt
    // carried with the host's content, gone.txt gone, new.txt new.
    let stream = |manifest: &[u8]| stream(&dest, manifest);
    let prepared = listed.prepared.clone().unwrap();
    let manifest = format!("{prepared}\0src/kept.rs\0sp ace.txt\0ü.txt\0");
    let manifest = manifest.as_bytes();
    let kept = inode(&dest.join("src/kept.rs"));
    // Made once: the old tree's background removal runs inside `.git`.
    let streamed = stream(manifest);
    let listed_then = stream(format!("{}\0src/kept.rs\0", "0".repeat(40)).as_bytes());
    let prepare = || {
        let args = ["-c", scripts::PREPARE, "prepare", dest_s, "", "", "", ""];
        run_here(here("sh", &args, &home), &streamed)
    };
    let out = prepare();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        inode(&dest.join("src/kept.rs")),
        kept,
        "kept.rs was not linked"
    );
    let read = |name: &str| std::fs::read_to_string(dest.join(name)).ok();
    assert_eq!(read("sp ace.txt").as_deref(), Some("spaced\n"));
    assert_eq!(read("ü.txt").as_deref(), Some("quoted\n"));
    assert_eq!(read("edited.txt").as_deref(), Some("the host's\n"));
    assert_eq!(read("new.txt").as_deref(), Some("new\n"));
    assert_eq!(read("gone.txt"), None);
    assert!(
        !dest
            .join(banger_api::workspace::HELD_FILES_MANIFEST)
            .exists()
    );

    // The workspace prepared again since the listing: refused.
    let args = ["-c", scripts::PREPARE, "prepare", dest_s, "", "", "", ""];
    let out = run_here(here("sh", &args, &home), &listed_then);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    // Edited in the guest since its listing: refused.
    std::fs::write(dest.join("src/kept.rs"), "edited after the listing\n").unwrap();
    let out = prepare();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("changed in the guest"),
        "{out:?}"
    );
    // Gone from the guest since its listing: refused, nothing replaced.
    std::fs::remove_file(dest.join("src/kept.rs")).unwrap();
    let out = prepare();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("prepare again"),
        "{out:?}"
    );
    assert_eq!(read("new.txt").as_deref(), Some("new\n"));
    assert!(!tmp.path().join("ws.banger-new").exists());
}

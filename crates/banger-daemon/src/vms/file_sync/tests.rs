use std::os::unix::fs::PermissionsExt;

use banger_sys::{Cancel, Cmd, HostRunner, Runner};

use super::*;

fn entry(host: &str, guest: &str, mode: Option<&str>) -> FileSync {
    FileSync {
        host: host.into(),
        guest: guest.into(),
        mode: mode.map(Into::into),
    }
}

fn write(path: &Path, data: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A home with `.aws` holding files, a nested directory, symlinks out of
/// the tree (to a file and to a directory), a FIFO and a name with a
/// newline; and a secret outside the home.
fn home() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    write(&home.join(".aws/credentials"), "secret\n", 0o600);
    write(&home.join(".aws/config"), "[default]\n", 0o644);
    write(&home.join(".aws/sub dir/q\"uote"), "nested\n", 0o640);
    write(&home.join(".npmrc"), "token\n", 0o644);
    let sub = home.join(".aws/sub dir");
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o750)).unwrap();
    write(&root.path().join("outside/secret"), "not yours\n", 0o600);
    std::os::unix::fs::symlink(root.path().join("outside/secret"), home.join(".aws/leak")).unwrap();
    std::os::unix::fs::symlink(root.path().join("outside"), home.join(".aws/leakdir")).unwrap();
    std::os::unix::fs::symlink(root.path().join("outside"), home.join("escape")).unwrap();
    write(&home.join(".aws/new\nline"), "x\n", 0o644);
    let fifo = std::ffi::CString::new(home.join(".aws/fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string; mkfifo touches nothing else.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    (root, home)
}

#[test]
fn host_paths_must_resolve_inside_the_owners_home() {
    let (root, home) = home();
    let ok = [
        entry("~/.aws", "/root/.aws", None),
        entry("~/nope", "/root/nope", None),
    ];
    check(&ok, Some(&home)).unwrap();
    let abs = home.join(".npmrc");
    check(
        &[entry(abs.to_str().unwrap(), "/root/.npmrc", None)],
        Some(&home),
    )
    .unwrap();
    let outside = root.path().join("outside");
    for (bad, says) in [
        (entry("~/escape", "/root/e", None), "resolves to"),
        (
            entry(outside.to_str().unwrap(), "/root/e", None),
            "not inside the owner's home",
        ),
        (entry("/etc", "/root/e", None), "/etc"),
        (entry("~/", "/root/e", None), "not inside"),
        (entry("~/.aws/../../outside", "/root/e", None), "not inside"),
    ] {
        let err = check(&[ok[0].clone(), bad], Some(&home)).unwrap_err();
        assert!(err.starts_with("file_sync[1] (host"), "{err}");
        assert!(err.contains(says), "{err}");
    }
    let err = check(&ok, None).unwrap_err();
    assert!(err.contains("home is unknown"), "{err}");
    check(&[], None).unwrap();
}

#[test]
fn staging_copies_files_skips_links_and_odd_files_and_holds_the_total() {
    let (_root, home) = home();
    if banger_sys::euid() == 0 {
        write(&home.join(".aws/roots"), "root's\n", 0o600);
        std::os::unix::fs::chown(home.join(".aws/roots"), Some(1234), None).unwrap();
    }
    let vm = tempfile::tempdir().unwrap();
    let entries = [
        entry("~/.aws", "/root/.config/aws", None),
        entry("~/.npmrc", "/root/.npmrc", Some("0600")),
        entry("~/missing", "/root/missing", None),
    ];
    let staged = stage(&entries, Some(&home), (vm.path(), "sync"), MAX_BYTES).unwrap();
    let warned = staged.warnings.join("\n");
    for skipped in [
        ".aws/leak ",
        ".aws/leakdir ",
        ".aws/fifo:",
        "line: its name",
        "file_sync[2]",
    ] {
        assert!(warned.contains(skipped), "{skipped}: {warned}");
    }
    let foreign = usize::from(banger_sys::euid() == 0);
    if foreign == 1 {
        assert!(warned.contains(".aws/roots: owned by uid 1234"), "{warned}");
    }
    assert_eq!(staged.warnings.len(), 5 + foreign, "{warned}");
    let cmds = &staged.commands;
    assert!(
        !cmds.contains("leak") && !cmds.contains("fifo") && !cmds.contains("line"),
        "{cmds}"
    );
    assert!(
        cmds.starts_with("rm \".config\"\nmkdir \".config\"\nsif \".config\" uid 0\n"),
        "{cmds}"
    );
    assert!(
        cmds.contains(
            "rm \".config/aws\"\nmkdir \".config/aws\"\nsif \".config/aws\" mode 040755\n"
        ),
        "{cmds}"
    );
    assert!(
        cmds.contains("rm \".config/aws/config\"\nwrite sync/0 \".config/aws/config\"\nsif \".config/aws/config\" uid 0\n"),
        "{cmds}"
    );
    // No `sif mode` on a file: it would rewrite the type of whatever
    // inode is there if the write failed.
    assert!(!cmds.contains("mode 010"), "{cmds}");
    assert!(cmds.contains("\".config/aws/sub dir/q\"\"uote\""), "{cmds}");
    let staged_file = |n: &str| {
        let path = vm.path().join("sync").join(n);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        (std::fs::read_to_string(path).unwrap(), mode)
    };
    assert_eq!(staged_file("1"), ("secret\n".to_owned(), 0o600));
    assert_eq!(staged_file("0"), ("[default]\n".to_owned(), 0o644));
    assert_eq!(staged_file("3"), ("token\n".to_owned(), 0o600));

    let vm = tempfile::tempdir().unwrap();
    let err = stage(&entries, Some(&home), (vm.path(), "sync"), 10).unwrap_err();
    assert!(
        err.starts_with("file_sync[0]") && err.contains("more than"),
        "{err}"
    );
}

/// The commands, run by the real debugfs against a real ext4 whose seed
/// has a file where a directory goes, a symlink where a parent goes and
/// a directory where a file goes, lay the tree down without changing the
/// type of any inode.
#[test]
fn debugfs_lays_the_staged_tree_onto_a_real_disk() {
    let (_root, home) = home();
    let vm = tempfile::tempdir().unwrap();
    let disk = vm.path().join("work.ext4");
    let log = vm.path().join("log");
    let run = |cmd: &Cmd| HostRunner.run(cmd, &log, &Cancel::new()).unwrap();
    let debugfs = |script: &str| {
        std::fs::write(vm.path().join("script"), script).unwrap();
        run(&Cmd::new("debugfs")
            .args(["-w", "-f", "script", "work.ext4"])
            .cwd(vm.path()));
    };
    run(&banger_artifacts::ext4::mkfs_empty(&disk, 16 << 20, "t"));
    std::fs::write(vm.path().join("seedfile"), "seed\n").unwrap();
    debugfs("write seedfile .aws\nsymlink .config /etc\nmkdir keep\n");
    let entries = [
        entry("~/.aws", "/root/.aws", None),
        entry("~/.npmrc", "/root/.config/npmrc", None),
        entry("~/.npmrc", "/root/keep", None),
    ];
    let staged = stage(&entries, Some(&home), (vm.path(), "sync"), MAX_BYTES).unwrap();
    debugfs(&staged.commands);
    let listing = vm.path().join("ls");
    run(&Cmd::new("sh").arg("-c").arg(
        "for d in . .aws '.aws/sub dir' .config; do debugfs -R \"ls -l \\\"$d\\\"\" work.ext4; done > ls 2>&1; debugfs -R 'cat .aws/credentials' work.ext4 >> ls",
    ).cwd(vm.path()));
    let listing = std::fs::read_to_string(listing).unwrap();
    for line in [
        "40755 (2)      0      0    1024 ",
        "100600 (1)      0      0       7 ",
        " credentials",
        "40750 (2)",
        " sub dir",
        " q\"uote",
        "secret\n",
        " npmrc",
    ] {
        assert!(listing.contains(line), "{line}: {listing}");
    }
    assert!(
        !listing.contains("leak") && !listing.contains("120777"),
        "{listing}"
    );
    let keep = listing.lines().find(|l| l.ends_with(" keep")).unwrap();
    assert!(keep.contains(" 40755 "), "a directory stays one: {keep}");
}

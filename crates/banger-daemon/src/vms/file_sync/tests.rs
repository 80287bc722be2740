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
    assert_eq!(staged.warnings.len(), 5, "{warned}");
    let cmds = &staged.commands;
    assert!(
        !cmds.contains("leak") && !cmds.contains("fifo") && !cmds.contains("line"),
        "{cmds}"
    );
    assert!(
        cmds.starts_with("mkdir \".config\"\nmkdir \".config/aws\"\n"),
        "{cmds}"
    );
    assert!(
        cmds.contains(
            "write sync/0 \".config/aws/config\"\nsif \".config/aws/config\" mode 0100644\n"
        ),
        "{cmds}"
    );
    assert!(
        cmds.contains("sif \".config/aws/credentials\" mode 0100600\n"),
        "{cmds}"
    );
    assert!(cmds.contains("\".config/aws/sub dir/q\"\"uote\""), "{cmds}");
    assert!(cmds.contains("sif \".npmrc\" mode 0100600\n"), "{cmds}");
    assert_eq!(
        std::fs::read_to_string(vm.path().join("sync/1")).unwrap(),
        "secret\n"
    );

    let vm = tempfile::tempdir().unwrap();
    let err = stage(&entries, Some(&home), (vm.path(), "sync"), 10).unwrap_err();
    assert!(
        err.starts_with("file_sync[0]") && err.contains("more than"),
        "{err}"
    );
}

/// The commands, run by the real debugfs against a real ext4, lay the
/// tree down as the guest will see it.
#[test]
fn debugfs_lays_the_staged_tree_onto_a_real_disk() {
    let (_root, home) = home();
    let vm = tempfile::tempdir().unwrap();
    let entries = [entry("~/.aws", "/root/.aws", None)];
    let staged = stage(&entries, Some(&home), (vm.path(), "sync"), MAX_BYTES).unwrap();
    let disk = vm.path().join("work.ext4");
    let log = vm.path().join("log");
    let run = |cmd: &Cmd| HostRunner.run(cmd, &log, &Cancel::new()).unwrap();
    run(&banger_artifacts::ext4::mkfs_empty(&disk, 16 << 20, "t"));
    std::fs::write(vm.path().join("script"), &staged.commands).unwrap();
    run(&Cmd::new("debugfs")
        .args(["-w", "-f", "script", "work.ext4"])
        .cwd(vm.path()));
    let listing = vm.path().join("ls");
    run(&Cmd::new("sh").arg("-c").arg("debugfs -R 'ls -l .aws' work.ext4 > ls; debugfs -R 'ls -l \".aws/sub dir\"' work.ext4 >> ls; debugfs -R 'cat .aws/credentials' work.ext4 >> ls").cwd(vm.path()));
    let listing = std::fs::read_to_string(listing).unwrap();
    for line in [
        "100600 (1)      0      0       7",
        " credentials",
        "40750 (2)",
        " sub dir",
        " q\"uote",
        "secret\n",
    ] {
        assert!(listing.contains(line), "{line}: {listing}");
    }
    assert!(!listing.contains("leak"), "{listing}");
}

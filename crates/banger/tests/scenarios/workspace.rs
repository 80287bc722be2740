//! The workspace loop against real guests: a checkout carried in by `vm
//! run PATH` and `vm workspace prepare`, commands run in it by `vm exec`,
//! and the guest's edits handed back by `vm workspace export`.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::common::{Env, stderr};
use crate::support::{Leftovers, Scenario, code, fails, leftovers, show, text};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("workspace-run-carries-the-checkout-as-seen", run_carries),
        Scenario::new("workspace-prepare-exec-export-round-trip", round_trip),
        Scenario::new("file-sync-copies-home-files-and-refuses-escapes", file_sync),
        Scenario::new("workspace-carries-a-2GiB-file-in-flat-memory", big_file),
    ]
}

/// The test's git, run by the Env's user (whose checkout it is, as their
/// git insists) in `dir`, which is handed to them first if need be.
fn git(env: &Env, dir: &Path, args: &[&str]) -> String {
    use std::os::unix::fs::MetadataExt;
    if let Some((uid, _)) = env.user()
        && std::fs::metadata(dir).unwrap().uid() != uid
    {
        env.give(dir);
    }
    let out = env
        .command(Path::new("git"), &[])
        .arg("-C")
        .arg(dir)
        .args(["-c", "init.defaultBranch=main", "-c", "core.quotePath=true"])
        .args(args)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(env: &Env, path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    env.give(path);
}

/// A checkout with a commit, then an edit, an untracked file, an ignored
/// one and a deletion; its identity is set so the guest gets it.
fn checkout(env: &Env, name: &str) -> std::path::PathBuf {
    let top = env.path(name);
    std::fs::create_dir_all(&top).unwrap();
    git(env, &top, &["init", "-q"]);
    git(env, &top, &["config", "user.name", "Dev Host"]);
    git(env, &top, &["config", "user.email", "dev@host.example"]);
    write(env, &top.join("src/main.sh"), b"echo hello\n");
    write(env, &top.join("with space.txt"), b"spaced\n");
    write(env, &top.join(".gitignore"), b"target/\n");
    write(env, &top.join("gone.txt"), b"bye\n");
    git(env, &top, &["add", "-A"]);
    git(env, &top, &["commit", "-q", "-m", "first"]);
    write(env, &top.join("src/main.sh"), b"echo hello, edited\n");
    write(env, &top.join("notes.md"), b"untracked\n");
    write(env, &top.join("target/out.o"), b"ignored\n");
    std::fs::remove_file(top.join("gone.txt")).unwrap();
    // Names a shell or a careless tool would trip on, and a symlink out
    // of the checkout (carried as a link, never followed on the host).
    for name in [
        &b"-leading-dash"[..],
        b"new\nline",
        b"bad\xffutf8",
        "ünï code".as_bytes(),
        // The end marker's old name: a user's file like any other.
        b".banger-workspace-end",
    ] {
        write(env, &top.join(std::ffi::OsStr::from_bytes(name)), b"odd\n");
    }
    std::os::unix::fs::symlink("/etc/hostname", top.join("escape")).unwrap();
    top
}

/// Every file git shows (tracked and untracked, not ignored) with its
/// hash, a symlink with its target; a tracked file deleted from the work
/// tree, and a submodule's directory, are left out.
const HASHES: &str = r#"export LC_ALL=C; git ls-files -z --cached --others --exclude-standard | sort -zu | xargs -0 sh -c 'for f; do if [ -L "$f" ]; then printf "%s -> %s\n" "$f" "$(readlink "$f")"; elif [ -f "$f" ]; then sha256sum -- "$f"; fi; done' hashes"#;

/// [`HASHES`] in the VM's workspace (names need not be UTF-8).
fn guest_hashes(env: &Env, vm: &str) -> String {
    let out = env.banger(&["vm", "exec", vm, "--", "sh", "-c", HASHES]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`HASHES`] in `top`, as the Env's user (whose checkout it is).
fn host_hashes(env: &Env, top: &Path) -> String {
    let out = env
        .command(Path::new("sh"), &["-c", HASHES])
        .current_dir(top)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `vm run --rm PATH` carries the checkout as the user sees it (edits,
/// untracked files, `.git`; not ignored files) and runs the command in it;
/// git in the guest agrees with git on the host. A checkout that cannot
/// be carried is refused before any VM exists.
fn run_carries(env: &Env) {
    let top = checkout(env, "repo");
    let top_s = top.to_str().unwrap();
    // A submodule: its checked-out content is carried, and git in the
    // guest sees it as a repository of its own.
    let lib = env.path("lib");
    std::fs::create_dir_all(&lib).unwrap();
    git(env, &lib, &["init", "-q"]);
    write(env, &lib.join("lib.txt"), b"from the submodule\n");
    git(env, &lib, &["add", "-A"]);
    git(env, &lib, &["commit", "-q", "-m", "lib one"]);
    git(
        env,
        &top,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            lib.to_str().unwrap(),
            "sub",
        ],
    );
    git(
        env,
        &top,
        &["commit", "-q", "-m", "add lib", "--", ".gitmodules", "sub"],
    );
    let script = format!(
        "pwd; cat src/main.sh notes.md; test ! -e target/out.o && echo no-ignored; git -c core.quotePath=true status --porcelain; git log --format=%s; git config user.email; readlink escape; cat sub/lib.txt; git -C sub log --format=%s; {HASHES}"
    );
    let out = env.banger(&["vm", "run", "--rm", top_s, "--", "sh", "-c", &script]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let expected = format!(
        "/root/repo\necho hello, edited\nuntracked\nno-ignored\n{}add lib\nfirst\ndev@host.example\n/etc/hostname\nfrom the submodule\nlib one\n{}",
        git(env, &top, &["status", "--porcelain"]),
        host_hashes(env, &top)
    );
    assert_eq!(text(&out), expected);
    // From a subdirectory, with --from and --branch: the guest's copy is
    // the commit, on the new branch, without the work-tree edits.
    let out = env.banger(&[
        "vm",
        "run",
        "--rm",
        &format!("{top_s}/src"),
        "--from",
        "HEAD",
        "--branch",
        "try-it",
        "--",
        "sh",
        "-c",
        "git branch --show-current; cat src/main.sh; git status --porcelain; exit 3",
    ]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert_eq!(text(&out), "try-it\necho hello\n");

    // Kept, a VM from `vm run PATH` has its workspace on a disk of its
    // own, written before it booted; a later prepare swaps the tree inside
    // that mount, and the tree survives a restart.
    env.ok(&["vm", "run", "--name", "laid", top_s, "--", "true"]);
    let out = env.banger(&["vm", "exec", "laid", "--", "mountpoint", "-q", "/root/repo"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    write(env, &top.join("notes.md"), b"changed on the host\n");
    env.ok(&["vm", "workspace", "prepare", "laid", top_s]);
    assert_eq!(guest_hashes(env, "laid"), host_hashes(env, &top));
    // The objects the guest already held (left out of the second stream)
    // are all still there.
    env.ok(&[
        "vm",
        "exec",
        "laid",
        "--",
        "git",
        "fsck",
        "--no-dangling",
        "--no-progress",
    ]);
    // Growing the VM's disk grows its workspace disk by as much.
    let repo_size = |env: &Env| -> u64 {
        let out = env.ok(&[
            "vm",
            "exec",
            "laid",
            "--",
            "df",
            "-B1",
            "--output=size",
            "/root/repo",
        ]);
        out.lines().last().unwrap().trim().parse().unwrap()
    };
    let before = repo_size(env);
    let disk: u64 = show(env, "laid")["disk_bytes"].as_u64().unwrap();
    env.ok(&["vm", "stop", "laid"]);
    env.ok(&[
        "vm",
        "set",
        "laid",
        "--disk-size",
        &format!("{}", disk + (2 << 30)),
    ]);
    env.ok(&["vm", "start", "laid"]);
    assert_eq!(guest_hashes(env, "laid"), host_hashes(env, &top));
    let after = repo_size(env);
    assert!(after > before + (3 << 29), "{before} -> {after}");
    env.ok(&["vm", "delete", "-f", "laid"]);
    assert_eq!(leftovers(env), Leftovers::none());

    let plain = env.path("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let bare = env.path("home/bare.git");
    git(
        env,
        &env.path("home"),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    let missing = env.path("missing");
    for (args, says) in [
        (vec![missing.to_str().unwrap()], "No such file"),
        (vec![plain.to_str().unwrap()], "not inside a git work tree"),
        (vec![bare.to_str().unwrap()], "bare git repository"),
        (vec![top_s, "--from", "no-such-ref"], "is not a commit"),
        (vec![top_s, "--branch", "a..b"], "not a valid branch name"),
        (vec![top_s, "--branch", "main"], "already exists"),
    ] {
        let mut argv = vec!["vm", "run", "--rm"];
        argv.extend(args);
        argv.extend(["--", "true"]);
        let err = fails(env, &argv);
        assert!(err.contains(says), "{argv:?}: {err}");
    }
    assert_eq!(leftovers(env), Leftovers::none());
    assert_eq!(env.ok(&["vm", "list", "-o", "json"]).trim(), "[]");
}

/// prepare on a running VM, exec in the workspace (exit codes, a warning
/// when the host moves, --auto-prepare), every file intact across stop and
/// start, exec refused on a stopped VM, and an export that `git apply
/// --index` takes on a fresh clone, leaving both trees byte-identical.
fn round_trip(env: &Env) {
    let top = checkout(env, "work");
    let top_s = top.to_str().unwrap();
    env.ok(&["vm", "create", "--name", "ws"]);
    let said = env.ok(&["vm", "workspace", "prepare", "ws", top_s]);
    assert_eq!(said, format!("{top_s} -> ws:/root/repo\n"));
    let ws = &show(env, "ws")["workspace"];
    assert_eq!(ws["host_path"], top_s);
    assert_eq!(ws["branch"], "main");
    let listed = env.ok(&["vm", "list"]);
    assert!(
        listed.lines().next().unwrap().contains("WORKSPACE"),
        "{listed}"
    );
    assert!(listed.contains(top_s), "{listed}");

    assert_eq!(env.ok(&["vm", "exec", "ws", "--", "pwd"]), "/root/repo\n");
    let out = env.banger(&["vm", "exec", "ws", "--", "sh", "-c", "exit 5"]);
    assert_eq!(code(&out), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).is_empty(),
        "no warning while in sync: {}",
        stderr(&out)
    );
    assert_eq!(guest_hashes(env, "ws"), host_hashes(env, &top));
    // Nothing changed yet: an empty patch.
    assert_eq!(env.ok(&["vm", "workspace", "export", "ws"]), "");
    // Those sessions went through the VM's SSH control master, which
    // goes with the VM.
    let id = show(env, "ws")["id"].as_str().unwrap().to_owned();
    let mux = env.path(&format!("state/vms/{id}/ssh.mux"));
    assert!(mux.exists(), "no control master at {}", mux.display());

    env.ok(&["vm", "stop", "ws"]);
    assert!(!mux.exists(), "the control master outlived the stop");
    assert_eq!(leftovers(env).vmm_processes, Vec::<u32>::new());
    let refused = env.banger(&["vm", "exec", "ws", "--", "true"]);
    assert_eq!(code(&refused), Some(1));
    assert!(
        stderr(&refused).contains("is not running"),
        "{}",
        stderr(&refused)
    );
    env.ok(&["vm", "start", "ws"]);
    assert_eq!(guest_hashes(env, "ws"), host_hashes(env, &top));

    // The host moves on: exec warns; --auto-prepare syncs first.
    git(env, &top, &["add", "-A"]);
    git(env, &top, &["commit", "-q", "-m", "second"]);
    let out = env.banger(&["vm", "exec", "ws", "--", "true"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("changed since"), "{}", stderr(&out));
    let head = git(env, &top, &["rev-parse", "HEAD"]);
    // Objects the guest holds (they came as a pack): the re-prepare
    // leaves them out of the stream and links the guest's own pack, the
    // same inode.
    let object = "cd /root/repo && stat -c '%n %i' $(find .git/objects/pack -type f -name '*.pack' | sort | head -n 1)";
    let held = env.ok(&["vm", "exec", "ws", "--", "sh", "-c", object]);
    assert_eq!(
        env.ok(&[
            "vm",
            "exec",
            "ws",
            "--auto-prepare",
            "--",
            "git",
            "rev-parse",
            "HEAD"
        ]),
        head
    );
    let out = env.banger(&["vm", "exec", "ws", "--", "true"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let name = held.split_whitespace().next().unwrap();
    let again =
        format!("cd /root/repo && stat -c '%n %i' {name} && git fsck --no-dangling --no-progress");
    assert_eq!(
        env.ok(&["vm", "exec", "ws", "--", "sh", "-c", &again]),
        held
    );
    // And were not sent again: the new pack holds only what is new.
    let per_pack = format!(
        "for i in .git/objects/pack/*.idx; do n=$(git show-index < $i | wc -l); \
         if [ \"${{i%.idx}}.pack\" = {name} ]; then echo old $n; else echo new $n; fi; done | sort"
    );
    let counts = env.ok(&["vm", "exec", "ws", "--", "sh", "-c", &per_pack]);
    let n = |which: &str| -> u32 {
        let line = counts.lines().find(|l| l.starts_with(which)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(counts.lines().count(), 2, "{counts}");
    assert!(n("new") < n("old"), "objects per pack: {counts}");

    // Edits in the guest, of every kind an export must carry.
    env.ok(&[
        "vm",
        "exec",
        "ws",
        "--",
        "sh",
        "-c",
        "set -e; echo more >> src/main.sh; echo new > added.txt; rm notes.md; \
         git mv 'with space.txt' 'renamed space.txt'; chmod +x src/main.sh; \
         head -c 3000 /dev/urandom > blob.bin; echo ü > 'ünï code.txt'",
    ]);
    let before = env.ok(&[
        "vm",
        "exec",
        "ws",
        "--",
        "sh",
        "-c",
        "git status --porcelain; git stash list",
    ]);
    // Where the owner may write.
    let patch_file = env.path("home/guest.patch");
    env.ok(&[
        "vm",
        "workspace",
        "export",
        "ws",
        "-o",
        patch_file.to_str().unwrap(),
    ]);
    let after = env.ok(&[
        "vm",
        "exec",
        "ws",
        "--",
        "sh",
        "-c",
        "git status --porcelain; git stash list",
    ]);
    assert_eq!(before, after, "an export changed the guest");
    let patch = std::fs::read_to_string(&patch_file).unwrap();
    assert!(patch.contains("GIT binary patch"), "{patch}");
    assert!(patch.contains("new mode 100755"), "{patch}");

    let clone = env.path("home/clone");
    git(
        env,
        &env.path("home"),
        &["clone", "-q", top_s, clone.to_str().unwrap()],
    );
    git(
        env,
        &clone,
        &["apply", "--index", patch_file.to_str().unwrap()],
    );
    assert_eq!(guest_hashes(env, "ws"), host_hashes(env, &clone));
    let modes = "git ls-files -s src/main.sh";
    assert_eq!(
        env.ok(&[
            "vm",
            "exec",
            "ws",
            "--",
            "sh",
            "-c",
            &format!("git add -A >/dev/null; {modes}")
        ])
        .split_whitespace()
        .next(),
        git(env, &clone, &["ls-files", "-s", "src/main.sh"])
            .split_whitespace()
            .next()
    );

    // A re-prepare over the guest's edits, after one on the host: the
    // guest ends with the host's tree, and files neither side touched
    // were linked from the guest's own copy (the same inode), not sent.
    let inode = |path: &str| env.ok(&["vm", "exec", "ws", "--", "stat", "-c", "%i", path]);
    let kept = [inode(".gitignore"), inode("./-leading-dash")];
    write(env, &top.join("src/main.sh"), b"echo edited on the host\n");
    env.ok(&["vm", "workspace", "prepare", "ws", top_s]);
    assert_eq!(guest_hashes(env, "ws"), host_hashes(env, &top));
    assert_eq!([inode(".gitignore"), inode("./-leading-dash")], kept);
    assert_eq!(
        env.ok(&["vm", "exec", "ws", "--", "git", "status", "--porcelain"]),
        git(env, &top, &["status", "--porcelain"])
    );
    assert_eq!(env.ok(&["vm", "workspace", "export", "ws"]), "");
    env.ok(&["vm", "delete", "-f", "ws"]);
    assert_eq!(leftovers(env), Leftovers::none());
}

/// banger with `HOME` set to `home`, so the daemon it starts takes that
/// as the owner's home.
fn banger_at_home(env: &Env, home: &Path, args: &[&str]) -> std::process::Output {
    env.command(&env.bin("banger"), args)
        .env("HOME", home)
        .output()
        .unwrap()
}

/// `[[file_sync]]` copies a home directory and a file onto a new VM's
/// work disk (modes kept or set, owned by root), skips a nested symlink
/// and a missing entry with warnings, and refuses an entry that resolves
/// outside the home before any VM exists.
fn file_sync(env: &Env) {
    use std::os::unix::fs::PermissionsExt;
    let home = env.path("home");
    write(env, &home.join(".aws/credentials"), b"secret\n");
    std::fs::set_permissions(
        home.join(".aws/credentials"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    write(env, &home.join(".aws/sub dir/x"), b"nested\n");
    for (path, mode) in [(".aws", 0o755), (".aws/sub dir/x", 0o644)] {
        std::fs::set_permissions(home.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    write(env, &home.join(".npmrc"), b"token\n");
    std::os::unix::fs::symlink("/etc/hostname", home.join(".aws/leak")).unwrap();
    std::os::unix::fs::symlink("/etc", home.join("escape")).unwrap();
    let config = "[[file_sync]]\nhost = \"~/.aws\"\nguest = \"/root/.aws\"\n\n\
        [[file_sync]]\nhost = \"~/.npmrc\"\nguest = \"/root/.config/npm/npmrc\"\nmode = \"0640\"\n\n\
        [[file_sync]]\nhost = \"~/absent\"\nguest = \"/root/absent\"\n";
    env.write_config(config);
    let script = "cd /root && find .aws .config/npm | sort; stat -c '%a %U %n' .aws .aws/credentials '.aws/sub dir/x' .config/npm/npmrc; cat .aws/credentials .config/npm/npmrc; test -e absent || echo no-absent; wc -l < .ssh/authorized_keys";
    let out = banger_at_home(env, &home, &["vm", "run", "--rm", "--", "sh", "-c", script]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(
        text(&out),
        ".aws\n.aws/credentials\n.aws/sub dir\n.aws/sub dir/x\n.config/npm\n.config/npm/npmrc\n\
         755 root .aws\n600 root .aws/credentials\n644 root .aws/sub dir/x\n640 root .config/npm/npmrc\n\
         secret\ntoken\nno-absent\n1\n"
    );
    let said = stderr(&out);
    assert!(
        said.contains("warning: file_sync skipped symlink") && said.contains(".aws/leak"),
        "{said}"
    );
    assert!(
        said.contains("warning: file_sync[2] (host \"~/absent\"): does not exist; skipped"),
        "{said}"
    );

    // An entry that resolves outside the home refuses the create.
    env.write_config(&format!(
        "{config}\n[[file_sync]]\nhost = \"~/escape\"\nguest = \"/root/etc\"\n"
    ));
    let out = banger_at_home(env, &home, &["daemon", "restart"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = banger_at_home(env, &home, &["vm", "run", "--rm", "--", "true"]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = stderr(&out);
    assert!(
        said.contains("file_sync[3] (host \"~/escape\"): resolves to /etc, which is not inside the owner's home"),
        "{said}"
    );
    assert_eq!(leftovers(env), Leftovers::none());
    assert_eq!(env.ok(&["vm", "list", "-o", "json"]).trim(), "[]");
}

/// Peak resident memory of a process, from its `/proc` status, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A 2 GiB file (untracked, so git never reads it) reaches the guest
/// through `vm run PATH`, streamed: neither the CLI nor the daemon holds
/// it in memory.
fn big_file(env: &Env) {
    let top = env.path("big");
    std::fs::create_dir_all(&top).unwrap();
    git(env, &top, &["init", "-q"]);
    write(env, &top.join("README"), b"big\n");
    git(env, &top, &["add", "-A"]);
    git(env, &top, &["commit", "-q", "-m", "small"]);
    let huge = std::fs::File::create(top.join("huge.bin")).unwrap();
    huge.set_len(2 << 30).unwrap();
    drop(huge);
    env.ok(&["daemon", "start"]);
    let daemon = env.daemon_pid().unwrap();
    let mut child = env
        .command(
            &env.bin("banger"),
            &[
                "vm",
                "run",
                "--rm",
                top.to_str().unwrap(),
                "--",
                "stat",
                "-c",
                "%s",
                "huge.bin",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // VmHWM only grows: its last reading before the CLI exits is its peak
    // (give or take the last 50 ms, long after the stream ended).
    let mut cli_peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            && let Some(kib) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        {
            cli_peak = cli_peak.max(kib);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(text(&out), format!("{}\n", 2u64 << 30));
    assert!(
        cli_peak > 0 && cli_peak < 128 << 10,
        "the CLI peaked at {cli_peak} KiB"
    );
    let daemon_peak = peak_kib(daemon);
    assert!(
        daemon_peak < 128 << 10,
        "the daemon peaked at {daemon_peak} KiB"
    );
    assert_eq!(leftovers(env), Leftovers::none());
}

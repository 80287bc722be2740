//! Kernels and images for real: built from Debian sources by the release
//! binaries, checked with debugfs, and booted with QEMU.
//!
//! The catalog kernel and image are built once into a cache outside the
//! repository keyed by their recipe hashes (`~/.cache/banger-test/`), so a
//! rerun only checks them; a cold run builds them (about five minutes).

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "integration tests: each file is a test crate of its own"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use banger_testutil::{RawEntry, raw_tar, wait_until};
use common::{Env, cache_root, kill, stderr};

/// What the shared cache holds once prepared.
struct Prepared {
    kernel_dir: PathBuf,
    image_dir: PathBuf,
    second_kernel_pull: String,
    second_image_pull: String,
    kernel_list: String,
    image_list: String,
}

/// One TCG guest at a time: each takes both cores, and the boots are
/// measured against timeouts.
fn one_vm_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static VM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    VM.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Pulls the catalog kernel and image into the shared cache (building them
/// on a cold cache), pulls both again, lists them, and stops the daemon.
fn prepared() -> &'static Prepared {
    static PREPARED: OnceLock<Prepared> = OnceLock::new();
    PREPARED.get_or_init(|| {
        let root = cache_root();
        std::fs::create_dir_all(&root).unwrap();
        let env = Env::persistent(&root);
        // The kernel and image build side by side; a second image pull
        // started with the first must join it rather than build again.
        let (kernel, image, image_twin) = std::thread::scope(|s| {
            let k = s.spawn(|| env.banger(&["kernel", "pull", "generic-6.1"]));
            let i = s.spawn(|| env.banger(&["image", "pull", "debian-bookworm"]));
            std::thread::sleep(Duration::from_millis(500));
            let t = s.spawn(|| env.banger(&["image", "pull", "debian-bookworm"]));
            (k.join().unwrap(), i.join().unwrap(), t.join().unwrap())
        });
        for (what, out) in [
            ("kernel", &kernel),
            ("image", &image),
            ("second image", &image_twin),
        ] {
            assert!(out.status.success(), "{what} pull failed: {}", stderr(out));
        }
        if String::from_utf8_lossy(&image.stdout) == "image debian-bookworm is ready\n" {
            assert!(
                stderr(&image_twin)
                    .contains("joining image pull already running for debian-bookworm"),
                "the second pull built again: {}",
                stderr(&image_twin)
            );
        }
        let prepared = Prepared {
            kernel_dir: root.join("cache/kernels/generic-6.1"),
            image_dir: root.join("cache/images/debian-bookworm"),
            second_kernel_pull: env.ok(&["kernel", "pull", "generic-6.1"]),
            second_image_pull: env.ok(&["image", "pull", "debian-bookworm"]),
            kernel_list: env.ok(&["kernel", "list"]),
            image_list: env.ok(&["image", "list"]),
        };
        env.ok(&["daemon", "stop"]);
        prepared
    })
}

#[allow(
    clippy::disallowed_methods,
    reason = "the test inspects artifacts with debugfs"
)]
fn debugfs(image: &Path, request: &str) -> String {
    let out = std::process::Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .expect("run debugfs (e2fsprogs)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Mode, uid and gid of `path` inside the ext4 `image`.
fn stat(image: &Path, path: &str) -> (String, u32, u32) {
    let text = debugfs(image, &format!("stat {path}"));
    let field = |key: &str| -> String {
        let start = text
            .find(key)
            .unwrap_or_else(|| panic!("{key} missing for {path}: {text}"))
            + key.len();
        text[start..].split_whitespace().next().unwrap().to_owned()
    };
    (
        field("Mode:"),
        field("User:").parse().unwrap(),
        field("Group:").parse().unwrap(),
    )
}

#[test]
fn golden_image_keeps_owners_modes_and_setuid_bits() {
    let p = prepared();
    let rootfs = p.image_dir.join("rootfs.ext4");
    assert_eq!(stat(&rootfs, "/usr/bin/su"), ("04755".into(), 0, 0));
    assert_eq!(stat(&rootfs, "/etc/shadow"), ("0640".into(), 0, 42));
    assert_eq!(stat(&rootfs, "/root").0, "0700");
    // Nothing of the build host leaks into the image.
    assert_eq!(debugfs(&rootfs, "cat /etc/hostname"), "banger\n");
    assert_eq!(debugfs(&rootfs, "cat /etc/resolv.conf"), "");
    assert_eq!(stat(&rootfs, "/etc/resolv.conf").0, "0644");
    let seed = p.image_dir.join("work-seed.ext4");
    let listing = debugfs(&seed, "ls -l /");
    assert!(
        listing.contains(".bashrc"),
        "work seed lacks /root's dotfiles: {listing}"
    );
    assert_eq!(stat(&seed, "/.bashrc").1, 0);
    for f in ["vmlinux", "bzImage", "config", "manifest.json"] {
        assert!(p.kernel_dir.join(f).is_file(), "{f}");
    }
    let elf = std::fs::read(p.kernel_dir.join("vmlinux")).unwrap();
    assert_eq!(
        &elf[..4],
        b"\x7fELF",
        "vmlinux is an ELF image for Firecracker"
    );
}

#[test]
fn second_pulls_say_already_present_and_lists_show_size_and_time() {
    let p = prepared();
    assert_eq!(p.second_kernel_pull, "generic-6.1 is already present\n");
    assert_eq!(p.second_image_pull, "debian-bookworm is already present\n");
    for (list, name) in [
        (&p.kernel_list, "generic-6.1"),
        (&p.image_list, "debian-bookworm"),
    ] {
        let lines: Vec<&str> = list.lines().collect();
        assert!(
            lines[0].starts_with("NAME  ")
                && lines[0].contains("SIZE")
                && lines[0].contains("CREATED"),
            "{list}"
        );
        let row = lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{list}"));
        assert!(row.contains(" MiB"), "{row}");
        assert!(row.contains("Z "), "RFC 3339 creation time expected: {row}");
    }
}

/// Boots the catalog kernel with QEMU (microvm with ACPI, TCG here)
/// straight on the golden image and waits for systemd's multi-user target;
/// no unit may fail. The virtio-mmio disk is found through ACPI.
#[test]
fn generic_kernel_boots_the_golden_image_to_multi_user() {
    let p = prepared();
    let _vm = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    let rootfs = p.image_dir.join("rootfs.ext4");
    let mut qemu = qemu(
        &p.kernel_dir.join("bzImage"),
        None,
        "root=/dev/vda rw",
        &[Disk("root", &rootfs, DiskMode::Snapshot)],
        &console,
    );
    let read = || strip_ansi(&std::fs::read_to_string(&console).unwrap_or_default());
    let reached = wait_until(Duration::from_secs(300), || {
        let text = read();
        text.contains("Reached target multi-user.target")
            || text.contains("Multi-User System")
            || text.contains("Kernel panic")
    });
    let _ = qemu.kill();
    let _ = qemu.wait();
    let text = read();
    let tail: String = text
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        reached && !text.contains("Kernel panic"),
        "no multi-user.target within 300 s; console tail:\n{tail}"
    );
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("FAILED") || l.contains("Failed to start"))
        .collect();
    assert!(failed.is_empty(), "units failed:\n{}", failed.join("\n"));
}

/// A guest that powers off makes QEMU exit: the kernel's ACPI reaches
/// microvm's power button device (the graceful stop VMs will rely on).
#[test]
fn generic_kernel_powers_the_vm_off_through_acpi() {
    let p = prepared();
    let rootfs = p.image_dir.join("rootfs.ext4");
    let (exited, text) = boot_until_exit(
        false,
        "root=/dev/vda rw systemd.unit=poweroff.target",
        &[Disk("root", &rootfs, DiskMode::Snapshot)],
        300,
    );
    assert!(exited, "QEMU did not exit on guest poweroff:\n{text}");
    assert!(text.contains("reboot: Power down"), "{text}");
}

/// Boots the catalog kernel (with banger's initramfs when `initramfs`)
/// on `disks` and waits up to `secs` for QEMU to exit by itself. Returns
/// whether it exited cleanly, and the console.
fn boot_until_exit(
    initramfs: bool,
    cmdline: &str,
    disks: &[Disk<'_>],
    secs: u64,
) -> (bool, String) {
    let p = prepared();
    let _vm = one_vm_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initramfs.cpio");
    if initramfs {
        banger_artifacts::initramfs::write(&banger_init_bin(), &initrd).unwrap();
    }
    let console = dir.path().join("console.log");
    let mut vm = qemu(
        &p.kernel_dir.join("bzImage"),
        initramfs.then_some(initrd.as_path()),
        cmdline,
        disks,
        &console,
    );
    let exited = wait_until(Duration::from_secs(secs), || {
        matches!(vm.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = vm.kill();
    }
    let clean = vm.wait().is_ok_and(|s| s.success());
    (
        exited && clean,
        strip_ansi(&std::fs::read_to_string(&console).unwrap_or_default()),
    )
}

/// A probe boot (what the host's KVM check will run) reaches banger-init,
/// prints its marker and stops the VM: seconds, even under TCG.
#[test]
fn probe_boot_prints_its_marker_and_stops_the_vm() {
    let (exited, text) = boot_until_exit(true, "banger.probe", &[], 120);
    assert!(exited, "the probe VM did not stop:\n{text}");
    assert!(text.contains("banger-init: probe ok"), "{text}");
}

/// When banger-init cannot assemble the root it names the failed step on
/// the console and stops the VM instead of hanging.
#[test]
fn banger_init_failure_is_named_and_the_vm_stops() {
    let p = prepared();
    let rootfs = p.image_dir.join("rootfs.ext4");
    let (exited, text) = boot_until_exit(
        true,
        "banger.base=LABEL=rootfs banger.overlay=LABEL=missing",
        &[Disk("base", &rootfs, DiskMode::ReadOnly)],
        120,
    );
    assert!(exited, "the VM did not stop:\n{text}");
    assert!(
        text.contains("banger-init: cannot boot: no disk with label \"missing\" among /dev/vda"),
        "{text}"
    );
}

/// The static banger-init binary (scripts/test builds it).
fn banger_init_bin() -> PathBuf {
    let path = std::env::var_os("BANGER_INIT_BIN").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/x86_64-unknown-linux-gnu/release/banger-init")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: build it with RUSTFLAGS='-C target-feature=+crt-static' cargo build -p banger-init --release --target x86_64-unknown-linux-gnu (scripts/test does)",
        path.display()
    );
    path
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(path).unwrap();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// banger's own initramfs boots the image: banger-init (a static binary,
/// PID 1) mounts the shared rootfs read-only and the VM's overlay disk
/// read-write, puts overlayfs on top and execs systemd. The guest's writes
/// land in the overlay's upper directory; the shared base is never written.
#[test]
fn banger_init_assembles_an_overlay_root_and_never_writes_the_base() {
    use banger_sys::Runner;
    let p = prepared();
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("overlay.ext4");
    banger_sys::HostRunner
        .run(
            &banger_artifacts::ext4::mkfs_empty(&overlay, 1 << 30, "overlay"),
            &dir.path().join("mkfs.log"),
            &banger_sys::Cancel::new(),
        )
        .unwrap();
    let rootfs = p.image_dir.join("rootfs.ext4");
    let before = sha256_of(&rootfs);

    let (exited, text) = boot_until_exit(
        true,
        "banger.base=LABEL=rootfs banger.overlay=LABEL=overlay systemd.unit=poweroff.target",
        &[
            Disk("base", &rootfs, DiskMode::ReadOnly),
            Disk("overlay", &overlay, DiskMode::ReadWrite),
        ],
        300,
    );
    assert!(exited, "no clean poweroff:\n{text}");
    assert!(
        text.contains("banger-init: switching to /sbin/init"),
        "{text}"
    );
    assert!(
        text.contains("Reached target") && text.contains("reboot: Power down"),
        "{text}"
    );
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("FAILED")).collect();
    assert!(failed.is_empty(), "units failed:\n{}", failed.join("\n"));

    // What the guest wrote is in the overlay ...
    let upper = debugfs(&overlay, "ls -p /upper");
    assert!(
        upper.contains("/etc/") || upper.contains("/var/"),
        "upper dir is empty: {upper}"
    );
    // ... and the shared base is byte for byte what it was.
    assert_eq!(sha256_of(&rootfs), before, "the shared rootfs was written");
}

/// One disk for [`qemu`]: its id, file, and whether the guest may write it.
struct Disk<'a>(&'a str, &'a Path, DiskMode);

#[derive(Clone, Copy)]
enum DiskMode {
    /// Attached read-only.
    ReadOnly,
    /// Writes go to a throwaway QEMU snapshot.
    Snapshot,
    /// Writes reach the file.
    ReadWrite,
}

/// Boots a QEMU microvm (ACPI, TCG) with the console in `console` and
/// `disks` as virtio-blk devices in order.
#[allow(
    clippy::disallowed_methods,
    reason = "a plain QEMU boot, outside banger, checks the artifacts alone"
)]
fn qemu(
    bzimage: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    disks: &[Disk<'_>],
    console: &Path,
) -> std::process::Child {
    let mut serial = std::ffi::OsString::from("file:");
    serial.push(console);
    // Without it, about one TCG boot in thirty stalls calibrating the TSC
    // (a host whose /proc/cpuinfo gives no rate boots without it).
    let tsc = banger_sys::host::host_tsc_khz()
        .map(|khz| format!(" tsc_early_khz={khz}"))
        .unwrap_or_default();
    let mut cmd = std::process::Command::new("qemu-system-x86_64");
    cmd.args([
        "-M", "microvm", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2",
    ])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .arg("-serial")
    .arg(serial)
    .arg("-kernel")
    .arg(bzimage)
    .arg("-append")
    .arg(format!("console=ttyS0 panic=-1{tsc} {cmdline}"));
    if let Some(initrd) = initrd {
        cmd.arg("-initrd").arg(initrd);
    }
    for Disk(id, file, mode) in disks {
        let extra = match mode {
            DiskMode::ReadOnly => ",readonly=on",
            DiskMode::Snapshot => ",snapshot=on",
            DiskMode::ReadWrite => "",
        };
        let mut drive =
            std::ffi::OsString::from(format!("id={id},format=raw,if=none{extra},file="));
        drive.push(file);
        cmd.arg("-drive")
            .arg(drive)
            .arg("-device")
            .arg(format!("virtio-blk-device,drive={id}"));
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64 (apt-get install qemu-system-x86)")
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn image_dir_entries(env: &Env) -> Vec<String> {
    std::fs::read_dir(env.path("cache/images"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn hostile_tarballs_are_refused_naming_the_entry_and_nothing_is_published() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<RawEntry<'_>>, &str)> = vec![
        (
            "dotdot",
            vec![
                (b"./ok", tar::EntryType::Regular, b""),
                (b"../escape", tar::EntryType::Regular, b""),
            ],
            "\"../escape\" refused: `..` path component",
        ),
        (
            "absolute",
            vec![(b"/etc/cron.d/evil", tar::EntryType::Regular, b"")],
            "\"/etc/cron.d/evil\" refused: absolute path",
        ),
        (
            "hardlink",
            vec![(b"./h", tar::EntryType::Link, b"../../etc/shadow")],
            "hard link target",
        ),
        // Held to the registry pull's rules.
        (
            "blockdev",
            vec![(b"./dev/sda", tar::EntryType::Block, b"")],
            "\"./dev/sda\" refused: block devices are not allowed",
        ),
        (
            "chardev",
            vec![(b"./dev/mem", tar::EntryType::Char, b"")],
            "\"./dev/mem\" refused: character device",
        ),
        (
            "through-symlink",
            vec![
                (b"./etc", tar::EntryType::Symlink, b"/etc"),
                (b"./etc/cron.d", tar::EntryType::Regular, b""),
            ],
            "is a symbolic link",
        ),
    ];
    for (name, entries, expect) in cases {
        let tar = dir.path().join(format!("{name}.tar"));
        raw_tar(&tar, &entries).unwrap();
        let out = env.banger(&["image", "import", tar.to_str().unwrap(), "--name", name]);
        assert!(!out.status.success(), "{name} was accepted");
        let err = stderr(&out);
        assert!(err.contains(expect), "{name}: {err}");
        assert!(
            err.contains("(op cli-"),
            "{name}: the op id is named: {err}"
        );
    }
    // A name component longer than ext4 allows, built with a long-name header.
    let tar = dir.path().join("longname.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_cksum();
    b.append_data(&mut h, format!("./{}", "n".repeat(300)), &b""[..])
        .unwrap();
    b.into_inner().unwrap();
    let out = env.banger(&[
        "image",
        "import",
        tar.to_str().unwrap(),
        "--name",
        "longname",
    ]);
    assert!(
        stderr(&out).contains("longer than the 255 ext4 can store"),
        "{}",
        stderr(&out)
    );

    let out = env.banger(&["image", "import", "/etc/hostname", "--name", "Bad/Name"]);
    assert!(stderr(&out).contains("only a-z, 0-9"), "{}", stderr(&out));
    assert_eq!(env.ok(&["image", "list", "-o", "json"]).trim(), "[]");
    assert!(
        image_dir_entries(&env).is_empty(),
        "{:?}",
        image_dir_entries(&env)
    );
}

/// `vfs_cap_data` revision 2 with CAP_NET_RAW (bit 13) permitted.
const CAP_NET_RAW: [u8; 20] = [
    0x00, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

#[test]
fn imported_tarball_keeps_setuid_bits_and_foreign_owners() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("rootfs.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    let add = |b: &mut tar::Builder<std::fs::File>,
               path: &str,
               mode: u32,
               uid: u64,
               gid: u64,
               kind: tar::EntryType| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, path, &b""[..]).unwrap();
    };
    add(&mut b, "./bin/", 0o755, 0, 0, tar::EntryType::Directory);
    add(&mut b, "./bin/suid", 0o4755, 0, 0, tar::EntryType::Regular);
    add(&mut b, "./home/", 0o755, 0, 0, tar::EntryType::Directory);
    add(
        &mut b,
        "./home/dev/",
        0o750,
        1000,
        1000,
        tar::EntryType::Directory,
    );
    add(&mut b, "./root/", 0o700, 0, 0, tar::EntryType::Directory);
    add(
        &mut b,
        "./root/.profile",
        0o644,
        0,
        0,
        tar::EntryType::Regular,
    );
    // A file capability (cap_net_raw+p, as ping carries), in a pax header.
    // mke2fs keeps security.capability from tarballs and no other xattr.
    b.append_pax_extensions([("SCHILY.xattr.security.capability", &CAP_NET_RAW[..])])
        .unwrap();
    add(&mut b, "./bin/xattr", 0o755, 0, 0, tar::EntryType::Regular);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_mode(0o4755);
    h.set_cksum();
    b.append_link(&mut h, "./bin/suid-link", "./bin/suid")
        .unwrap();
    b.into_inner().unwrap();
    let out = env.ok(&[
        "image",
        "import",
        tar_path.to_str().unwrap(),
        "--name",
        "tiny",
    ]);
    assert_eq!(out, "image tiny is ready\n");
    let rootfs = env.path("cache/images/tiny/rootfs.ext4");
    assert_eq!(stat(&rootfs, "/bin/suid"), ("04755".into(), 0, 0));
    assert_eq!(stat(&rootfs, "/home/dev"), ("0750".into(), 1000, 1000));
    let xattrs = debugfs(&rootfs, "ea_get -x /bin/xattr security.capability");
    let hex: String = xattrs
        .split_whitespace()
        .filter(|w| w.len() == 2 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    let want: String = CAP_NET_RAW.iter().map(|b| format!("{b:02x}")).collect();
    assert!(hex.contains(&want), "security.capability lost: {xattrs}");
    let links = debugfs(&rootfs, "stat /bin/suid-link");
    assert!(links.contains("Links: 2"), "hard link kept: {links}");

    // The ext4 it made imports as an image of its own.
    let copy = env.ok(&[
        "image",
        "import",
        rootfs.to_str().unwrap(),
        "--name",
        "tiny-copy",
    ]);
    assert_eq!(copy, "image tiny-copy is ready\n");
    let copied = env.path("cache/images/tiny-copy/rootfs.ext4");
    assert_eq!(stat(&copied, "/bin/suid"), ("04755".into(), 0, 0));
    assert!(env.path("cache/images/tiny-copy/work-seed.ext4").is_file());
    env.ok(&["image", "delete", "tiny-copy"]);
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "show", "tiny"])).unwrap();
    assert_eq!(shown["source"], "import");
    assert_eq!(shown["kernel"], "generic-6.1");
    let out = env.banger(&[
        "image",
        "import",
        tar_path.to_str().unwrap(),
        "--name",
        "tiny",
    ]);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(env.ok(&["image", "delete", "tiny"]), "image tiny deleted\n");
    assert_eq!(env.ok(&["image", "list", "-o", "json"]).trim(), "[]");
}

/// SIGKILL the daemon while it builds an image: the next command starts a
/// new daemon, which sweeps the half-built staging directory; the list
/// shows no broken entry and a new pull succeeds.
#[test]
fn daemon_killed_mid_build_leaves_no_broken_entry_and_a_new_pull_succeeds() {
    let env = Env::new();
    env.ok(&["daemon", "start"]);
    let first = env.daemon_pid().unwrap();
    let puller = env
        .command(
            Path::new(env!("CARGO_BIN_EXE_banger")),
            &["image", "pull", "debian-bookworm"],
        )
        .spawn()
        .unwrap();
    let building = wait_until(Duration::from_secs(60), || {
        image_dir_entries(&env)
            .iter()
            .any(|n| n.starts_with(".staging-"))
    });
    assert!(building, "no build started");

    // A second pull joins the running one; its Ctrl-C only stops waiting.
    let mut joiner = env
        .command(
            Path::new(env!("CARGO_BIN_EXE_banger")),
            &["image", "pull", "debian-bookworm"],
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut joiner_err = std::io::BufReader::new(joiner.stderr.take().unwrap());
    let mut err = String::new();
    // It says "joining" once its Ctrl-C handler is in place.
    while !err.contains("joining") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut joiner_err, &mut line).unwrap() == 0 {
            break;
        }
        err.push_str(&line);
    }
    kill(joiner.id(), libc::SIGINT);
    std::io::Read::read_to_string(&mut joiner_err, &mut err).unwrap();
    let status = joiner.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("joining image pull already running for debian-bookworm"),
        "{err}"
    );
    assert!(
        err.contains("stopped waiting; the image pull of debian-bookworm goes on"),
        "{err}"
    );
    let ops: serde_json::Value =
        serde_json::from_str(&env.ok(&["daemon", "status", "-o", "json"])).unwrap();
    assert_eq!(ops["running"], true);
    assert!(
        image_dir_entries(&env)
            .iter()
            .any(|n| n.starts_with(".staging-")),
        "the build must go on after the joiner left"
    );

    kill(first, libc::SIGKILL);
    // Until it is gone its listening socket still takes connections (and
    // resets them as it dies): the next command must meet a new daemon.
    assert!(
        wait_until(Duration::from_secs(10), || !banger_sys::pid_alive(first)),
        "the SIGKILLed daemon did not die"
    );
    let out: Output = puller.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the pull cannot succeed once its daemon died"
    );

    assert_eq!(env.ok(&["image", "list", "-o", "json"]).trim(), "[]");
    assert!(env.daemon_pid().unwrap() != first);
    assert!(
        image_dir_entries(&env).is_empty(),
        "debris left: {:?}",
        image_dir_entries(&env)
    );
    // The build's processes died with the daemon (parent-death signal).
    let cache = env.path("cache").display().to_string();
    let builds_gone = wait_until(Duration::from_secs(10), || {
        !processes_named("mmdebstrap")
            .iter()
            .any(|p| cmdline_of(*p).contains(&cache))
    });
    assert!(
        builds_gone,
        "the killed daemon's mmdebstrap is still running"
    );

    assert_eq!(
        env.ok(&["image", "pull", "debian-bookworm"]),
        "image debian-bookworm is ready\n"
    );
    let images: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "list", "-o", "json"])).unwrap();
    assert_eq!(images[0]["name"], "debian-bookworm");
}

fn processes_named(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split('\0').take(2).any(|a| a.ends_with(name)))
        })
        .collect()
}

fn cmdline_of(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).into_owned()
}

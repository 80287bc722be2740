//! Images from a registry: the golden Debian tree pushed as an OCI image
//! into Debian's `docker-registry` (in the scenario's namespace), pulled by
//! banger and booted; the blob cache reused and pruned; a hostile image
//! refused with nothing left behind.

use std::time::{Duration, Instant};

use banger_testutil::oci::{self, Compression};
use serde_json::json;

use crate::common::{Env, stderr};
use crate::support::{Scenario, fails, text};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("registry-image-is-pulled-and-boots", registry_image).own_cache(),
        Scenario::new(
            "registry-image-without-systemd-gets-it-at-first-boot",
            first_boot,
        )
        .own_cache(),
    ]
}

/// Starts a registry inside the Env's namespace; it dies with it.
fn start_registry(env: &Env) -> u16 {
    let out = env.in_netns("ip", &["link", "set", "lo", "up"]);
    assert!(out.status.success(), "lo up: {}", stderr(&out));
    let dir = env.path("state/registry");
    std::fs::create_dir_all(&dir).unwrap();
    let port = oci::free_port().unwrap();
    let config = oci::registry_config(&dir, port).unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    // It runs as the Env's user, and writes its storage here.
    env.give(&dir);
    let mut registry = env
        .command(
            std::path::Path::new("docker-registry"),
            &["serve", config.to_str().unwrap()],
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("docker-registry (scripts/test installs it)");
    // Killed with the namespace; reaped here.
    std::thread::spawn(move || registry.wait());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = env.in_netns(
            "bash",
            &[
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/$1",
                "probe",
                &port.to_string(),
            ],
        );
        if probe.status.success() {
            return port;
        }
        assert!(Instant::now() < deadline, "the registry did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn push(env: &Env, port: u16, repo: &str, layers: &[(Vec<u8>, Compression)]) {
    let layout = env.path(&format!("state/layout-{repo}"));
    oci::write_layout(
        &layout,
        layers,
        &json!({ "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] }),
    )
    .unwrap();
    let args = oci::skopeo_push_args(&layout, &format!("127.0.0.1:{port}/{repo}:latest"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.in_netns("skopeo", &args);
    assert!(out.status.success(), "skopeo: {}", stderr(&out));
    std::fs::remove_dir_all(&layout).unwrap();
}

/// The golden image's tree as a tarball, read through a read-only loop
/// mount in a mount namespace of its own (gone when tar ends).
fn golden_tar(env: &Env) -> Vec<u8> {
    let image = env.path("cache/images/debian-bookworm/rootfs.ext4");
    let mnt = env.path("state/golden-mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let tar = env.path("state/golden.tar");
    #[allow(clippy::disallowed_methods, reason = "test setup: mount and tar, arguments as argv")]
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount -o loop,ro "$1" "$2" && tar --numeric-owner --xattrs --xattrs-include=security.capability -C "$2" -cf "$3" ."#)
        .arg("golden-tar")
        .args([&image, &mnt, &tar])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "export the golden tree: {}",
        stderr(&out)
    );
    let bytes = std::fs::read(&tar).unwrap();
    std::fs::remove_file(&tar).unwrap();
    bytes
}

fn registry_image(env: &Env) {
    let port = start_registry(env);
    push(env, port, "golden", &[(golden_tar(env), Compression::None)]);
    let reference = format!("127.0.0.1:{port}/golden:latest");

    env.ok(&["image", "pull", &reference, "--name", "golden"]);
    let image: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "show", "golden"])).unwrap();
    assert_eq!(image["source"], "oci", "{image}");
    assert_eq!(image["oci"]["reference"], reference.as_str(), "{image}");
    assert!(image["oci"]["cannot_boot"].is_null(), "{image}");
    assert_eq!(
        image["oci"]["env"][0], "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "{image}"
    );
    let out = env.banger(&[
        "vm",
        "run",
        "--image",
        "golden",
        "--rm",
        "--",
        "cat",
        "/etc/os-release",
    ]);
    assert!(out.status.success(), "vm run: {}", stderr(&out));
    assert!(
        text(&out).contains("Debian GNU/Linux 12 (bookworm)"),
        "{}",
        text(&out)
    );

    // Again: the layer comes from the blob cache.
    env.ok(&["image", "pull", &reference, "--name", "golden"]);
    let log = std::fs::read_to_string(env.log()).unwrap();
    let downloads: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("MiB downloaded)"))
        .collect();
    assert_eq!(downloads.len(), 2, "{downloads:?}");
    assert!(
        !downloads[0].contains("(0.0 MiB downloaded)"),
        "{}",
        downloads[0]
    );
    assert!(
        downloads[1].contains("(0.0 MiB downloaded)"),
        "{}",
        downloads[1]
    );
    let dry = env.ok(&["image", "cache", "prune", "--dry-run"]);
    assert!(dry.starts_with("would free 1 blob(s), "), "{dry}");
    assert!(!dry.contains(" 0.0 MiB"), "{dry}");
    let freed = env.ok(&["image", "cache", "prune"]);
    assert_eq!(freed.replace("freed", "would free"), dry);
    assert_eq!(
        env.ok(&["image", "cache", "prune", "--dry-run"]),
        "would free 0 blob(s), 0.0 MiB\n"
    );

    // An image without systemd and sshd is pulled (with a warning) but a
    // VM of it is refused before anything is made.
    let tiny = env.path("state/tiny.tar");
    banger_testutil::tar_of(&tiny, &[("etc/os-release", b"ID=tiny\n")]).unwrap();
    push(
        env,
        port,
        "tiny",
        &[(std::fs::read(&tiny).unwrap(), Compression::Zstd)],
    );
    let pulled = env.ok(&["image", "pull", &format!("127.0.0.1:{port}/tiny:latest")]);
    assert!(
        pulled.contains("image tiny-latest is ready, but VMs cannot boot it"),
        "{pulled}"
    );
    let err = fails(
        env,
        &["vm", "create", "--image", "tiny-latest", "--name", "tiny"],
    );
    assert!(
        err.contains("cannot boot as a VM: it has no /sbin/init (systemd) and no /usr/sbin/sshd"),
        "{err}"
    );
    assert_eq!(env.ok(&["vm", "list", "-o", "json"]).trim(), "[]");
    let tiny: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "show", "tiny-latest"])).unwrap();
    assert!(
        tiny["oci"]["cannot_boot"]
            .as_str()
            .unwrap()
            .contains("no /sbin/init"),
        "{tiny}"
    );
    env.ok(&["image", "delete", "tiny-latest"]);

    // A hostile layer: refused naming layer and entry, nothing published.
    let evil = env.path("state/evil.tar");
    banger_testutil::raw_tar(&evil, &[(b"../evil", tar::EntryType::Regular, b"")]).unwrap();
    push(
        env,
        port,
        "evil",
        &[(std::fs::read(&evil).unwrap(), Compression::Gzip)],
    );
    let err = fails(
        env,
        &["image", "pull", &format!("127.0.0.1:{port}/evil:latest")],
    );
    assert!(
        err.contains("layer 1 (sha256:")
            && err.contains("entry \"../evil\" refused: `..` path component"),
        "{err}"
    );
    let images = env.ok(&["image", "list", "-o", "json"]);
    assert!(!images.contains("evil"), "{images}");
    let leftovers: Vec<String> = std::fs::read_dir(env.path("cache/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // `.pins` holds the links of this scenario's VMs' root file systems.
        .filter(|n| (n.starts_with('.') && n != ".pins") || n.contains("evil"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The text of `name` in the tarball `tar` (entries as `./path`).
fn file_in_tar(tar: &[u8], name: &str) -> Option<String> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        let path = entry.path().ok()?.to_string_lossy().into_owned();
        if path.trim_start_matches("./") == name {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).ok()?;
            return Some(text);
        }
    }
    None
}

fn tar_entry(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

fn run_ok(program: &str, args: &[&str]) -> String {
    #[allow(clippy::disallowed_methods, reason = "test setup: dpkg-deb, date")]
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", stderr(&out));
    text(&out)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A flat apt repository holding one stand-in `systemd-sysv` of `version`
/// (built with dpkg-deb: only the `/usr/sbin/init` link), served inside the
/// Env's namespace on port 8000, where a guest reaches it at the bridge's
/// address.
/// The repository's address: in an "internet" of the test's own beside
/// the installation's namespace, which a NAT guest reaches (a service on
/// the host's gateway address it may not).
const INTERNET: &str = "203.0.113.2";

/// A namespace playing the internet, joined to the installation's by a
/// veth pair (203.0.113.1 on the installation's side); nothing routes out.
fn internet(env: &Env) -> crate::common::Netns {
    let ns = crate::common::Netns::new();
    let ok = |out: std::process::Output, what: &str| {
        assert!(out.status.success(), "{what}: {}", stderr(&out));
    };
    ok(
        env.in_netns(
            "ip",
            &[
                "link", "add", "bginet0", "type", "veth", "peer", "name", "eth0", "netns", &ns.0,
            ],
        ),
        "veth to the internet",
    );
    ok(
        env.in_netns("ip", &["addr", "add", "203.0.113.1/24", "dev", "bginet0"]),
        "address",
    );
    ok(env.in_netns("ip", &["link", "set", "bginet0", "up"]), "up");
    ok(
        ns.run(
            "ip",
            &["addr", "add", &format!("{INTERNET}/24"), "dev", "eth0"],
        ),
        "address",
    );
    ok(ns.run("ip", &["link", "set", "eth0", "up"]), "up");
    ok(
        ns.run("ip", &["route", "add", "default", "via", "203.0.113.1"]),
        "route",
    );
    ns
}

/// Serves a Debian repository holding a stand-in systemd-sysv on
/// [`INTERNET`]:8000, for as long as the namespace returned lives.
fn serve_repo(env: &Env, version: &str) -> crate::common::Netns {
    let pkg = env.path("state/pkg");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/sbin")).unwrap();
    std::os::unix::fs::symlink("../lib/systemd/systemd", pkg.join("usr/sbin/init")).unwrap();
    let control = format!(
        "Package: systemd-sysv\nVersion: {version}\nArchitecture: amd64\nMaintainer: banger tests <tests@banger.invalid>\nDepends: systemd\nDescription: stand-in providing /sbin/init for banger's first-boot test\n"
    );
    std::fs::write(pkg.join("DEBIAN/control"), &control).unwrap();
    let repo = env.path("state/repo");
    std::fs::create_dir_all(&repo).unwrap();
    let deb = repo.join("systemd-sysv.deb");
    run_ok(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "--build",
            pkg.to_str().unwrap(),
            deb.to_str().unwrap(),
        ],
    );
    let bytes = std::fs::read(&deb).unwrap();
    let packages = format!(
        "{control}Filename: ./systemd-sysv.deb\nSize: {}\nSHA256: {}\n\n",
        bytes.len(),
        sha256_hex(&bytes)
    );
    std::fs::write(repo.join("Packages"), &packages).unwrap();
    let date = run_ok("date", &["-Ru"]);
    std::fs::write(
        repo.join("Release"),
        format!(
            "Origin: banger-test\nLabel: banger-test\nDate: {}\nArchitectures: amd64\nSHA256:\n {} {} Packages\n",
            date.trim(),
            sha256_hex(packages.as_bytes()),
            packages.len()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(env.path("state/repo.log")).unwrap();
    let internet = internet(env);
    #[allow(
        clippy::disallowed_methods,
        reason = "a test server in the test's internet"
    )]
    let mut server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &internet.0,
            "/usr/bin/python3",
            "-m",
            "http.server",
            "8000",
        ])
        .args(["--bind", "0.0.0.0", "--directory", repo.to_str().unwrap()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // Killed with the namespace; reaped here.
    std::thread::spawn(move || server.wait());
    let deadline = Instant::now() + Duration::from_secs(20);
    let probe = format!("exec 3<>/dev/tcp/{INTERNET}/8000");
    while !env.in_netns("bash", &["-c", &probe]).status.success() {
        assert!(
            Instant::now() < deadline,
            "the repository server did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    internet
}

/// The golden Debian tree with `/sbin/init` whited out and systemd-sysv
/// gone from dpkg's status, its apt pointed at a repository in the test's internet:
/// banger-init installs systemd-sysv at the VM's first boot, and the VM
/// boots into the systemd it provides.
fn first_boot(env: &Env) {
    let port = start_registry(env);
    let golden = golden_tar(env);
    let status =
        file_in_tar(&golden, "var/lib/dpkg/status").expect("dpkg status in the golden tree");
    let stanza = status
        .split("\n\n")
        .find(|s| s.starts_with("Package: systemd-sysv\n"))
        .expect("systemd-sysv in the golden tree")
        .to_owned();
    let version = stanza
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap()
        .to_owned();
    let without: Vec<&str> = status
        .split("\n\n")
        .filter(|s| !s.starts_with("Package: systemd-sysv\n"))
        .collect();
    let mut top = tar::Builder::new(Vec::new());
    tar_entry(&mut top, "usr/sbin/.wh.init", tar::EntryType::Regular, b"");
    tar_entry(
        &mut top,
        "var/lib/dpkg/status",
        tar::EntryType::Regular,
        without.join("\n\n").as_bytes(),
    );
    tar_entry(
        &mut top,
        "etc/apt/sources.list",
        tar::EntryType::Regular,
        format!("deb [trusted=yes] http://{INTERNET}:8000/ ./\n").as_bytes(),
    );
    tar_entry(
        &mut top,
        "etc/apt/sources.list.d/.wh..wh..opq",
        tar::EntryType::Regular,
        b"",
    );
    // A guest's clock may start behind the repository's Release date.
    tar_entry(
        &mut top,
        "etc/apt/apt.conf.d/99banger-test",
        tar::EntryType::Regular,
        b"Acquire::Check-Date \"false\";\nAcquire::Check-Valid-Until \"false\";\n",
    );
    let top = top.into_inner().unwrap();
    push(
        env,
        port,
        "firstboot",
        &[(golden, Compression::None), (top, Compression::Gzip)],
    );
    let _internet = serve_repo(env, &version);

    let reference = format!("127.0.0.1:{port}/firstboot:latest");
    let pulled = env.ok(&["image", "pull", &reference, "--name", "fb"]);
    assert!(
        pulled.contains("its VMs install /sbin/init (systemd) at first boot with debian's package manager, which needs --nat"),
        "{pulled}"
    );
    let err = fails(env, &["vm", "create", "--image", "fb", "--name", "nonat"]);
    assert!(err.contains("needs --nat"), "{err}");
    assert_eq!(env.ok(&["vm", "list", "-o", "json"]).trim(), "[]");

    let out = env.banger(&[
        "vm",
        "run",
        "--image",
        "fb",
        "--nat",
        "--name",
        "fresh",
        "--",
        "sh",
        "-c",
        "readlink -f /sbin/init; dpkg-query -W -f='${Status}\\n' systemd-sysv",
    ]);
    assert!(out.status.success(), "vm run: {}", stderr(&out));
    let said = text(&out);
    assert!(said.contains("/usr/lib/systemd/systemd"), "{said}");
    assert!(said.contains("install ok installed"), "{said}");
    let id = crate::support::show(env, "fresh")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let console =
        std::fs::read_to_string(env.path(&format!("state/vms/{id}/console.log"))).unwrap();
    assert!(console.contains("first boot: apt-get update"), "{console}");
    assert!(console.contains("first boot: done"), "{console}");
    env.ok(&["vm", "delete", "-f", "fresh"]);
}

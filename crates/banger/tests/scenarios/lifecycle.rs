//! A VM's life as a user drives it: run, create, SSH, stop, start, resize,
//! delete.

use crate::common::{Env, stderr};
use crate::support::{
    Leftovers, Scenario, assert_log_lacks, assert_no_runtime_files, code, fails, leftovers, show,
    text,
};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("run-rm-passes-output-and-exit-code", run_rm),
        Scenario::new("run-without-rm-keeps-the-vm-for-ssh", run_kept),
        Scenario::new("create-ssh-stop-start-keeps-data", keeps_data),
        Scenario::new("set-changes-vcpus-and-memory", set_shape),
        Scenario::new("nat-rules-exist-only-while-running", nat_rules),
        Scenario::new("guests-reach-neither-each-other-nor-the-host", isolated),
    ]
}

/// `vm run --rm` prints the command's output, passes its exit code back,
/// and leaves no VM, tap, NAT rule, VMM process or VM directory behind.
fn run_rm(env: &Env) {
    let out = env.banger(&[
        "vm",
        "run",
        "--rm",
        "--name",
        "e2e-run",
        "--",
        "cat",
        "/etc/hostname",
    ]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(text(&out), "e2e-run\n");

    let out = env.banger(&["vm", "run", "--rm", "--nat", "--", "sh", "-c", "exit 7"]);
    assert_eq!(code(&out), Some(7), "{}", stderr(&out));

    assert_eq!(leftovers(env), Leftovers::none());
}

/// Without `--rm` the VM stays up after its command; it answers `vm ssh`;
/// deleting it while it runs needs `-f`.
fn run_kept(env: &Env) {
    let out = env.banger(&["vm", "run", "--name", "kept", "--", "true"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(show(env, "kept")["state"], "running");
    assert_eq!(
        env.ok(&["vm", "ssh", "kept", "--", "cat", "/etc/hostname"]),
        "kept\n"
    );
    let refused = fails(env, &["vm", "delete", "kept"]);
    assert!(refused.contains("is running"), "{refused}");
    env.ok(&["vm", "delete", "-f", "kept"]);
    assert_eq!(leftovers(env), Leftovers::none());
}

/// The first SSH connection ever made with banger's known_hosts is strict
/// and succeeds (no trust on first use); files written before a stop, on
/// the work disk and in the overlay, are there after the next start; the
/// console log spans both boots; delete drops the known_hosts entry.
fn keeps_data(env: &Env) {
    env.ok(&["vm", "create", "--name", "keeper"]);
    let vm = show(env, "keeper");
    assert_eq!(vm["state"], "running");
    let ip = vm["ip"].as_str().unwrap().to_owned();

    let kh = env.path("state/ssh/known_hosts");
    let key = env.path("state/ssh/id_ed25519");
    let first = env.in_netns(
        "ssh",
        &[
            "-i",
            &key.to_string_lossy(),
            "-o",
            &format!("UserKnownHostsFile={}", kh.display()),
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            &format!("root@{ip}"),
            "true",
        ],
    );
    assert!(first.status.success(), "first ssh: {}", stderr(&first));

    env.ok(&[
        "vm",
        "ssh",
        "keeper",
        "--",
        "sh",
        "-c",
        "echo on-work-disk > /root/kept && echo in-overlay > /etc/banger-kept",
    ]);
    assert_eq!(env.ok(&["vm", "stop", "keeper"]), "keeper stopped\n");
    assert_log_lacks(env, "did not power off", "the guest ignored its poweroff");
    leftovers(env).assert_nothing_running();
    assert_no_runtime_files(env, "keeper");
    assert_eq!(show(env, "keeper")["state"], "stopped");

    env.ok(&["vm", "start", "keeper"]);
    let console = env.ok(&["vm", "logs", "keeper"]);
    assert_eq!(
        console
            .matches("banger-init: switching to /sbin/init")
            .count(),
        2,
        "{console}"
    );
    // The guest wrote escape sequences (systemd's colours, a shell's title,
    // anything): shown on a terminal only as text, given raw on request.
    // The guest's own write goes through its console device.
    env.ok(&[
        "vm",
        "ssh",
        "keeper",
        "--",
        "sh",
        "-c",
        "printf 'marker \\033]0;owned\\007 end\\n' > /dev/ttyS0",
    ]);
    let shown = env.ok(&["vm", "logs", "keeper"]);
    assert!(shown.contains("marker  end"), "{shown}");
    assert!(
        !shown.contains('\u{1b}'),
        "an escape sequence reached the terminal"
    );
    let raw = env.ok(&["vm", "logs", "--raw", "keeper"]);
    assert!(raw.contains("marker \u{1b}]0;owned\u{7} end"), "{raw}");
    assert_eq!(
        env.ok(&[
            "vm",
            "ssh",
            "keeper",
            "--",
            "cat",
            "/root/kept",
            "/etc/banger-kept"
        ]),
        "on-work-disk\nin-overlay\n"
    );
    env.ok(&["vm", "delete", "-f", "keeper"]);
    assert_eq!(leftovers(env), Leftovers::none());
    let kh_text = std::fs::read_to_string(&kh).unwrap();
    assert!(!kh_text.contains(&ip), "known_hosts keeps {ip}: {kh_text}");
}

/// `vm set` resizes a stopped VM (and only a stopped one); the guest sees
/// the new vCPU count and memory, and a work disk the guest grew itself
/// at boot (the host only grows the file); the work disk never shrinks.
fn set_shape(env: &Env) {
    env.ok(&[
        "vm",
        "create",
        "--no-start",
        "--name",
        "shape",
        "--vcpu",
        "1",
        "--memory",
        "512M",
    ]);
    assert_eq!(
        env.ok(&["vm", "set", "shape", "--vcpu", "2", "--memory", "1G"]),
        "shape: 2 vCPU, 1024 MiB, work disk 8.0 GiB\n"
    );
    let shrink = fails(env, &["vm", "set", "shape", "--disk-size", "1G"]);
    assert!(shrink.contains("can only grow"), "{shrink}");
    assert_eq!(
        env.ok(&["vm", "set", "shape", "--disk-size", "9G"]),
        "shape: 2 vCPU, 1024 MiB, work disk 9.0 GiB\n"
    );

    env.ok(&["vm", "start", "shape"]);
    let out = env.ok(&[
        "vm",
        "ssh",
        "shape",
        "--",
        "sh",
        "-c",
        // Waits for the boot's growfs run (a no-op once it has run).
        "nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; \
         systemctl start systemd-growfs@root.service; df -B1 --output=size /root | tail -n 1",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("2"), "{out}");
    let mem_kib: u64 = lines.next().unwrap().parse().unwrap();
    assert!(
        (900 * 1024..=1024 * 1024).contains(&mem_kib),
        "MemTotal {mem_kib} KiB for a 1 GiB VM"
    );
    let work_bytes: u64 = lines.next().unwrap().trim().parse().unwrap();
    // An 8 GiB ext4 shows less than 8 GiB (its own metadata); more can
    // only be the grown file system.
    assert!(
        work_bytes > 8 << 30,
        "/root is {work_bytes} bytes after growing the disk to 9 GiB: {out}"
    );
    let busy = fails(env, &["vm", "set", "shape", "--vcpu", "1"]);
    assert!(busy.contains("is running"), "{busy}");
    env.ok(&["vm", "delete", "-f", "shape"]);
    assert_eq!(leftovers(env), Leftovers::none());
}

/// `--nat` adds MASQUERADE and FORWARD rules for that VM only while it
/// runs; a VM without `--nat` beside it adds none.
fn nat_rules(env: &Env) {
    env.ok(&["vm", "create", "--name", "natted", "--nat"]);
    env.ok(&["vm", "create", "--no-start", "--name", "plain"]);
    let id = show(env, "natted")["id"].as_str().unwrap().to_owned();
    let rules = leftovers(env).rules;
    assert_eq!(rules.len(), 3, "NAT rules while running: {rules:?}");
    assert!(
        rules.iter().all(|r| r.contains(&format!("banger:{id}"))),
        "{rules:?}"
    );
    assert!(rules.iter().any(|r| r.contains("MASQUERADE")), "{rules:?}");
    // A NAT guest is given the host's (non-loopback) resolvers.
    let resolv = env.ok(&["vm", "ssh", "natted", "--", "cat", "/etc/resolv.conf"]);
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    let wanted: Vec<&str> = host
        .lines()
        .filter(|l| l.starts_with("nameserver") && !l.contains(" 127.") && !l.contains(':'))
        .collect();
    for line in &wanted {
        assert!(
            resolv.contains(line),
            "{line:?} missing from the guest's:\n{resolv}"
        );
    }
    env.ok(&["vm", "stop", "natted"]);
    assert_eq!(leftovers(env).rules, Vec::<String>::new());
    env.ok(&["vm", "delete", "natted"]);
    env.ok(&["vm", "delete", "plain"]);
    assert_eq!(leftovers(env), Leftovers::none());
}

/// Whether the guest `vm` opens a TCP connection to `ip:port` within 3 s
/// (bash's /dev/tcp: the image has no other client).
fn guest_reaches(env: &Env, vm: &str, ip: &str, port: u16) -> bool {
    let probe = format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{ip}/{port}'");
    code(&env.banger(&["vm", "ssh", vm, "--", "sh", "-c", &probe])) == Some(0)
}

/// Two running guests, one with NAT: neither reaches the other's sshd,
/// nor a service the host runs on the gateway address, while the host
/// still reaches both; banger's nftables tables exist only while a guest
/// runs.
fn isolated(env: &Env) {
    env.ok(&["vm", "create", "--name", "iso-a", "--nat"]);
    env.ok(&["vm", "create", "--name", "iso-b"]);
    let ip = |vm: &str| show(env, vm)["ip"].as_str().unwrap().to_owned();
    let (a, b) = (ip("iso-a"), ip("iso-b"));
    let tables = leftovers(env).tables;
    assert_eq!(
        tables.len(),
        3,
        "banger's tables while guests run: {tables:?}"
    );
    // A host service on the gateway address (the default subnet's).
    let server = "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',8000));s.listen(8)\nwhile True: s.accept()[0].close()\n";
    let mut listener = env.spawn_in_netns("/usr/bin/python3", &["-c", server]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let host_reaches = |ip: &str, port: &str| {
        let client = "import socket,sys\nsocket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3)\n";
        env.in_netns("/usr/bin/python3", &["-c", client, ip, port])
            .status
            .success()
    };
    assert!(
        host_reaches("10.77.0.1", "8000"),
        "the host's own service is up"
    );
    for (from, to) in [("iso-a", &b), ("iso-b", &a)] {
        assert!(!guest_reaches(env, from, to, 22), "{from} reached {to}:22");
        assert!(
            !guest_reaches(env, from, "10.77.0.1", 8000),
            "{from} reached a host service"
        );
    }
    assert!(
        host_reaches(&a, "22") && host_reaches(&b, "22"),
        "the host lost its guests"
    );
    let _ = listener.kill();
    let _ = listener.wait();
    env.ok(&["vm", "delete", "-f", "iso-a"]);
    assert_eq!(leftovers(env).tables.len(), 3, "iso-b still runs");
    env.ok(&["vm", "delete", "-f", "iso-b"]);
    assert_eq!(leftovers(env), Leftovers::none());
}

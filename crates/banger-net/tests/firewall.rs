//! banger's nftables tables, loaded by the real `nft` into a world of
//! network namespaces this test builds: a "host" with banger's bridge,
//! guests behind ports of it (veth pairs standing in for taps: a tap needs
//! a VMM to carry its frames), an "internet" (TEST-NET-3, 203.0.113.0/24),
//! a "LAN" (192.168.50.0/24, also holding the metadata address
//! 169.254.169.254) and a service on the host. No route leads out of the
//! namespaces, so nothing any of this sends leaves them.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "a test binary: a failed step panics with its cause, and it runs servers in its namespaces"
)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use banger_net::{Guest, HostNetwork, Network, Subnet};
use banger_sys::{Cancel, Cmd, HostRunner, RunError, Runner};
use banger_testutil::netns::Netns;

const BRIDGE: &str = "bgbr0";
const SUBNET: &str = "10.77.0.1/24";
const INTERNET: &str = "203.0.113.2";
const LAN: &str = "192.168.50.2";
const METADATA: &str = "169.254.169.254";
const PORT: &str = "8080";

/// Runs each command inside `ns`, as the helper would on the host.
#[derive(Debug)]
struct InNetns(String);

impl Runner for InNetns {
    fn run(&self, cmd: &Cmd, log: &Path, cancel: &Cancel) -> Result<(), RunError> {
        let wrapped = Cmd::new("ip")
            .args(["netns", "exec", &self.0])
            .arg(&cmd.program)
            .args(&cmd.args);
        HostRunner.run(&wrapped, log, cancel)
    }
}

fn ok(ns: &Netns, program: &str, args: &[&str]) {
    let out = ns.run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}",
        ns.0,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A guest: its namespace, its host-side port (`bgt..`), its identity.
struct GuestNs {
    ns: Netns,
    guest: Guest,
}

/// The world: the host, its guests, the internet and the LAN.
struct World {
    host: Netns,
    guests: Vec<GuestNs>,
    _internet: Netns,
    _lan: Netns,
    net: HostNetwork,
    _log: tempfile::TempDir,
}

/// Joins `a` (its end `a_if` with `a_ip`) and `b` by a veth pair.
fn link(a: &Netns, a_if: &str, a_ip: &str, b: &Netns, b_if: &str, b_ip: &str) {
    ok(
        a,
        "ip",
        &["link", "add", a_if, "type", "veth", "peer", "name", b_if],
    );
    ok(a, "ip", &["link", "set", b_if, "netns", &b.0]);
    ok(a, "ip", &["addr", "add", a_ip, "dev", a_if]);
    ok(a, "ip", &["link", "set", a_if, "up"]);
    ok(b, "ip", &["addr", "add", b_ip, "dev", b_if]);
    ok(b, "ip", &["link", "set", b_if, "up"]);
}

/// Waits until a socket in `ns` listens on `port` (`ss` with `flags`,
/// `-Htln` for TCP, `-Huln` for UDP): a listener's interpreter may take
/// its time under load.
fn listening(ns: &Netns, flags: &str, port: &str) {
    let port = format!(":{port}");
    let up = banger_testutil::wait_until(std::time::Duration::from_secs(20), || {
        !ns.text("ss", &[flags, "sport", "=", &port])
            .trim()
            .is_empty()
    });
    assert!(up, "nothing listens on {port} in {}", ns.0);
}

/// A TCP listener on `port` in `ns` that answers "hi" to each connection,
/// listening when this returns.
fn listen(ns: &Netns, port: &str) {
    let server = "import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',int(sys.argv[1])));s.listen(16)\nwhile True:\n c,_=s.accept();c.sendall(b'hi');c.close()\n";
    let args = [
        "netns",
        "exec",
        &ns.0,
        "/usr/bin/python3",
        "-c",
        server,
        port,
    ];
    let mut listener = std::process::Command::new("ip")
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start a listener");
    // Killed with the namespace; reaped here.
    std::thread::spawn(move || listener.wait());
    listening(ns, "-Htln", port);
}

/// Whether a TCP connection from `ns` to `ip:port` gets the listener's
/// answer within a second.
fn reaches(ns: &Netns, ip: &str, port: &str) -> bool {
    let client = "import socket,sys\nc=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=1)\nsys.exit(0 if c.recv(2)==b'hi' else 1)\n";
    ns.run("/usr/bin/python3", &["-c", client, ip, port])
        .status
        .success()
}

impl World {
    fn new(guests: &[(u8, bool)]) -> Self {
        let host = Netns::new();
        ok(&host, "ip", &["link", "add", BRIDGE, "type", "bridge"]);
        ok(&host, "ip", &["addr", "add", SUBNET, "dev", BRIDGE]);
        ok(&host, "ip", &["link", "set", BRIDGE, "up"]);
        // As `ensure_bridge` makes it (proven on its own below).
        ok(
            &host,
            "ip",
            &[
                "link",
                "set",
                BRIDGE,
                "type",
                "bridge",
                "no_linklocal_learn",
                "1",
            ],
        );
        ok(&host, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        // Loose enough that a datagram arriving on a tap is delivered
        // when nothing filters it (the link-local test's control).
        for conf in ["all", "default"] {
            ok(
                &host,
                "sysctl",
                &["-q", "-w", &format!("net.ipv4.conf.{conf}.rp_filter=0")],
            );
        }
        let internet = Netns::new();
        link(
            &host,
            "up0",
            "203.0.113.1/24",
            &internet,
            "eth0",
            "203.0.113.2/24",
        );
        let lan = Netns::new();
        link(
            &host,
            "lan0",
            "192.168.50.1/24",
            &lan,
            "eth0",
            "192.168.50.2/24",
        );
        ok(
            &lan,
            "ip",
            &["addr", "add", "169.254.169.254/32", "dev", "eth0"],
        );
        ok(
            &host,
            "ip",
            &["route", "add", "169.254.169.254/32", "via", "192.168.50.2"],
        );
        for ns in [&internet, &lan] {
            listen(ns, PORT);
        }
        listen(&host, PORT);
        let guests = guests
            .iter()
            .map(|&(n, nat)| Self::guest(&host, n, nat))
            .collect();
        ok(
            &lan,
            "ip",
            &["route", "add", "default", "via", "192.168.50.1"],
        );
        ok(
            &internet,
            "ip",
            &["route", "add", "default", "via", "203.0.113.1"],
        );
        let log = tempfile::tempdir().unwrap();
        let net = HostNetwork::new(
            Arc::new(InNetns(host.0.clone())),
            log.path().join("net.log"),
        );
        Self {
            host,
            guests,
            _internet: internet,
            _lan: lan,
            net,
            _log: log,
        }
    }

    /// Guest `n` (10.77.0.n, port bgt0n), masqueraded when `nat`.
    fn guest(host: &Netns, n: u8, nat: bool) -> GuestNs {
        let ns = Netns::new();
        let guest = Guest {
            tap: format!("bgt{n:02x}"),
            mac: format!("02:ba:00:00:00:{n:02x}"),
            ip: Ipv4Addr::new(10, 77, 0, n),
            nat,
        };
        ok(
            host,
            "ip",
            &[
                "link", "add", &guest.tap, "type", "veth", "peer", "name", "eth0",
            ],
        );
        ok(host, "ip", &["link", "set", "eth0", "netns", &ns.0]);
        ok(
            host,
            "ip",
            &["link", "set", &guest.tap, "master", BRIDGE, "up"],
        );
        // What `Network::add_tap` does to a tap (proven on a real one below).
        ok(
            host,
            "ip",
            &[
                "link",
                "set",
                &guest.tap,
                "type",
                "bridge_slave",
                "isolated",
                "on",
            ],
        );
        ok(
            &ns,
            "ip",
            &["link", "set", "eth0", "address", &guest.mac, "up"],
        );
        ok(
            &ns,
            "ip",
            &["addr", "add", &format!("{}/24", guest.ip), "dev", "eth0"],
        );
        ok(&ns, "ip", &["route", "add", "default", "via", "10.77.0.1"]);
        if nat {
            let src = format!("{}/32", guest.ip);
            ok(
                host,
                "iptables",
                &[
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-s",
                    &src,
                    "!",
                    "-o",
                    BRIDGE,
                    "-j",
                    "MASQUERADE",
                ],
            );
        }
        GuestNs { ns, guest }
    }

    fn isolate(&self) {
        let guests: Vec<Guest> = self.guests.iter().map(|g| g.guest.clone()).collect();
        let subnet: Subnet = SUBNET.parse().unwrap();
        self.net.set_firewall(BRIDGE, &subnet, &guests).unwrap();
    }

    fn tables(&self) -> String {
        self.host.text("nft", &["list", "tables"])
    }
}

fn root(test: &str) -> bool {
    banger_testutil::have_root(test)
}

#[test]
fn guests_reach_the_internet_through_nat_and_nothing_else() {
    if !root("guests_reach_the_internet_through_nat_and_nothing_else") {
        return;
    }
    let world = World::new(&[(2, true), (3, false)]);
    let (natted, plain) = (&world.guests[0].ns, &world.guests[1].ns);
    // Without banger's tables this world is wide open: the checks below
    // can fail.
    assert!(reaches(natted, INTERNET, PORT));
    assert!(reaches(natted, LAN, PORT));
    assert!(reaches(natted, METADATA, PORT));
    assert!(reaches(natted, "10.77.0.1", PORT));
    assert!(reaches(plain, INTERNET, PORT));

    world.isolate();
    assert!(reaches(natted, INTERNET, PORT), "NAT guest to the internet");
    for (what, ip) in [
        ("the LAN", LAN),
        ("metadata", METADATA),
        ("a host service", "10.77.0.1"),
    ] {
        assert!(!reaches(natted, ip, PORT), "NAT guest reached {what}");
    }
    // The host's other addresses are the host too.
    assert!(
        !reaches(natted, "192.168.50.1", PORT),
        "NAT guest reached the host's LAN address"
    );
    assert!(
        !reaches(plain, INTERNET, PORT),
        "a guest without NAT got out"
    );
    assert!(
        !reaches(plain, "10.77.0.1", PORT),
        "a guest reached a host service"
    );
    // The host still reaches its guests (the daemon's SSH).
    listen(plain, PORT);
    assert!(
        reaches(&world.host, "10.77.0.3", PORT),
        "the host lost its guest"
    );
}

#[test]
fn guests_do_not_reach_each_other() {
    if !root("guests_do_not_reach_each_other") {
        return;
    }
    let world = World::new(&[(2, true), (3, true)]);
    let (a, b) = (&world.guests[0].ns, &world.guests[1].ns);
    listen(b, PORT);
    // Through the host's routing: b's address via the gateway's MAC.
    ok(
        a,
        "ip",
        &["route", "add", "10.77.0.3/32", "via", "10.77.0.1"],
    );
    ok(
        b,
        "ip",
        &["route", "add", "10.77.0.2/32", "via", "10.77.0.1"],
    );
    assert!(
        reaches(a, "10.77.0.3", PORT),
        "the world is open before the tables"
    );
    world.isolate();
    assert!(
        !reaches(a, "10.77.0.3", PORT),
        "a guest reached another through the host"
    );
    // Directly on the bridge, with bridged frames kept from the IP hooks
    // (no br_netfilter). Two things part them, each shown on its own:
    // the ports' isolation, and the bridge table's port-to-port drop.
    ok(a, "ip", &["route", "del", "10.77.0.3/32"]);
    ok(b, "ip", &["route", "del", "10.77.0.2/32"]);
    if Path::new("/proc/sys/net/bridge").exists() {
        ok(
            &world.host,
            "sysctl",
            &["-q", "-w", "net.bridge.bridge-nf-call-iptables=0"],
        );
    }
    let isolated = |on: &str| {
        for g in &world.guests {
            let tap = &g.guest.tap;
            ok(
                &world.host,
                "ip",
                &["link", "set", tap, "type", "bridge_slave", "isolated", on],
            );
        }
        for g in [a, b] {
            ok(g, "ip", &["neigh", "flush", "all"]);
        }
    };
    let subnet: Subnet = SUBNET.parse().unwrap();
    world.net.set_firewall(BRIDGE, &subnet, &[]).unwrap();
    isolated("off");
    assert!(
        reaches(a, "10.77.0.3", PORT),
        "open on the bridge: no isolation, no tables"
    );
    isolated("on");
    assert!(!reaches(a, "10.77.0.3", PORT), "isolated ports met");
    isolated("off");
    world.isolate();
    assert!(
        !reaches(a, "10.77.0.3", PORT),
        "ports met through the bridge table"
    );
}

#[test]
fn a_guest_cannot_send_as_another_address_or_mac() {
    if !root("a_guest_cannot_send_as_another_address_or_mac") {
        return;
    }
    let world = World::new(&[(2, true), (3, true)]);
    let spoofer = &world.guests[1].ns;
    world.isolate();
    assert!(reaches(spoofer, INTERNET, PORT));
    // Guest 2's address, guest 3's MAC.
    ok(spoofer, "ip", &["addr", "flush", "dev", "eth0"]);
    ok(
        spoofer,
        "ip",
        &["addr", "add", "10.77.0.2/24", "dev", "eth0"],
    );
    ok(
        spoofer,
        "ip",
        &["route", "add", "default", "via", "10.77.0.1"],
    );
    assert!(
        !reaches(spoofer, INTERNET, PORT),
        "sent as another guest's address"
    );
    // Its own address, another MAC.
    ok(spoofer, "ip", &["addr", "flush", "dev", "eth0"]);
    ok(
        spoofer,
        "ip",
        &["link", "set", "eth0", "address", "02:ba:00:00:00:99"],
    );
    ok(
        spoofer,
        "ip",
        &["addr", "add", "10.77.0.3/24", "dev", "eth0"],
    );
    ok(
        spoofer,
        "ip",
        &["route", "add", "default", "via", "10.77.0.1"],
    );
    assert!(!reaches(spoofer, INTERNET, PORT), "sent with another MAC");
    // Back to itself: through again.
    ok(
        spoofer,
        "ip",
        &["link", "set", "eth0", "address", "02:ba:00:00:00:03"],
    );
    ok(&world.host, "ip", &["neigh", "flush", "dev", BRIDGE]);
    assert!(
        reaches(spoofer, INTERNET, PORT),
        "its own identity works again"
    );
}

#[test]
fn an_arp_claim_for_another_guests_address_is_dropped() {
    if !root("an_arp_claim_for_another_guests_address_is_dropped") {
        return;
    }
    let world = World::new(&[(2, true), (3, true)]);
    world.isolate();
    // Guest 3 announces that 10.77.0.2 is at its own MAC.
    let claim = "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('eth0',0))\nme=bytes.fromhex('02ba00000003')\nip=bytes([10,77,0,2])\narp=bytes.fromhex('0001080006040002')+me+ip+b'\\xff'*6+ip\ns.send(b'\\xff'*6+me+b'\\x08\\x06'+arp)\n";
    ok(&world.guests[1].ns, "/usr/bin/python3", &["-c", claim]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let neigh = world.host.text("ip", &["neigh", "show", "10.77.0.2"]);
    assert!(
        !neigh.contains("02:ba:00:00:00:03"),
        "the host believed the claim: {neigh}"
    );
}

#[test]
fn the_tables_follow_the_guests_and_go_with_the_last() {
    if !root("the_tables_follow_the_guests_and_go_with_the_last") {
        return;
    }
    let world = World::new(&[(2, true), (3, true)]);
    world.isolate();
    assert!(world.tables().contains("table bridge banger-bgbr0"));
    assert!(world.tables().contains("table inet banger-bgbr0"));
    // Guest 3 leaves the tables (as if its VM stopped): its address is no
    // longer a NAT guest's, so nothing of it is forwarded.
    let subnet: Subnet = SUBNET.parse().unwrap();
    let only_two = [world.guests[0].guest.clone()];
    world.net.set_firewall(BRIDGE, &subnet, &only_two).unwrap();
    assert!(reaches(&world.guests[0].ns, INTERNET, PORT));
    assert!(!reaches(&world.guests[1].ns, INTERNET, PORT));
    // Applied twice, the same.
    let before = world.host.text("nft", &["-s", "list", "ruleset"]);
    world.net.set_firewall(BRIDGE, &subnet, &only_two).unwrap();
    assert_eq!(world.host.text("nft", &["-s", "list", "ruleset"]), before);
    world.net.set_firewall(BRIDGE, &subnet, &[]).unwrap();
    let tables = world.tables();
    assert!(!tables.contains("banger"), "{tables}");
}

#[test]
fn a_bridge_and_tap_made_for_a_vm_learn_nothing_from_link_local_frames_and_are_isolated() {
    if !root("a_bridge_and_tap_made_for_a_vm") {
        return;
    }
    let world = World::new(&[]);
    // A subnet no route of the test's own namespace overlaps.
    let subnet: Subnet = "10.231.7.1/24".parse().unwrap();
    world.net.ensure_bridge("bgbr1", &subnet).unwrap();
    let bridge = world
        .host
        .text("ip", &["-d", "-j", "link", "show", "bgbr1"]);
    assert!(bridge.contains(r#""no_linklocal_learn":1"#), "{bridge}");
    world.net.add_tap("bgt0a1b", "bgbr1", 0).unwrap();
    let link = world
        .host
        .text("ip", &["-d", "-j", "link", "show", "bgt0a1b"]);
    assert!(link.contains(r#""isolated":true"#), "{link}");
    let ipv6 = world
        .host
        .text("sysctl", &["-n", "net.ipv6.conf.bgt0a1b.disable_ipv6"]);
    assert_eq!(ipv6.trim(), "1");
}

/// Sends from `ns`'s eth0 one raw frame to the LLDP address
/// 01:80:c2:00:00:0e, which the bridge hands to the host on the port
/// itself, before its netfilter hooks: from `mac`, carrying a UDP datagram
/// from `src` to `dst`:9999.
fn link_local_frame(ns: &Netns, mac: &str, src: &str, dst: &str) {
    let send = "import socket,struct,sys\nmac=bytes.fromhex(sys.argv[1].replace(':',''))\nsrc,dst=socket.inet_aton(sys.argv[2]),socket.inet_aton(sys.argv[3])\nudp=struct.pack('!HHHH',4444,9999,13,0)+b'hello'\nh=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(udp),1,0,64,17,0,src,dst)\nc=sum(struct.unpack('!10H',h));c=(c&0xffff)+(c>>16);c=(c&0xffff)+(c>>16)\nh=h[:10]+struct.pack('!H',~c&0xffff)+h[12:]\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);s.bind(('eth0',0))\ns.send(bytes.fromhex('0180c200000e')+mac+b'\\x08\\x00'+h+udp)\n";
    ok(ns, "/usr/bin/python3", &["-c", send, mac, src, dst]);
}

/// Whether a datagram reaches port 9999 on the host within 2 s of `send`.
fn host_hears(world: &World, send: impl FnOnce()) -> bool {
    let recv = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',9999));s.settimeout(2)\ntry:\n s.recvfrom(64)\nexcept socket.timeout:\n raise SystemExit(1)\n";
    let mut listener = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &world.host.0,
            "/usr/bin/python3",
            "-c",
            recv,
        ])
        .spawn()
        .expect("start a datagram listener");
    listening(&world.host, "-Huln", "9999");
    send();
    listener.wait().expect("wait for the listener").success()
}

#[test]
fn a_link_local_frame_neither_teaches_the_bridge_a_mac_nor_reaches_the_host() {
    if !root("a_link_local_frame_neither_teaches_the_bridge_a_mac_nor_reaches_the_host") {
        return;
    }
    let world = World::new(&[(2, true), (3, true)]);
    let spoofer = &world.guests[1].ns;
    let victim_mac = &world.guests[0].guest.mac;
    let subnet: Subnet = SUBNET.parse().unwrap();
    // Without the tables, a frame to 01:80:c2:00:00:0e delivers its
    // datagram to the host: the check below can fail.
    world.net.set_firewall(BRIDGE, &subnet, &[]).unwrap();
    let send = || link_local_frame(spoofer, "02:ba:00:00:00:03", "10.77.0.3", "10.77.0.1");
    assert!(
        host_hears(&world, send),
        "the frame reaches the host without the tables"
    );
    world.isolate();
    assert!(
        !host_hears(&world, send),
        "a link-local frame reached a host service"
    );
    // Sent with the victim's MAC. Learned when nothing stops it (the
    // control); not learned with either of the two guards alone: the
    // bridge's no_linklocal_learn, or the tables' ingress chains.
    let learned = |linklocal_learn: &str, tables: bool| {
        ok(
            &world.host,
            "ip",
            &[
                "link",
                "set",
                BRIDGE,
                "type",
                "bridge",
                "no_linklocal_learn",
                linklocal_learn,
            ],
        );
        let guests: &[Guest] = if tables {
            &world
                .guests
                .iter()
                .map(|g| g.guest.clone())
                .collect::<Vec<_>>()
        } else {
            &[]
        };
        world.net.set_firewall(BRIDGE, &subnet, guests).unwrap();
        let _ = world.host.run(
            "bridge",
            &["fdb", "del", victim_mac, "dev", "bgt03", "master"],
        );
        link_local_frame(spoofer, victim_mac, "10.77.0.2", "10.77.0.1");
        // The bridge may take the frame a moment after the send returns
        // (a softirq, deferred under load): looked for until then.
        banger_testutil::wait_until(std::time::Duration::from_secs(2), || {
            let fdb = world.host.text("bridge", &["fdb", "show", "dev", "bgt03"]);
            fdb.contains(victim_mac.as_str())
        })
    };
    assert!(
        learned("0", false),
        "the control: an unguarded bridge learns the spoofed MAC"
    );
    assert!(!learned("1", false), "learned despite no_linklocal_learn");
    assert!(!learned("0", true), "learned despite the tables");
}

#[test]
fn tables_for_hundreds_of_guests_load_in_one_transaction() {
    if !root("tables_for_hundreds_of_guests_load_in_one_transaction") {
        return;
    }
    let world = World::new(&[]);
    // 300 guests: a transaction of some 300 KB, past the kernel's 128 KiB
    // limit on one argument.
    let first = u32::from(Ipv4Addr::new(10, 78, 0, 2));
    let guests: Vec<Guest> = (0..300u16)
        .map(|n| Guest {
            tap: format!("bgt{n:04x}"),
            mac: format!("02:ba:00:00:{:02x}:{:02x}", n >> 8, n & 0xff),
            ip: Ipv4Addr::from(first + u32::from(n)),
            nat: false,
        })
        .collect();
    let batch = world._log.path().join("taps");
    let lines: String = guests
        .iter()
        .map(|g| format!("tuntap add dev {} mode tap\n", g.tap))
        .collect();
    std::fs::write(&batch, lines).unwrap();
    ok(&world.host, "ip", &["-batch", batch.to_str().unwrap()]);
    let subnet: Subnet = "10.78.0.1/16".parse().unwrap();
    world.net.set_firewall(BRIDGE, &subnet, &guests).unwrap();
    let chains = world.host.text("nft", &["list", "chains", "netdev"]);
    assert_eq!(chains.matches("hook ingress").count(), 300, "{chains}");
    world.net.set_firewall(BRIDGE, &subnet, &[]).unwrap();
    assert!(!world.tables().contains("banger"));
}

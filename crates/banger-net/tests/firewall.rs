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

/// A TCP listener on `port` in `ns` that answers "hi" to each connection.
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
        ok(&host, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
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
        let world = Self {
            host,
            guests,
            _internet: internet,
            _lan: lan,
            net,
            _log: log,
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        world
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
    std::thread::sleep(std::time::Duration::from_millis(300));
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
    std::thread::sleep(std::time::Duration::from_millis(300));
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
    // (no br_netfilter): the ports' isolation alone parts them.
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
    };
    isolated("off");
    assert!(
        reaches(a, "10.77.0.3", PORT),
        "open on the bridge without isolation"
    );
    isolated("on");
    for g in [a, b] {
        ok(g, "ip", &["neigh", "flush", "all"]);
    }
    assert!(
        !reaches(a, "10.77.0.3", PORT),
        "a guest reached another on the bridge"
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
    assert!(world.tables().contains("table bridge banger"));
    assert!(world.tables().contains("table inet banger"));
    // Guest 3 leaves the tables (its VM stopped): a port the tables do
    // not know passes nothing.
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
fn a_tap_added_for_a_vm_is_an_isolated_port() {
    if !root("a_tap_added_for_a_vm_is_an_isolated_port") {
        return;
    }
    let world = World::new(&[]);
    world.net.add_tap("bgt0a1b", BRIDGE, 0).unwrap();
    let link = world
        .host
        .text("ip", &["-d", "-j", "link", "show", "bgt0a1b"]);
    assert!(link.contains(r#""isolated":true"#), "{link}");
}

//! The guests' isolation: what writing banger's nftables tables costs, for
//! one guest and for a hundred, and what the tables cost a guest's
//! throughput through NAT. The host is the bench's own namespace (so
//! `nft` runs as the root helper runs it, without `ip netns exec`), with a
//! bridge of its own beside the installation's, a veth "guest" behind it
//! and an "internet" namespace on TEST-NET-3; never a VM: under TCG the
//! guest's CPU, not the rules, would bound the stream.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_net::{Guest, HostNetwork, Network, Subnet};
use banger_sys::HostRunner;
use banger_testutil::netns::Netns;

use crate::figures::Figure;
use crate::run;

const BRIDGE: &str = "bgbr0";
const SUBNET: &str = "10.99.0.1/24";
/// Bytes streamed per throughput sample.
const STREAM_MIB: u64 = 2048;

/// Runs `program args` in `ns`, insisting on success.
fn in_ns(ns: &Netns, program: &str, args: &[&str]) -> Result<(), String> {
    let out = ns.run(program, args);
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{program} {args:?} in {}: {}",
        ns.0,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

fn guest(n: usize) -> Guest {
    let (hi, lo) = (
        u8::try_from(n / 200).unwrap_or(0),
        u8::try_from(n % 200 + 2).unwrap_or(2),
    );
    Guest {
        tap: format!("bgt{n:04x}"),
        mac: format!("02:ba:00:00:{hi:02x}:{lo:02x}"),
        ip: Ipv4Addr::new(10, 99, hi, lo),
        nat: true,
    }
}

/// The figures: a write of the tables for 1 and for 100 guests, and a
/// NAT stream's time with the tables over without.
pub fn figures(work: &Path, runs: usize) -> Result<Vec<Figure>, String> {
    let (internet, peer) = (Netns::new(), Netns::new());
    let log = work.join("bench-net.log");
    let net = HostNetwork::new(Arc::new(HostRunner), &log);
    let subnet: Subnet = "10.99.0.1/16".parse().map_err(|e| format!("{e:?}"))?;
    let mut sink = world(&internet, &peer)?;
    let hundred: Vec<Guest> = (1..=100).map(guest).collect();
    // Their taps: each guest's ingress chain hooks its tap.
    let batch = work.join("bench-taps");
    let lines: String = hundred
        .iter()
        .map(|g| format!("tuntap add dev {} mode tap\n", g.tap))
        .collect();
    std::fs::write(&batch, lines).map_err(|e| format!("write {}: {e}", batch.display()))?;
    run("ip", &["-batch", &batch.to_string_lossy()])?;
    let (mut one, mut many, mut open, mut closed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(5) {
        one.push(timed(|| net.set_firewall(BRIDGE, &subnet, &hundred[..1]))?);
        many.push(timed(|| net.set_firewall(BRIDGE, &subnet, &hundred))?);
    }
    let me = Guest {
        tap: "bgt0g".into(),
        mac: "02:ba:00:00:00:fe".into(),
        ip: Ipv4Addr::new(10, 99, 0, 254),
        nat: true,
    };
    for _ in 0..runs {
        net.set_firewall(BRIDGE, &subnet, &[])
            .map_err(|e| e.to_string())?;
        open.push(stream(&peer)?);
        let mut all = hundred.clone();
        all.push(me.clone());
        net.set_firewall(BRIDGE, &subnet, &all)
            .map_err(|e| e.to_string())?;
        closed.push(stream(&peer)?);
    }
    let _ = sink.kill();
    let _ = sink.wait();
    // The installation's VMs share this namespace: its tables and links go.
    net.set_firewall(BRIDGE, &subnet, &[])
        .map_err(|e| e.to_string())?;
    for link in hundred
        .iter()
        .map(|g| g.tap.as_str())
        .chain([BRIDGE, "up0", "bgt0g"])
    {
        let _ = run("ip", &["link", "del", link]);
    }
    let _ = std::fs::remove_file(&log);
    let one = Figure::durations("firewall write (nft transaction), 1 guest", &one);
    let many = Figure::durations("firewall write (nft transaction), 100 guests", &many);
    let open = Figure::durations(&format!("NAT stream of {STREAM_MIB} MiB, no tables"), &open);
    let closed = Figure::durations(
        &format!("NAT stream of {STREAM_MIB} MiB, banger's tables (101 guests)"),
        &closed,
    );
    let ratio = Figure::ratio("NAT stream with tables / without (time)", &closed, &open);
    let write_ratio = Figure::ratio("firewall write, 100 guests / 1 guest", &many, &one);
    Ok(vec![one, many, write_ratio, open, closed, ratio])
}

fn timed(f: impl FnOnce() -> Result<(), banger_net::NetError>) -> Result<Duration, String> {
    let t = Instant::now();
    f().map_err(|e| e.to_string())?;
    Ok(t.elapsed())
}

/// The host with the bridge and NAT, the guest behind a port of it (its
/// veth named like a tap), the internet with a sink on port 9000.
fn world(internet: &Netns, peer: &Netns) -> Result<Child, String> {
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run("ip", &["addr", "add", SUBNET, "dev", BRIDGE])?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    run("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
    run(
        "ip",
        &[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &internet.0,
        ],
    )?;
    run("ip", &["addr", "add", "203.0.113.1/24", "dev", "up0"])?;
    run("ip", &["link", "set", "up0", "up"])?;
    in_ns(
        internet,
        "ip",
        &["addr", "add", "203.0.113.2/24", "dev", "eth0"],
    )?;
    in_ns(internet, "ip", &["link", "set", "eth0", "up"])?;
    in_ns(
        internet,
        "ip",
        &["route", "add", "default", "via", "203.0.113.1"],
    )?;
    run(
        "ip",
        &[
            "link", "add", "bgt0g", "type", "veth", "peer", "name", "eth0", "netns", &peer.0,
        ],
    )?;
    run("ip", &["link", "set", "bgt0g", "master", BRIDGE, "up"])?;
    in_ns(
        peer,
        "ip",
        &["link", "set", "eth0", "address", "02:ba:00:00:00:fe", "up"],
    )?;
    in_ns(
        peer,
        "ip",
        &["addr", "add", "10.99.0.254/24", "dev", "eth0"],
    )?;
    in_ns(peer, "ip", &["route", "add", "default", "via", "10.99.0.1"])?;
    let masquerade = [
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.99.0.0/24",
        "!",
        "-o",
        BRIDGE,
        "-j",
        "MASQUERADE",
    ];
    run("iptables", &masquerade)?;
    let sink = "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',9000));s.listen(4)\nwhile True:\n c,_=s.accept()\n while c.recv(1<<20): pass\n c.close()\n";
    let sink = Command::new("ip")
        .args(["netns", "exec", &internet.0, "/usr/bin/python3", "-c", sink])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("start the sink: {e}"))?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(sink)
}

/// The time to send [`STREAM_MIB`] MiB from the guest to the internet's sink.
fn stream(peer: &Netns) -> Result<Duration, String> {
    let send = format!(
        "import socket\nc=socket.create_connection(('203.0.113.2',9000),timeout=10)\nb=bytes(1<<20)\nfor _ in range({STREAM_MIB}): c.sendall(b)\nc.shutdown(socket.SHUT_WR)\nc.recv(1)\n"
    );
    let t = Instant::now();
    in_ns(peer, "/usr/bin/python3", &["-c", &send])?;
    Ok(t.elapsed())
}

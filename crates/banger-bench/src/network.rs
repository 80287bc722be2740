//! The guests' isolation: what writing banger's nftables tables costs, for
//! one guest and for a hundred, and what the tables cost a guest's
//! throughput through NAT. The host is the bench's own namespace (so
//! `nft` runs as the root helper runs it, without `ip netns exec`), with a
//! bridge of its own beside the installation's, a veth "guest" behind it
//! and an "internet" namespace on TEST-NET-3; never a VM: under TCG the
//! guest's CPU, not the rules, would bound the stream.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_net::{Guest, HostNetwork, Network, Subnet};
use banger_sys::HostRunner;

use crate::figures::Figure;

const BRIDGE: &str = "bgbr0";
const SUBNET: &str = "10.99.0.1/24";
/// Bytes streamed per throughput sample.
const STREAM_MIB: u64 = 2048;

/// A namespace of the bench's own, deleted (with what runs in it) on drop.
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Result<Self, String> {
        let name = format!("bgbench-{}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Self(name);
        ns.ok("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn exec(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]).args(args);
        c
    }

    fn ok(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let out = self
            .exec(program, args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {args:?} in {}: {}",
                self.0,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(out)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: killing what runs in the bench's own namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The bench's own namespace, where it runs.
struct Here;

impl Here {
    fn ok(&self, program: &str, args: &[&str]) -> Result<(), String> {
        run(program, args)
    }
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
    let host = Here;
    let internet = Ns::new("inet")?;
    let peer = Ns::new("guest")?;
    let log = work.join("bench-net.log");
    let net = HostNetwork::new(Arc::new(HostRunner), &log);
    let subnet: Subnet = "10.99.0.1/16".parse().map_err(|e| format!("{e:?}"))?;
    let mut sink = world(&host, &internet, &peer)?;
    let hundred: Vec<Guest> = (1..=100).map(guest).collect();
    // Their taps: each guest's ingress chain hooks its tap.
    let batch = work.join("bench-taps");
    let lines: String = hundred
        .iter()
        .map(|g| format!("tuntap add dev {} mode tap\n", g.tap))
        .collect();
    std::fs::write(&batch, lines).map_err(|e| format!("write {}: {e}", batch.display()))?;
    host.ok("ip", &["-batch", &batch.to_string_lossy()])?;
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
fn world(host: &Here, internet: &Ns, peer: &Ns) -> Result<Child, String> {
    host.ok("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    host.ok("ip", &["addr", "add", SUBNET, "dev", BRIDGE])?;
    host.ok("ip", &["link", "set", BRIDGE, "up"])?;
    host.ok("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
    host.ok(
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
    host.ok("ip", &["addr", "add", "203.0.113.1/24", "dev", "up0"])?;
    host.ok("ip", &["link", "set", "up0", "up"])?;
    internet.ok("ip", &["addr", "add", "203.0.113.2/24", "dev", "eth0"])?;
    internet.ok("ip", &["link", "set", "eth0", "up"])?;
    internet.ok("ip", &["route", "add", "default", "via", "203.0.113.1"])?;
    host.ok(
        "ip",
        &[
            "link", "add", "bgt0g", "type", "veth", "peer", "name", "eth0", "netns", &peer.0,
        ],
    )?;
    host.ok("ip", &["link", "set", "bgt0g", "master", BRIDGE, "up"])?;
    peer.ok(
        "ip",
        &["link", "set", "eth0", "address", "02:ba:00:00:00:fe", "up"],
    )?;
    peer.ok("ip", &["addr", "add", "10.99.0.254/24", "dev", "eth0"])?;
    peer.ok("ip", &["route", "add", "default", "via", "10.99.0.1"])?;
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
    host.ok("iptables", &masquerade)?;
    let sink = "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',9000));s.listen(4)\nwhile True:\n c,_=s.accept()\n while c.recv(1<<20): pass\n c.close()\n";
    let sink = internet
        .exec("/usr/bin/python3", &["-c", sink])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("start the sink: {e}"))?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(sink)
}

/// The time to send [`STREAM_MIB`] MiB from the guest to the internet's sink.
fn stream(peer: &Ns) -> Result<Duration, String> {
    let send = format!(
        "import socket\nc=socket.create_connection(('203.0.113.2',9000),timeout=10)\nb=bytes(1<<20)\nfor _ in range({STREAM_MIB}): c.sendall(b)\nc.shutdown(socket.SHUT_WR)\nc.recv(1)\n"
    );
    let t = Instant::now();
    peer.ok("/usr/bin/python3", &["-c", &send])?;
    Ok(t.elapsed())
}

//! The root helper, end to end: the real `bangerd-root` in a network
//! namespace of the test's own, driving `ip` and `iptables` there, called
//! through the daemon's own client (`HelperNetwork`) as root and, through
//! `setpriv`, as its owner and as a stranger.
//!
//! This binary has its own `main`: run with `BANGER_HELPER_PEER` set it is
//! the peer (it pings the helper at that socket and prints the outcome).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::disallowed_methods,
    reason = "a test binary: a failed step should panic with its cause, print its result, and spawn the helper"
)]

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_helper::policy::Policy;
use banger_helper::protocol::{ErrorKind, Reply};
use banger_helper::{HelperNetwork, Server, SysfsTaps, op_id_scope};
use banger_net::{NetError, Network};
use banger_testutil::fakes::{Calls, FakeNet};
use banger_testutil::harness::{self, Test};
use banger_testutil::netns::Netns;
use serde_json::Value;

/// Set in the peer: the helper socket to ping.
const PEER: &str = "BANGER_HELPER_PEER";

/// The owner the helper serves in these tests (nobody).
const OWNER: u32 = 65534;
/// A uid that is neither root nor the owner.
const STRANGER: u32 = 65533;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(socket) = std::env::var_os(PEER) {
        peer(Path::new(&socket));
        return;
    }
    harness::run(TESTS, &args);
}

const TESTS: &[Test] = &[
    (
        "requests_outside_the_protocol_are_refused_and_logged",
        requests_outside_the_protocol_are_refused_and_logged,
    ),
    (
        "oversized_or_cut_requests_are_refused",
        oversized_or_cut_requests_are_refused,
    ),
    (
        "the_helper_serves_its_owner_in_a_namespace_and_refuses_what_is_not_bangers",
        the_helper_serves_its_owner_in_a_namespace_and_refuses_what_is_not_bangers,
    ),
    (
        "a_peer_that_is_neither_root_nor_the_owner_is_refused",
        a_peer_that_is_neither_root_nor_the_owner_is_refused,
    ),
    (
        "an_unprivileged_daemon_without_a_helper_is_told_how_to_get_one",
        an_unprivileged_daemon_without_a_helper_is_told_how_to_get_one,
    ),
];

/// The peer's side: one ping, its outcome on stdout.
fn peer(socket: &Path) {
    match HelperNetwork::new(socket).ping() {
        Ok(served) => println!("served uid {}", served.owner_uid),
        Err(e) => println!("error: {e}"),
    }
}

/// A log the server writes and the test reads.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn fake_server(calls: &Calls, log: &Log) -> Server {
    // Root is always admitted; an unprivileged run is its own owner.
    let owner = match banger_sys::euid() {
        0 => 1000,
        uid => uid,
    };
    Server::new(
        Policy::new(owner, "banger0", "10.77.0.1/24".parse().unwrap()).unwrap(),
        Arc::new(FakeNet::new(calls)),
        Box::new(SysfsTaps::new("/nonexistent")),
        Box::new(log.clone()),
    )
}

fn requests_outside_the_protocol_are_refused_and_logged() {
    let calls = Calls::default();
    let log = Log::default();
    let server = fake_server(&calls, &log);
    let bad = [
        (
            r#"{"version":1,"op_id":"op-1","call":{"op":"run_shell","cmd":"id"}}"#,
            "unknown variant `run_shell`",
        ),
        (
            r#"{"version":1,"op_id":"op-1","call":{"op":"remove_tap","tap":"bgt1","force":true}}"#,
            "unknown field `force`",
        ),
        (
            r#"{"version":1,"op_id":"op-1","uid":0,"call":{"op":"ping"}}"#,
            "unknown field `uid`",
        ),
        (
            r#"{"version":1,"op_id":"op-1","call":{"op":"ping","as":"root"}}"#,
            "unknown field `as`",
        ),
        (
            r#"{"version":2,"op_id":"op-1","call":{"op":"ping"}}"#,
            "protocol version 2 is not this helper's (1)",
        ),
        (
            r#"{"version":1,"op_id":"op 1; rm","call":{"op":"ping"}}"#,
            "the op id must be",
        ),
        ("not json", "not a helper request"),
    ];
    for (line, why) in bad {
        let outcome = server.answer(line.as_bytes());
        match &outcome.reply {
            Reply::Error {
                kind: ErrorKind::BadRequest,
                message,
            } => assert!(message.contains(why), "{line}: {message}"),
            other => panic!("{line}: {other:?}"),
        }
    }
    // A well-formed request outside the policy is refused before the
    // network is touched; one inside it reaches the network.
    let refused = server.answer(
        br#"{"version":1,"op_id":"op-2","call":{"op":"add_tap","tap":"eth0","bridge":"banger0"}}"#,
    );
    assert!(
        matches!(&refused.reply, Reply::Error { kind: ErrorKind::Refused, message } if message.contains("wrong prefix")),
        "{:?}",
        refused.reply
    );
    assert!(calls.lock().unwrap().is_empty());
    let done = server.answer(
        br#"{"version":1,"op_id":"op-3","call":{"op":"add_tap","tap":"bgt0a1b","bridge":"banger0"}}"#,
    );
    assert_eq!(done.reply, Reply::Ok { served: None });
    assert_eq!(*calls.lock().unwrap(), ["add_tap bgt0a1b"]);
    // Over a connection, each call is one JSON log line.
    let (mut client, end) = UnixStream::pair().unwrap();
    client
        .write_all(b"{\"version\":1,\"op_id\":\"op-4\",\"call\":{\"op\":\"check_tap\",\"tap\":\"bgt1\",\"bridge\":\"banger0\"}}\n")
        .unwrap();
    server.handle(end);
    let lines = log.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["op"], "check_tap");
    assert_eq!(line["op_id"], "op-4");
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["peer_uid"], banger_sys::euid());
    assert!(line["ms"].is_u64() && line["ts"].is_f64(), "{line}");
}

fn oversized_or_cut_requests_are_refused() {
    let calls = Calls::default();
    let log = Log::default();
    let server = fake_server(&calls, &log);
    let exchange = |bytes: &[u8]| {
        let (mut client, end) = UnixStream::pair().unwrap();
        client.write_all(bytes).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        server.handle(end);
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut client, &mut answer).unwrap();
        serde_json::from_str::<Reply>(answer.trim()).unwrap()
    };
    let long = format!(
        "{{\"version\":1,\"op_id\":\"{}\",\"call\":{{\"op\":\"ping\"}}}}\n",
        "a".repeat(banger_helper::protocol::MAX_REQUEST)
    );
    let too_long = format!("at most {} bytes", banger_helper::protocol::MAX_REQUEST);
    for (bytes, why) in [
        (long.as_bytes(), too_long.as_str()),
        (
            &b"{\"version\":1,\"op_id\":\"op-1\",\"call\":{\"op\":\"ping\"}}"[..],
            "ended before its newline",
        ),
    ] {
        match exchange(bytes) {
            Reply::Error {
                kind: ErrorKind::BadRequest,
                message,
            } => assert!(message.contains(why), "{message}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(calls.lock().unwrap().is_empty());
    assert!(log.lines().iter().all(|l| l["outcome"] == "bad_request"));
}

/// The real helper, running in `ns` for [`OWNER`].
struct Helper {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    log: PathBuf,
}

impl Helper {
    fn start(ns: &Netns) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The owner must reach the socket: the test's directory is 0700.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("run/bangerd-root.sock");
        let log = dir.path().join("helper.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_bangerd-root")])
            .args(["--owner", &OWNER.to_string(), "--socket"])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let up = banger_testutil::wait_until(Duration::from_secs(10), || socket.exists());
        assert!(
            up,
            "no helper socket: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        Self {
            child,
            _dir: dir,
            socket,
            log,
        }
    }

    fn net(&self) -> HelperNetwork {
        HelperNetwork::new(&self.socket)
    }

    fn log_lines(&self) -> Vec<Value> {
        let log = std::fs::read_to_string(&self.log).unwrap();
        // A line the helper is still writing has no newline yet: not read.
        let whole = log.rfind('\n').map_or("", |end| &log[..end]);
        whole
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// What `peer` printed when run as `uid`.
    fn ping_as(&self, uid: u32) -> String {
        let id = uid.to_string();
        let out = Command::new("setpriv")
            .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
            .arg(std::env::current_exe().unwrap())
            .env(PEER, &self.socket)
            .output()
            .expect("run setpriv (util-linux)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn the_helper_serves_its_owner_in_a_namespace_and_refuses_what_is_not_bangers() {
    if !banger_testutil::have_root("the_helper_serves_its_owner_in_a_namespace") {
        return;
    }
    let ns = Netns::new();
    let helper = Helper::start(&ns);
    let net = helper.net();
    let subnet = "10.77.0.1/24".parse().unwrap();
    let guest = Ipv4Addr::new(10, 77, 0, 9);
    let tag = "0a1b2c3d4e5f6071";
    {
        let _scope = op_id_scope("op-e2e");
        net.ensure_bridge("banger0", &subnet).unwrap();
        net.add_tap("bgt0a1b2c3d4e5f", "banger0", OWNER).unwrap();
        net.check_tap("bgt0a1b2c3d4e5f", "banger0").unwrap();
        net.add_nat(tag, guest, "banger0").unwrap();
        net.set_firewall("banger0", &subnet, &[firewall_guest(guest)])
            .unwrap();
    }
    let tables = || ns.text("nft", &["list", "tables"]);
    assert!(
        tables().contains("table bridge banger-banger0")
            && tables().contains("table inet banger-banger0"),
        "{}",
        tables()
    );
    // The tap is the owner's, on the bridge; the rules carry the tag.
    let sys = |f: &str| ns.text("cat", &[&format!("/sys/class/net/bgt0a1b2c3d4e5f/{f}")]);
    assert_eq!(sys("owner").trim(), OWNER.to_string());
    assert!(
        ns.text("ip", &["-br", "addr", "show", "banger0"])
            .contains("10.77.0.1/24")
    );
    assert!(
        ns.text("ip", &["link", "show", "master", "banger0"])
            .contains("bgt0a1b2c3d4e5f")
    );
    let rules = || {
        ns.text("iptables", &["-w", "-S", "FORWARD"])
            + &ns.text("iptables", &["-w", "-t", "nat", "-S", "POSTROUTING"])
    };
    assert_eq!(
        rules().matches(&format!("banger:{tag}")).count(),
        3,
        "{}",
        rules()
    );

    // What is not banger's is refused, and left as it was.
    let make = |args: &[&str]| assert!(ns.run("ip", args).status.success(), "ip {args:?}");
    make(&[
        "tuntap",
        "add",
        "dev",
        "bgtforeign",
        "mode",
        "tap",
        "user",
        "12345",
    ]);
    make(&["link", "add", "other0", "type", "bridge"]);
    make(&[
        "tuntap",
        "add",
        "dev",
        "bgtother",
        "mode",
        "tap",
        "user",
        &OWNER.to_string(),
    ]);
    make(&["link", "set", "bgtother", "master", "other0"]);
    let refused = |result: Result<(), NetError>, why: &str| {
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("the root helper refused") && err.contains(why),
            "{err}"
        );
    };
    refused(net.remove_tap("bgtforeign"), "belongs to uid 12345");
    refused(net.remove_tap("bgtother"), "a port of other0");
    refused(net.remove_tap("eth0"), "wrong prefix");
    refused(
        net.ensure_bridge("other0", &subnet),
        "serves only bridge banger0",
    );
    refused(
        net.add_nat(tag, Ipv4Addr::new(192, 168, 1, 1), "banger0"),
        "not a guest address",
    );
    let foreign = banger_net::Guest {
        tap: "eth0".into(),
        ..firewall_guest(guest)
    };
    refused(
        net.set_firewall("banger0", &subnet, &[foreign]),
        "wrong prefix",
    );
    let links = ns.text("ip", &["-br", "link"]);
    assert!(
        links.contains("bgtforeign") && links.contains("bgtother"),
        "{links}"
    );

    // The owner is served, a stranger is not (the next test).
    assert_eq!(helper.ping_as(OWNER).trim(), format!("served uid {OWNER}"));

    // Undone, nothing of banger's is left.
    net.set_firewall("banger0", &subnet, &[]).unwrap();
    assert!(!tables().contains("banger"), "{}", tables());
    net.remove_nat(tag, guest, "banger0").unwrap();
    net.remove_tap("bgt0a1b2c3d4e5f").unwrap();
    net.remove_tap("bgt0a1b2c3d4e5f").unwrap();
    assert!(!rules().contains("banger:"), "{}", rules());
    assert!(!ns.text("ip", &["-br", "link"]).contains("bgt0a1b2c3d4e5f"));

    // One JSON line per call, carrying the daemon's op id.
    let lines = helper.log_lines();
    let e2e: Vec<&Value> = lines.iter().filter(|l| l["op_id"] == "op-e2e").collect();
    let ops: Vec<&str> = e2e.iter().map(|l| l["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "ensure_bridge",
            "add_tap",
            "check_tap",
            "add_nat",
            "set_firewall"
        ]
    );
    assert!(
        e2e.iter()
            .all(|l| l["outcome"] == "ok" && l["peer_uid"] == 0)
    );
    let refusals = lines.iter().filter(|l| l["outcome"] == "refused").count();
    assert_eq!(refusals, 6, "{lines:?}");
}

fn firewall_guest(ip: Ipv4Addr) -> banger_net::Guest {
    banger_net::Guest {
        tap: "bgt0a1b2c3d4e5f".into(),
        mac: "02:ba:0a:1b:2c:3d".into(),
        ip,
        nat: true,
    }
}

fn a_peer_that_is_neither_root_nor_the_owner_is_refused() {
    if !banger_testutil::have_root("a_peer_that_is_neither_root_nor_the_owner_is_refused") {
        return;
    }
    let ns = Netns::new();
    let helper = Helper::start(&ns);
    // The socket is the owner's, 0600: loosen it, as a careless chmod
    // would, so the stranger reaches the peer check itself.
    let meta = std::fs::metadata(&helper.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), OWNER);
    std::fs::set_permissions(&helper.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let said = helper.ping_as(STRANGER);
    assert!(
        said.contains("the root helper refused ping")
            && said.contains(&format!("uid {STRANGER} may not use banger's root helper")),
        "{said}"
    );
    assert_eq!(helper.ping_as(OWNER).trim(), format!("served uid {OWNER}"));
    let denied: Vec<Value> = helper
        .log_lines()
        .into_iter()
        .filter(|l| l["outcome"] == "permission_denied")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["peer_uid"], STRANGER);
}

fn an_unprivileged_daemon_without_a_helper_is_told_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let net = HelperNetwork::new(dir.path().join("bangerd-root.sock"));
    let err = net
        .ensure_bridge("banger0", &"10.77.0.1/24".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("starting a VM needs banger's root helper, and none answers at ")
            && err.contains("sudo banger system install")
            && !err.contains('\n'),
        "{err}"
    );
}

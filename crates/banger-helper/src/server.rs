//! The helper's side: one connection per call, the peer checked before a
//! byte is read, the request bounded in size and time, checked against the
//! policy, run, answered, and logged as one JSON line.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use banger_net::Network;

use crate::policy::{Checked, Policy, TapFacts};
use crate::protocol::{ErrorKind, MAX_REQUEST, Op, Reply, Request, Served, VERSION};

/// How long a peer may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Most calls served at once; one more is answered "busy".
const MAX_CALLS: usize = 32;

/// The helper: a policy, and the host network it guards.
pub struct Server {
    policy: Policy,
    net: Arc<dyn Network>,
    taps: Box<dyn TapFacts + Send + Sync>,
    log: std::sync::Mutex<Box<dyn Write + Send>>,
    calls: AtomicUsize,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What one call did, for its log line.
#[derive(Debug)]
pub struct Outcome {
    /// The reply sent.
    pub reply: Reply,
    /// The op's name (`-` when the request did not parse).
    pub op: &'static str,
    /// The caller's op id (`-` when the request did not parse).
    pub op_id: String,
}

impl Server {
    /// Serves `policy` over `net`, reading tap facts from `taps` and
    /// writing one JSON line per call to `log`.
    pub fn new(
        policy: Policy,
        net: Arc<dyn Network>,
        taps: Box<dyn TapFacts + Send + Sync>,
        log: Box<dyn Write + Send>,
    ) -> Self {
        Self {
            policy,
            net,
            taps,
            log: std::sync::Mutex::new(log),
            calls: AtomicUsize::new(0),
        }
    }

    /// Binds `path` (a stale socket replaced; anything else refused), 0600
    /// and owned by the policy's owner: the owner may connect, no one else
    /// but root.
    pub fn bind(&self, path: &Path) -> std::io::Result<UnixListener> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} exists and is not a socket",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        std::os::unix::fs::lchown(path, Some(self.policy.owner_uid()), None)?;
        Ok(listener)
    }

    /// Serves connections until the listener fails.
    pub fn serve(self: &Arc<Self>, listener: &UnixListener) -> std::io::Result<()> {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if self.calls.fetch_add(1, Ordering::SeqCst) >= MAX_CALLS {
                self.calls.fetch_sub(1, Ordering::SeqCst);
                let reply = error(ErrorKind::Failed, "the helper is busy: try again");
                let _ = write_reply(&stream, &reply);
                continue;
            }
            let server = Arc::clone(self);
            std::thread::spawn(move || {
                server.handle(stream);
                server.calls.fetch_sub(1, Ordering::SeqCst);
            });
        }
        Ok(())
    }

    /// Serves one connection.
    pub fn handle(&self, stream: UnixStream) {
        let started = Instant::now();
        let peer = banger_sys::peer::credentials(&stream);
        let peer_uid = peer.as_ref().map_or(u32::MAX, |p| p.uid);
        let outcome = match peer {
            Ok(p) if self.policy.admits(p.uid) => match read_request(&stream) {
                Ok(line) => self.answer(&line),
                Err(e) => unparsed(error(ErrorKind::BadRequest, e)),
            },
            Ok(p) => unparsed(error(
                ErrorKind::PermissionDenied,
                format!(
                    "uid {} may not use banger's root helper: only root and its owner (uid {}) may",
                    p.uid,
                    self.policy.owner_uid()
                ),
            )),
            Err(e) => unparsed(error(
                ErrorKind::PermissionDenied,
                format!("cannot read the peer's credentials: {e}"),
            )),
        };
        let _ = write_reply(&stream, &outcome.reply);
        linger(&stream);
        self.log(&outcome, peer_uid, started.elapsed());
    }

    /// Answers one request line.
    pub fn answer(&self, line: &[u8]) -> Outcome {
        let request: Request = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                return unparsed(error(
                    ErrorKind::BadRequest,
                    format!("not a helper request: {e}"),
                ));
            }
        };
        let op = request.call.name();
        // Only a well-formed id is logged: the log is read by people.
        let op_id = if op_id_is_safe(&request.op_id) {
            request.op_id.clone()
        } else {
            "-".to_owned()
        };
        let reply = if request.version != VERSION {
            error(
                ErrorKind::BadRequest,
                format!(
                    "protocol version {} is not this helper's ({VERSION}): restart bangerd and bangerd-root from the same banger",
                    request.version
                ),
            )
        } else if !op_id_is_safe(&request.op_id) {
            error(
                ErrorKind::BadRequest,
                "the op id must be 1 to 64 of A-Z a-z 0-9 - _",
            )
        } else {
            self.run(&request.call)
        };
        Outcome { reply, op, op_id }
    }

    fn run(&self, op: &Op) -> Reply {
        let checked = match self.policy.check(op, self.taps.as_ref()) {
            Ok(c) => c,
            Err(refusal) => return error(ErrorKind::Refused, refusal.to_string()),
        };
        let p = &self.policy;
        let (bridge, owner) = (p.bridge(), p.owner_uid());
        let done = match &checked {
            Checked::Ping => {
                return Reply::Ok {
                    served: Some(Served {
                        version: VERSION,
                        banger: env!("CARGO_PKG_VERSION").to_owned(),
                        owner_uid: owner,
                        bridge: bridge.to_owned(),
                        subnet: p.subnet().to_string(),
                    }),
                };
            }
            Checked::EnsureBridge => self.net.ensure_bridge(bridge, p.subnet()),
            Checked::AddTap(tap) => self.net.add_tap(tap, bridge, owner),
            Checked::RemoveTap(tap) => self.net.remove_tap(tap),
            Checked::Gone => Ok(()),
            Checked::CheckTap(tap) => self.net.check_tap(tap, bridge),
            Checked::AddNat(tag, ip) => self.net.add_nat(tag, *ip, bridge),
            Checked::RemoveNat(tag, ip) => self.net.remove_nat(tag, *ip, bridge),
            Checked::SetFirewall(guests) => self.net.set_firewall(bridge, p.subnet(), guests),
        };
        match done {
            Ok(()) => Reply::Ok { served: None },
            Err(e) => error(ErrorKind::Failed, chain(&e)),
        }
    }

    fn log(&self, outcome: &Outcome, peer_uid: u32, took: Duration) {
        let (verdict, message) = match &outcome.reply {
            Reply::Ok { .. } => ("ok", None),
            Reply::Error { kind, message } => (kind_name(*kind), Some(message.as_str())),
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let line = serde_json::json!({
            "ts": ts,
            "msg": if message.is_none() { "helper call completed" } else { "helper call failed" },
            "op": outcome.op,
            "op_id": outcome.op_id,
            "peer_uid": peer_uid,
            "outcome": verdict,
            "ms": took.as_millis(),
            "error": message,
        });
        let mut log = banger_sys::wait::lock(&self.log);
        let _ = writeln!(log, "{line}");
        let _ = log.flush();
    }
}

fn unparsed(reply: Reply) -> Outcome {
    Outcome {
        reply,
        op: "-",
        op_id: "-".to_owned(),
    }
}

fn error(kind: ErrorKind, message: impl std::fmt::Display) -> Reply {
    Reply::Error {
        kind,
        message: message.to_string(),
    }
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::PermissionDenied => "permission_denied",
        ErrorKind::BadRequest => "bad_request",
        ErrorKind::Refused => "refused",
        ErrorKind::Failed => "failed",
    }
}

/// The same grammar as the daemon's op ids: safe to log and echo.
fn op_id_is_safe(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An error and its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Reads the request line: at most [`MAX_REQUEST`] bytes, all within
/// [`READ_TIMEOUT`] of the first read (a byte every few seconds does not
/// hold a slot for longer).
fn read_request(mut stream: &UnixStream) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let too_long = || format!("a request may hold at most {MAX_REQUEST} bytes");
    let mut line = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no whole request within {} s",
                READ_TIMEOUT.as_secs()
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(format!("read the request: {e}")),
        };
        if n == 0 {
            return Err("the request ended before its newline".to_owned());
        }
        let got = &chunk[..n];
        let end = got.iter().position(|b| *b == b'\n');
        line.extend_from_slice(&got[..end.unwrap_or(n)]);
        if line.len() > MAX_REQUEST {
            return Err(too_long());
        }
        if end.is_some() {
            return Ok(line);
        }
    }
}

/// Lets the peer read the reply: closing a unix socket with unread input
/// (a refused or oversized request) resets the connection, and the reply
/// with it. What is left is read and dropped: at most two requests' worth,
/// for at most a second in all.
fn linger(mut stream: &UnixStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut left = 2 * MAX_REQUEST;
    let mut chunk = [0u8; 1024];
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn write_reply(mut stream: &UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    text.push(b'\n');
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    stream.write_all(&text)
}

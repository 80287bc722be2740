//! The daemon's side: [`HelperNetwork`] is the [`Network`] of an
//! unprivileged daemon, each operation one call to the root helper.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_net::{NetError, Network, Subnet};

use crate::protocol::{ErrorKind, MAX_REPLY, Op, Reply, Request, Served, VERSION};

/// How long a call may take (iptables may wait for the xtables lock).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

thread_local! {
    static OP_ID: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Sends `op_id` with every helper call this thread makes until the
/// returned guard drops, so the helper's log line carries the daemon's id.
pub fn op_id_scope(op_id: &str) -> OpIdScope {
    let previous = OP_ID.with(|cell| cell.replace(Some(op_id.to_owned())));
    OpIdScope { previous }
}

/// Restores the previous op id when dropped.
#[derive(Debug)]
pub struct OpIdScope {
    previous: Option<String>,
}

impl Drop for OpIdScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        OP_ID.with(|cell| *cell.borrow_mut() = previous);
    }
}

fn current_op_id() -> String {
    OP_ID
        .with(|cell| cell.borrow().clone())
        .unwrap_or_else(|| "bangerd".to_owned())
}

/// The host network, through the root helper listening on `socket`.
#[derive(Debug, Clone)]
pub struct HelperNetwork {
    socket: PathBuf,
}

impl HelperNetwork {
    /// Talks to the helper at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The helper's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What the helper serves.
    pub fn ping(&self) -> Result<Served, NetError> {
        match self.call(Op::Ping {})? {
            Some(served) => Ok(served),
            None => Err(NetError::Helper {
                op: "ping",
                verdict: "failed",
                message: "it answered without saying what it serves".to_owned(),
            }),
        }
    }

    fn call(&self, op: Op) -> Result<Option<Served>, NetError> {
        let name = op.name();
        let request = Request {
            version: VERSION,
            op_id: current_op_id(),
            call: op,
        };
        let reply = self.exchange(&request).map_err(|why| match why {
            Exchange::Connect(e) => NetError::NoHelper {
                socket: self.socket.clone(),
                why: e.to_string(),
            },
            Exchange::Talk(message) => NetError::Helper {
                op: name,
                verdict: "failed",
                message,
            },
        })?;
        match reply {
            Reply::Ok { served } => Ok(served),
            Reply::Error { kind, message } => Err(NetError::Helper {
                op: name,
                verdict: match kind {
                    ErrorKind::Failed => "failed",
                    ErrorKind::PermissionDenied | ErrorKind::BadRequest | ErrorKind::Refused => {
                        "refused"
                    }
                },
                message,
            }),
        }
    }

    fn exchange(&self, request: &Request) -> Result<Reply, Exchange> {
        let mut stream = UnixStream::connect(&self.socket).map_err(Exchange::Connect)?;
        let talk = |e: std::io::Error| Exchange::Talk(e.to_string());
        stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(talk)?;
        stream.set_write_timeout(Some(CALL_TIMEOUT)).map_err(talk)?;
        let mut line = serde_json::to_vec(request).map_err(|e| Exchange::Talk(e.to_string()))?;
        line.push(b'\n');
        stream.write_all(&line).map_err(talk)?;
        let mut answer = Vec::new();
        let limit = u64::try_from(MAX_REPLY).unwrap_or(u64::MAX) + 1;
        stream
            .take(limit)
            .read_to_end(&mut answer)
            .map_err(|e| Exchange::Talk(format!("read its answer: {e}")))?;
        if answer.len() > MAX_REPLY {
            return Err(Exchange::Talk(format!(
                "its answer is longer than {MAX_REPLY} bytes"
            )));
        }
        serde_json::from_slice(answer.trim_ascii_end())
            .map_err(|e| Exchange::Talk(format!("its answer is not a helper reply: {e}")))
    }
}

enum Exchange {
    Connect(std::io::Error),
    Talk(String),
}

impl Network for HelperNetwork {
    /// The helper answers, and serves this bridge and subnet.
    fn ready(&self, bridge: &str, subnet: &Subnet) -> Result<(), NetError> {
        let served = self.ping()?;
        if served.bridge != bridge || served.subnet != subnet.to_string() {
            return Err(NetError::Helper {
                op: "ping",
                verdict: "refused",
                message: format!(
                    "it serves bridge {} and subnet {}, and bangerd's config says bridge {bridge} and bridge_subnet {subnet}: make them agree (`sudo banger system install` reads the config again)",
                    served.bridge, served.subnet
                ),
            });
        }
        Ok(())
    }

    fn ensure_bridge(&self, bridge: &str, subnet: &Subnet) -> Result<(), NetError> {
        self.call(Op::EnsureBridge {
            bridge: bridge.to_owned(),
            subnet: subnet.to_string(),
        })
        .map(drop)
    }

    /// The helper creates taps for its owner, whatever `_uid` says: a
    /// daemon that is not the owner cannot connect to it at all.
    fn add_tap(&self, tap: &str, bridge: &str, _uid: u32) -> Result<(), NetError> {
        self.call(Op::AddTap {
            tap: tap.to_owned(),
            bridge: bridge.to_owned(),
        })
        .map(drop)
    }

    fn remove_tap(&self, tap: &str) -> Result<(), NetError> {
        self.call(Op::RemoveTap {
            tap: tap.to_owned(),
        })
        .map(drop)
    }

    fn check_tap(&self, tap: &str, bridge: &str) -> Result<(), NetError> {
        self.call(Op::CheckTap {
            tap: tap.to_owned(),
            bridge: bridge.to_owned(),
        })
        .map(drop)
    }

    fn add_nat(&self, tag: &str, ip: Ipv4Addr, bridge: &str) -> Result<(), NetError> {
        self.call(Op::AddNat {
            tag: tag.to_owned(),
            ip,
            bridge: bridge.to_owned(),
        })
        .map(drop)
    }

    fn set_firewall(
        &self,
        bridge: &str,
        _subnet: &Subnet,
        guests: &[banger_net::Guest],
    ) -> Result<(), NetError> {
        self.call(Op::SetFirewall {
            bridge: bridge.to_owned(),
            guests: guests.to_vec(),
        })
        .map(drop)
    }

    fn remove_nat(&self, tag: &str, ip: Ipv4Addr, bridge: &str) -> Result<(), NetError> {
        self.call(Op::RemoveNat {
            tag: tag.to_owned(),
            ip,
            bridge: bridge.to_owned(),
        })
        .map(drop)
    }
}

//! Who may talk to the daemon: root and the daemon's owner, checked with
//! SO_PEERCRED on every accepted connection.
//!
//! The socket is 0600 in a 0700 directory, so the file system already keeps
//! others out; this check still holds if the socket's descriptor or
//! permissions ever leak.

use std::time::Duration;

use axum::serve::Listener;
use banger_api::{ErrorBody, ErrorCode, OP_ID_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream, unix::SocketAddr};

use crate::op_id::OpId;

/// How much of a refused peer's request head is read before answering.
const MAX_REFUSED_HEAD: usize = 16 * 1024;

/// Whether a peer with `peer_uid` may use a daemon owned by `owner_uid`.
pub fn allowed(peer_uid: u32, owner_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == owner_uid
}

/// A unix listener that only hands authorized connections to the server.
/// Refused peers get one `403 permission_denied` response and a close.
#[derive(Debug)]
pub struct PeerCredListener {
    inner: UnixListener,
    owner_uid: u32,
}

impl PeerCredListener {
    /// Wraps `inner`, admitting root and `owner_uid`.
    pub fn new(inner: UnixListener, owner_uid: u32) -> Self {
        Self { inner, owner_uid }
    }
}

impl Listener for PeerCredListener {
    type Io = UnixStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (UnixStream, SocketAddr) {
        loop {
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            match stream.peer_cred() {
                Ok(cred) if allowed(cred.uid(), self.owner_uid) => return (stream, addr),
                Ok(cred) => {
                    let op_id = OpId::mint();
                    tracing::warn!(
                        op_id = op_id.as_str(),
                        peer_uid = cred.uid(),
                        peer_pid = cred.pid(),
                        owner_uid = self.owner_uid,
                        "connection refused: peer is neither root nor the owner"
                    );
                    let message = format!(
                        "uid {} may not use this daemon: only root and its owner (uid {}) may",
                        cred.uid(),
                        self.owner_uid
                    );
                    tokio::spawn(refuse(
                        stream,
                        "403 Forbidden",
                        ErrorCode::PermissionDenied,
                        message,
                        op_id,
                    ));
                }
                Err(err) => {
                    tracing::warn!(%err, "connection refused: cannot read peer credentials")
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Answers one request on `stream` with `status` and the JSON error body,
/// then closes it: for connections that never reach the router.
pub(crate) async fn refuse(
    mut stream: UnixStream,
    status: &'static str,
    code: ErrorCode,
    message: String,
    op_id: OpId,
) {
    let body = serde_json::to_string(&ErrorBody {
        code,
        message,
        op_id: op_id.as_str().to_owned(),
    })
    .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{OP_ID_HEADER}: {}\r\nconnection: close\r\n\r\n{body}",
        body.len(),
        op_id.as_str()
    );
    let exchange = async {
        // Read the request head first: a client that sees the connection
        // answered and half-closed before it has written may report a
        // failed connect instead of the 403 (curl does).
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while head.len() < MAX_REFUSED_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await? {
                0 => break,
                n => head.extend_from_slice(&buf[..n]),
            }
        }
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), exchange).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_owner_allowed_others_refused() {
        assert!(allowed(0, 1000));
        assert!(allowed(1000, 1000));
        assert!(!allowed(1001, 1000));
        assert!(!allowed(65534, 0));
        assert!(allowed(0, 0));
    }
}

//! A client for Firecracker's REST API: HTTP/1.1 with JSON bodies over the
//! API socket, one short connection per request.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A request that failed.
#[derive(Debug)]
pub enum ApiFailure {
    /// Firecracker answered with an error status; `fault` is its
    /// `fault_message` (or the raw body when it sent none).
    Refused {
        /// The HTTP status.
        status: u16,
        /// What Firecracker said.
        fault: String,
    },
    /// The socket could not be reached or the answer was not HTTP.
    Transport(String),
}

/// The API of one Firecracker process.
#[derive(Debug, Clone)]
pub struct Api {
    socket: PathBuf,
}

impl Api {
    /// The API listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `method path` with `body` and succeeds on a 2xx answer.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(), ApiFailure> {
        let body = body.to_string();
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| ApiFailure::Transport(format!("connect: {e}")))?;
        let timeout = Some(Duration::from_secs(10));
        stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(timeout))
            .map_err(|e| ApiFailure::Transport(e.to_string()))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| ApiFailure::Transport(format!("send: {e}")))?;
        let (status, answer) = read_response(&mut stream)
            .map_err(|e| ApiFailure::Transport(format!("answer: {e}")))?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let fault = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v.get("fault_message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&answer).trim().to_owned());
        Err(ApiFailure::Refused { status, fault })
    }

    /// Whether the API answers a connection.
    pub fn is_up(&self) -> bool {
        UnixStream::connect(&self.socket).is_ok()
    }
}

/// Reads one HTTP/1.1 response: its status and its body (by
/// Content-Length; none when absent, as on a 204).
pub fn read_response(stream: &mut impl Read) -> std::io::Result<(u16, Vec<u8>)> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (status, length, head) = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| {
                        std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .ok_or_else(|| invalid("a bad Content-Length".to_owned()))
                    })
                    .transpose()?
                    .unwrap_or(0);
                break (response.code.unwrap_or(0), length, head);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(invalid(format!("not an HTTP response: {e}"))),
        }
    };
    let mut body = buf.split_off(head);
    while body.len() < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_response_takes_the_body_by_length_and_tolerates_none() {
        let mut answer: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 26\r\n\r\n{\"fault_message\":\"no way\"}xx";
        let (status, body) = read_response(&mut answer).unwrap();
        assert_eq!(status, 400);
        assert_eq!(body, b"{\"fault_message\":\"no way\"}");
        let mut answer: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(read_response(&mut answer).unwrap(), (204, Vec::new()));
        let mut cut: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert!(read_response(&mut cut).is_err());
        let mut junk: &[u8] = b"\x00\x01 nonsense\r\n\r\n";
        assert!(read_response(&mut junk).is_err());
    }
}

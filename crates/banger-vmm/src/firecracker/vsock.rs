//! The host side of Firecracker's hybrid vsock: a connection to the VM's
//! vsock socket becomes a stream to a guest port after a one-line
//! handshake (`CONNECT <port>\n`, answered `OK <host port>\n`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Connects to guest `port` through the vsock socket `uds`.
pub fn connect(uds: &Path, port: u32, timeout: Duration) -> std::io::Result<UnixStream> {
    let mut stream = UnixStream::connect(uds)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
    // Byte by byte: what follows the newline is the guest's, not ours.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            let text = String::from_utf8_lossy(&line);
            if text.starts_with("OK ") {
                stream.set_read_timeout(None)?;
                return Ok(stream);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("vsock port {port} refused: {text:?}"),
            ));
        }
        line.push(byte[0]);
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        format!(
            "vsock port {port}: no handshake answer (got {:?})",
            String::from_utf8_lossy(&line)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    /// A peer that answers the handshake like Firecracker, then echoes.
    fn peer(uds: &Path, answer: &'static str) -> std::thread::JoinHandle<String> {
        let listener = UnixListener::bind(uds).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut writer = stream;
            writer.write_all(answer.as_bytes()).unwrap();
            let mut rest = String::new();
            let _ = reader.read_line(&mut rest);
            writer.write_all(rest.as_bytes()).unwrap();
            request
        })
    }

    #[test]
    fn connect_speaks_the_handshake_and_hands_over_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let seen = peer(&uds, "OK 1073741824\n");
        let mut stream = connect(&uds, 52, Duration::from_secs(5)).unwrap();
        stream.write_all(b"ping\n").unwrap();
        let mut echoed = String::new();
        std::io::BufReader::new(stream)
            .read_line(&mut echoed)
            .unwrap();
        assert_eq!(echoed, "ping\n");
        assert_eq!(seen.join().unwrap(), "CONNECT 52\n");
    }

    #[test]
    fn a_refused_port_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let _peer = peer(&uds, "FAILURE\n");
        let err = connect(&uds, 1024, Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("vsock port 1024 refused"), "{err}");
    }
}

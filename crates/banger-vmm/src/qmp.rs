//! A minimal QMP client: one connection per command, negotiated, with a
//! deadline on every read and write so a wedged VMM cannot hang a caller.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::VmmError;

/// How long any single read or write may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `command` (with `arguments`, if any) and returns its `return`
/// value. Events QEMU sends meanwhile are skipped.
pub fn execute(socket: &Path, command: &str, arguments: Option<Value>) -> Result<Value, VmmError> {
    let err = |message: String| VmmError::Control {
        socket: socket.to_owned(),
        message,
    };
    let stream = UnixStream::connect(socket).map_err(|e| err(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| err(format!("set timeouts: {e}")))?;
    let mut writer = stream
        .try_clone()
        .map_err(|e| err(format!("clone stream: {e}")))?;
    let mut reader = BufReader::new(stream);

    let text = |e: Exchange| err(e.to_string());
    let greeting = read_message(&mut reader).map_err(text)?;
    if greeting.get("QMP").is_none() {
        return Err(err(format!("no QMP greeting, got {greeting}")));
    }
    send(&mut writer, &json!({"execute": "qmp_capabilities"})).map_err(text)?;
    reply(&mut reader).map_err(text)?;

    let mut request = json!({ "execute": command });
    if let Some(arguments) = arguments {
        request["arguments"] = arguments;
    }
    send(&mut writer, &request).map_err(text)?;
    reply(&mut reader).map_err(|e| err(format!("{command}: {e}")))
}

/// What went wrong in one exchange; flattened into the caller's
/// `VmmError::Control` message (the cause is part of the text, once).
#[derive(Debug, thiserror::Error)]
enum Exchange {
    #[error("write: {0}")]
    Write(std::io::Error),
    #[error("read: {0}")]
    Read(std::io::Error),
    #[error("the VMM closed the connection")]
    Closed,
    #[error("bad reply {line:?}: {cause}")]
    BadReply {
        line: String,
        cause: serde_json::Error,
    },
    /// QMP's own error: its `desc`.
    #[error("{0}")]
    Refused(String),
    #[error("unexpected message {0}")]
    Unexpected(Value),
}

fn send(writer: &mut UnixStream, value: &Value) -> Result<(), Exchange> {
    let mut line = value.to_string();
    line.push('\n');
    writer.write_all(line.as_bytes()).map_err(Exchange::Write)
}

fn read_message(reader: &mut impl BufRead) -> Result<Value, Exchange> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(Exchange::Closed),
        Ok(_) => serde_json::from_str(&line).map_err(|cause| Exchange::BadReply { line, cause }),
        Err(e) => Err(Exchange::Read(e)),
    }
}

/// Reads until a `return` or an `error`, skipping events.
fn reply(reader: &mut impl BufRead) -> Result<Value, Exchange> {
    loop {
        let message = read_message(reader)?;
        if let Some(value) = message.get("return") {
            return Ok(value.clone());
        }
        if let Some(error) = message.get("error") {
            let desc = error
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            return Err(Exchange::Refused(desc.to_owned()));
        }
        if message.get("event").is_none() {
            return Err(Exchange::Unexpected(message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A scripted QMP peer: sends the greeting, then answers each request
    /// line from `answers` in order, recording what it was sent.
    fn peer(
        answers: Vec<&'static str>,
    ) -> (tempfile::TempDir, std::thread::JoinHandle<Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("qmp.sock")).unwrap();
        let t = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            let mut seen = Vec::new();
            for answer in answers {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                seen.push(line.trim().to_owned());
                w.write_all(answer.as_bytes()).unwrap();
            }
            seen
        });
        (dir, t)
    }

    #[test]
    fn negotiates_then_runs_the_command_skipping_events() {
        let (dir, t) = peer(vec![
            "{\"return\": {}}\n",
            "{\"event\": \"POWERDOWN\"}\n{\"return\": {\"status\": \"running\"}}\n",
        ]);
        let value = execute(&dir.path().join("qmp.sock"), "query-status", None).unwrap();
        assert_eq!(value["status"], "running");
        let seen = t.join().unwrap();
        assert_eq!(seen[0], r#"{"execute":"qmp_capabilities"}"#);
        assert_eq!(seen[1], r#"{"execute":"query-status"}"#);
    }

    #[test]
    fn an_error_reply_names_the_command_and_qemus_words() {
        let (dir, t) = peer(vec![
            "{\"return\": {}}\n",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no such key\"}}\n",
        ]);
        let err = execute(
            &dir.path().join("qmp.sock"),
            "send-key",
            Some(json!({"keys": []})),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("send-key: no such key"), "{err}");
        assert!(t.join().unwrap()[1].contains(r#""arguments":{"keys":[]}"#));
    }

    #[test]
    fn a_missing_socket_is_a_control_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = execute(&dir.path().join("gone.sock"), "quit", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gone.sock") && err.contains("connect"),
            "{err}"
        );
    }
}

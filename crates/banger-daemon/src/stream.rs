//! A request body read as a blocking `Read`, for work on blocking threads
//! that streams it onward (a workspace tar into the guest's `tar -x`).

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

enum Chunk {
    Data(Bytes),
    End,
    Failed(String),
}

/// The body's bytes, in order. Only a body that arrived whole ends with
/// EOF: a broken one, a stalled one (no bytes for the idle timeout) or a
/// forwarder that went away is an error, never a quietly short stream.
#[derive(Debug)]
pub struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<Chunk>,
    current: Bytes,
    ended: bool,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Data(b) => write!(f, "Data({})", b.len()),
            Self::End => f.write_str("End"),
            Self::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

impl BodyReader {
    /// Starts forwarding `body` on its own task (so a dropped request
    /// still ends it with an error, not an early EOF).
    pub fn spawn(body: axum::body::Body, idle: Duration) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut body = body;
            loop {
                let chunk = match tokio::time::timeout(idle, body.frame()).await {
                    Err(_) => Chunk::Failed(format!("no bytes for {}s", idle.as_secs())),
                    Ok(None) => Chunk::End,
                    Ok(Some(Err(e))) => Chunk::Failed(e.to_string()),
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => Chunk::Data(data),
                        Err(_) => continue,
                    },
                };
                let last = !matches!(chunk, Chunk::Data(_));
                if tx.send(chunk).await.is_err() || last {
                    return;
                }
            }
        });
        Self {
            rx,
            current: Bytes::new(),
            ended: false,
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(data)) => self.current = data,
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Failed(e)) => return Err(std::io::Error::other(e)),
                None => return Err(std::io::Error::other("the request body was cut off")),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut r: BodyReader) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).map(|_| out)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_whole_body_ends_and_a_broken_one_fails() {
        let whole = BodyReader::spawn(axum::body::Body::from("tar bytes"), Duration::from_secs(5));
        let got = tokio::task::spawn_blocking(move || read_all(whole))
            .await
            .unwrap();
        assert_eq!(got.unwrap(), b"tar bytes");

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
        tx.send(Ok(Bytes::from_static(b"part"))).await.unwrap();
        tx.send(Err(std::io::Error::other("client went away")))
            .await
            .unwrap();
        drop(tx);
        let stream = futures_from(rx);
        let broken = BodyReader::spawn(
            axum::body::Body::from_stream(stream),
            Duration::from_secs(5),
        );
        let got = tokio::task::spawn_blocking(move || read_all(broken))
            .await
            .unwrap();
        assert!(got.unwrap_err().to_string().contains("client went away"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_stalled_body_fails_after_the_idle_timeout() {
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stalled = BodyReader::spawn(
            axum::body::Body::from_stream(futures_from(rx)),
            Duration::from_millis(50),
        );
        let got = tokio::task::spawn_blocking(move || read_all(stalled))
            .await
            .unwrap();
        assert!(got.unwrap_err().to_string().contains("no bytes"));
    }

    /// A stream over a channel.
    fn futures_from(
        rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> {
        ChannelStream(rx)
    }

    struct ChannelStream(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

    impl futures_core::Stream for ChannelStream {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}

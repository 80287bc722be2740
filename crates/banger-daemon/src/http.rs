//! Serving HTTP/1.1 on authorized connections, with bounds a client cannot
//! lift: a connection that has not sent a whole request head within
//! [`HttpLimits::header_timeout`] (a slow head, or an idle keep-alive
//! connection) is closed; at most [`HttpLimits::max_connections`] are open
//! at once, and one past that gets a `503 unavailable` and a close; request
//! targets and heads over the limits get a JSON `414` or `431` from
//! [`check_head`] like every other error.
//!
//! hyper's own limits stand behind ours as a backstop: a target over
//! 64 KiB or a head over [`MAX_BUF`] is refused by hyper itself, with a
//! bodiless 414 or 431.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::Listener;
use banger_api::ErrorCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

use crate::auth::PeerCredListener;
use crate::error::ApiError;

/// hyper's read buffer, and so the largest head it reads at all.
pub const MAX_BUF: usize = 256 * 1024;

/// Headers hyper parses before refusing on its own.
const HYPER_MAX_HEADERS: usize = 512;

/// The bounds every connection is served under.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// How long a connection may take to send a request head, counted
    /// from when the daemon starts waiting for it (so also how long an
    /// idle keep-alive connection is kept).
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Longest request target (path and query), in bytes.
    pub max_target: usize,
    /// Largest request head (header names and values), in bytes.
    pub max_head: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// How long a request body may take to arrive once its head has.
    pub body_timeout: Duration,
    /// How long a response may wait for the client to read it (a write
    /// that makes no progress for this long closes the connection).
    pub write_timeout: Duration,
}

/// The body deadline, handed to the body extractors as a request
/// extension by [`check_head`].
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_target: 8 * 1024,
            max_head: 32 * 1024,
            max_headers: 100,
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on every connection `listener` admits until `stop`
/// resolves, then stops accepting and waits for the open connections to
/// finish (the caller bounds that wait).
pub async fn serve(
    mut listener: PeerCredListener,
    app: Router,
    limits: HttpLimits,
    stop: impl Future<Output = ()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF)
        .max_headers(HYPER_MAX_HEADERS);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            (stream, _) = listener.accept() => stream,
            () = &mut stop => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let message = format!(
                "too many connections: the daemon serves at most {} at once; retry shortly",
                limits.max_connections
            );
            tracing::warn!(
                max = limits.max_connections,
                "connection refused: at the connection limit"
            );
            tokio::spawn(crate::auth::refuse(
                stream,
                "503 Service Unavailable",
                ErrorCode::Unavailable,
                message,
                crate::op_id::OpId::mint(),
            ));
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let io = TokioIo::new(StallGuard::new(stream, limits.write_timeout));
        let conn = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The middleware that refuses a request target or head over the limits,
/// before any route sees it.
pub async fn check_head(
    axum::extract::State(limits): axum::extract::State<HttpLimits>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    req.extensions_mut()
        .insert(BodyTimeout(limits.body_timeout));
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > limits.max_target {
        return Err(ApiError::new(
            ErrorCode::UriTooLong,
            format!(
                "request target is {target} bytes, more than {}",
                limits.max_target
            ),
        ));
    }
    let headers = req.headers();
    if headers.len() > limits.max_headers {
        return Err(ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "request has {} header fields, more than {}",
                headers.len(),
                limits.max_headers
            ),
        ));
    }
    let head: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if head > limits.max_head {
        return Err(ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!(
                "request headers are {head} bytes, more than {}",
                limits.max_head
            ),
        ));
    }
    Ok(next.run(req).await)
}

/// A connection whose writes must make progress: a client that stops
/// reading its response (while holding one of the connection permits)
/// gets its connection closed after `timeout` without progress.
#[derive(Debug)]
struct StallGuard<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallGuard<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// After a `Pending` write: arms the timer, or fails once it fired.
    fn pending<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<T>> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading its response",
            )));
        }
        std::task::Poll::Pending
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            std::task::Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.inner).poll_flush(cx) {
            std::task::Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

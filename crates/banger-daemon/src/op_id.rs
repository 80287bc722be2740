//! Operation ids and the middleware that every request passes through.
//!
//! Each request gets an op id (adopted from a well-formed `X-Banger-Op-Id`
//! request header, else minted), runs inside a tracing span carrying it, and
//! gets it back in the response header. The middleware is also the one place
//! that writes error bodies: whatever produced a 4xx or 5xx (a route's
//! [`ApiError`], a framework rejection, a caught panic), the client receives
//! `{code, message, op_id}` and the log has one WARN or ERROR line for it.

use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use banger_api::{ErrorBody, OP_ID_HEADER};
use http::{HeaderValue, header};
use http_body_util::BodyExt;
use tracing::Instrument;

use crate::error::{ApiError, code_for};

/// Longest error body from a framework rejection that is passed on as the
/// message; longer ones are cut.
const MAX_FOREIGN_MESSAGE: usize = 512;

/// A request's operation id, e.g. `op-5f1c0a2b9e3d4c71`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpId(String);

impl OpId {
    /// A fresh random id.
    pub fn mint() -> Self {
        Self(format!("op-{:016x}", rand::random::<u64>()))
    }

    /// Adopts a caller's id when it is safe to log and echo: 1 to 64 ASCII
    /// letters, digits, `-` or `_`.
    pub fn adopt(value: &str) -> Option<Self> {
        let ok = (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(value.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

tokio::task_local! {
    static CURRENT: OpId;
}

/// The op id of the request this task serves, for work it hands to a
/// blocking thread (the root helper logs it with each call).
pub fn current() -> Option<OpId> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The middleware: op id, span, response header, error bodies, one log line.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let op_id = req
        .headers()
        .get(OP_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(OpId::adopt)
        .unwrap_or_else(OpId::mint);
    req.extensions_mut().insert(op_id.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", op_id = op_id.as_str());
    async move {
        let started = Instant::now();
        let response = CURRENT.scope(op_id.clone(), next.run(req)).await;
        let mut response = if response.status().is_client_error() || response.status().is_server_error() {
            error_response(response, &op_id).await
        } else {
            response
        };
        if let Ok(value) = HeaderValue::from_str(op_id.as_str()) {
            response.headers_mut().insert(OP_ID_HEADER, value);
        }
        let status = response.status().as_u16();
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match response.extensions().get::<ApiError>() {
            Some(err) if status >= 500 => tracing::error!(%method, path, status, elapsed_ms, code = %err.code, error = %err.message, "request failed"),
            Some(err) => tracing::warn!(%method, path, status, elapsed_ms, code = %err.code, error = %err.message, "request refused"),
            None => tracing::debug!(%method, path, status, elapsed_ms, "request completed"),
        }
        response
    }
    .instrument(span)
    .await
}

/// Rewrites an error response into the JSON error body, keeping its status.
async fn error_response(response: Response, op_id: &OpId) -> Response {
    let (mut parts, body) = response.into_parts();
    let err = match parts.extensions.remove::<ApiError>() {
        Some(err) => err,
        None => {
            // Not ours: a rejection or a caught panic. Keep its text as the
            // message, so the client learns what the framework objected to.
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let mut text = String::from_utf8_lossy(&bytes).trim().to_owned();
            if text.len() > MAX_FOREIGN_MESSAGE {
                let cut = text.floor_char_boundary(MAX_FOREIGN_MESSAGE);
                text.truncate(cut);
            }
            if text.is_empty() {
                text = parts
                    .status
                    .canonical_reason()
                    .unwrap_or("request failed")
                    .to_lowercase();
            }
            ApiError::new(code_for(parts.status), text)
        }
    };
    let body = ErrorBody {
        code: err.code,
        message: err.message.clone(),
        op_id: op_id.as_str().to_owned(),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.extensions.insert(err);
    Response::from_parts(parts, Body::from(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_adoptable_and_distinct() {
        let a = OpId::mint();
        let b = OpId::mint();
        assert_ne!(a, b);
        assert_eq!(OpId::adopt(a.as_str()), Some(a));
    }

    #[test]
    fn adopt_refuses_ids_unsafe_to_log() {
        for bad in ["", "a b", "op\n1", "op\"", &"x".repeat(65), "ünï"] {
            assert_eq!(OpId::adopt(bad), None, "{bad:?}");
        }
        assert!(OpId::adopt("cli-123_ab").is_some());
    }
}

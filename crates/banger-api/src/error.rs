//! The error body every failed request returns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A stable, machine-readable error code. Codes are part of the API: a code
/// is never renamed or reused for another meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed: bad JSON, a wrong type, an unknown field,
    /// an invalid name or path.
    InvalidArgument,
    /// The route or the named object does not exist.
    NotFound,
    /// The route exists but not for this HTTP method.
    MethodNotAllowed,
    /// The request body was larger than the daemon accepts.
    PayloadTooLarge,
    /// The request body was not `application/json`.
    UnsupportedMediaType,
    /// The request target (path and query) was longer than the daemon
    /// accepts.
    UriTooLong,
    /// The request's header fields were larger or more than the daemon
    /// accepts.
    HeadersTooLarge,
    /// The request body did not arrive in time.
    RequestTimeout,
    /// An object with that name already exists.
    AlreadyExists,
    /// The object is in a state that does not allow the operation.
    Conflict,
    /// The VM is not running.
    NotRunning,
    /// What the request was built on changed meanwhile (a workspace the
    /// guest edited between the listing and the stream): made again from
    /// a fresh start, it can succeed.
    Stale,
    /// The connecting user may not use this daemon.
    PermissionDenied,
    /// The daemon is shutting down.
    Unavailable,
    /// The operation was valid but failed while being carried out.
    OperationFailed,
    /// A bug in the daemon; the log line with the op id has the details.
    Internal,
}

impl ErrorCode {
    /// Every code, for exhaustive tests and documentation.
    pub const ALL: [Self; 16] = [
        Self::InvalidArgument,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::UriTooLong,
        Self::HeadersTooLarge,
        Self::RequestTimeout,
        Self::AlreadyExists,
        Self::Conflict,
        Self::NotRunning,
        Self::Stale,
        Self::PermissionDenied,
        Self::Unavailable,
        Self::OperationFailed,
        Self::Internal,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "headers_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::AlreadyExists => "already_exists",
            Self::Conflict => "conflict",
            Self::NotRunning => "not_running",
            Self::Stale => "stale",
            Self::PermissionDenied => "permission_denied",
            Self::Unavailable => "unavailable",
            Self::OperationFailed => "operation_failed",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every 4xx and 5xx response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message naming what was wrong.
    pub message: String,
    /// The request's operation id, as in the `X-Banger-Op-Id` header and the
    /// daemon's log.
    pub op_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_wire_name_matches_as_str() {
        for code in ErrorCode::ALL {
            let wire = serde_json::to_string(&code).unwrap();
            assert_eq!(wire, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn error_body_rejects_unknown_fields() {
        let err = serde_json::from_str::<ErrorBody>(
            r#"{"code":"not_found","message":"m","op_id":"op-1","extra":1}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }
}

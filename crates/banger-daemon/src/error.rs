//! The daemon's API error and the one place that maps errors to HTTP.

use axum::response::{IntoResponse, Response};
use banger_api::ErrorCode;
use http::StatusCode;

/// An error a route returns. The body is written by the op-id middleware,
/// which adds the request's op id (see [`crate::op_id`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable message naming the problem.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `invalid_argument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// `internal`: a bug or an unexpected OS failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

/// The HTTP status for each code. Every error response goes through here.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::UriTooLong => StatusCode::URI_TOO_LONG,
        ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::AlreadyExists
        | ErrorCode::Conflict
        | ErrorCode::NotRunning
        | ErrorCode::Stale => StatusCode::CONFLICT,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::OperationFailed | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The code for an error response that did not come from an [`ApiError`]
/// (a framework rejection or a caught panic), judged by its status.
pub fn code_for(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::URI_TOO_LONG => ErrorCode::UriTooLong,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeadersTooLarge,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
        StatusCode::CONFLICT => ErrorCode::Conflict,
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => ErrorCode::PermissionDenied,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_client_error() => ErrorCode::InvalidArgument,
        _ => ErrorCode::Internal,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = status_for(self.code).into_response();
        response.extensions_mut().insert(self);
        response
    }
}

impl From<banger_api::names::InvalidName> for ApiError {
    fn from(err: banger_api::names::InvalidName) -> Self {
        Self::invalid(err.to_string())
    }
}

impl From<crate::vms::VmError> for ApiError {
    fn from(err: crate::vms::VmError) -> Self {
        use crate::vms::VmError as E;
        let code = match &err {
            E::Store(_) | E::Service(_) | E::Artifacts(_) => {
                return match err {
                    E::Store(e) => e.into(),
                    E::Service(e) => e,
                    E::Artifacts(e) => e.into(),
                    other => Self::internal(error_chain(&other)),
                };
            }
            E::NoSuchVmExact(_) | E::NoSuchVm(_) | E::Deleted(_) | E::NoImage(_) => {
                ErrorCode::NotFound
            }
            E::Ambiguous { .. } | E::Invalid(_) | E::Name(_) => ErrorCode::InvalidArgument,
            E::NotRunning { .. } => ErrorCode::NotRunning,
            E::AlreadyRunning(_)
            | E::Running { .. }
            | E::NoAddress(_)
            | E::NoRoom(_)
            | E::Busy(_)
            | E::NoWorkspace(_) => ErrorCode::Conflict,
            E::NameTaken(_) => ErrorCode::AlreadyExists,
            E::Stale(_) => ErrorCode::Stale,
            E::Failed(_) => ErrorCode::OperationFailed,
            E::Internal(_) => ErrorCode::Internal,
        };
        Self::new(code, err.message())
    }
}

impl From<crate::artifacts::ArtifactError> for ApiError {
    fn from(err: crate::artifacts::ArtifactError) -> Self {
        use crate::artifacts::ArtifactError as E;
        let code = match &err {
            E::Store(_) | E::Service(_) => {
                return match err {
                    E::Store(e) => e.into(),
                    E::Service(e) => e,
                    other => Self::internal(error_chain(&other)),
                };
            }
            E::NotInCatalog { .. } | E::NoSuch { .. } => ErrorCode::NotFound,
            E::UnknownKernel(_) | E::Invalid(_) => ErrorCode::InvalidArgument,
            E::Busy { .. } | E::InUse { .. } => ErrorCode::Conflict,
            E::Exists(_) => ErrorCode::AlreadyExists,
            E::Internal(_) => ErrorCode::Internal,
            E::Build(_) | E::Stage { .. } | E::Publish { .. } | E::Record { .. } => {
                ErrorCode::OperationFailed
            }
        };
        Self::new(code, err.message())
    }
}

impl From<banger_store::StoreError> for ApiError {
    fn from(err: banger_store::StoreError) -> Self {
        use banger_store::StoreError;
        let code = match &err {
            StoreError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            _ => ErrorCode::Internal,
        };
        Self::new(code, error_chain(&err))
    }
}

/// `err` and its sources, joined with ": ", as one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_code_agree_for_codes_with_a_unique_status() {
        let shared_status = |c| {
            matches!(
                c,
                ErrorCode::AlreadyExists
                    | ErrorCode::Conflict
                    | ErrorCode::NotRunning
                    | ErrorCode::Stale
                    | ErrorCode::OperationFailed
            )
        };
        for code in ErrorCode::ALL.into_iter().filter(|c| !shared_status(*c)) {
            assert_eq!(code_for(status_for(code)), code);
        }
    }

    #[test]
    fn only_daemon_side_failures_are_5xx() {
        for code in ErrorCode::ALL {
            let daemon_side = matches!(
                code,
                ErrorCode::Unavailable | ErrorCode::OperationFailed | ErrorCode::Internal
            );
            assert_eq!(status_for(code).is_server_error(), daemon_side, "{code}");
            assert_eq!(status_for(code).is_client_error(), !daemon_side, "{code}");
        }
    }

    #[test]
    fn error_chain_joins_sources() {
        let err = banger_sys::LockError::Io {
            path: "/run/x.lock".into(),
            source: std::io::Error::from_raw_os_error(13),
        };
        let text = error_chain(&err);
        assert!(
            text.starts_with("lock file /run/x.lock: Permission denied"),
            "{text}"
        );
    }
}

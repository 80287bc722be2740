//! Request extractors whose every rejection is an [`ApiError`] naming the
//! problem: the field that had the wrong type, the unknown field, the
//! unknown query parameter, the wrong content type.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use banger_api::ErrorCode;
use bytes::Bytes;
use http::request::Parts;
use http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, required.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// A JSON body that may be omitted (an empty body means `T::default()`).
#[derive(Debug, Clone)]
pub struct OptionalJson<T>(pub T);

/// Query parameters; unknown ones are refused by `T`'s `deny_unknown_fields`.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_bytes(req, state).await?;
        if bytes.is_empty() {
            return Err(ApiError::invalid(
                "request body is empty, expected a JSON object",
            ));
        }
        parse(&bytes).map(Self)
    }
}

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        parse(&bytes).map(Self)
    }
}

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::invalid(format!(
                "invalid query string: {}",
                rejection
                    .body_text()
                    .trim_start_matches("Failed to deserialize query string: ")
            ))),
        }
    }
}

/// Reads the body after checking its declared type. A missing Content-Type
/// is accepted (an empty POST from curl has none); another type is not.
async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    if let Some(value) = req.headers().get(header::CONTENT_TYPE) {
        let text = value.to_str().unwrap_or("");
        let essence = text
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let json = essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"));
        if !json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("expected Content-Type: application/json, got {text:?}"),
            ));
        }
    }
    let limit = req
        .extensions()
        .get::<crate::http::BodyTimeout>()
        .map_or(DEFAULT_BODY_TIMEOUT, |t| t.0);
    match tokio::time::timeout(limit, Bytes::from_request(req, state)).await {
        Ok(read) => read.map_err(body_error),
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                limit.as_secs()
            ),
        )),
    }
}

/// The body deadline when no middleware set one (tests of a bare router).
const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
    } else {
        ApiError::invalid(format!(
            "cannot read request body: {}",
            rejection.body_text()
        ))
    }
}

/// Every body is a JSON object: serde would take an array for a struct
/// (field by position), so `[]` or `["name","/path"]` would pass as a
/// request made of defaults.
fn require_object(bytes: &[u8]) -> Result<(), ApiError> {
    let what = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => return Ok(()),
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "a number",
        // Not JSON at all: the parser names the problem.
        Some(_) => return Ok(()),
    };
    Err(ApiError::invalid(format!(
        "invalid JSON body: expected a JSON object, got {what}"
    )))
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    require_object(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." || path.is_empty() {
            ApiError::invalid(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::invalid(format!("invalid JSON body: field `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|err| ApiError::invalid(format!("invalid JSON body: {err}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Create {
        name: String,
        vcpus: u32,
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse::<Create>(br#"{"name":"a","vcpus":"two"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert!(err.message.contains("field `vcpus`"), "{}", err.message);
    }

    #[test]
    fn unknown_field_is_named() {
        let err = parse::<Create>(br#"{"name":"a","vcpus":2,"cpus":3}"#).unwrap_err();
        assert!(
            err.message.contains("unknown field `cpus`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn only_an_object_is_a_body() {
        #[derive(Debug, Deserialize, Default)]
        #[allow(dead_code, reason = "only its shape is deserialized")]
        struct Import {
            name: Option<String>,
            path: Option<String>,
        }
        for (body, what) in [
            ("[]", "an array"),
            (" [\"name\",\"/path\"]", "an array"),
            ("[null, null]", "an array"),
            ("\"stop\"", "a string"),
            ("null", "null"),
            ("true", "a boolean"),
            ("-1", "a number"),
        ] {
            let err = parse::<Import>(body.as_bytes()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument);
            assert!(
                err.message
                    .ends_with(&format!("expected a JSON object, got {what}")),
                "{body}: {}",
                err.message
            );
        }
        assert!(parse::<Import>(b" {}").is_ok());
    }

    #[test]
    fn malformed_json_and_trailing_garbage_are_refused() {
        let err = parse::<Create>(br#"{"name":"#).unwrap_err();
        assert!(
            err.message.starts_with("invalid JSON body"),
            "{}",
            err.message
        );
        let err = parse::<Create>(br#"{"name":"a","vcpus":2} x"#).unwrap_err();
        assert!(err.message.contains("trailing"), "{}", err.message);
        assert_eq!(
            parse::<Create>(br#"{"name":"a","vcpus":2}"#).unwrap(),
            Create {
                name: "a".into(),
                vcpus: 2
            }
        );
    }
}

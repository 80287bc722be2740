//! Path parameters, validated before any handler sees them.

use axum::extract::{FromRequestParts, Path};
use http::request::Parts;

use crate::error::ApiError;

/// A `{name}` path parameter that passed
/// [`banger_api::names::validate_artifact_name`].
#[derive(Debug, Clone)]
pub struct NameParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for NameParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        banger_api::names::validate_artifact_name("the", &name)?;
        Ok(Self(name))
    }
}

/// Validates a name from a request body.
pub fn check(what: &str, name: &str) -> Result<(), ApiError> {
    Ok(banger_api::names::validate_artifact_name(what, name)?)
}

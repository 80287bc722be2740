//! `/v1/kernels`.

use axum::Json;
use axum::extract::{Extension, State};
use banger_api::{CatalogEntry, Kernel, Operation, PullRequest};
use http::StatusCode;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::op_id::OpId;
use crate::routes::names::NameParam;
use crate::state::AppState;

/// The embedded kernel catalog.
#[utoipa::path(get, path = "/v1/kernels/catalog", operation_id = "kernel_catalog", tag = "kernels",
    responses((status = 200, body = [CatalogEntry]), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn catalog(State(state): State<AppState>) -> Json<Vec<CatalogEntry>> {
    Json(state.artifacts.kernel_catalog())
}

/// Kernels in the local store.
#[utoipa::path(get, path = "/v1/kernels", operation_id = "list_kernels", tag = "kernels",
    responses((status = 200, body = [Kernel]), (status = "4XX", body = banger_api::ErrorBody), (status = "5XX", body = banger_api::ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Kernel>>, ApiError> {
    state
        .artifacts
        .list_kernels()
        .map(Json)
        .map_err(ApiError::from)
}

/// One kernel.
#[utoipa::path(get, path = "/v1/kernels/{name}", operation_id = "get_kernel", tag = "kernels",
    params(("name" = String, Path, description = "Kernel name", pattern = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,62}$", min_length = 1, max_length = 63)),
    responses((status = 200, body = Kernel), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    NameParam(name): NameParam,
) -> Result<Json<Kernel>, ApiError> {
    state
        .artifacts
        .get_kernel(&name)
        .map(Json)
        .map_err(ApiError::from)
}

/// Pulls a catalog kernel: an operation to poll. A pull of a kernel being
/// pulled joins that operation; one already present succeeds at once.
#[utoipa::path(post, path = "/v1/kernels/pull", operation_id = "pull_kernel", tag = "kernels",
    request_body = PullRequest,
    responses((status = 202, body = Operation), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn pull(
    State(state): State<AppState>,
    Extension(op_id): Extension<OpId>,
    ApiJson(req): ApiJson<PullRequest>,
) -> Result<(StatusCode, Json<Operation>), ApiError> {
    // The name was checked as the body was read (ArtifactName).
    let op = state.artifacts.pull_kernel(op_id.as_str(), &req.name)?;
    Ok((StatusCode::ACCEPTED, Json(op)))
}

/// Deletes a kernel no image uses.
#[utoipa::path(delete, path = "/v1/kernels/{name}", operation_id = "delete_kernel", tag = "kernels",
    params(("name" = String, Path, description = "Kernel name", pattern = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,62}$", min_length = 1, max_length = 63)),
    responses((status = 204), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    NameParam(name): NameParam,
) -> Result<StatusCode, ApiError> {
    let artifacts = state.artifacts.clone();
    tokio::task::spawn_blocking(move || artifacts.delete_kernel(&name))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}

//! `/v1/images`.

use std::path::Path;

use axum::Json;
use axum::extract::{Extension, State};
use banger_api::{CatalogEntry, Image, ImportRequest, Operation, PullRequest};
use http::StatusCode;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::op_id::OpId;
use crate::routes::names::{NameParam, check};
use crate::state::AppState;

/// The embedded image catalog.
#[utoipa::path(get, path = "/v1/images/catalog", operation_id = "image_catalog", tag = "images",
    responses((status = 200, body = [CatalogEntry]), (status = "4XX", body = banger_api::ErrorBody), (status = "5XX", body = banger_api::ErrorBody)))]
pub async fn catalog(State(state): State<AppState>) -> Result<Json<Vec<CatalogEntry>>, ApiError> {
    state.artifacts.image_catalog().map(Json)
}

/// Images in the local store.
#[utoipa::path(get, path = "/v1/images", operation_id = "list_images", tag = "images",
    responses((status = 200, body = [Image]), (status = "4XX", body = banger_api::ErrorBody), (status = "5XX", body = banger_api::ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Image>>, ApiError> {
    state.artifacts.list_images().map(Json)
}

/// One image.
#[utoipa::path(get, path = "/v1/images/{name}", operation_id = "get_image", tag = "images",
    params(("name" = String, Path, description = "Image name")),
    responses((status = 200, body = Image), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    NameParam(name): NameParam,
) -> Result<Json<Image>, ApiError> {
    state.artifacts.get_image(&name).map(Json)
}

/// Pulls a catalog image: an operation to poll. A pull of an image being
/// pulled joins that operation; one already present succeeds at once.
#[utoipa::path(post, path = "/v1/images/pull", operation_id = "pull_image", tag = "images",
    request_body = PullRequest,
    responses((status = 202, body = Operation), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn pull(
    State(state): State<AppState>,
    Extension(op_id): Extension<OpId>,
    ApiJson(req): ApiJson<PullRequest>,
) -> Result<(StatusCode, Json<Operation>), ApiError> {
    check("image", &req.name)?;
    let op = state.artifacts.pull_image(op_id.as_str(), &req.name)?;
    Ok((StatusCode::ACCEPTED, Json(op)))
}

/// Imports a root file system tarball or an ext4 file as a new image.
#[utoipa::path(post, path = "/v1/images/import", operation_id = "import_image", tag = "images",
    request_body = ImportRequest,
    responses((status = 202, body = Operation), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn import(
    State(state): State<AppState>,
    Extension(op_id): Extension<OpId>,
    ApiJson(req): ApiJson<ImportRequest>,
) -> Result<(StatusCode, Json<Operation>), ApiError> {
    check("image", &req.name)?;
    if let Some(kernel) = &req.kernel {
        check("kernel", kernel)?;
    }
    let op = state.artifacts.import_image(
        op_id.as_str(),
        &req.name,
        Path::new(&req.path),
        req.kernel.as_deref(),
    )?;
    Ok((StatusCode::ACCEPTED, Json(op)))
}

/// Deletes an image no VM uses.
#[utoipa::path(delete, path = "/v1/images/{name}", operation_id = "delete_image", tag = "images",
    params(("name" = String, Path, description = "Image name")),
    responses((status = 204), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    NameParam(name): NameParam,
) -> Result<StatusCode, ApiError> {
    let artifacts = state.artifacts.clone();
    tokio::task::spawn_blocking(move || artifacts.delete_image(&name))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}

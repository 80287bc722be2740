//! `/v1/images`.

use std::path::Path;

use axum::Json;
use axum::extract::{Extension, State};
use banger_api::{
    CachePruneReport, CachePruneRequest, CatalogEntry, Image, ImagePullRequest, ImportRequest,
    Operation,
};
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
    state
        .artifacts
        .image_catalog()
        .map(Json)
        .map_err(ApiError::from)
}

/// Images in the local store.
#[utoipa::path(get, path = "/v1/images", operation_id = "list_images", tag = "images",
    responses((status = 200, body = [Image]), (status = "4XX", body = banger_api::ErrorBody), (status = "5XX", body = banger_api::ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Image>>, ApiError> {
    state
        .artifacts
        .list_images()
        .map(Json)
        .map_err(ApiError::from)
}

/// One image.
#[utoipa::path(get, path = "/v1/images/{name}", operation_id = "get_image", tag = "images",
    params(("name" = String, Path, description = "Image name", pattern = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,62}$", min_length = 1, max_length = 63)),
    responses((status = 200, body = Image), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    NameParam(name): NameParam,
) -> Result<Json<Image>, ApiError> {
    state
        .artifacts
        .get_image(&name)
        .map(Json)
        .map_err(ApiError::from)
}

/// Pulls a catalog image, or an image from an OCI or Docker registry (a
/// `name` with `/`, `:` or `@`): an operation to poll. A pull of an image
/// being pulled joins that operation; a catalog image already present
/// succeeds at once.
#[utoipa::path(post, path = "/v1/images/pull", operation_id = "pull_image", tag = "images",
    request_body = ImagePullRequest,
    responses((status = 202, body = Operation), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn pull(
    State(state): State<AppState>,
    Extension(op_id): Extension<OpId>,
    ApiJson(req): ApiJson<ImagePullRequest>,
) -> Result<(StatusCode, Json<Operation>), ApiError> {
    if !banger_api::names::is_image_reference(&req.name) {
        check("image", &req.name)?;
        if req.image_name.is_some() || req.kernel.is_some() || req.insecure {
            return Err(ApiError::invalid(
                "image_name, kernel and insecure apply only to a registry reference; a catalog image has its own",
            ));
        }
        let op = state.artifacts.pull_image(op_id.as_str(), &req.name)?;
        return Ok((StatusCode::ACCEPTED, Json(op)));
    }
    if let Some(name) = &req.image_name {
        check("image", name)?;
    }
    if let Some(kernel) = &req.kernel {
        check("kernel", kernel)?;
    }
    let op = state.artifacts.pull_oci(op_id.as_str(), &req)?;
    Ok((StatusCode::ACCEPTED, Json(op)))
}

/// Removes the cached layer blobs that no running pull uses (or, with
/// `dry_run`, only counts them).
#[utoipa::path(post, path = "/v1/images/cache/prune", operation_id = "prune_image_cache", tag = "images",
    request_body = CachePruneRequest,
    responses((status = 200, body = CachePruneReport), (status = "4XX", body = banger_api::ErrorBody), (status = "5XX", body = banger_api::ErrorBody)))]
pub async fn prune_cache(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CachePruneRequest>,
) -> Result<Json<CachePruneReport>, ApiError> {
    state
        .artifacts
        .prune_blobs(req.dry_run)
        .map(Json)
        .map_err(ApiError::from)
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
    // The names were checked as the body was read (ArtifactName).
    // The file is opened and checked here: off the async workers, so a
    // slow file system cannot stall the API.
    let artifacts = state.artifacts.clone();
    let op_id = op_id.as_str().to_owned();
    let op = tokio::task::spawn_blocking(move || {
        artifacts.import_image(
            &op_id,
            &req.name,
            Path::new(&req.path),
            req.kernel.as_deref(),
        )
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok((StatusCode::ACCEPTED, Json(op)))
}

/// Deletes an image no VM uses.
#[utoipa::path(delete, path = "/v1/images/{name}", operation_id = "delete_image", tag = "images",
    params(("name" = String, Path, description = "Image name", pattern = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,62}$", min_length = 1, max_length = 63)),
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

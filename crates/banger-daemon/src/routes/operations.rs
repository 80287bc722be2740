//! `/v1/operations`.

use axum::Json;
use axum::extract::{Path, State};
use banger_api::{ErrorCode, MAX_WAIT_MS, Operation, OperationQuery};

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::op_id::OpId;
use crate::state::AppState;

fn find(
    state: &AppState,
    id: &str,
) -> Result<std::sync::Arc<crate::operations::OpHandle>, ApiError> {
    if OpId::adopt(id).is_none() {
        return Err(ApiError::invalid(format!("{id:?} is not an operation id")));
    }
    state.ops.get(id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no operation {id:?} (ended ones are kept for an hour)"),
        )
    })
}

/// Every operation still remembered.
#[utoipa::path(get, path = "/v1/operations", operation_id = "list_operations", tag = "operations",
    responses((status = 200, body = [Operation]), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Json<Vec<Operation>> {
    Json(state.ops.list())
}

/// Polls one operation; with `wait_ms`, a long poll that answers as soon
/// as the operation changes stage or ends.
#[utoipa::path(get, path = "/v1/operations/{id}", operation_id = "get_operation", tag = "operations",
    params(("id" = String, Path, description = "Operation id", pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64), OperationQuery),
    responses((status = 200, body = Operation), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<OperationQuery>,
) -> Result<Json<Operation>, ApiError> {
    if q.wait_ms > MAX_WAIT_MS {
        return Err(ApiError::invalid(format!(
            "wait_ms {} is over the maximum of {MAX_WAIT_MS}",
            q.wait_ms
        )));
    }
    let op = find(&state, &id)?;
    Ok(Json(
        op.changed_within(std::time::Duration::from_millis(q.wait_ms))
            .await,
    ))
}

/// Cancels a running operation; it ends as `cancelled` with nothing
/// published. Cancelling an ended one changes nothing.
#[utoipa::path(delete, path = "/v1/operations/{id}", operation_id = "cancel_operation", tag = "operations",
    params(("id" = String, Path, description = "Operation id", pattern = r"^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)),
    responses((status = 200, body = Operation), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    let op = find(&state, &id)?;
    if !op.is_ended() {
        tracing::info!(operation = id, "cancel requested");
        op.cancel.cancel();
    }
    Ok(Json(op.snapshot()))
}

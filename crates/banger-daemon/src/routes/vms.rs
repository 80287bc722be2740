//! `/v1/vms`.

use axum::Json;
use axum::extract::State;
use banger_api::{ListVmsQuery, VmState, VmSummary};
use banger_store::VmRecord;

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Every VM in the store, oldest first.
#[utoipa::path(
    get,
    path = "/v1/vms",
    operation_id = "list_vms",
    tag = "vms",
    params(ListVmsQuery),
    responses(
        (status = 200, description = "The VMs", body = [VmSummary]),
        (status = "4XX", description = "Bad request", body = banger_api::ErrorBody),
        (status = "5XX", description = "The store failed", body = banger_api::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(_query): ApiQuery<ListVmsQuery>,
) -> Result<Json<Vec<VmSummary>>, ApiError> {
    let store = state.store.clone();
    let records = tokio::task::spawn_blocking(move || store.list_vms())
        .await
        .map_err(|e| ApiError::internal(format!("store query task failed: {e}")))??;
    records
        .into_iter()
        .map(summary)
        .collect::<Result<_, _>>()
        .map(Json)
}

fn summary(record: VmRecord) -> Result<VmSummary, ApiError> {
    let state = VmState::parse(&record.state).ok_or_else(|| {
        ApiError::internal(format!(
            "vm {:?} has unknown state {:?} in the store",
            record.name, record.state
        ))
    })?;
    Ok(VmSummary {
        id: record.id,
        name: record.name,
        state,
        image: record.image,
        created_at: record.created_at,
    })
}

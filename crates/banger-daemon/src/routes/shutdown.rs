//! `POST /v1/shutdown`.

use axum::Json;
use axum::extract::State;
use banger_api::{ShutdownAccepted, ShutdownRequest};
use http::StatusCode;

use crate::extract::OptionalJson;
use crate::state::AppState;

/// Stops the daemon after in-flight requests finish. VMs keep running.
#[utoipa::path(
    post,
    path = "/v1/shutdown",
    tag = "daemon",
    request_body(content = Option<ShutdownRequest>, description = "Optional; `{}` or no body"),
    responses(
        (status = 202, description = "The daemon is stopping", body = ShutdownAccepted),
        (status = "4XX", description = "Bad request", body = banger_api::ErrorBody),
    )
)]
pub async fn shutdown(
    State(state): State<AppState>,
    OptionalJson(_request): OptionalJson<ShutdownRequest>,
) -> (StatusCode, Json<ShutdownAccepted>) {
    tracing::info!("shutdown requested over the API");
    state.shutdown.send_replace(true);
    (
        StatusCode::ACCEPTED,
        Json(ShutdownAccepted {
            pid: std::process::id(),
        }),
    )
}

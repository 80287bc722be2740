//! `GET /v1/ping`.

use axum::Json;
use axum::extract::State;
use banger_api::Ping;

use crate::state::AppState;

/// Daemon identity and liveness.
#[utoipa::path(
    get,
    path = "/v1/ping",
    tag = "daemon",
    responses(
        (status = 200, description = "The daemon answers", body = Ping),
        (status = "4XX", description = "Bad request", body = banger_api::ErrorBody),
    )
)]
pub async fn ping(State(state): State<AppState>) -> Json<Ping> {
    Json(Ping {
        version: banger_buildinfo::VERSION.to_owned(),
        commit: banger_buildinfo::COMMIT.to_owned(),
        built_at: banger_buildinfo::BUILT_AT.to_owned(),
        pid: std::process::id(),
        uptime_secs: state.started.elapsed().as_secs(),
        schema_version: state.schema_version,
    })
}

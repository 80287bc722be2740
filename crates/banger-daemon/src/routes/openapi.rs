//! `GET /v1/openapi.json`.

use axum::Json;

/// This API's OpenAPI 3 document, generated from the code.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "get_openapi",
    tag = "daemon",
    responses(
        (status = 200, description = "An OpenAPI 3.1 document", content_type = "application/json"),
        (status = "4XX", description = "Bad request", body = banger_api::ErrorBody),
    )
)]
pub async fn document() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

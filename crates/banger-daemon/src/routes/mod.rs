//! The API's routes. One file per resource; [`router`] wires them with the
//! fallbacks and layers every request passes through.

pub mod images;
pub mod kernels;
pub mod names;
pub mod openapi;
pub mod operations;
pub mod ping;
pub mod shutdown;
pub mod vms;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use banger_api::{ErrorCode, routes};
use http::{Method, Uri};

use crate::error::ApiError;
use crate::state::AppState;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The full API: routes, JSON fallbacks for unknown routes and methods,
/// panic catching, body limit and the op-id middleware (outermost).
pub fn router(state: AppState) -> Router {
    let limits = state.http;
    Router::new()
        .route(routes::PING, get(ping::ping))
        .route(routes::VMS, get(vms::list).post(vms::create))
        .route(
            routes::VM,
            get(vms::get).patch(vms::set).delete(vms::delete),
        )
        .route(routes::VM_START, post(vms::start))
        .route(routes::VM_STOP, post(vms::stop))
        .route(routes::VM_KILL, post(vms::kill))
        .route(routes::VM_RESTART, post(vms::restart))
        .route(routes::VM_SSH, get(vms::ssh))
        .route(routes::VM_CONSOLE, get(vms::console))
        .route(
            routes::VM_WORKSPACE,
            axum::routing::put(vms::prepare_workspace)
                // The tar is streamed into the guest, never buffered.
                .layer(DefaultBodyLimit::disable()),
        )
        .route(routes::VM_WORKSPACE_EXPORT, get(vms::export_workspace))
        .route(routes::VM_WORKSPACE_OBJECTS, get(vms::held_objects))
        .route(routes::DOCTOR, get(vms::doctor))
        .route(routes::SHUTDOWN, post(shutdown::shutdown))
        .route(routes::OPENAPI, get(openapi::document))
        .route(routes::KERNELS, get(kernels::list))
        .route(routes::KERNEL_CATALOG, get(kernels::catalog))
        .route(routes::KERNEL_PULL, post(kernels::pull))
        .route(routes::KERNEL, get(kernels::get).delete(kernels::delete))
        .route(routes::IMAGES, get(images::list))
        .route(routes::IMAGE_CATALOG, get(images::catalog))
        .route(routes::IMAGE_PULL, post(images::pull))
        .route(routes::IMAGE_CACHE_PRUNE, post(images::prune_cache))
        .route(routes::IMAGE_IMPORT, post(images::import))
        .route(routes::IMAGE, get(images::get).delete(images::delete))
        .route(routes::OPERATIONS, get(operations::list))
        .route(
            routes::OPERATION,
            get(operations::get).delete(operations::cancel),
        )
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            crate::http::check_head,
        ))
        .layer(axum::middleware::from_fn(crate::op_id::layer))
        .with_state(state)
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no route {method} {}; see GET {}",
            uri.path(),
            routes::OPENAPI
        ),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not accept {method}", uri.path()),
    )
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ApiError::internal("the daemon hit a bug handling this request; its log has the details")
        .into_response()
}

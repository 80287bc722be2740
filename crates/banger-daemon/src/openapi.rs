//! The OpenAPI document, generated from the route annotations. The copy
//! committed at `docs/openapi.json` is checked against it by a test.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "banger daemon API",
        description = "HTTP/1.1 + JSON over bangerd's unix socket. Every error is `{code, message, op_id}`; every response carries `X-Banger-Op-Id`.",
        license(name = "Apache-2.0"),
    ),
    paths(
        crate::routes::ping::ping,
        crate::routes::vms::list,
        crate::routes::vms::create,
        crate::routes::vms::get,
        crate::routes::vms::start,
        crate::routes::vms::stop,
        crate::routes::vms::kill,
        crate::routes::vms::restart,
        crate::routes::vms::set,
        crate::routes::vms::delete,
        crate::routes::vms::ssh,
        crate::routes::vms::console,
        crate::routes::vms::doctor,
        crate::routes::shutdown::shutdown,
        crate::routes::openapi::document,
        crate::routes::kernels::catalog,
        crate::routes::kernels::list,
        crate::routes::kernels::get,
        crate::routes::kernels::pull,
        crate::routes::kernels::delete,
        crate::routes::images::catalog,
        crate::routes::images::list,
        crate::routes::images::get,
        crate::routes::images::pull,
        crate::routes::images::prune_cache,
        crate::routes::images::import,
        crate::routes::images::delete,
        crate::routes::operations::list,
        crate::routes::operations::get,
        crate::routes::operations::cancel,
    ),
    components(schemas(banger_api::ErrorBody, banger_api::ErrorCode)),
    tags(
        (name = "daemon", description = "The daemon itself"),
        (name = "vms", description = "Virtual machines"),
        (name = "kernels", description = "Guest kernels: catalog, store, pulls"),
        (name = "images", description = "Root file systems: catalog, store, pulls, imports"),
        (name = "operations", description = "Long-running work: poll and cancel"),
    )
)]
struct ApiDoc;

/// The document, with the version of this build.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = banger_buildinfo::VERSION.to_owned();
    doc
}

/// The document as committed: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut text = document().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

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
        crate::routes::vms::prepare_workspace,
        crate::routes::vms::export_workspace,
        crate::routes::vms::held_objects,
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

/// The document, with the version of this build and the links a client
/// (or a stateful test) follows from one call to the next. As JSON: the
/// links are added to it directly (utoipa writes a link's `operationId`
/// as `operation_id`, which no OpenAPI reader knows).
pub fn document() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = banger_buildinfo::VERSION.to_owned();
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    add_links(&mut doc);
    doc
}

/// Which VM a create made, which operation a pull started, which VM or
/// operation a list holds: links from those responses to the calls that
/// take them.
fn add_links(doc: &mut serde_json::Value) {
    const VM_OPS: [&str; 11] = [
        "get_vm",
        "vm_console",
        "export_workspace",
        "held_objects",
        "vm_ssh_target",
        "set_vm",
        "start_vm",
        "stop_vm",
        "kill_vm",
        "restart_vm",
        "delete_vm",
    ];
    const OP_OPS: [&str; 2] = ["get_operation", "cancel_operation"];
    let to = |ops: &[&str], param: &str, expr: &str| -> Vec<(String, String, String)> {
        ops.iter()
            .map(|op| ((*op).to_owned(), param.to_owned(), expr.to_owned()))
            .collect()
    };
    let created = [
        to(&VM_OPS, "vm", "$response.body#/target"),
        to(&OP_OPS, "id", "$response.body#/id"),
    ];
    let pulled = [
        to(
            &["get_kernel", "delete_kernel"],
            "name",
            "$response.body#/target",
        ),
        to(&OP_OPS, "id", "$response.body#/id"),
    ];
    let links = [
        ("/v1/vms", "post", "202", created.concat()),
        (
            "/v1/vms",
            "get",
            "200",
            to(&VM_OPS, "vm", "$response.body#/0/name"),
        ),
        ("/v1/kernels/pull", "post", "202", pulled.concat()),
        (
            "/v1/operations",
            "get",
            "200",
            to(&OP_OPS, "id", "$response.body#/0/id"),
        ),
    ];
    for (path, method, status, targets) in links {
        let Some(response) = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}/responses/{status}",
                path.replace('/', "~1")
            ))
            .and_then(serde_json::Value::as_object_mut)
        else {
            continue;
        };
        let entry = response
            .entry("links")
            .or_insert_with(|| serde_json::json!({}));
        for (op, param, expr) in targets {
            entry[op.as_str()] = serde_json::json!({
                "operationId": op,
                "parameters": { param: expr },
            });
        }
    }
}

/// The document as committed: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

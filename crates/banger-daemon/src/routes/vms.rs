//! `/v1/vms`: the VM lifecycle. Every handler runs the service on a
//! blocking thread; slow steps hold only their own VM's lock.

use axum::Json;
use axum::extract::{Extension, FromRequestParts, Path, State};
use banger_api::{
    ConsoleChunk, ConsoleQuery, CreateVmRequest, DeleteVmQuery, DoctorReport, ListVmsQuery,
    Operation, PrepareWorkspaceQuery, SetVmRequest, SshTarget, Vm, VmSummary,
};
use http::StatusCode;
use http::request::Parts;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::op_id::OpId;
use crate::state::AppState;
use crate::vms::{VmError, Vms};

/// A `{vm}` path parameter: a name or an id (a prefix of an id for views),
/// checked against the VM name rules before anything looks it up. Which
/// forms a route takes is the service's choice ([`crate::vms::Lookup`]).
#[derive(Debug)]
pub struct VmRef(pub String);

impl<S: Send + Sync> FromRequestParts<S> for VmRef {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(reference) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        banger_api::names::validate_name("vm reference", &reference)?;
        Ok(Self(reference))
    }
}

/// Runs `work` on the VM service off the async workers; its `VmError`
/// becomes the API's error here.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Vms) -> Result<T, VmError> + Send + 'static,
) -> Result<T, ApiError> {
    let vms = state.vms.clone();
    let op_id = crate::op_id::current();
    tokio::task::spawn_blocking(move || {
        let _scope = op_id.map(|id| banger_helper::op_id_scope(id.as_str()));
        work(&vms)
    })
    .await
    .map_err(|e| ApiError::internal(format!("vm task failed: {e}")))?
    .map_err(ApiError::from)
}

/// Every VM in the store, oldest first.
#[utoipa::path(get, path = "/v1/vms", operation_id = "list_vms", tag = "vms",
    params(ListVmsQuery),
    responses(
        (status = 200, description = "The VMs", body = [VmSummary]),
        (status = "4XX", description = "Bad request", body = banger_api::ErrorBody),
        (status = "5XX", description = "The store failed", body = banger_api::ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(_query): ApiQuery<ListVmsQuery>,
) -> Result<Json<Vec<VmSummary>>, ApiError> {
    blocking(&state, Vms::list).await.map(Json)
}

/// Creates a VM and, unless `no_start`, starts it: an operation to poll.
/// Names and sizes are checked before anything is stored.
#[utoipa::path(post, path = "/v1/vms", operation_id = "create_vm", tag = "vms",
    request_body = CreateVmRequest,
    responses((status = 202, body = Operation), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(op_id): Extension<OpId>,
    ApiJson(req): ApiJson<CreateVmRequest>,
) -> Result<(StatusCode, Json<Operation>), ApiError> {
    let vms = state.vms.clone();
    let op_id = op_id.as_str().to_owned();
    let op = tokio::task::spawn_blocking(move || vms.create(&op_id, req))
        .await
        .map_err(|e| ApiError::internal(format!("vm task failed: {e}")))??;
    Ok((StatusCode::ACCEPTED, Json(op)))
}

/// One VM by name, full id, or unambiguous id prefix.
#[utoipa::path(get, path = "/v1/vms/{vm}", operation_id = "get_vm", tag = "vms",
    params(("vm" = String, Path, description = "VM name, full id, or an unambiguous id prefix", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", min_length = 1, max_length = 63)),
    responses((status = 200, body = Vm), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn get(State(state): State<AppState>, VmRef(r): VmRef) -> Result<Json<Vm>, ApiError> {
    blocking(&state, move |v| v.get(&r)).await.map(Json)
}

/// Starts a stopped VM and waits for its SSH server.
#[utoipa::path(post, path = "/v1/vms/{vm}/start", operation_id = "start_vm", tag = "vms",
    params(("vm" = String, Path, description = "VM name or full id (exact)", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", min_length = 1, max_length = 63)),
    responses((status = 200, body = Vm), (status = "4XX", body = banger_api::ErrorBody), (status = "5XX", body = banger_api::ErrorBody)))]
pub async fn start(State(state): State<AppState>, VmRef(r): VmRef) -> Result<Json<Vm>, ApiError> {
    blocking(&state, move |v| v.start(&r)).await.map(Json)
}

/// Stops a VM gracefully: poweroff over SSH, the ACPI power button, kill.
#[utoipa::path(post, path = "/v1/vms/{vm}/stop", operation_id = "stop_vm", tag = "vms",
    params(("vm" = String, Path, description = "VM name or full id (exact)", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", min_length = 1, max_length = 63)),
    responses((status = 200, body = Vm), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn stop(State(state): State<AppState>, VmRef(r): VmRef) -> Result<Json<Vm>, ApiError> {
    blocking(&state, move |v| v.stop(&r)).await.map(Json)
}

/// Kills a VM's VMM at once.
#[utoipa::path(post, path = "/v1/vms/{vm}/kill", operation_id = "kill_vm", tag = "vms",
    params(("vm" = String, Path, description = "VM name or full id (exact)", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", min_length = 1, max_length = 63)),
    responses((status = 200, body = Vm), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn kill(State(state): State<AppState>, VmRef(r): VmRef) -> Result<Json<Vm>, ApiError> {
    blocking(&state, move |v| v.kill(&r)).await.map(Json)
}

/// Stops (if running) then starts a VM.
#[utoipa::path(post, path = "/v1/vms/{vm}/restart", operation_id = "restart_vm", tag = "vms",
    params(("vm" = String, Path, description = "VM name or full id (exact)", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", min_length = 1, max_length = 63)),
    responses((status = 200, body = Vm), (status = "4XX", body = banger_api::ErrorBody), (status = "5XX", body = banger_api::ErrorBody)))]
pub async fn restart(State(state): State<AppState>, VmRef(r): VmRef) -> Result<Json<Vm>, ApiError> {
    blocking(&state, move |v| v.restart(&r)).await.map(Json)
}

/// Resizes a stopped VM (vcpus, memory, work disk growth).
#[utoipa::path(patch, path = "/v1/vms/{vm}", operation_id = "set_vm", tag = "vms",
    params(("vm" = String, Path, description = "VM name or full id (exact)", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", min_length = 1, max_length = 63)),
    request_body = SetVmRequest,
    responses((status = 200, body = Vm), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    VmRef(r): VmRef,
    ApiJson(req): ApiJson<SetVmRequest>,
) -> Result<Json<Vm>, ApiError> {
    blocking(&state, move |v| v.set(&r, &req)).await.map(Json)
}

/// Deletes a VM and everything it has on the host; a running one only
/// with `force=true`.
#[utoipa::path(delete, path = "/v1/vms/{vm}", operation_id = "delete_vm", tag = "vms",
    params(("vm" = String, Path, description = "VM name or full id (exact)", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", min_length = 1, max_length = 63), DeleteVmQuery),
    responses((status = 204), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    VmRef(r): VmRef,
    ApiQuery(q): ApiQuery<DeleteVmQuery>,
) -> Result<StatusCode, ApiError> {
    blocking(&state, move |v| v.delete(&r, q.force)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How to SSH into a running VM with banger's key and known_hosts.
#[utoipa::path(get, path = "/v1/vms/{vm}/ssh", operation_id = "vm_ssh_target", tag = "vms",
    params(("vm" = String, Path, description = "VM name, full id, or an unambiguous id prefix", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", min_length = 1, max_length = 63)),
    responses((status = 200, body = SshTarget), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn ssh(
    State(state): State<AppState>,
    VmRef(r): VmRef,
) -> Result<Json<SshTarget>, ApiError> {
    blocking(&state, move |v| v.ssh_target(&r)).await.map(Json)
}

/// The VM's serial console log from a byte offset.
#[utoipa::path(get, path = "/v1/vms/{vm}/console", operation_id = "vm_console", tag = "vms",
    params(("vm" = String, Path, description = "VM name, full id, or an unambiguous id prefix", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", min_length = 1, max_length = 63), ConsoleQuery),
    responses((status = 200, body = ConsoleChunk), (status = "4XX", body = banger_api::ErrorBody)))]
pub async fn console(
    State(state): State<AppState>,
    VmRef(r): VmRef,
    ApiQuery(q): ApiQuery<ConsoleQuery>,
) -> Result<Json<ConsoleChunk>, ApiError> {
    blocking(&state, move |v| v.console(&r, q.offset))
        .await
        .map(Json)
}

/// What banger finds about this host: KVM (probed for real), tools, root.
#[utoipa::path(get, path = "/v1/doctor", operation_id = "doctor", tag = "daemon",
    responses((status = 200, body = DoctorReport), (status = "5XX", body = banger_api::ErrorBody)))]
pub async fn doctor(State(state): State<AppState>) -> Result<Json<DoctorReport>, ApiError> {
    blocking(&state, |v| Ok(crate::doctor::report(&v.host_facts())))
        .await
        .map(Json)
}

/// How long a workspace stream may go without a byte.
const WORKSPACE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Replaces a running VM's workspace with the checkout the body carries: a
/// tar stream (paths relative to the checkout's top, `.git` included) piped
/// unparsed into the guest's `tar -x` over one SSH session, then recorded.
/// 409 when the VM is not running or a start, stop or delete holds it.
#[utoipa::path(put, path = "/v1/vms/{vm}/workspace", operation_id = "prepare_workspace", tag = "vms",
    params(("vm" = String, Path, description = "VM name or full id (exact)", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", min_length = 1, max_length = 63), PrepareWorkspaceQuery),
    request_body(content = banger_api::workspace::Binary, content_type = "application/x-tar", description = "The checkout as a tar stream"),
    responses((status = 200, body = Vm), (status = "4XX", body = banger_api::ErrorBody), (status = "5XX", body = banger_api::ErrorBody)))]
pub async fn prepare_workspace(
    State(state): State<AppState>,
    VmRef(r): VmRef,
    ApiQuery(q): ApiQuery<PrepareWorkspaceQuery>,
    timeout: Option<Extension<crate::http::BodyTimeout>>,
    body: axum::body::Body,
) -> Result<Json<Vm>, ApiError> {
    crate::vms::workspace::check_query(&q)?;
    // Per chunk, and longer than a JSON body gets: the CLI sends a chunk
    // per 256 KiB packed, and a cold `.git` can be slow to read.
    let idle = timeout.map_or(WORKSPACE_IDLE, |t| t.0.0.max(WORKSPACE_IDLE));
    let mut stream = crate::stream::BodyReader::spawn(body, idle);
    blocking(&state, move |v| v.prepare_workspace(&r, &q, &mut stream))
        .await
        .map(Json)
}

/// The running VM's changes since its last workspace prepare, as a binary
/// git patch that `git apply --index` takes on the host checkout as it was
/// prepared; empty when nothing changed. The guest is left as it was.
#[utoipa::path(get, path = "/v1/vms/{vm}/workspace/export", operation_id = "export_workspace", tag = "vms",
    params(("vm" = String, Path, description = "VM name, full id, or an unambiguous id prefix", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", min_length = 1, max_length = 63)),
    responses((status = 200, content_type = "text/x-diff", body = banger_api::workspace::Binary), (status = "4XX", body = banger_api::ErrorBody), (status = "5XX", body = banger_api::ErrorBody)))]
pub async fn export_workspace(
    State(state): State<AppState>,
    VmRef(r): VmRef,
) -> Result<([(http::HeaderName, &'static str); 1], Vec<u8>), ApiError> {
    let patch = blocking(&state, move |v| v.export_workspace(&r)).await?;
    Ok(([(http::header::CONTENT_TYPE, "text/x-diff")], patch))
}

/// The git object files the VM's workspace already holds (content-named:
/// loose objects and packs), which a prepare may leave out of its stream;
/// none when the VM is not running or has no workspace.
#[utoipa::path(get, path = "/v1/vms/{vm}/workspace/objects", operation_id = "held_objects", tag = "vms",
    params(("vm" = String, Path, description = "VM name, full id, or an unambiguous id prefix", pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", min_length = 1, max_length = 63)),
    responses((status = 200, body = banger_api::workspace::HeldObjects), (status = "4XX", body = banger_api::ErrorBody), (status = "5XX", body = banger_api::ErrorBody)))]
pub async fn held_objects(
    State(state): State<AppState>,
    VmRef(r): VmRef,
) -> Result<Json<banger_api::workspace::HeldObjects>, ApiError> {
    blocking(&state, move |v| v.held_objects(&r))
        .await
        .map(Json)
}

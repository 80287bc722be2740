//! The API's routes, one constant each, so the router and the client name
//! them identically.

/// `GET`: daemon identity and liveness.
pub const PING: &str = "/v1/ping";
/// `GET`: the VMs in the store; `POST`: create one (an operation).
pub const VMS: &str = "/v1/vms";
/// `GET`, `PATCH` (resize), `DELETE`: one VM by id, name or unique prefix.
pub const VM: &str = "/v1/vms/{vm}";
/// `POST`: start a VM.
pub const VM_START: &str = "/v1/vms/{vm}/start";
/// `POST`: stop a VM gracefully.
pub const VM_STOP: &str = "/v1/vms/{vm}/stop";
/// `POST`: kill a VM's VMM at once.
pub const VM_KILL: &str = "/v1/vms/{vm}/kill";
/// `POST`: stop then start a VM.
pub const VM_RESTART: &str = "/v1/vms/{vm}/restart";
/// `GET`: how to SSH into a VM.
pub const VM_SSH: &str = "/v1/vms/{vm}/ssh";
/// `GET`: a VM's serial console log from an offset.
pub const VM_CONSOLE: &str = "/v1/vms/{vm}/console";
/// `PUT`: (re)sync a running VM's workspace from a tar stream.
pub const VM_WORKSPACE: &str = "/v1/vms/{vm}/workspace";
/// `GET`: the guest's changes since the last prepare, as a git patch.
pub const VM_WORKSPACE_EXPORT: &str = "/v1/vms/{vm}/workspace/export";
/// `GET`: the git objects the VM's workspace already holds.
pub const VM_WORKSPACE_OBJECTS: &str = "/v1/vms/{vm}/workspace/objects";
/// `GET`: what banger found about this host (KVM, tools).
pub const DOCTOR: &str = "/v1/doctor";
/// `POST`: stop the daemon cleanly.
pub const SHUTDOWN: &str = "/v1/shutdown";
/// `GET`: the OpenAPI 3 document describing these routes.
pub const OPENAPI: &str = "/v1/openapi.json";
/// `GET`: the kernels in the store.
pub const KERNELS: &str = "/v1/kernels";
/// `GET`: the embedded kernel catalog.
pub const KERNEL_CATALOG: &str = "/v1/kernels/catalog";
/// `POST`: pull a catalog kernel (an operation).
pub const KERNEL_PULL: &str = "/v1/kernels/pull";
/// `GET`, `DELETE`: one kernel.
pub const KERNEL: &str = "/v1/kernels/{name}";
/// `GET`: the images in the store.
pub const IMAGES: &str = "/v1/images";
/// `GET`: the embedded image catalog.
pub const IMAGE_CATALOG: &str = "/v1/images/catalog";
/// `POST`: pull a catalog image (an operation).
pub const IMAGE_PULL: &str = "/v1/images/pull";
/// `POST`: remove cached layer blobs no running pull uses.
pub const IMAGE_CACHE_PRUNE: &str = "/v1/images/cache/prune";
/// `POST`: import a tarball or ext4 file as an image (an operation).
pub const IMAGE_IMPORT: &str = "/v1/images/import";
/// `GET`, `DELETE`: one image.
pub const IMAGE: &str = "/v1/images/{name}";
/// `GET`: every operation still remembered.
pub const OPERATIONS: &str = "/v1/operations";
/// `GET`: poll one operation; `DELETE`: cancel it.
pub const OPERATION: &str = "/v1/operations/{id}";

/// A route with its `{param}` filled in (the value must already be valid:
/// names and ids never need escaping).
pub fn with_param(route: &str, value: &str) -> String {
    match route.find('{') {
        Some(start) => {
            let end = route[start..]
                .find('}')
                .map_or(route.len(), |e| start + e + 1);
            format!("{}{value}{}", &route[..start], &route[end..])
        }
        None => route.to_owned(),
    }
}

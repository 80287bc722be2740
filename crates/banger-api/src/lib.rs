//! The wire types of banger's daemon API: every request and response body
//! that crosses the unix socket, and the routes they travel on.
//!
//! This crate owns the API's shape, the grammar of the values that cross
//! it (names, interface names, subnets) and the exit codes the binaries
//! share, and nothing else: no I/O, no policy. It is the only crate whose
//! types derive `Serialize` for the API, so the CLI and the daemon cannot
//! drift apart. Request bodies reject unknown fields.

pub mod artifact;
pub mod doctor;
pub mod error;
pub mod exit;
pub mod names;
pub mod net;
pub mod ping;
pub mod routes;
pub mod shutdown;
pub mod text;
pub mod vm;
pub mod whole;
pub mod workspace;

pub use artifact::{
    CachePruneReport, CachePruneRequest, CatalogEntry, Image, ImagePullRequest, ImportRequest,
    Kernel, MAX_WAIT_MS, OciImage, Operation, OperationKind, OperationQuery, OperationStage,
    OperationState, PullRequest,
};
pub use doctor::{Check, CheckStatus, DoctorReport};
pub use error::{ErrorBody, ErrorCode};
pub use ping::Ping;
pub use shutdown::{ShutdownAccepted, ShutdownRequest};
pub use vm::{
    ConsoleChunk, ConsoleQuery, CreateVmRequest, DeleteVmQuery, ListVmsQuery, SetVmRequest,
    SshTarget, Vm, VmState, VmSummary,
};
pub use workspace::{PrepareWorkspaceQuery, Workspace};

/// Response header carrying the operation id of every request, also written
/// into every log line the request causes.
pub const OP_ID_HEADER: &str = "x-banger-op-id";

/// The API version prefix of every route.
pub const API_PREFIX: &str = "/v1";

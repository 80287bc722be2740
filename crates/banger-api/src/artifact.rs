//! Kernels, images and the operations that produce them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ErrorBody;

/// One `kernel catalog` / `image catalog` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Name to pull.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Hash of its recipe; a changed recipe gives a new artifact.
    pub recipe_hash: String,
    /// Whether it is in the local store, built from this recipe.
    pub present: bool,
}

/// A kernel in the local store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// Name.
    pub name: String,
    /// Recipe hash it was built from.
    pub recipe_hash: String,
    /// The Debian source package.
    pub source_package: String,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Build time (RFC 3339).
    pub created_at: String,
    /// Its directory (`vmlinux`, `bzImage`, `config`, `manifest.json`).
    pub dir: String,
}

/// An image in the local store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Name.
    pub name: String,
    /// `build` (catalog recipe), `import` or `oci` (a registry pull).
    pub source: String,
    /// Recipe hash, for built images.
    pub recipe_hash: Option<String>,
    /// The kernel its VMs boot.
    pub kernel: String,
    /// Bytes on disk (`rootfs.ext4` + `work-seed.ext4`).
    pub size_bytes: u64,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Its directory.
    pub dir: String,
    /// For a registry pull: where from and what its config asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciImage>,
}

/// Where a pulled image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OciImage {
    /// The reference pulled.
    pub reference: String,
    /// The image manifest's digest.
    pub manifest_digest: String,
    /// The config's `Env`.
    pub env: Vec<String>,
    /// The config's `WorkingDir`.
    pub working_dir: Option<String>,
    /// The config's `User`.
    pub user: Option<String>,
    /// Why a VM cannot boot it (no systemd or no sshd), if it cannot.
    pub cannot_boot: Option<String>,
    /// What its VMs install at their first boot (needs `--nat`), if
    /// anything.
    pub installs_at_first_boot: Option<String>,
}

/// `POST /v1/kernels/pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Catalog name.
    #[schema(
        value_type = String,
        pattern = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,62}$",
        min_length = 1,
        max_length = 63
    )]
    pub name: crate::names::ArtifactName,
}

/// `POST /v1/images/pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagePullRequest {
    /// A catalog name (`debian-bookworm`), or an OCI or Docker image
    /// reference (`registry.example/team/app:v2`, `repo@sha256:...`).
    pub name: String,
    /// For a reference: the local image's name; default its last path
    /// component and tag (`app-v2`).
    #[serde(default)]
    pub image_name: Option<String>,
    /// For a reference: the catalog kernel its VMs boot; default
    /// `generic-6.1`.
    #[serde(default)]
    pub kernel: Option<String>,
    /// For a reference: plain HTTP to a registry that is not on loopback
    /// (loopback registries may always use it).
    #[serde(default)]
    pub insecure: bool,
}

/// `POST /v1/images/cache/prune`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePruneRequest {
    /// Only count what would go.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a cache prune freed (or would free).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePruneReport {
    /// Layer blobs (and abandoned partial downloads) removed.
    pub blobs: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Nothing was removed: these are what would go.
    pub dry_run: bool,
}

/// `POST /v1/images/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// Name for the new image (1-63 of `a-z 0-9 . _ -`).
    #[schema(
        value_type = String,
        pattern = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,62}$",
        min_length = 1,
        max_length = 63
    )]
    pub name: crate::names::ArtifactName,
    /// Absolute path of a root file system tarball or an ext4 file,
    /// readable by the daemon; not a symbolic link.
    #[schema(pattern = r"^/")]
    pub path: String,
    /// Catalog kernel its VMs boot; default `generic-6.1`.
    #[serde(default)]
    #[schema(
        value_type = Option<String>,
        pattern = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,62}$",
        min_length = 1,
        max_length = 63
    )]
    pub kernel: Option<crate::names::ArtifactName>,
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// Building or fetching a catalog kernel.
    KernelPull,
    /// Building or fetching a catalog image.
    ImagePull,
    /// Importing a tarball or ext4 file as an image.
    ImageImport,
    /// Creating (and starting) a VM.
    VmCreate,
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    /// Working.
    Running,
    /// Done; `message` says what happened.
    Succeeded,
    /// Failed; `error` says why.
    Failed,
    /// Cancelled; nothing was published.
    Cancelled,
}

impl OperationState {
    /// Whether the operation has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Running)
    }
}

/// The current stage of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationStage {
    /// 1-based.
    pub index: u32,
    /// Stages in all.
    pub total: u32,
    /// What is happening.
    pub name: String,
}

/// Query of `GET /v1/operations/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OperationQuery {
    /// Long poll: answer as soon as the operation changes stage or ends,
    /// or after this many milliseconds (at most 30000); default 0, answer
    /// at once.
    #[serde(default)]
    #[param(maximum = 30000)]
    pub wait_ms: u64,
}

/// Longest `wait_ms` the daemon honours.
pub const MAX_WAIT_MS: u64 = 30_000;

/// A long-running piece of work, polled with `GET /v1/operations/{id}`
/// and cancelled with `DELETE /v1/operations/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// Identifier (the op id of the request that started it).
    pub id: String,
    /// What it does.
    pub kind: OperationKind,
    /// The kernel or image it works on.
    pub target: String,
    /// Where it is.
    pub state: OperationState,
    /// The current (or last) stage.
    pub stage: Option<OperationStage>,
    /// On success: what happened (built, already present, imported).
    pub message: Option<String>,
    /// On failure or cancellation: why.
    pub error: Option<ErrorBody>,
    /// Build output, named so a failure can be read in full.
    pub log: Option<String>,
    /// Things skipped or odd along the way, one line each, in order (at
    /// most 100).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339), once ended.
    pub finished_at: Option<String>,
    /// Seconds since start (or until end).
    pub elapsed_secs: u64,
}

//! Why a VM request failed, in the VM service's own terms; `crate::error`
//! turns each into the API's error code, in one place.

use banger_api::VmState;
use banger_api::names::{InvalidName, VmName};

use crate::error::ApiError;

impl VmError {
    /// The message the API gives for it: the whole chain of causes, or a
    /// service's own message.
    pub fn message(&self) -> String {
        match self {
            Self::Service(e) => e.message.clone(),
            Self::Artifacts(e) => e.message(),
            other => crate::error::error_chain(other),
        }
    }
}

/// A VM request's failure.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A change named a VM that no name or full id matches.
    #[error("no vm has the name or id {0:?} (changes take an exact name or full id)")]
    NoSuchVmExact(String),
    /// A view named a VM that no name, id or id prefix matches.
    #[error("no vm has the name or id {0:?} (or an id starting with it)")]
    NoSuchVm(String),
    /// The VM went while the request waited for its lock.
    #[error("vm {0} was deleted")]
    Deleted(String),
    /// An id prefix matching more than one VM.
    #[error("{reference:?} is ambiguous: it starts the ids of {matches}; give more of the id")]
    Ambiguous {
        /// The prefix.
        reference: String,
        /// `name (id)` of each match.
        matches: String,
    },
    /// The request needs a running VM.
    #[error("vm {name} is not running (it is {})", state.as_str())]
    NotRunning {
        /// The VM.
        name: VmName,
        /// What it is instead.
        state: VmState,
    },
    /// A lifecycle step (start, stop, delete) holds the VM.
    #[error(
        "vm {0} is busy: a start, stop or delete of it is under way; try again when it is done"
    )]
    Busy(VmName),
    /// An export from a VM no prepare has given a workspace.
    #[error("vm {0} has no workspace: give it one with `banger vm workspace prepare {0} PATH`")]
    NoWorkspace(VmName),
    /// A prepare the guest refused because its workspace changed since
    /// the host asked what it holds: a prepare made afresh can succeed.
    #[error("{0}")]
    Stale(String),
    /// A start of a running VM.
    #[error("vm {0} is already running")]
    AlreadyRunning(VmName),
    /// The request needs a stopped VM.
    #[error("vm {name} is running; {hint}")]
    Running {
        /// The VM.
        name: VmName,
        /// What to do instead.
        hint: &'static str,
    },
    /// A create with a name in use.
    #[error("a vm named {0:?} already exists")]
    NameTaken(VmName),
    /// The bridge's subnet is full.
    #[error("no free address left in {0}")]
    NoAddress(banger_net::Subnet),
    /// The host lacks the disk, CPUs or memory the VM asks for.
    #[error("{0}")]
    NoRoom(String),
    /// A request value outside its limits (a size, a console offset).
    #[error("{0}")]
    Invalid(String),
    /// A create naming an image that does not exist (after any pull).
    #[error("no image {0:?}")]
    NoImage(String),
    /// A lifecycle step failed (rolled back); the message says which and
    /// why, with its causes.
    #[error("{0}")]
    Failed(String),
    /// A bug or an unexpected OS failure.
    #[error("{0}")]
    Internal(String),
    /// A name refused.
    #[error(transparent)]
    Name(#[from] InvalidName),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] banger_store::StoreError),
    /// A pull the create waits on could not start.
    #[error(transparent)]
    Artifacts(#[from] crate::artifacts::ArtifactError),
    /// The operations registry refused (a reused op id, a stopping
    /// daemon), with its own API error.
    #[error(transparent)]
    Service(#[from] ApiError),
}

//! Why a kernel or image request failed, in the artifact service's own
//! terms; `crate::error` turns each into the API's error code, in one
//! place.

use banger_artifacts::kernel::BuildError;
use banger_artifacts::store::StoreError;

use crate::error::ApiError;

/// An artifact request's failure: refused before it started, or (the
/// last four) a pull or import that failed once it started.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A pull of a name the catalog lacks.
    #[error("no {kind} {name:?} in the catalog; see `banger {kind} catalog`")]
    NotInCatalog {
        /// `kernel` or `image`.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// A kernel parameter the catalog lacks (a bad argument, not a
    /// missing resource).
    #[error("no kernel {0:?} in the catalog; see `banger kernel catalog`")]
    UnknownKernel(String),
    /// A view or delete of a name that is not there.
    #[error("no {kind} {name:?}")]
    NoSuch {
        /// `kernel` or `image`.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// A delete (or import) of a name being pulled.
    #[error("{name:?} is being pulled (operation {op}); wait or cancel it first")]
    Busy {
        /// The kernel or image.
        name: String,
        /// The pull's operation id.
        op: String,
    },
    /// A delete or replacement of something others use.
    #[error("{kind} {name:?} is used by {users_kind}(s) {users}; delete them first")]
    InUse {
        /// `kernel` or `image`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// `image` or `VM`.
        users_kind: &'static str,
        /// Their names.
        users: String,
    },
    /// A name taken by something this request may not replace.
    #[error("{0}")]
    Exists(String),
    /// A bad argument (reference, path, file).
    #[error("{0}")]
    Invalid(String),
    /// A bug or an unexpected OS failure.
    #[error("{0}")]
    Internal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] banger_store::StoreError),
    /// The operations registry refused (a reused op id, a stopping
    /// daemon).
    #[error(transparent)]
    Service(#[from] ApiError),
    /// The build (or fetch, or unpack) itself.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Its staging directory could not be made.
    #[error("stage {name}")]
    Stage {
        /// The kernel or image.
        name: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The finished files could not be published.
    #[error("publish {name}")]
    Publish {
        /// The kernel or image.
        name: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The published image could not be recorded (its files were taken
    /// back).
    #[error("record image {name}")]
    Record {
        /// The image.
        name: String,
        /// Why.
        #[source]
        source: Box<banger_store::StoreError>,
    },
}

impl ArtifactError {
    /// The message the API gives for it.
    pub fn message(&self) -> String {
        match self {
            Self::Service(e) => e.message.clone(),
            other => crate::error::error_chain(other),
        }
    }
}

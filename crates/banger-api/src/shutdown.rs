//! `POST /v1/shutdown`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Asks the daemon to stop. VMs keep running: their VMMs are detached.
/// The body may be omitted; when present it must be this (empty) object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownRequest {}

/// The daemon accepted the request and is stopping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShutdownAccepted {
    /// The pid of the daemon that is stopping, to wait on.
    pub pid: u32,
}

//! `GET /v1/ping`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Who answered, and for how long it has been up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ping {
    /// The daemon's release version.
    pub version: String,
    /// The full git commit the daemon was built from, or `unknown`.
    pub commit: String,
    /// When the daemon binary was built (RFC 3339).
    pub built_at: String,
    /// The daemon's process id.
    pub pid: u32,
    /// Seconds since the daemon started serving.
    pub uptime_secs: u64,
    /// The store's schema version.
    pub schema_version: u32,
}

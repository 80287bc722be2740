//! What every route can reach.

use std::sync::Arc;
use std::time::Instant;

use banger_store::Store;
use tokio::sync::watch;

/// Shared daemon state, cloned into each request.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The durable store.
    pub store: Arc<Store>,
    /// When the daemon began serving.
    pub started: Instant,
    /// Set to `true` to begin a graceful shutdown.
    pub shutdown: watch::Sender<bool>,
    /// The schema version the store was opened at.
    pub schema_version: u32,
    /// Long-running operations.
    pub ops: Arc<crate::operations::Operations>,
    /// Kernels and images.
    pub artifacts: Arc<crate::artifacts::Artifacts>,
    /// Virtual machines.
    pub vms: Arc<crate::vms::Vms>,
    /// The bounds every connection and request head is served under.
    pub http: crate::http::HttpLimits,
}

//! banger's root helper, `bangerd-root`: the few privileged things an
//! unprivileged daemon needs, as a closed set of typed operations.
//!
//! - [`protocol`]: the wire, one JSON line each way per connection,
//!   versioned, unknown ops and fields refused.
//! - [`policy`]: every argument checked against the owner, bridge and
//!   subnet the helper was started for; a request becomes a
//!   [`policy::Checked`] op or a [`policy::Refusal`] naming why.
//! - [`server`]: the peer checked with SO_PEERCRED (root and the owner
//!   only), bounded reads, one JSON log line per call.
//! - [`client`]: [`HelperNetwork`], the daemon's `Network` through the
//!   helper.

pub mod client;
pub mod policy;
pub mod protocol;
pub mod server;

pub use client::{HelperNetwork, op_id_scope};
pub use policy::{Policy, SysfsTaps};
pub use server::Server;

pub use banger_api::net::HELPER_SOCKET as DEFAULT_SOCKET;

/// The environment variable that points a daemon (and tests) at another
/// helper socket.
pub const SOCKET_ENV: &str = "BANGER_HELPER_SOCKET";

/// The helper socket a daemon uses: `$BANGER_HELPER_SOCKET`, else
/// [`DEFAULT_SOCKET`].
pub fn socket_path() -> std::path::PathBuf {
    std::env::var_os(SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| DEFAULT_SOCKET.into(), Into::into)
}

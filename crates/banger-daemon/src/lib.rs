//! bangerd's library: the HTTP/JSON API on a unix socket and the services
//! behind it.
//!
//! The binary only parses arguments and calls [`server::Daemon::bind`]. This
//! crate owns the request path: connection authorization (SO_PEERCRED), op
//! ids, the mapping of every failure to a JSON error with a stable code, the
//! routes and the OpenAPI document generated from them. It must not spawn
//! processes itself (that is `banger-sys`'s job) nor hold a lock across
//! anything slow.

pub mod artifacts;
pub mod auth;
pub mod doctor;
pub mod error;
pub mod extract;
pub mod http;
pub mod logging;
pub mod op_id;
pub mod openapi;
pub mod operations;
pub mod routes;
pub mod server;
pub mod state;
pub mod stream;
pub mod vms;

pub use error::ApiError;
pub use server::{BoundDaemon, Daemon, DaemonError, DaemonOptions, Stopped};

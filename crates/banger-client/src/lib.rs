//! Everything the CLI needs to talk to the daemon: typed calls over the
//! unix socket ([`Client`]), starting a daemon when none runs
//! ([`autostart`]), and turning results into tables ([`render`]).
//!
//! It knows the API only through `banger-api`'s types and routes.

pub mod autostart;
pub mod client;
pub mod render;

pub use autostart::{StartError, Started, ensure_daemon};
pub use client::{Client, ClientError, mint_op_id};

//! The wire: one JSON request line per connection, one JSON reply line.
//!
//! Every shape is `deny_unknown_fields` and the ops are a closed enum, so a
//! field or op this helper does not know is refused, never ignored.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The protocol version; a request carrying another is refused.
pub const VERSION: u32 = 1;

/// Most bytes a request line may hold: a `set_firewall` naming the most
/// guests a helper serves ([`crate::policy::MAX_TAPS`], ~90 bytes each).
pub const MAX_REQUEST: usize = 128 * 1024;

/// Most bytes a reply line may hold.
pub const MAX_REPLY: usize = 64 * 1024;

/// One call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Must be [`VERSION`].
    pub version: u32,
    /// The daemon's operation id, logged with the call.
    pub op_id: String,
    /// What to do (nested: serde cannot deny unknown fields through a
    /// flattened enum).
    pub call: Op,
}

/// The closed set of privileged operations. Each names banger's own
/// objects only; the helper checks every argument against its policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// What the helper serves: its version, owner, bridge and subnet.
    /// (Braced: serde lets unknown fields through a unit variant.)
    Ping {},
    /// Creates the bridge with the subnet's gateway address, brings it up.
    EnsureBridge {
        /// Must be the helper's bridge.
        bridge: String,
        /// Must be the helper's subnet, e.g. `10.77.0.1/24`.
        subnet: String,
    },
    /// Creates a tap owned by the owner's uid on the bridge.
    AddTap {
        /// `bgt` then `[a-z0-9-]`.
        tap: String,
        /// Must be the helper's bridge.
        bridge: String,
    },
    /// Removes one of banger's taps (owned by the owner, on the bridge).
    RemoveTap {
        /// `bgt` then `[a-z0-9-]`.
        tap: String,
    },
    /// Checks that a tap exists and is a port of the bridge.
    CheckTap {
        /// `bgt` then `[a-z0-9-]`.
        tap: String,
        /// Must be the helper's bridge.
        bridge: String,
    },
    /// Masquerades one guest address beyond the bridge.
    AddNat {
        /// The VM id the rules are tagged with (hex).
        tag: String,
        /// A guest address of the helper's subnet.
        ip: Ipv4Addr,
        /// Must be the helper's bridge.
        bridge: String,
    },
    /// Writes banger's nftables tables for exactly these running guests
    /// (none: removes the tables).
    SetFirewall {
        /// Must be the helper's bridge.
        bridge: String,
        /// Each a banger tap, a unicast MAC, a guest address of the
        /// helper's subnet; no tap, MAC or address twice.
        guests: Vec<banger_net::Guest>,
    },
    /// Removes what `add_nat` added.
    RemoveNat {
        /// The VM id the rules are tagged with (hex).
        tag: String,
        /// A guest address of the helper's subnet.
        ip: Ipv4Addr,
        /// Must be the helper's bridge.
        bridge: String,
    },
}

impl Op {
    /// The op's wire name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ping {} => "ping",
            Self::EnsureBridge { .. } => "ensure_bridge",
            Self::AddTap { .. } => "add_tap",
            Self::RemoveTap { .. } => "remove_tap",
            Self::CheckTap { .. } => "check_tap",
            Self::AddNat { .. } => "add_nat",
            Self::RemoveNat { .. } => "remove_nat",
            Self::SetFirewall { .. } => "set_firewall",
        }
    }
}

/// The answer to one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// Done; `ping` fills `served`.
    Ok {
        /// What the helper serves (for `ping`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        served: Option<Served>,
    },
    /// Not done.
    Error {
        /// Which kind of failure.
        kind: ErrorKind,
        /// What went wrong, for a person.
        message: String,
    },
}

/// What a helper serves, as `ping` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Served {
    /// The protocol version.
    pub version: u32,
    /// The banger version of the helper binary.
    pub banger: String,
    /// The only uid (besides root) it serves.
    pub owner_uid: u32,
    /// The only bridge it touches.
    pub bridge: String,
    /// The only subnet it assigns.
    pub subnet: String,
}

/// Why a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The peer is neither root nor the owner.
    PermissionDenied,
    /// The request is not a request of this protocol version.
    BadRequest,
    /// An argument lies outside what banger manages.
    Refused,
    /// Allowed, but the host said no.
    Failed,
}

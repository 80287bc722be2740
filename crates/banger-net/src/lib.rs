//! Host networking for VMs: a bridge with a private subnet, one tap per
//! VM on it, optional NAT per VM, and the guest address plan.
//!
//! - [`Subnet`] and [`allocate`]: pure address arithmetic.
//! - [`Network`]: the privileged operations, each checking that it only
//!   touches banger's own names; [`HostNetwork`] runs them with `ip`,
//!   `iptables` and `nft` (argv, never a shell).
//! - [`firewall`]: the guests' isolation, banger's own nftables tables.

pub mod firewall;
mod host;
pub mod links;
mod resolvers;
mod subnet;

pub use firewall::Guest;
pub use host::HostNetwork;
pub use resolvers::{guest_nameservers, host_nameservers};
pub use subnet::{Subnet, allocate};

use std::net::Ipv4Addr;

/// The prefix of every tap banger creates; nothing else is ever deleted.
pub const TAP_PREFIX: &str = "bgt";

pub use banger_api::net::{IFNAME_MAX, check_ifname};

impl From<banger_api::net::InvalidValue> for NetError {
    fn from(e: banger_api::net::InvalidValue) -> Self {
        Self::Invalid {
            what: e.what,
            value: e.value,
            why: e.why,
        }
    }
}

/// Errors from host networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A name or address outside what banger manages.
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        /// What was checked.
        what: &'static str,
        /// The value.
        value: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The operation needs privileges this process lacks.
    #[error(
        "{what} needs root: install banger's root helper with `sudo banger system install` (see docs/privileges.md)"
    )]
    NeedsRoot {
        /// What was attempted.
        what: &'static str,
    },
    /// No root helper answers: an unprivileged daemon cannot touch the
    /// host network without one.
    #[error(
        "starting a VM needs banger's root helper, and none answers at {}: {why}; run `sudo banger system install` (see docs/privileges.md)",
        socket.display()
    )]
    NoHelper {
        /// Where the helper's socket was looked for.
        socket: std::path::PathBuf,
        /// What connecting said.
        why: String,
    },
    /// The root helper refused or failed the call.
    #[error("the root helper {verdict} {op}: {message}")]
    Helper {
        /// The op.
        op: &'static str,
        /// `refused` or `failed`.
        verdict: &'static str,
        /// What it said.
        message: String,
    },
    /// The bridge's subnet overlaps a route the host already has: guests
    /// would shadow part of the host's network, or it theirs.
    #[error(
        "bridge_subnet {subnet} overlaps the host's route to {route}{}: choose another bridge_subnet in config.toml (then `sudo banger system install` again, in system mode)",
        dev.as_ref().map(|d| format!(" on {d}")).unwrap_or_default()
    )]
    SubnetOverlap {
        /// The configured subnet.
        subnet: String,
        /// The route's destination.
        route: String,
        /// Its interface.
        dev: Option<String>,
    },
    /// A command failed.
    #[error("{what}")]
    Command {
        /// What was attempted.
        what: String,
        /// The failure.
        #[source]
        source: banger_sys::RunError,
    },
    /// A VM's tap is missing or not a port of the bridge: its guest is cut
    /// off, whatever the boot does.
    #[error("the tap {tap} is {state}, not a port of bridge {bridge}: the guest has no network")]
    TapDetached {
        /// The tap.
        tap: String,
        /// The bridge it should be on.
        bridge: String,
        /// What was found instead.
        state: String,
    },
    /// A kernel setting could not be written (or `ip`'s answer read).
    #[error("{what}")]
    Io {
        /// What was attempted.
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The tap of the VM with id `vm_id` (lowercase hex).
pub fn tap_name(vm_id: &str) -> String {
    let room = IFNAME_MAX - TAP_PREFIX.len();
    format!("{TAP_PREFIX}{}", &vm_id[..vm_id.len().min(room)])
}

/// Checks a NAT rule tag (a VM id): 1 to 32 of `[0-9a-f]`.
pub fn check_tag(tag: &str) -> Result<(), NetError> {
    if tag.is_empty() || tag.len() > 32 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NetError::Invalid {
            what: "rule tag",
            value: tag.to_owned(),
            why: "must be 1 to 32 hex digits (a VM id)",
        });
    }
    Ok(())
}

/// The privileged network operations, each idempotent so a rollback or a
/// cleanup after a crash can run them again.
pub trait Network: Send + Sync + std::fmt::Debug {
    /// Creates `bridge` with `subnet`'s gateway address, if missing, and
    /// brings it up.
    fn ensure_bridge(&self, bridge: &str, subnet: &Subnet) -> Result<(), NetError>;
    /// Creates tap `tap` owned by `uid` on `bridge`, up.
    fn add_tap(&self, tap: &str, bridge: &str, uid: u32) -> Result<(), NetError>;
    /// Removes tap `tap`; a missing one is fine.
    fn remove_tap(&self, tap: &str) -> Result<(), NetError>;
    /// Checks that tap `tap` exists and is a port of `bridge`.
    fn check_tap(&self, tap: &str, bridge: &str) -> Result<(), NetError>;
    /// Lets guest `ip` reach beyond `bridge` through masquerading.
    fn add_nat(&self, tag: &str, ip: Ipv4Addr, bridge: &str) -> Result<(), NetError>;
    /// Removes what [`Network::add_nat`] added; missing rules are fine.
    fn remove_nat(&self, tag: &str, ip: Ipv4Addr, bridge: &str) -> Result<(), NetError>;
    /// Makes banger's nftables tables isolate exactly `guests` (the
    /// running ones) on `bridge`, in one transaction; with none, removes
    /// the tables. See [`firewall`].
    fn set_firewall(&self, bridge: &str, subnet: &Subnet, guests: &[Guest])
    -> Result<(), NetError>;
    /// Whether the operations above can work for `bridge` and `subnet`,
    /// asked before a VM is made so a start that cannot connect it fails
    /// with nothing to undo.
    fn ready(&self, _bridge: &str, _subnet: &Subnet) -> Result<(), NetError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_ifnamsiz_and_pass_the_check() {
        let tap = tap_name("0123456789abcdef0123");
        assert_eq!(tap, "bgt0123456789ab");
        assert_eq!(tap.len(), 15);
        check_ifname("tap", &tap, TAP_PREFIX).unwrap();
    }

    #[test]
    fn foreign_or_hostile_interface_names_are_refused() {
        for bad in ["eth0", "bgt", "bgt0123456789abc", "bgt;rm", "bgt A", "BGT1"] {
            assert!(check_ifname("tap", bad, TAP_PREFIX).is_err(), "{bad}");
        }
        assert!(check_tag("0a1b").is_ok());
        for bad in ["", "xyz", "0a 1b", &"a".repeat(33)] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_io_error_names_its_cause_once_in_the_chain() {
        let err = NetError::Io {
            what: "enable forwarding".into(),
            source: std::io::Error::other("read-only file system"),
        };
        let mut chain = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert_eq!(chain, "enable forwarding: read-only file system");
    }
}

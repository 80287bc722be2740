//! The grammar of the host network values that cross banger's boundaries
//! (config, API, helper): interface names and the bridge's subnet.

use std::net::Ipv4Addr;
use std::str::FromStr;

/// Where the root helper (`bangerd-root`) listens unless told otherwise:
/// a root-owned directory of the system runtime directory, which the
/// owner can traverse but not write (not `/run/banger`, which a daemon run
/// as root makes private).
pub const HELPER_SOCKET: &str = "/run/banger-root/bangerd-root.sock";

/// Linux's limit on interface names (IFNAMSIZ minus the NUL).
pub const IFNAME_MAX: usize = 15;

/// A value outside what banger accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {why}")]
pub struct InvalidValue {
    /// What was checked.
    pub what: &'static str,
    /// The value.
    pub value: String,
    /// Why it is refused.
    pub why: &'static str,
}

/// Checks an interface name banger may create or delete: `prefix` then
/// `[a-z0-9]`, within Linux's length limit.
pub fn check_ifname(what: &'static str, name: &str, prefix: &str) -> Result<(), InvalidValue> {
    let bad = |why| {
        Err(InvalidValue {
            what,
            value: name.to_owned(),
            why,
        })
    };
    if name.len() <= prefix.len() || name.len() > IFNAME_MAX {
        return bad("must be 1 to 15 characters");
    }
    if !name.starts_with(prefix) {
        return bad("is not one of banger's (wrong prefix)");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("may hold only a-z, 0-9 and -");
    }
    Ok(())
}

/// A private IPv4 subnet whose address is the host's (gateway) address on
/// the bridge, e.g. `10.77.0.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    gateway: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// The host's address on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask, dotted.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix)))
    }

    /// The network address, as a number.
    pub fn network(&self) -> u32 {
        u32::from(self.gateway) & u32::from(self.netmask())
    }

    /// The broadcast address, as a number.
    pub fn broadcast(&self) -> u32 {
        self.network() | !u32::from(self.netmask())
    }

    /// Whether `ip` is a guest address here: inside, and neither the
    /// network, the broadcast nor the gateway address.
    pub fn is_guest(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n & u32::from(self.netmask()) == self.network()
            && n != self.network()
            && n != self.broadcast()
            && ip != self.gateway
    }
}

impl Default for Subnet {
    /// `10.77.0.1/24`, the `bridge_subnet` default.
    fn default() -> Self {
        Self {
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            prefix: 24,
        }
    }
}

impl FromStr for Subnet {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| InvalidValue {
            what: "subnet",
            value: s.to_owned(),
            why,
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("must be ADDRESS/PREFIX, e.g. 10.77.0.1/24"))?;
        let gateway: Ipv4Addr = addr.parse().map_err(|_| bad("the address is not IPv4"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("the prefix is not a number"))?;
        if !(16..=29).contains(&prefix) {
            return Err(bad("the prefix must be 16 to 29"));
        }
        if !gateway.is_private() {
            return Err(bad("must be a private (RFC 1918) range"));
        }
        let subnet = Self { gateway, prefix };
        let n = u32::from(gateway);
        if n == subnet.network() || n == subnet.broadcast() {
            return Err(bad(
                "the host address may not be the network or broadcast address",
            ));
        }
        Ok(subnet)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.gateway, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_shows_a_subnet() {
        let s = net("10.77.0.1/24");
        assert_eq!(s, Subnet::default());
        assert_eq!(s.to_string(), "10.77.0.1/24");
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        for bad in [
            "10.77.0.1",
            "10.77.0.1/8",
            "8.8.8.1/24",
            "10.77.0.0/24",
            "10.77.0.255/24",
            "x/24",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }
}

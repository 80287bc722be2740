//! The bridge's subnet and the guest addresses in it.

use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::NetError;

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

    fn network(&self) -> u32 {
        u32::from(self.gateway) & u32::from(self.netmask())
    }

    fn broadcast(&self) -> u32 {
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
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| NetError::Invalid {
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

/// The lowest guest address of `subnet` not in `used`; `None` when full.
pub fn allocate(subnet: &Subnet, used: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    (subnet.network() + 1..subnet.broadcast())
        .map(Ipv4Addr::from)
        .find(|ip| subnet.is_guest(*ip) && !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn allocation_skips_gateway_and_used_and_ends_when_full() {
        let s = net("10.77.0.1/29");
        let mut used = Vec::new();
        while let Some(ip) = allocate(&s, &used) {
            used.push(ip);
        }
        assert_eq!(
            used,
            (2..=6)
                .map(|n| Ipv4Addr::new(10, 77, 0, n))
                .collect::<Vec<_>>()
        );
    }

    proptest! {
        #[test]
        fn allocated_addresses_are_always_fresh_guest_addresses(
            host in 1u8..=254, taken in proptest::collection::vec(0u8..=255, 0..40)
        ) {
            let s = net(&format!("192.168.9.{host}/24"));
            let used: Vec<Ipv4Addr> = taken.iter().map(|n| Ipv4Addr::new(192, 168, 9, *n)).collect();
            if let Some(ip) = allocate(&s, &used) {
                prop_assert!(s.is_guest(ip));
                prop_assert!(!used.contains(&ip));
            }
        }
    }
}

//! The guest addresses in the bridge's subnet.

use std::net::Ipv4Addr;

pub use banger_api::net::Subnet;

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

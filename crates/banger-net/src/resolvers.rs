//! The host's DNS resolvers, as a guest sees them.

use std::net::Ipv4Addr;

/// The IPv4 resolvers a guest can use through NAT, from a resolv.conf:
/// loopback ones (a local stub such as systemd-resolved's 127.0.0.53)
/// are the host's own and unreachable from a guest.
pub fn guest_nameservers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .collect()
}

/// The host's resolvers a NAT guest can use: `/etc/resolv.conf`, or, when
/// it names only a local stub, systemd-resolved's upstream list.
pub fn host_nameservers() -> Vec<Ipv4Addr> {
    ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"]
        .iter()
        .map(|p| guest_nameservers(&std::fs::read_to_string(p).unwrap_or_default()))
        .find(|found| !found.is_empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_nameservers_skip_local_stubs_ipv6_and_junk() {
        let conf = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n  nameserver 1.1.1.1  \nnameserver ::1\nnameserver 2001:db8::1\nnameserver bogus\nsearch example\n";
        assert_eq!(
            guest_nameservers(conf),
            [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert!(guest_nameservers("nameserver 127.0.0.53\n").is_empty());
    }
}

//! Which interfaces exist in the daemon's own network namespace, and which
//! bridge each is a port of, asked of the kernel (`ip -json link show`:
//! netlink, in the namespace of the process that asks). Never read from
//! `/sys/class/net`: that shows the namespace sysfs was mounted in, which
//! for a daemon in a private network namespace (`unshare -n`, a service
//! with its own namespace) is the host's.

use std::path::PathBuf;

use banger_sys::Cmd;
use serde::Deserialize;

use crate::NetError;

/// Most bytes of `ip -json link show` read (a few hundred per link).
const MAX_OUTPUT: usize = 4 << 20;

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Link {
    /// Its name.
    #[serde(rename = "ifname")]
    pub name: String,
    /// The bridge (or other master) it is a port of.
    #[serde(default)]
    pub master: Option<String>,
}

/// One IPv4 route, of any routing table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Route {
    /// Its destination: `default`, `a.b.c.d/n`, or one address (empty
    /// when `ip` printed none).
    #[serde(default)]
    pub dst: String,
    /// The interface it leaves by, if any.
    #[serde(default)]
    pub dev: Option<String>,
}

/// The interfaces and routes of the daemon's network namespace.
pub trait LinkTable: Send + Sync + std::fmt::Debug {
    /// Every interface, now.
    fn links(&self) -> Result<Vec<Link>, NetError>;
    /// The IPv4 routes of every table that lie inside `subnet` or contain
    /// it, now.
    fn routes(&self, subnet: &crate::Subnet) -> Result<Vec<Route>, NetError>;
}

/// [`LinkTable`] through `ip -json link show`.
#[derive(Debug)]
pub struct IpLinks {
    log: PathBuf,
}

impl IpLinks {
    /// Asks `ip`, with its errors appended to `log`.
    pub fn new(log: impl Into<PathBuf>) -> Self {
        Self { log: log.into() }
    }
}

impl LinkTable for IpLinks {
    fn links(&self) -> Result<Vec<Link>, NetError> {
        let out = banger_sys::output(
            &Cmd::new("ip").args(["-json", "link", "show"]),
            &self.log,
            MAX_OUTPUT,
        )
        .map_err(|source| NetError::Command {
            what: "list network interfaces".into(),
            source,
        })?;
        parse(&out)
    }

    fn routes(&self, subnet: &crate::Subnet) -> Result<Vec<Route>, NetError> {
        // Asked by prefix, so a host with a full routing table answers in
        // a few lines: those inside the subnet (`root`), and those holding
        // it (`match`).
        let prefix = format!(
            "{}/{}",
            std::net::Ipv4Addr::from(subnet.network()),
            subnet.prefix()
        );
        let mut all = Vec::new();
        for selector in ["root", "match"] {
            let out = banger_sys::output(
                &Cmd::new("ip")
                    .args(["-json", "-4", "route", "show", "table", "all"])
                    .args([selector, prefix.as_str()]),
                &self.log,
                MAX_OUTPUT,
            )
            .map_err(|source| NetError::Command {
                what: format!("list IPv4 routes ({selector} {prefix})"),
                source,
            })?;
            let routes: Vec<Route> = serde_json::from_slice(&out).map_err(|e| NetError::Io {
                what: "read `ip -json route show` (iproute2 too old for -json?)".into(),
                source: std::io::Error::other(e),
            })?;
            all.extend(routes);
        }
        Ok(all)
    }
}

/// Reads `ip -json link show` output.
pub fn parse(json: &[u8]) -> Result<Vec<Link>, NetError> {
    serde_json::from_slice(json).map_err(|e| NetError::Io {
        what: "read `ip -json link show`".into(),
        source: std::io::Error::other(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_json_is_read_with_and_without_a_master() {
        let json = br#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536},
            {"ifindex":5,"ifname":"bgt0a1b2c3d4e5f","master":"banger0","operstate":"UP"}]"#;
        assert_eq!(
            parse(json).unwrap(),
            [
                Link {
                    name: "lo".into(),
                    master: None
                },
                Link {
                    name: "bgt0a1b2c3d4e5f".into(),
                    master: Some("banger0".into())
                },
            ]
        );
        assert!(parse(b"not json").is_err());
    }
}

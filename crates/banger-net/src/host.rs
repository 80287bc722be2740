//! [`Network`] on this host: `ip`, `iptables` (NAT, each rule tagged with
//! the VM's id so it can be found and removed again) and `nft` (banger's
//! own tables, written whole).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_sys::{Cancel, Cmd, RunError, Runner};

use crate::links::{IpLinks, Link, LinkTable, Route};
use crate::{Guest, NetError, Network, Subnet, TAP_PREFIX, check_ifname, check_tag, firewall};

/// Host networking through `ip` and `iptables`, with their output in `log`.
#[derive(Debug)]
pub struct HostNetwork {
    runner: Arc<dyn Runner>,
    log: PathBuf,
    links: Arc<dyn LinkTable>,
    /// Parallel starts must not race to create the bridge.
    bridge: std::sync::Mutex<()>,
}

impl HostNetwork {
    /// Runs commands through `runner`, logging to `log`.
    pub fn new(runner: Arc<dyn Runner>, log: impl Into<PathBuf>) -> Self {
        let log = log.into();
        Self {
            runner,
            links: Arc::new(IpLinks::new(log.clone())),
            log,
            bridge: std::sync::Mutex::new(()),
        }
    }

    /// Reads interfaces from `links` instead of `ip`.
    #[must_use]
    pub fn with_links(mut self, links: Arc<dyn LinkTable>) -> Self {
        self.links = links;
        self
    }

    fn run(&self, what: impl FnOnce() -> String, cmd: &Cmd) -> Result<(), NetError> {
        self.runner
            .run(cmd, &self.log, &Cancel::new())
            .map_err(|source| NetError::Command {
                what: what(),
                source,
            })
    }

    fn link(&self, ifname: &str) -> Result<Option<Link>, NetError> {
        Ok(self.links.links()?.into_iter().find(|l| l.name == ifname))
    }

    fn need_root(what: &'static str) -> Result<(), NetError> {
        if banger_sys::euid() == 0 {
            Ok(())
        } else {
            Err(NetError::NeedsRoot { what })
        }
    }
}

/// The iptables rules that give guest `ip` NAT, as (table, chain, match).
fn nat_rules(
    tag: &str,
    ip: Ipv4Addr,
    bridge: &str,
) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let comment = format!("banger:{tag}");
    let host = format!("{ip}/32");
    let tagged = |mut args: Vec<String>| {
        args.extend(["-m", "comment", "--comment", &comment].map(str::to_owned));
        args
    };
    let v = |args: &[&str]| args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![
        (
            "nat",
            "POSTROUTING",
            tagged(v(&["-s", &host, "!", "-o", bridge]))
                .into_iter()
                .chain(v(&["-j", "MASQUERADE"]))
                .collect(),
        ),
        (
            "filter",
            "FORWARD",
            tagged(v(&["-i", bridge, "-s", &host]))
                .into_iter()
                .chain(v(&["-j", "ACCEPT"]))
                .collect(),
        ),
        (
            "filter",
            "FORWARD",
            tagged(v(&[
                "-o",
                bridge,
                "-d",
                &host,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
            ]))
            .into_iter()
            .chain(v(&["-j", "ACCEPT"]))
            .collect(),
        ),
    ]
}

/// The shortest prefix counted: shorter ones are default routes in
/// disguise (a VPN's `0.0.0.0/1` and `128.0.0.0/1`), which every subnet
/// overlaps and a more specific bridge route harms no more than the
/// default route.
const MIN_PREFIX: u8 = 8;

/// The first route (of any table, leaving by anything but `bridge`) whose
/// destination overlaps `subnet`, default routes aside.
fn overlapping(routes: &[Route], subnet: &Subnet, bridge: &str) -> Option<Route> {
    let prefix = |dst: &str| -> Option<(u32, u8)> {
        let (addr, len) = dst.split_once('/').unwrap_or((dst, "32"));
        Some((u32::from(addr.parse::<Ipv4Addr>().ok()?), len.parse().ok()?))
    };
    let mask = |len: u8| {
        u32::MAX
            .checked_shl(32 - u32::from(len.min(32)))
            .unwrap_or(0)
    };
    routes
        .iter()
        .filter(|r| r.dev.as_deref() != Some(bridge))
        .find(|r| {
            prefix(&r.dst).is_some_and(|(net, len)| {
                if len < MIN_PREFIX {
                    return false;
                }
                let shorter = mask(len.min(subnet.prefix()));
                net & shorter == subnet.network() & shorter
            })
        })
        .cloned()
}

/// An iptables call that waits at most 10 s for the xtables lock, so a
/// stuck holder cannot stall a start (or the root helper) for ever.
fn iptables(op: &str, table: &str, chain: &str, rule: &[String]) -> Cmd {
    Cmd::new("iptables")
        .args(["-w", "10", "-t", table, op, chain])
        .args(rule)
}

impl HostNetwork {
    /// Whether `rule` is in `table` `chain` (`iptables -C`).
    fn has_rule(&self, table: &str, chain: &str, rule: &[String]) -> Result<bool, NetError> {
        match self.runner.run(
            &iptables("-C", table, chain, rule),
            &self.log,
            &Cancel::new(),
        ) {
            Ok(()) => Ok(true),
            Err(RunError::Failed { .. }) => Ok(false),
            Err(source) => Err(NetError::Command {
                what: format!("check an iptables rule in {table} {chain}"),
                source,
            }),
        }
    }
}

impl Network for HostNetwork {
    fn ensure_bridge(&self, bridge: &str, subnet: &Subnet) -> Result<(), NetError> {
        check_ifname("bridge", bridge, "")?;
        Self::need_root("creating the bridge")?;
        let _one = banger_sys::wait::lock(&self.bridge);
        if let Some(route) = overlapping(&self.links.routes(subnet)?, subnet, bridge) {
            return Err(NetError::SubnetOverlap {
                subnet: subnet.to_string(),
                route: route.dst,
                dev: route.dev,
            });
        }
        if self.link(bridge)?.is_none() {
            self.run(
                || format!("create bridge {bridge}"),
                &Cmd::new("ip").args(["link", "add", "name", bridge, "type", "bridge"]),
            )?;
        }
        self.run(
            || format!("give bridge {bridge} address {subnet}"),
            &Cmd::new("ip").args(["addr", "replace", &subnet.to_string(), "dev", bridge]),
        )?;
        // A link-local frame (01:80:c2:00:00:0x) reaches the bridge before
        // its netfilter hooks: learning its source MAC would let a guest
        // take another's traffic.
        self.run(
            || format!("stop bridge {bridge} learning from link-local frames"),
            &Cmd::new("ip").args([
                "link",
                "set",
                bridge,
                "type",
                "bridge",
                "no_linklocal_learn",
                "1",
            ]),
        )?;
        self.run(
            || format!("bring bridge {bridge} up"),
            &Cmd::new("ip").args(["link", "set", bridge, "up"]),
        )
    }

    fn add_tap(&self, tap: &str, bridge: &str, uid: u32) -> Result<(), NetError> {
        check_ifname("tap", tap, TAP_PREFIX)?;
        check_ifname("bridge", bridge, "")?;
        Self::need_root("creating a tap")?;
        self.run(
            || format!("create tap {tap}"),
            &Cmd::new("ip").args([
                "tuntap",
                "add",
                "dev",
                tap,
                "mode",
                "tap",
                "user",
                &uid.to_string(),
            ]),
        )?;
        self.run(
            || format!("attach tap {tap} to {bridge}"),
            &Cmd::new("ip").args(["link", "set", tap, "master", bridge, "up"]),
        )?;
        // An isolated port forwards only to the bridge itself, never to
        // another isolated port: guests do not meet at layer 2.
        self.run(
            || format!("isolate tap {tap} from the other guests"),
            &Cmd::new("ip").args(["link", "set", tap, "type", "bridge_slave", "isolated", "on"]),
        )?;
        // No IPv6 on the tap itself (a guest's link-local frames reach the
        // host there); `-e`: a host without IPv6 has nothing to turn off.
        self.run(
            || format!("turn IPv6 off on tap {tap}"),
            &Cmd::new("sysctl").args([
                "-q",
                "-e",
                "-w",
                &format!("net.ipv6.conf.{tap}.disable_ipv6=1"),
            ]),
        )
    }

    fn remove_tap(&self, tap: &str) -> Result<(), NetError> {
        check_ifname("tap", tap, TAP_PREFIX)?;
        if self.link(tap)?.is_none() {
            return Ok(());
        }
        Self::need_root("removing a tap")?;
        self.run(
            || format!("remove tap {tap}"),
            &Cmd::new("ip").args(["link", "del", "dev", tap]),
        )
    }

    fn check_tap(&self, tap: &str, bridge: &str) -> Result<(), NetError> {
        let detached = |state: String| NetError::TapDetached {
            tap: tap.to_owned(),
            bridge: bridge.to_owned(),
            state,
        };
        match self.link(tap)?.map(|l| l.master) {
            None => Err(detached("missing".to_owned())),
            Some(Some(master)) if master == bridge => Ok(()),
            Some(Some(master)) => Err(detached(format!("on {master}"))),
            Some(None) => Err(detached("on no bridge".to_owned())),
        }
    }

    fn set_firewall(
        &self,
        bridge: &str,
        subnet: &Subnet,
        guests: &[Guest],
    ) -> Result<(), NetError> {
        let nameservers = crate::host_nameservers();
        let policy = firewall::Policy {
            bridge,
            subnet,
            guests,
            nameservers: &nameservers,
        };
        let transaction = firewall::transaction(&policy)?;
        Self::need_root("isolating the guests")?;
        // A file, not an argument: a transaction for many guests passes
        // the kernel's 128 KiB limit on one argument. Private (0600,
        // created exclusively) and removed on return.
        let io = |source| NetError::Io {
            what: "write the nftables transaction to a temporary file".to_owned(),
            source,
        };
        let mut file = tempfile::Builder::new()
            .prefix("banger-nft-")
            .suffix(".json")
            .tempfile()
            .map_err(io)?;
        std::io::Write::write_all(&mut file, transaction.to_string().as_bytes()).map_err(io)?;
        self.run(
            || format!("write banger's nftables tables for {} guests", guests.len()),
            &Cmd::new("nft").args(["-j", "-f"]).arg(file.path()),
        )
    }

    fn add_nat(&self, tag: &str, ip: Ipv4Addr, bridge: &str) -> Result<(), NetError> {
        check_tag(tag)?;
        check_ifname("bridge", bridge, "")?;
        Self::need_root("NAT")?;
        let forward = Path::new("/proc/sys/net/ipv4/ip_forward");
        std::fs::write(forward, "1").map_err(|source| NetError::Io {
            what: format!("enable forwarding ({})", forward.display()),
            source,
        })?;
        for (table, chain, rule) in nat_rules(tag, ip, bridge) {
            // Idempotent: a rule already there is not added twice.
            if self.has_rule(table, chain, &rule)? {
                continue;
            }
            self.run(
                || format!("add NAT rule for {ip} to {table} {chain}"),
                &iptables("-A", table, chain, &rule),
            )?;
        }
        Ok(())
    }

    fn remove_nat(&self, tag: &str, ip: Ipv4Addr, bridge: &str) -> Result<(), NetError> {
        check_tag(tag)?;
        check_ifname("bridge", bridge, "")?;
        Self::need_root("NAT")?;
        for (table, chain, rule) in nat_rules(tag, ip, bridge) {
            if self.has_rule(table, chain, &rule)? {
                self.run(
                    || format!("remove NAT rule for {ip} from {table} {chain}"),
                    &iptables("-D", table, chain, &rule),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Runner for Recorder {
        fn run(&self, cmd: &Cmd, _log: &Path, _cancel: &Cancel) -> Result<(), RunError> {
            self.0.lock().unwrap().push(cmd.display());
            Ok(())
        }
    }

    #[test]
    fn nat_rules_are_tagged_and_scoped_to_one_guest() {
        let rules = nat_rules("0a1b", Ipv4Addr::new(10, 77, 0, 5), "banger0");
        assert_eq!(rules.len(), 3);
        for (_, _, rule) in &rules {
            let text = rule.join(" ");
            assert!(text.contains("--comment banger:0a1b"), "{text}");
            assert!(text.contains("10.77.0.5/32"), "{text}");
        }
        assert_eq!(
            rules[0].2.join(" "),
            "-s 10.77.0.5/32 ! -o banger0 -m comment --comment banger:0a1b -j MASQUERADE"
        );
    }

    #[derive(Debug)]
    struct Links(Vec<Link>);

    impl LinkTable for Links {
        fn links(&self) -> Result<Vec<Link>, NetError> {
            Ok(self.0.clone())
        }

        fn routes(&self, _subnet: &Subnet) -> Result<Vec<Route>, NetError> {
            Ok(vec![])
        }
    }

    #[test]
    fn a_subnet_overlapping_a_host_route_is_found() {
        let route = |dst: &str, dev: &str| Route {
            dst: dst.into(),
            dev: Some(dev.into()),
        };
        let host = [
            route("default", "eth0"),
            route("192.168.1.0/24", "eth0"),
            route("192.168.1.7", "eth0"),
            route("10.77.0.0/24", "banger0"),
            route("127.0.0.0/8", "lo"),
            route("garbage", "eth0"),
            // A full-tunnel VPN's halves of the default route.
            route("0.0.0.0/1", "tun0"),
            route("128.0.0.0/1", "tun0"),
            route("", "eth0"),
        ];
        let s = |t: &str| -> Subnet { t.parse().unwrap() };
        assert_eq!(overlapping(&host, &s("10.77.0.1/24"), "banger0"), None);
        for (subnet, hit) in [
            ("192.168.1.1/24", "192.168.1.0/24"),
            ("192.168.0.1/16", "192.168.1.0/24"),
            ("192.168.1.129/25", "192.168.1.0/24"),
            ("10.77.0.1/24", "10.77.0.0/24"),
        ] {
            let bridge = if subnet.starts_with("10.") {
                "banger1"
            } else {
                "banger0"
            };
            assert_eq!(
                overlapping(&host, &s(subnet), bridge).map(|r| r.dst),
                Some(hit.to_owned()),
                "{subnet}"
            );
        }
        assert_eq!(overlapping(&host, &s("192.168.2.1/24"), "banger0"), None);
        // A VPN's 10/8 is a network the bridge would shadow part of.
        let vpn = [route("10.0.0.0/8", "wg0")];
        assert_eq!(
            overlapping(&vpn, &s("10.77.0.1/24"), "banger0").map(|r| r.dst),
            Some("10.0.0.0/8".to_owned())
        );
    }

    #[test]
    fn a_tap_counts_only_as_a_port_of_its_bridge() {
        let link = |name: &str, master: Option<&str>| Link {
            name: name.into(),
            master: master.map(Into::into),
        };
        let net = HostNetwork::new(Arc::new(Recorder::default()), "/dev/null").with_links(
            Arc::new(Links(vec![
                link("bgt1", Some("banger0")),
                link("bgt2", None),
                link("bgt3", Some("docker0")),
            ])),
        );
        net.check_tap("bgt1", "banger0").unwrap();
        for (name, state) in [
            ("bgt2", "on no bridge"),
            ("bgt3", "on docker0"),
            ("bgt4", "missing"),
        ] {
            let err = net.check_tap(name, "banger0").unwrap_err().to_string();
            assert!(
                err.contains(state) && err.contains("no network"),
                "{name}: {err}"
            );
        }
    }

    /// The daemon in a network namespace of its own while /sys shows the
    /// host's: the bridge and taps it makes are found where it made them.
    #[test]
    fn interfaces_are_read_in_the_daemons_own_namespace_not_sysfs() {
        if !banger_testutil::have_root("the network namespace test") {
            return;
        }
        let worked = std::thread::spawn(|| {
            // SAFETY: unshare(CLONE_NEWNET) moves only this thread (and the
            // processes it spawns) into a new, empty network namespace; it
            // touches no memory of ours.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let net = HostNetwork::new(Arc::new(banger_sys::HostRunner), "/dev/null");
            let tap = "bgt0a1b2c3d4e5f";
            net.ensure_bridge("bgtestbr0", &"10.199.0.1/24".parse().unwrap())?;
            net.add_tap(tap, "bgtestbr0", 0)?;
            net.check_tap(tap, "bgtestbr0")?;
            net.remove_tap(tap)?;
            let gone = net.check_tap(tap, "bgtestbr0").unwrap_err().to_string();
            assert!(gone.contains("missing"), "{gone}");
            // Idempotent: the bridge is found, not created twice.
            net.ensure_bridge("bgtestbr0", &"10.199.0.1/24".parse().unwrap())?;
            // A subnet the namespace already routes elsewhere is refused,
            // and no bridge is made for it.
            let ip = |args: &[&str]| {
                let cmd = Cmd::new("ip").args(args.iter().copied());
                banger_sys::HostRunner.run(&cmd, Path::new("/dev/null"), &Cancel::new())
            };
            ip(&["link", "add", "bgtestlan", "type", "bridge"]).unwrap();
            ip(&["addr", "add", "10.198.0.2/16", "dev", "bgtestlan"]).unwrap();
            ip(&["link", "set", "bgtestlan", "up"]).unwrap();
            let err = net
                .ensure_bridge("bgtestbr1", &"10.198.5.1/24".parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("overlaps the host's route to 10.198.0.0/16 on bgtestlan"),
                "{err}"
            );
            assert!(net.link("bgtestbr1")?.is_none(), "a bridge was made");
            Ok::<(), NetError>(())
        })
        .join()
        .unwrap();
        worked.unwrap();
    }

    #[test]
    fn hostile_names_never_reach_a_command() {
        let rec = Arc::new(Recorder::default());
        let net = HostNetwork::new(rec.clone(), "/dev/null");
        assert!(net.add_tap("eth0", "banger0", 0).is_err());
        assert!(net.remove_tap("bgt1;reboot").is_err());
        assert!(
            net.add_nat("../x", Ipv4Addr::new(10, 0, 0, 2), "banger0")
                .is_err()
        );
        assert!(
            net.ensure_bridge("br 0", &"10.77.0.1/24".parse().unwrap())
                .is_err()
        );
        assert!(rec.0.lock().unwrap().is_empty());
    }
}

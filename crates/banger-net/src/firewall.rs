//! The guests' isolation: three nftables tables of banger's own per
//! bridge (`netdev`, `bridge` and `inet` tables named
//! `banger-<bridge>`), written whole in one `nft` transaction per change
//! through its JSON interface (never a rule built as text), and deleted
//! with the last guest.
//!
//! - `netdev` (anti-spoofing): an ingress chain on each guest's tap, which
//!   sees every frame before the bridge (link-local ones too): only the
//!   guest's own MAC, and only IPv4 or ARP from its own address, pass. A
//!   guest cannot speak as another, nor teach the bridge another's MAC.
//! - `bridge`: no frame goes from one `bgt*` port to another.
//! - `inet` (reach): from the bridge, the host answers only ping on the
//!   gateway and replies to what it opened; forwarding from the bridge is
//!   allowed only for NAT guests, never to another guest, to a private,
//!   shared, link-local, loopback or multicast range (cloud metadata
//!   included), nor over IPv6; nothing new is forwarded into the bridge;
//!   nothing arriving on a tap itself (a link-local frame, which the
//!   bridge hands to the host before its hooks) comes in at all.
//!
//! Taps are isolated bridge ports too, never teach the bridge a MAC from a
//! link-local frame, and have no IPv6 (see [`crate::Network::add_tap`] and
//! [`crate::Network::ensure_bridge`]). The tables only drop: a NAT
//! guest's accepts and masquerading stay with the iptables rules of
//! [`crate::Network::add_nat`], which a host whose FORWARD policy drops
//! (Docker's) needs. banger's hooks run before the default filter
//! priority, so no other tool's accept shadows a drop.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{NetError, Subnet, TAP_PREFIX, check_ifname};

/// The start of banger's table names (in the `bridge` and `inet`
/// families); see [`table_name`].
pub const TABLE: &str = "banger";

/// Before the bridge family's filter priority (-200).
const BRIDGE_PRIORITY: i32 = -250;
/// Early among ingress hooks (tc and other tools' come later).
const NETDEV_PRIORITY: i32 = -500;
/// Before the inet filter priority (0) that iptables-nft and most tools use.
const INET_PRIORITY: i32 = -5;

/// Where no guest, NAT or not, may go: private (RFC 1918), shared (RFC
/// 6598), loopback, link-local (cloud metadata at 169.254.169.254),
/// "this network", IETF, benchmarking, multicast and reserved ranges,
/// and Azure's metadata and wire server (a public address).
pub const BLOCKED: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(168, 63, 129, 16), 32),
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// One running guest as the tables know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guest {
    /// Its tap (`bgt...`).
    pub tap: String,
    /// Its MAC, `xx:xx:xx:xx:xx:xx` in lowercase hex, unicast.
    pub mac: String,
    /// Its address in the bridge's subnet.
    pub ip: Ipv4Addr,
    /// Whether it may reach beyond the host (`--nat`).
    pub nat: bool,
}

/// Everything the tables are written from.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// banger's bridge.
    pub bridge: &'a str,
    /// Its subnet; the gateway is the host's address on it.
    pub subnet: &'a Subnet,
    /// The running guests.
    pub guests: &'a [Guest],
    /// The host's name servers, which a NAT guest may reach on port 53
    /// even in a blocked range (its resolv.conf names them).
    pub nameservers: &'a [Ipv4Addr],
}

/// Checks `guest` against `subnet`: a tap of banger's, a unicast MAC, a
/// guest address (not the network, gateway or broadcast).
pub fn check_guest(guest: &Guest, subnet: &Subnet) -> Result<(), NetError> {
    check_ifname("tap", &guest.tap, TAP_PREFIX)?;
    let octets: Vec<&str> = guest.mac.split(':').collect();
    let hex = |o: &&str| o.len() == 2 && o.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let unicast = u8::from_str_radix(octets.first().copied().unwrap_or("01"), 16)
        .is_ok_and(|first| first & 1 == 0);
    if octets.len() != 6 || !octets.iter().all(hex) || !unicast {
        return Err(NetError::Invalid {
            what: "MAC",
            value: guest.mac.clone(),
            why: "must be six lowercase hex octets, unicast (xx:xx:xx:xx:xx:xx)",
        });
    }
    if !subnet.is_guest(guest.ip) {
        return Err(NetError::Invalid {
            what: "guest address",
            value: guest.ip.to_string(),
            why: "is not a guest address of banger's subnet",
        });
    }
    Ok(())
}

/// The name of banger's tables for `bridge`: one pair per bridge, so two
/// installations on one host (each with its own bridge) never rewrite
/// each other's.
pub fn table_name(bridge: &str) -> String {
    format!("{TABLE}-{bridge}")
}

/// The `nft -j` transaction that makes banger's tables for the policy's
/// bridge what `policy` says, replacing what they held; with no guests,
/// one that deletes them.
pub fn transaction(policy: &Policy<'_>) -> Result<Value, NetError> {
    check_ifname("bridge", policy.bridge, "")?;
    let (mut taps, mut macs, mut ips) = (HashSet::new(), HashSet::new(), HashSet::new());
    for guest in policy.guests {
        check_guest(guest, policy.subnet)?;
        if !taps.insert(&guest.tap) || !macs.insert(&guest.mac) || !ips.insert(guest.ip) {
            return Err(NetError::Invalid {
                what: "guest",
                value: guest.tap.clone(),
                why: "its tap, MAC or address is another guest's too",
            });
        }
    }
    let name = table_name(policy.bridge);
    // `add` before `delete`: deleting a table that is not there would
    // fail the whole transaction.
    let mut commands = Vec::new();
    for family in ["netdev", "bridge", "inet"] {
        let table = json!({"table": {"family": family, "name": name}});
        commands.push(json!({"add": table}));
        commands.push(json!({"delete": table}));
    }
    if !policy.guests.is_empty() {
        commands.extend(netdev_table(&Table::new("netdev", &name), policy));
        commands.extend(bridge_table(&Table::new("bridge", &name)));
        commands.extend(inet_table(&Table::new("inet", &name), policy));
    }
    Ok(json!({"nftables": commands}))
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn field(protocol: &str, name: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": name}})
}

fn matches(left: Value, op: &str, right: impl Serialize) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn prefix(addr: Ipv4Addr, len: u8) -> Value {
    json!({"prefix": {"addr": addr.to_string(), "len": len}})
}

fn verdict(word: &str) -> Value {
    json!({ word: null })
}

/// `expr` then a counter and a drop.
fn drop_counted(mut expr: Vec<Value>) -> Vec<Value> {
    expr.extend([json!({"counter": null}), verdict("drop")]);
    expr
}

/// `expr` then an accept.
fn accept(mut expr: Vec<Value>) -> Vec<Value> {
    expr.push(verdict("accept"));
    expr
}

/// One of banger's tables, making its commands.
struct Table<'a> {
    family: &'static str,
    name: &'a str,
}

impl<'a> Table<'a> {
    fn new(family: &'static str, name: &'a str) -> Self {
        Self { family, name }
    }

    fn create(&self) -> Value {
        json!({"add": {"table": {"family": self.family, "name": self.name}}})
    }

    fn rule(&self, chain: &str, expr: Vec<Value>) -> Value {
        json!({"add": {"rule": {"family": self.family, "table": self.name, "chain": chain, "expr": expr}}})
    }

    fn base_chain(&self, name: &str, hook: &str, prio: i32) -> Value {
        json!({"add": {"chain": {
            "family": self.family, "table": self.name, "name": name,
            "type": "filter", "hook": hook, "prio": prio, "policy": "accept",
        }}})
    }

    /// A set of `kind` (a type, or a list of types for a concatenation)
    /// holding `elem`, with `flags`.
    fn set(&self, name: &str, kind: Value, flags: &[&str], elem: Vec<Value>) -> Value {
        let mut set =
            json!({"family": self.family, "table": self.name, "name": name, "type": kind});
        if !flags.is_empty() {
            set["flags"] = json!(flags);
        }
        if !elem.is_empty() {
            set["elem"] = Value::Array(elem);
        }
        json!({"add": {"set": set}})
    }
}

/// One ingress chain per guest's tap, which sees every frame the guest
/// sends before the bridge does (link-local ones included): only its own
/// MAC, and only IPv4 or ARP from its own address, get through.
fn netdev_table(t: &Table<'_>, policy: &Policy<'_>) -> Vec<Value> {
    let mut commands = vec![t.create()];
    for g in policy.guests {
        let (mac, ip) = (g.mac.as_str(), g.ip.to_string());
        commands.push(json!({"add": {"chain": {
            "family": t.family, "table": t.name, "name": g.tap,
            "type": "filter", "hook": "ingress", "dev": g.tap,
            "prio": NETDEV_PRIORITY, "policy": "accept",
        }}}));
        commands.extend([
            t.rule(
                &g.tap,
                drop_counted(vec![matches(field("ether", "saddr"), "!=", mac)]),
            ),
            t.rule(
                &g.tap,
                accept(vec![matches(field("ip", "saddr"), "==", &ip)]),
            ),
            // ARP: the sender it claims to be is its own too.
            t.rule(
                &g.tap,
                accept(vec![
                    matches(field("arp", "saddr ether"), "==", mac),
                    matches(field("arp", "saddr ip"), "==", &ip),
                ]),
            ),
            t.rule(&g.tap, drop_counted(vec![])),
        ]);
    }
    commands
}

/// Port to port: guests never meet at layer 2, whether or not a port is
/// isolated (a tap made before isolation existed).
fn bridge_table(t: &Table<'_>) -> Vec<Value> {
    let tap = || format!("{TAP_PREFIX}*");
    vec![
        t.create(),
        t.base_chain("between_ports", "forward", BRIDGE_PRIORITY),
        t.rule(
            "between_ports",
            drop_counted(vec![
                matches(meta("iifname"), "==", tap()),
                matches(meta("oifname"), "==", tap()),
            ]),
        ),
    ]
}

fn inet_table(t: &Table<'_>, policy: &Policy<'_>) -> Vec<Value> {
    let bridge = policy.bridge;
    let gateway = policy.subnet.gateway().to_string();
    let addresses = |ips: Vec<String>| ips.into_iter().map(Value::from).collect();
    let nat = addresses(
        policy
            .guests
            .iter()
            .filter(|g| g.nat)
            .map(|g| g.ip.to_string())
            .collect(),
    );
    let dns = addresses(policy.nameservers.iter().map(ToString::to_string).collect());
    let blocked = BLOCKED.iter().map(|(a, l)| prefix(*a, *l)).collect();
    let from_bridge = || matches(meta("iifname"), "==", bridge);
    let to_bridge = || matches(meta("oifname"), "==", bridge);
    // A link-local frame (01:80:c2:00:00:0x) reaches the host on the tap
    // itself, before the bridge's hooks: nothing comes in that way.
    let on_a_tap = matches(meta("iifname"), "==", format!("{TAP_PREFIX}*"));
    let established = || {
        matches(
            json!({"ct": {"key": "state"}}),
            "in",
            json!(["established", "related"]),
        )
    };
    let daddr = |set: &str| matches(field("ip", "daddr"), "==", set);
    vec![
        t.create(),
        t.set("nat", json!("ipv4_addr"), &[], nat),
        t.set("dns", json!("ipv4_addr"), &[], dns),
        t.set("blocked", json!("ipv4_addr"), &["interval"], blocked),
        t.base_chain("forward", "forward", INET_PRIORITY),
        t.rule("forward", drop_counted(vec![on_a_tap.clone()])),
        // Guest to guest through the host's routing.
        t.rule("forward", drop_counted(vec![from_bridge(), to_bridge()])),
        t.rule(
            "forward",
            drop_counted(vec![from_bridge(), matches(meta("nfproto"), "==", "ipv6")]),
        ),
        t.rule(
            "forward",
            drop_counted(vec![
                from_bridge(),
                matches(field("ip", "saddr"), "!=", "@nat"),
            ]),
        ),
        t.rule(
            "forward",
            accept(vec![
                from_bridge(),
                daddr("@dns"),
                matches(meta("l4proto"), "==", json!({"set": ["tcp", "udp"]})),
                matches(field("th", "dport"), "==", 53),
            ]),
        ),
        t.rule(
            "forward",
            drop_counted(vec![from_bridge(), daddr("@blocked")]),
        ),
        t.rule("forward", accept(vec![to_bridge(), established()])),
        t.rule("forward", drop_counted(vec![to_bridge()])),
        t.base_chain("input", "input", INET_PRIORITY),
        t.rule("input", drop_counted(vec![on_a_tap])),
        t.rule("input", accept(vec![from_bridge(), established()])),
        t.rule(
            "input",
            accept(vec![
                from_bridge(),
                matches(field("ip", "daddr"), "==", gateway),
                matches(field("icmp", "type"), "==", "echo-request"),
            ]),
        ),
        t.rule("input", drop_counted(vec![from_bridge()])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(n: u8, nat: bool) -> Guest {
        Guest {
            tap: format!("bgt{n:02x}"),
            mac: format!("02:ba:00:00:00:{n:02x}"),
            ip: Ipv4Addr::new(10, 77, 0, n),
            nat,
        }
    }

    fn subnet() -> Subnet {
        "10.77.0.1/24".parse().unwrap()
    }

    /// The commands of `policy`'s transaction that add a `kind` (a
    /// table, chain, set or rule) of `family`.
    fn added(policy: &Policy<'_>, family: &str, kind: &str) -> Vec<Value> {
        transaction(policy).unwrap()["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"].get(kind))
            .filter(|v| v["family"] == family)
            .cloned()
            .collect()
    }

    #[test]
    fn the_transaction_replaces_the_tables_and_names_each_guest_once() {
        let guests = [guest(2, true), guest(3, false)];
        let policy = Policy {
            bridge: "bgbr0",
            subnet: &subnet(),
            guests: &guests,
            nameservers: &[Ipv4Addr::new(192, 168, 1, 1)],
        };
        let commands = transaction(&policy).unwrap()["nftables"].clone();
        for (family, at) in [("netdev", 0), ("bridge", 2), ("inet", 4)] {
            assert_eq!(commands[at]["add"]["table"]["family"], family);
            assert_eq!(commands[at]["add"]["table"]["name"], "banger-bgbr0");
            assert_eq!(commands[at + 1]["delete"]["table"]["family"], family);
        }
        // One ingress chain per tap, on that tap, checking its own MAC.
        let chains = added(&policy, "netdev", "chain");
        let devices: Vec<&Value> = chains.iter().map(|c| &c["dev"]).collect();
        assert_eq!(devices, ["bgt02", "bgt03"]);
        let rules = added(&policy, "netdev", "rule");
        let first = rules.iter().find(|r| r["chain"] == "bgt02").unwrap();
        assert_eq!(first["expr"][0]["match"]["right"], "02:ba:00:00:00:02");
        let sets = added(&policy, "inet", "set");
        let set = |name: &str| sets.iter().find(|s| s["name"] == name).unwrap()["elem"].clone();
        assert_eq!(set("nat"), json!(["10.77.0.2"]));
        assert_eq!(set("dns"), json!(["192.168.1.1"]));
    }

    #[test]
    fn no_guests_deletes_the_tables_and_writes_nothing_else() {
        let policy = Policy {
            bridge: "bgbr0",
            subnet: &subnet(),
            guests: &[],
            nameservers: &[],
        };
        let commands = transaction(&policy).unwrap()["nftables"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(commands.len(), 6);
        for at in [1, 3, 5] {
            assert!(commands[at].get("delete").is_some());
        }
    }

    #[test]
    fn two_guests_sharing_a_mac_or_an_address_are_refused() {
        for twin in [
            Guest {
                mac: "02:ba:00:00:00:02".into(),
                ..guest(3, false)
            },
            Guest {
                ip: Ipv4Addr::new(10, 77, 0, 2),
                ..guest(3, false)
            },
        ] {
            let guests = [guest(2, true), twin];
            let policy = Policy {
                bridge: "bgbr0",
                subnet: &subnet(),
                guests: &guests,
                nameservers: &[],
            };
            assert!(transaction(&policy).is_err(), "{:?}", guests[1]);
        }
    }

    #[test]
    fn hostile_or_foreign_guest_values_are_refused_before_any_rule() {
        let bad = [
            Guest {
                tap: "eth0".into(),
                ..guest(2, false)
            },
            Guest {
                tap: "bgt\" accept".into(),
                ..guest(2, false)
            },
            Guest {
                mac: "02:BA:00:00:00:02".into(),
                ..guest(2, false)
            },
            Guest {
                mac: "03:ba:00:00:00:02".into(),
                ..guest(2, false)
            },
            Guest {
                mac: "02:ba:00:00:00".into(),
                ..guest(2, false)
            },
            Guest {
                mac: "02:ba:00:00:00:0g".into(),
                ..guest(2, false)
            },
            Guest {
                ip: Ipv4Addr::new(10, 77, 0, 1),
                ..guest(2, false)
            },
            Guest {
                ip: Ipv4Addr::new(10, 77, 0, 255),
                ..guest(2, false)
            },
            Guest {
                ip: Ipv4Addr::new(192, 168, 1, 2),
                ..guest(2, false)
            },
        ];
        for g in bad {
            let policy = Policy {
                bridge: "bgbr0",
                subnet: &subnet(),
                guests: std::slice::from_ref(&g),
                nameservers: &[],
            };
            assert!(transaction(&policy).is_err(), "{g:?}");
        }
        let policy = Policy {
            bridge: "bg br",
            subnet: &subnet(),
            guests: &[guest(2, false)],
            nameservers: &[],
        };
        assert!(transaction(&policy).is_err());
    }
}

//! The guests' isolation: two nftables tables of banger's own, written
//! whole in one `nft` transaction per change through its JSON interface
//! (never a rule built as text), and deleted with the last guest.
//!
//! - `bridge banger` (anti-spoofing): a frame from one of banger's taps
//!   passes only as IPv4 or ARP from that tap's own MAC and address; any
//!   other frame from a `bgt*` port, and every frame from a tap the table
//!   does not know, is dropped. A guest cannot speak as another.
//! - `inet banger` (reach): from the bridge, the host answers only DNS and
//!   ping on the gateway and replies to what it opened; forwarding from
//!   the bridge is allowed only for NAT guests, never to another guest,
//!   to a private, shared, link-local, loopback or multicast range (cloud
//!   metadata included), nor over IPv6; nothing new is forwarded into the
//!   bridge.
//!
//! Guests' own bridge ports are isolated too (see
//! [`crate::Network::add_tap`]), so two guests never meet at layer 2.
//! The tables only drop: a NAT guest's accepts and masquerading stay with
//! the iptables rules of [`crate::Network::add_nat`], which a host whose
//! FORWARD policy drops (Docker's) needs. banger's hooks run before the
//! default filter priority, so no other tool's accept shadows a drop.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{NetError, Subnet, TAP_PREFIX, check_ifname};

/// The name of banger's tables (in the `bridge` and `inet` families).
pub const TABLE: &str = "banger";

/// Before the bridge family's filter priority (-200).
const BRIDGE_PRIORITY: i32 = -250;
/// Before the inet filter priority (0) that iptables-nft and most tools use.
const INET_PRIORITY: i32 = -5;

/// Where no guest, NAT or not, may go: private (RFC 1918), shared (RFC
/// 6598), loopback, link-local (cloud metadata at 169.254.169.254),
/// "this network", IETF, benchmarking, multicast and reserved ranges.
pub const BLOCKED: &[(Ipv4Addr, u8)] = &[
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

/// The `nft -j` transaction that makes banger's tables what `policy`
/// says, replacing what they held; with no guests, one that deletes them.
pub fn transaction(policy: &Policy<'_>) -> Result<Value, NetError> {
    check_ifname("bridge", policy.bridge, "")?;
    for guest in policy.guests {
        check_guest(guest, policy.subnet)?;
    }
    // `add` before `delete`: deleting a table that is not there would
    // fail the whole transaction.
    let mut commands = Vec::new();
    for family in ["bridge", "inet"] {
        let table = json!({"table": {"family": family, "name": TABLE}});
        commands.push(json!({"add": table}));
        commands.push(json!({"delete": table}));
    }
    if !policy.guests.is_empty() {
        commands.extend(bridge_table(policy));
        commands.extend(inet_table(policy));
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

/// A rule of `family`'s table in `chain`, its statements `expr`.
fn rule(family: &str, chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": family, "table": TABLE, "chain": chain, "expr": expr}}})
}

fn base_chain(family: &str, name: &str, hook: &str, prio: i32) -> Value {
    json!({"add": {"chain": {
        "family": family, "table": TABLE, "name": name,
        "type": "filter", "hook": hook, "prio": prio, "policy": "accept",
    }}})
}

fn drop_counted() -> [Value; 2] {
    [json!({"counter": null}), json!({"drop": null})]
}

fn bridge_table(policy: &Policy<'_>) -> Vec<Value> {
    let family = "bridge";
    let elements: Vec<Value> = policy
        .guests
        .iter()
        .map(|g| json!({"concat": [g.tap, g.mac, g.ip.to_string()]}))
        .collect();
    let from_tap = |third: Value, extra: Vec<Value>| {
        let mut expr = vec![matches(
            json!({"concat": [meta("iifname"), field("ether", "saddr"), third]}),
            "==",
            "@guests",
        )];
        expr.extend(extra);
        expr.push(json!({"accept": null}));
        rule(family, "from_taps", expr)
    };
    vec![
        json!({"add": {"table": {"family": family, "name": TABLE}}}),
        json!({"add": {"set": {
            "family": family, "table": TABLE, "name": "guests",
            "type": ["ifname", "ether_addr", "ipv4_addr"], "elem": elements,
        }}}),
        base_chain(family, "from_taps", "prerouting", BRIDGE_PRIORITY),
        rule(
            family,
            "from_taps",
            vec![
                matches(meta("iifname"), "!=", format!("{TAP_PREFIX}*")),
                json!({"accept": null}),
            ],
        ),
        from_tap(field("ip", "saddr"), vec![]),
        // ARP: the frame's sender and the one it claims to be, both its own.
        from_tap(
            field("arp", "saddr ip"),
            vec![matches(
                json!({"concat": [meta("iifname"), field("arp", "saddr ether"), field("arp", "saddr ip")]}),
                "==",
                "@guests",
            )],
        ),
        rule(family, "from_taps", drop_counted().to_vec()),
    ]
}

fn inet_table(policy: &Policy<'_>) -> Vec<Value> {
    let family = "inet";
    let bridge = policy.bridge;
    let gateway = policy.subnet.gateway();
    let set = |name: &str, flags: Option<&str>, elem: Vec<Value>| {
        let mut set = json!({"family": family, "table": TABLE, "name": name, "type": "ipv4_addr"});
        if let Some(flags) = flags {
            set["flags"] = json!([flags]);
        }
        if !elem.is_empty() {
            set["elem"] = Value::Array(elem);
        }
        json!({"add": {"set": set}})
    };
    let nat: Vec<Value> = policy
        .guests
        .iter()
        .filter(|g| g.nat)
        .map(|g| json!(g.ip.to_string()))
        .collect();
    let dns = policy
        .nameservers
        .iter()
        .map(|ns| json!(ns.to_string()))
        .collect();
    let blocked = BLOCKED.iter().map(|(a, l)| prefix(*a, *l)).collect();
    let from_bridge = matches(meta("iifname"), "==", bridge);
    let to_bridge = matches(meta("oifname"), "==", bridge);
    let port_53 = || {
        [
            matches(meta("l4proto"), "==", json!({"set": ["tcp", "udp"]})),
            matches(field("th", "dport"), "==", 53),
        ]
    };
    let established = matches(
        json!({"ct": {"key": "state"}}),
        "in",
        json!(["established", "related"]),
    );
    let mut forward_dns = vec![
        from_bridge.clone(),
        matches(field("ip", "daddr"), "==", "@dns"),
    ];
    forward_dns.extend(port_53());
    forward_dns.push(json!({"accept": null}));
    let mut input_dns = vec![
        from_bridge.clone(),
        matches(field("ip", "daddr"), "==", gateway.to_string()),
    ];
    input_dns.extend(port_53());
    input_dns.push(json!({"accept": null}));
    let with = |mut head: Vec<Value>, tail: &[Value]| {
        head.extend_from_slice(tail);
        head
    };
    vec![
        json!({"add": {"table": {"family": family, "name": TABLE}}}),
        set("nat", None, nat),
        set("dns", None, dns),
        set("blocked", Some("interval"), blocked),
        base_chain(family, "forward", "forward", INET_PRIORITY),
        // Guest to guest through the host's routing.
        rule(
            family,
            "forward",
            with(
                vec![from_bridge.clone(), to_bridge.clone()],
                &drop_counted(),
            ),
        ),
        rule(
            family,
            "forward",
            with(
                vec![from_bridge.clone(), matches(meta("nfproto"), "==", "ipv6")],
                &drop_counted(),
            ),
        ),
        rule(
            family,
            "forward",
            with(
                vec![
                    from_bridge.clone(),
                    matches(field("ip", "saddr"), "!=", "@nat"),
                ],
                &drop_counted(),
            ),
        ),
        rule(family, "forward", forward_dns),
        rule(
            family,
            "forward",
            with(
                vec![
                    from_bridge.clone(),
                    matches(field("ip", "daddr"), "==", "@blocked"),
                ],
                &drop_counted(),
            ),
        ),
        rule(
            family,
            "forward",
            vec![
                to_bridge.clone(),
                established.clone(),
                json!({"accept": null}),
            ],
        ),
        rule(family, "forward", with(vec![to_bridge], &drop_counted())),
        base_chain(family, "input", "input", INET_PRIORITY),
        rule(
            family,
            "input",
            vec![from_bridge.clone(), established, json!({"accept": null})],
        ),
        rule(family, "input", input_dns),
        rule(
            family,
            "input",
            vec![
                from_bridge.clone(),
                matches(field("ip", "daddr"), "==", gateway.to_string()),
                matches(field("icmp", "type"), "==", "echo-request"),
                json!({"accept": null}),
            ],
        ),
        rule(family, "input", with(vec![from_bridge], &drop_counted())),
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

    #[test]
    fn the_transaction_replaces_both_tables_and_names_each_guest_once() {
        let guests = [guest(2, true), guest(3, false)];
        let policy = Policy {
            bridge: "bgbr0",
            subnet: &subnet(),
            guests: &guests,
            nameservers: &[Ipv4Addr::new(192, 168, 1, 1)],
        };
        let text = transaction(&policy).unwrap().to_string();
        for (family, at) in [("bridge", 0), ("inet", 2)] {
            let commands = &transaction(&policy).unwrap()["nftables"];
            assert_eq!(commands[at]["add"]["table"]["family"], family);
            assert_eq!(commands[at + 1]["delete"]["table"]["family"], family);
        }
        assert!(
            text.contains(r#"{"concat":["bgt02","02:ba:00:00:00:02","10.77.0.2"]}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""name":"nat","type":"ipv4_addr","elem":["10.77.0.2"]"#),
            "{text}"
        );
        assert!(!text.contains(r#""elem":["10.77.0.3"]"#), "{text}");
        assert!(text.contains(r#""192.168.1.1""#), "{text}");
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
        assert_eq!(commands.len(), 4);
        assert!(commands[1].get("delete").is_some() && commands[3].get("delete").is_some());
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

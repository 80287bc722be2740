//! What the helper allows: every argument of a request checked against the
//! names and addresses banger owns, before anything runs as root.
//!
//! A request becomes a [`Checked`] op, which carries only what passed; the
//! server runs that, with the bridge, subnet and uid taken from the policy,
//! never from the request.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use banger_api::net::{Subnet, check_ifname};
use banger_net::{TAP_PREFIX, check_tag};

use crate::protocol::Op;

/// The only owner, bridge and subnet a helper serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    owner_uid: u32,
    bridge: String,
    subnet: Subnet,
}

/// A request the policy refused: what, the value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused {what} {value:?}: {why}")]
pub struct Refusal {
    /// Which argument.
    pub what: &'static str,
    /// Its value.
    pub value: String,
    /// Why it is refused.
    pub why: String,
}

fn refuse(what: &'static str, value: impl std::fmt::Display, why: impl Into<String>) -> Refusal {
    Refusal {
        what,
        value: value.to_string(),
        why: why.into(),
    }
}

/// An op whose arguments passed the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Report what is served.
    Ping,
    /// The policy's bridge, with the policy's subnet.
    EnsureBridge,
    /// A banger tap, for the owner, on the policy's bridge.
    AddTap(String),
    /// A banger tap of the owner's, on the policy's bridge or none.
    RemoveTap(String),
    /// A tap to remove that is already gone: nothing to run (so nothing
    /// made between the check and a delete can be hit).
    Gone,
    /// A banger tap, checked against the policy's bridge.
    CheckTap(String),
    /// NAT for a guest address of the policy's subnet, tagged.
    AddNat(String, Ipv4Addr),
    /// The same rules, removed.
    RemoveNat(String, Ipv4Addr),
    /// banger's tables for these guests, each checked.
    SetFirewall(Vec<banger_net::Guest>),
}

/// What the host says about an existing tap.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TapState {
    /// Whether it is a tun/tap device at all.
    pub is_tun: bool,
    /// The uid it was created for (`None`: anyone's).
    pub owner: Option<u32>,
    /// The bridge it is a port of.
    pub master: Option<String>,
}

/// What the host says about an existing bridge-to-be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkState {
    /// Whether it is a bridge.
    pub is_bridge: bool,
    /// Its ports, when it is one.
    pub ports: Vec<String>,
}

/// The most taps one owner may have: far above what a subnet's guests
/// need, far below what would hurt the host.
pub const MAX_TAPS: usize = 1024;

/// Reads interface facts the policy needs (sysfs on the host).
pub trait TapFacts {
    /// The state of interface `name`; `None` when it does not exist.
    fn tap(&self, name: &str) -> Option<TapState>;
    /// Interface `name` as a bridge; `None` when it does not exist.
    fn link(&self, name: &str) -> Option<LinkState>;
    /// How many tap devices `uid` owns.
    fn owned_taps(&self, uid: u32) -> usize;
}

/// [`TapFacts`] from `<root>/class/net` (root is `/sys` on a host).
#[derive(Debug, Clone)]
pub struct SysfsTaps {
    root: PathBuf,
}

impl SysfsTaps {
    /// Reads under `root` (e.g. `/sys`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl TapFacts for SysfsTaps {
    fn link(&self, name: &str) -> Option<LinkState> {
        let dir = self.root.join("class/net").join(name);
        std::fs::symlink_metadata(&dir).ok()?;
        let ports = std::fs::read_dir(dir.join("brif"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        Some(LinkState {
            is_bridge: dir.join("bridge").is_dir(),
            ports,
        })
    }

    fn owned_taps(&self, uid: u32) -> usize {
        let Ok(entries) = std::fs::read_dir(self.root.join("class/net")) else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| self.tap(n)))
            .filter(|t| t.is_tun && t.owner == Some(uid))
            .count()
    }

    fn tap(&self, name: &str) -> Option<TapState> {
        let dir = self.root.join("class/net").join(name);
        std::fs::symlink_metadata(&dir).ok()?;
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        let master = std::fs::read_link(dir.join("master"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        Some(TapState {
            is_tun: Path::new(&dir.join("tun_flags")).exists(),
            // -1 (no owner) does not parse as a u32.
            owner: read("owner").and_then(|s| s.trim().parse().ok()),
            master,
        })
    }
}

impl Policy {
    /// A policy for `owner_uid` (never root: a helper for a root daemon
    /// would only widen what runs as root), `bridge` and `subnet`.
    pub fn new(owner_uid: u32, bridge: &str, subnet: Subnet) -> Result<Self, Refusal> {
        if owner_uid == 0 {
            return Err(refuse(
                "owner",
                0,
                "root needs no helper: the owner is the unprivileged user bangerd runs as",
            ));
        }
        check_ifname("bridge", bridge, "").map_err(|e| refuse("bridge", bridge, e.why))?;
        Ok(Self {
            owner_uid,
            bridge: bridge.to_owned(),
            subnet,
        })
    }

    /// The owner's uid.
    pub fn owner_uid(&self) -> u32 {
        self.owner_uid
    }

    /// The bridge.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The subnet.
    pub fn subnet(&self) -> &Subnet {
        &self.subnet
    }

    /// Whether a peer with `uid` may call at all: root and the owner.
    pub fn admits(&self, uid: u32) -> bool {
        uid == 0 || uid == self.owner_uid
    }

    /// Checks every argument of `op`; `taps` answers for existing taps.
    pub fn check(&self, op: &Op, taps: &dyn TapFacts) -> Result<Checked, Refusal> {
        Ok(match op {
            Op::Ping {} => Checked::Ping,
            Op::EnsureBridge { bridge, subnet } => {
                self.bridge_is_ours(bridge)?;
                self.bridge_is_bangers(taps)?;
                if *subnet != self.subnet.to_string() {
                    return Err(refuse(
                        "subnet",
                        subnet,
                        format!("the helper serves only {}", self.subnet),
                    ));
                }
                Checked::EnsureBridge
            }
            Op::AddTap { tap, bridge } => {
                self.bridge_is_ours(bridge)?;
                self.bridge_is_bangers(taps)?;
                let tap = self.tap_name(tap)?;
                if taps.owned_taps(self.owner_uid) >= MAX_TAPS {
                    return Err(refuse(
                        "tap",
                        tap,
                        format!("the owner already has {MAX_TAPS} taps"),
                    ));
                }
                Checked::AddTap(tap)
            }
            Op::CheckTap { tap, bridge } => {
                self.bridge_is_ours(bridge)?;
                Checked::CheckTap(self.tap_name(tap)?)
            }
            Op::RemoveTap { tap } => {
                let tap = self.tap_name(tap)?;
                match taps.tap(&tap) {
                    Some(state) => {
                        self.tap_is_ours(&tap, &state)?;
                        Checked::RemoveTap(tap)
                    }
                    None => Checked::Gone,
                }
            }
            Op::AddNat { tag, ip, bridge } => {
                self.bridge_is_ours(bridge)?;
                Checked::AddNat(self.tag(tag)?, self.guest(*ip)?)
            }
            Op::RemoveNat { tag, ip, bridge } => {
                self.bridge_is_ours(bridge)?;
                Checked::RemoveNat(self.tag(tag)?, self.guest(*ip)?)
            }
            Op::SetFirewall { bridge, guests } => {
                self.bridge_is_ours(bridge)?;
                Checked::SetFirewall(self.guests(guests, taps)?)
            }
        })
    }

    /// Running guests, each valid, none sharing a tap, MAC or address,
    /// each tap the owner's and on the bridge (or on none). A guest whose
    /// tap is gone is left out: it has nothing to filter, and a chain on
    /// a missing device would fail the whole transaction.
    fn guests(
        &self,
        guests: &[banger_net::Guest],
        taps: &dyn TapFacts,
    ) -> Result<Vec<banger_net::Guest>, Refusal> {
        if guests.len() > MAX_TAPS {
            return Err(refuse(
                "guests",
                guests.len(),
                format!("a helper serves at most {MAX_TAPS}"),
            ));
        }
        let mut kept = Vec::new();
        let mut names = std::collections::HashSet::new();
        let (mut macs, mut ips) = (
            std::collections::HashSet::new(),
            std::collections::HashSet::new(),
        );
        for g in guests {
            banger_net::firewall::check_guest(g, &self.subnet).map_err(|e| match e {
                banger_net::NetError::Invalid { what, value, why } => refuse(what, value, why),
                other => refuse("guest", &g.tap, other.to_string()),
            })?;
            if !names.insert(g.tap.as_str()) || !macs.insert(g.mac.as_str()) || !ips.insert(g.ip) {
                return Err(refuse(
                    "guest",
                    &g.tap,
                    "a tap, MAC or address is named twice",
                ));
            }
            if let Some(state) = taps.tap(&g.tap) {
                self.tap_is_ours(&g.tap, &state)?;
                kept.push(g.clone());
            }
        }
        Ok(kept)
    }

    fn bridge_is_ours(&self, bridge: &str) -> Result<(), Refusal> {
        if bridge == self.bridge {
            Ok(())
        } else {
            Err(refuse(
                "bridge",
                bridge,
                format!("the helper serves only bridge {}", self.bridge),
            ))
        }
    }

    /// An existing interface of the bridge's name must be a bridge whose
    /// ports are all banger's taps: not a physical interface, nor a bridge
    /// with someone else's ports. (An empty bridge of someone else's would
    /// pass: the name comes from root's install record, not a request.)
    fn bridge_is_bangers(&self, taps: &dyn TapFacts) -> Result<(), Refusal> {
        let Some(link) = taps.link(&self.bridge) else {
            return Ok(());
        };
        if !link.is_bridge {
            return Err(refuse(
                "bridge",
                &self.bridge,
                "an interface of that name exists and is not a bridge",
            ));
        }
        match link.ports.iter().find(|p| !p.starts_with(TAP_PREFIX)) {
            Some(port) => Err(refuse(
                "bridge",
                &self.bridge,
                format!("it has a port that is not banger's ({port})"),
            )),
            None => Ok(()),
        }
    }

    fn tap_name(&self, tap: &str) -> Result<String, Refusal> {
        check_ifname("tap", tap, TAP_PREFIX).map_err(|e| refuse("tap", tap, e.why))?;
        Ok(tap.to_owned())
    }

    fn tap_is_ours(&self, tap: &str, state: &TapState) -> Result<(), Refusal> {
        if !state.is_tun {
            return Err(refuse("tap", tap, "it is not a tap device"));
        }
        if state.owner != Some(self.owner_uid) {
            return Err(refuse(
                "tap",
                tap,
                format!(
                    "it belongs to {}, not to the owner (uid {})",
                    state
                        .owner
                        .map_or_else(|| "no uid".to_owned(), |u| format!("uid {u}")),
                    self.owner_uid
                ),
            ));
        }
        match &state.master {
            Some(master) if *master != self.bridge => Err(refuse(
                "tap",
                tap,
                format!("it is a port of {master}, not of {}", self.bridge),
            )),
            _ => Ok(()),
        }
    }

    fn tag(&self, tag: &str) -> Result<String, Refusal> {
        check_tag(tag)
            .map_err(|_| refuse("rule tag", tag, "must be 1 to 32 hex digits (a VM id)"))?;
        Ok(tag.to_owned())
    }

    fn guest(&self, ip: Ipv4Addr) -> Result<Ipv4Addr, Refusal> {
        if self.subnet.is_guest(ip) {
            Ok(ip)
        } else {
            Err(refuse(
                "guest address",
                ip,
                format!("not a guest address of {}", self.subnet),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const OWNER: u32 = 1000;

    #[derive(Default)]
    struct Taps(HashMap<&'static str, TapState>, Option<LinkState>, usize);

    impl TapFacts for Taps {
        fn tap(&self, name: &str) -> Option<TapState> {
            self.0.get(name).cloned()
        }
        fn link(&self, name: &str) -> Option<LinkState> {
            self.1.clone().filter(|_| name == "banger0")
        }
        fn owned_taps(&self, _: u32) -> usize {
            self.2
        }
    }

    fn policy() -> Policy {
        Policy::new(OWNER, "banger0", "10.77.0.1/24".parse().unwrap()).unwrap()
    }

    fn host() -> Taps {
        let tap = |owner, master: Option<&str>| TapState {
            is_tun: true,
            owner,
            master: master.map(str::to_owned),
        };
        Taps(
            HashMap::from([
                ("bgtmine", tap(Some(OWNER), Some("banger0"))),
                ("bgtloose", tap(Some(OWNER), None)),
                ("bgtother", tap(Some(OWNER), Some("docker0"))),
                ("bgtforeign", tap(Some(1001), Some("banger0"))),
                ("bgtanyone", tap(None, Some("banger0"))),
                (
                    "bgtveth",
                    TapState {
                        is_tun: false,
                        owner: None,
                        master: Some("banger0".to_owned()),
                    },
                ),
            ]),
            None,
            0,
        )
    }

    fn s(v: &str) -> String {
        v.to_owned()
    }

    fn nat(tag: &str, ip: [u8; 4], bridge: &str) -> Op {
        Op::AddNat {
            tag: s(tag),
            ip: Ipv4Addr::from(ip),
            bridge: s(bridge),
        }
    }

    #[test]
    fn hostile_arguments_are_refused_with_their_reason() {
        let table: Vec<(Op, &str)> = vec![
            (
                Op::EnsureBridge {
                    bridge: s("eth0"),
                    subnet: s("10.77.0.1/24"),
                },
                "serves only bridge banger0",
            ),
            (
                Op::EnsureBridge {
                    bridge: s("banger0"),
                    subnet: s("192.168.1.1/24"),
                },
                "serves only 10.77.0.1/24",
            ),
            (
                Op::AddTap {
                    tap: s("eth0"),
                    bridge: s("banger0"),
                },
                "wrong prefix",
            ),
            (
                Op::AddTap {
                    tap: s("bgt0; iptables -F"),
                    bridge: s("banger0"),
                },
                "must be 1 to 15",
            ),
            (
                Op::AddTap {
                    tap: s("bgt0`id`"),
                    bridge: s("banger0"),
                },
                "may hold only",
            ),
            (
                Op::AddTap {
                    tap: s("bgt01"),
                    bridge: s("docker0"),
                },
                "serves only bridge banger0",
            ),
            (Op::RemoveTap { tap: s("eth0") }, "wrong prefix"),
            (Op::RemoveTap { tap: s("bgt") }, "must be 1 to 15"),
            (
                Op::RemoveTap { tap: s("bgtother") },
                "a port of docker0, not of banger0",
            ),
            (
                Op::RemoveTap {
                    tap: s("bgtforeign"),
                },
                "belongs to uid 1001",
            ),
            (
                Op::RemoveTap {
                    tap: s("bgtanyone"),
                },
                "belongs to no uid",
            ),
            (Op::RemoveTap { tap: s("bgtveth") }, "not a tap device"),
            (
                Op::CheckTap {
                    tap: s("bgt01"),
                    bridge: s("br-lan"),
                },
                "serves only bridge banger0",
            ),
            (
                nat("0a1b", [192, 168, 1, 5], "banger0"),
                "not a guest address",
            ),
            (
                nat("0a1b", [10, 77, 0, 1], "banger0"),
                "not a guest address",
            ),
            (
                nat("0a1b", [10, 77, 0, 0], "banger0"),
                "not a guest address",
            ),
            (
                nat("0a1b", [10, 77, 0, 255], "banger0"),
                "not a guest address",
            ),
            (nat("0a1b", [0, 0, 0, 0], "banger0"), "not a guest address"),
            (
                nat("-j ACCEPT", [10, 77, 0, 5], "banger0"),
                "1 to 32 hex digits",
            ),
            (nat("", [10, 77, 0, 5], "banger0"), "1 to 32 hex digits"),
            (
                nat("0a1b", [10, 77, 0, 5], "eth0"),
                "serves only bridge banger0",
            ),
            (
                Op::RemoveNat {
                    tag: s("0a1b"),
                    ip: Ipv4Addr::new(8, 8, 8, 8),
                    bridge: s("banger0"),
                },
                "not a guest address",
            ),
            (
                fw("eth0", vec![guest("bgt0a", 2)]),
                "serves only bridge banger0",
            ),
            (fw("banger0", vec![guest("eth0", 2)]), "wrong prefix"),
            (
                fw("banger0", vec![guest("bgtforeign", 2)]),
                "belongs to uid 1001",
            ),
            (
                fw("banger0", vec![guest("bgtother", 2)]),
                "a port of docker0",
            ),
            (fw("banger0", vec![guest("bgtveth", 2)]), "not a tap device"),
            (fw("banger0", vec![guest("bgt0a;", 2)]), "a-z, 0-9"),
            (
                fw("banger0", vec![guest("bgt0a", 1)]),
                "not a guest address",
            ),
            (
                fw("banger0", vec![guest("bgt0a", 255)]),
                "not a guest address",
            ),
            (
                fw(
                    "banger0",
                    vec![banger_net::Guest {
                        mac: s("ff:ff:ff:ff:ff:ff"),
                        ..guest("bgt0a", 2)
                    }],
                ),
                "unicast",
            ),
            (
                fw(
                    "banger0",
                    vec![banger_net::Guest {
                        mac: s("02:ba:00:00:00:0a\" accept"),
                        ..guest("bgt0a", 2)
                    }],
                ),
                "hex octets",
            ),
            (
                fw("banger0", vec![guest("bgt0a", 2), guest("bgt0a", 3)]),
                "named twice",
            ),
            (
                fw("banger0", vec![guest("bgt0a", 2), guest("bgt0b", 2)]),
                "named twice",
            ),
            (
                fw(
                    "banger0",
                    vec![
                        guest("bgt0a", 2),
                        banger_net::Guest {
                            mac: s("02:ba:00:00:00:02"),
                            ..guest("bgt0b", 3)
                        },
                    ],
                ),
                "named twice",
            ),
            (
                fw(
                    "banger0",
                    (0..=MAX_TAPS).map(|_| guest("bgt0a", 2)).collect(),
                ),
                "at most",
            ),
        ];
        let (policy, host) = (policy(), host());
        for (op, why) in table {
            let refusal = policy.check(&op, &host).expect_err(&format!("{op:?}"));
            assert!(
                refusal.to_string().contains(why),
                "{op:?}: {refusal} should say {why:?}"
            );
        }
    }

    fn guest(tap: &str, n: u8) -> banger_net::Guest {
        banger_net::Guest {
            tap: s(tap),
            mac: format!("02:ba:00:00:00:{n:02x}"),
            ip: Ipv4Addr::new(10, 77, 0, n),
            nat: n.is_multiple_of(2),
        }
    }

    fn fw(bridge: &str, guests: Vec<banger_net::Guest>) -> Op {
        Op::SetFirewall {
            bridge: s(bridge),
            guests,
        }
    }

    #[test]
    fn a_firewall_of_the_owners_guests_passes_and_a_gone_tap_is_left_out() {
        let (policy, host) = (policy(), host());
        let guests = vec![guest("bgtmine", 2), guest("bgtloose", 3)];
        assert_eq!(
            policy.check(&fw("banger0", guests.clone()), &host).unwrap(),
            Checked::SetFirewall(guests.clone())
        );
        let with_gone = vec![
            guest("bgtmine", 2),
            guest("bgtgone", 4),
            guest("bgtloose", 3),
        ];
        assert_eq!(
            policy.check(&fw("banger0", with_gone), &host).unwrap(),
            Checked::SetFirewall(guests)
        );
        assert_eq!(
            policy.check(&fw("banger0", vec![]), &host).unwrap(),
            Checked::SetFirewall(vec![])
        );
    }

    #[test]
    fn banger_arguments_pass_and_carry_only_what_was_checked() {
        let (policy, host) = (policy(), host());
        let ok = |op: Op| policy.check(&op, &host).unwrap();
        assert_eq!(
            ok(Op::EnsureBridge {
                bridge: s("banger0"),
                subnet: s("10.77.0.1/24")
            }),
            Checked::EnsureBridge
        );
        assert_eq!(
            ok(Op::AddTap {
                tap: s("bgt0a1b2c3d4e5f"),
                bridge: s("banger0")
            }),
            Checked::AddTap(s("bgt0a1b2c3d4e5f"))
        );
        // Removing: ours on the bridge, ours on none (a half-made start);
        // one already gone is nothing to do.
        for tap in ["bgtmine", "bgtloose"] {
            assert_eq!(
                ok(Op::RemoveTap { tap: s(tap) }),
                Checked::RemoveTap(s(tap))
            );
        }
        assert_eq!(ok(Op::RemoveTap { tap: s("bgtgone") }), Checked::Gone);
        assert_eq!(
            ok(nat("0a1b", [10, 77, 0, 254], "banger0")),
            Checked::AddNat(s("0a1b"), Ipv4Addr::new(10, 77, 0, 254))
        );
    }

    #[test]
    fn a_bridge_of_someone_elses_and_too_many_taps_are_refused() {
        let policy = policy();
        let ensure = Op::EnsureBridge {
            bridge: s("banger0"),
            subnet: s("10.77.0.1/24"),
        };
        let add = Op::AddTap {
            tap: s("bgt1"),
            bridge: s("banger0"),
        };
        let bridge = |is_bridge, ports: &[&str]| LinkState {
            is_bridge,
            ports: ports.iter().map(|p| s(p)).collect(),
        };
        let hosts = [
            (bridge(false, &[]), "exists and is not a bridge"),
            (
                bridge(true, &["bgt1", "eth0"]),
                "a port that is not banger's (eth0)",
            ),
        ];
        for (link, why) in hosts {
            let host = Taps(HashMap::new(), Some(link), 0);
            for op in [&ensure, &add] {
                let err = policy.check(op, &host).unwrap_err().to_string();
                assert!(err.contains(why), "{op:?}: {err}");
            }
        }
        let ours = Taps(HashMap::new(), Some(bridge(true, &["bgt1", "bgt2"])), 0);
        assert_eq!(policy.check(&ensure, &ours).unwrap(), Checked::EnsureBridge);
        let full = Taps(HashMap::new(), None, MAX_TAPS);
        let err = policy.check(&add, &full).unwrap_err().to_string();
        assert!(err.contains("already has 1024 taps"), "{err}");
    }

    #[test]
    fn the_policy_serves_root_and_its_owner_and_never_has_root_as_owner() {
        let p = policy();
        assert!(p.admits(0) && p.admits(OWNER));
        assert!(!p.admits(1001) && !p.admits(65534));
        let subnet = "10.77.0.1/24".parse().unwrap();
        assert!(
            Policy::new(0, "banger0", subnet)
                .unwrap_err()
                .to_string()
                .contains("root needs no helper")
        );
        assert!(Policy::new(OWNER, "eth0;x", subnet).is_err());
    }

    #[test]
    fn sysfs_facts_read_owner_master_and_tun_flags() {
        let root = tempfile::tempdir().unwrap();
        let net = root.path().join("class/net");
        std::fs::create_dir_all(net.join("bgt1")).unwrap();
        std::fs::create_dir_all(net.join("banger0")).unwrap();
        std::fs::create_dir_all(net.join("veth0")).unwrap();
        std::fs::write(net.join("bgt1/owner"), "1000\n").unwrap();
        std::fs::write(net.join("bgt1/tun_flags"), "0x1002\n").unwrap();
        std::os::unix::fs::symlink("../banger0", net.join("bgt1/master")).unwrap();
        std::fs::write(net.join("veth0/owner"), "-1\n").unwrap();
        std::fs::create_dir_all(net.join("banger0/bridge")).unwrap();
        std::fs::create_dir_all(net.join("banger0/brif/bgt1")).unwrap();
        let taps = SysfsTaps::new(root.path());
        assert_eq!(
            taps.link("banger0"),
            Some(LinkState {
                is_bridge: true,
                ports: vec![s("bgt1")]
            })
        );
        assert_eq!(taps.owned_taps(1000), 1);
        assert_eq!(taps.owned_taps(1001), 0);
        assert_eq!(
            taps.tap("bgt1"),
            Some(TapState {
                is_tun: true,
                owner: Some(1000),
                master: Some(s("banger0"))
            })
        );
        assert_eq!(taps.tap("veth0"), Some(TapState::default()));
        assert_eq!(taps.tap("missing"), None);
    }
}

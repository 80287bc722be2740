//! The guests' isolation as the daemon keeps it: every connected guest's
//! tap, MAC, address and NAT, and banger's nftables tables rewritten
//! whole from them on every change (see [`banger_net::firewall`]).
//!
//! A guest joins before its VMM starts and leaves after its VMM and tap
//! are gone, so a VM never runs, and a tap never stands, without its
//! guest's chain. At daemon start the set is rebuilt from the adopted
//! VMs, which also sweeps what VMs that no longer run left in the tables.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use banger_net::{Guest, NetError, Network, Subnet};
use banger_store::VmRecord;
use banger_sys::wait::lock;

/// The connected guests, by VM id, and where their tables are written.
#[derive(Debug)]
pub struct Firewall {
    net: Arc<dyn Network>,
    bridge: String,
    subnet: Subnet,
    /// Held while the tables are written (one `nft` transaction, a few
    /// milliseconds): two changes never write from stale sets.
    guests: Mutex<BTreeMap<String, Guest>>,
}

/// `vm` as the tables know it.
pub fn guest_of(vm: &VmRecord) -> Guest {
    Guest {
        tap: vm.tap.clone(),
        mac: super::start::mac_for(&vm.id),
        ip: vm.ip,
        nat: vm.nat,
    }
}

impl Firewall {
    /// No guests yet, writing through `net` for `bridge` and `subnet`.
    pub fn new(net: Arc<dyn Network>, bridge: String, subnet: Subnet) -> Self {
        Self {
            net,
            bridge,
            subnet,
            guests: Mutex::new(BTreeMap::new()),
        }
    }

    /// Admits `vm`; on failure it is not admitted and the tables are as
    /// they were.
    pub fn admit(&self, vm: &VmRecord) -> Result<(), NetError> {
        let mut guests = lock(&self.guests);
        let before = guests.insert(vm.id.clone(), guest_of(vm));
        let written = self.write(&guests);
        if written.is_err() {
            match before {
                Some(g) => guests.insert(vm.id.clone(), g),
                None => guests.remove(&vm.id),
            };
        }
        written
    }

    /// Lets VM `id` go (nothing if it was not admitted).
    pub fn expel(&self, id: &str) -> Result<(), NetError> {
        let mut guests = lock(&self.guests);
        if guests.remove(id).is_none() {
            return Ok(());
        }
        self.write(&guests)
    }

    /// Makes the guests exactly `vms` (the running ones, at daemon start).
    pub fn reset(&self, vms: &[VmRecord]) -> Result<(), NetError> {
        let mut guests = lock(&self.guests);
        *guests = vms.iter().map(|vm| (vm.id.clone(), guest_of(vm))).collect();
        self.write(&guests)
    }

    fn write(&self, guests: &BTreeMap<String, Guest>) -> Result<(), NetError> {
        let all: Vec<Guest> = guests.values().cloned().collect();
        self.net.set_firewall(&self.bridge, &self.subnet, &all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_testutil::fakes::{Calls, FakeNet};

    fn vm(id: &str) -> VmRecord {
        let mut vm = banger_testutil::stopped_vm(id, &format!("vm{id}"), "img");
        vm.tap = banger_net::tap_name(id);
        vm
    }

    fn firewall(net: FakeNet) -> Firewall {
        Firewall::new(
            Arc::new(net),
            "bgbr0".into(),
            "10.77.0.1/24".parse().unwrap(),
        )
    }

    #[test]
    fn each_change_writes_the_whole_set() {
        let calls = Calls::default();
        let fw = firewall(FakeNet::new(&calls));
        fw.admit(&vm("0a1b")).unwrap();
        fw.admit(&vm("0c1d")).unwrap();
        fw.expel("0a1b").unwrap();
        // Not admitted: nothing to write.
        fw.expel("ffff").unwrap();
        fw.reset(&[vm("0e1f")]).unwrap();
        assert_eq!(
            *calls.lock().unwrap(),
            [
                "set_firewall [bgt0a1b]",
                "set_firewall [bgt0a1b bgt0c1d]",
                "set_firewall [bgt0c1d]",
                "set_firewall [bgt0e1f]",
            ]
        );
    }

    #[test]
    fn a_failed_write_admits_nobody() {
        let calls = Calls::default();
        let fw = firewall(FakeNet::failing(&calls, "set_firewall [bgt0a1b]"));
        assert!(fw.admit(&vm("0a1b")).is_err());
        fw.admit(&vm("0c1d")).unwrap();
        assert_eq!(
            calls.lock().unwrap().last().unwrap(),
            "set_firewall [bgt0c1d]"
        );
    }
}

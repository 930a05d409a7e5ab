//! The [`Backend`] the protocol servers use: the current inventory snapshot, the state store
//! (one-shot installs, last-seen addresses) and the DHCP server's leases.

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use osie_api::MacAddr;

use super::{Backend, Entry, Inventory, Leases, Machine, NoLeases, Snapshot};
use crate::state::{MachineState, Store};

pub struct InventoryBackend {
    inventory: Arc<Inventory>,
    store: Arc<Store>,
    /// Set once the DHCP server is bound (it is built with this backend, so comes later).
    leases: OnceLock<Arc<dyn Leases>>,
}

/// How a caller's source address was matched to a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    FixedIp,
    Lease,
    /// The address that fetched the machine's iPXE script (machines without a fixed address).
    ScriptFetch,
}

impl InventoryBackend {
    pub fn new(inventory: Arc<Inventory>, store: Arc<Store>) -> InventoryBackend {
        InventoryBackend { inventory, store, leases: OnceLock::new() }
    }

    /// Attach the DHCP server's leases; later calls are ignored.
    pub fn set_leases(&self, leases: Arc<dyn Leases>) {
        let _ = self.leases.set(leases);
    }

    fn leases(&self) -> &dyn Leases {
        match self.leases.get() {
            Some(l) => l.as_ref(),
            None => &NoLeases,
        }
    }

    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inventory.snapshot()
    }

    /// The key the state store files a machine under.
    pub fn state_key(m: &Machine) -> Option<MacAddr> {
        m.boot_mac()
    }

    pub fn state_of(&self, m: &Machine) -> MachineState {
        Self::state_key(m).map(|k| self.store.state(&k)).unwrap_or_default()
    }

    /// Netboot allowed for this record, given its stored state.
    pub fn allowed(m: &Machine, st: &MachineState) -> bool {
        m.netboot.allow && !st.netboot_cleared
    }

    /// Does `ip` belong to the machine of `entry`: its fixed address, a lease on one of its
    /// MACs, or (only for machines without a fixed address) the address that fetched its
    /// iPXE script.
    pub fn matches(&self, entry: &Entry, ip: Ipv4Addr) -> Option<Matched> {
        let m = &entry.machine;
        if let Some(fixed) = &m.ip {
            return (fixed.address == ip).then_some(Matched::FixedIp);
        }
        match self.leases().mac_for_ip(ip) {
            Some(mac) if m.macs.contains(&mac) => return Some(Matched::Lease),
            // Leased to another machine now: an old script fetch from there proves nothing.
            Some(_) => return None,
            None => {}
        }
        (self.state_of(m).last_seen_ip == Some(ip)).then_some(Matched::ScriptFetch)
    }

    /// The machine a source address belongs to, when the caller does not say its MAC
    /// (cloud-init in the installed OS).
    pub fn entry_by_source(&self, snap: &Snapshot, ip: Ipv4Addr) -> Option<Entry> {
        if let Some(e) = snap.by_fixed_ip(ip) {
            return Some(e.clone());
        }
        if let Some(e) = self.leases().mac_for_ip(ip).and_then(|mac| snap.by_mac(&mac)) {
            return Some(e.clone());
        }
        snap.entries()
            .iter()
            .find(|e| e.machine.ip.is_none() && self.state_of(&e.machine).last_seen_ip == Some(ip))
            .cloned()
    }
}

impl Backend for InventoryBackend {
    fn by_mac(&self, mac: &MacAddr) -> Option<Arc<Machine>> {
        self.snapshot().by_mac(mac).map(|e| Arc::clone(&e.machine))
    }

    fn by_ip(&self, ip: Ipv4Addr) -> Option<Arc<Machine>> {
        let snap = self.snapshot();
        if let Some(e) = snap.by_fixed_ip(ip) {
            return Some(Arc::clone(&e.machine));
        }
        let mac = self.leases().mac_for_ip(ip)?;
        snap.by_mac(&mac).map(|e| Arc::clone(&e.machine))
    }

    fn by_fixed_ip(&self, ip: Ipv4Addr) -> Option<Arc<Machine>> {
        self.snapshot().by_fixed_ip(ip).map(|e| Arc::clone(&e.machine))
    }

    fn netboot_allowed(&self, mac: &MacAddr) -> bool {
        match self.by_mac(mac) {
            Some(m) => Self::allowed(&m, &self.state_of(&m)),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Mutex;

    use osie_api::{Event, Phase};

    use super::*;
    use crate::inventory::load::parse_file;
    use crate::problem::Problems;

    struct FakeLeases(Mutex<HashMap<Ipv4Addr, MacAddr>>);
    impl Leases for FakeLeases {
        fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
            self.0.lock().unwrap().get(&ip).copied()
        }
    }

    fn backend(dir: &Path) -> InventoryBackend {
        let mut p = Problems::default();
        let mut entries = parse_file(
            Path::new("a.json"),
            r#"{"hostname":"fixed","macs":["52:54:00:00:00:01"],"ip":{"address":"192.0.2.10","prefix":24},"netboot":{"allow":true}}"#,
            &mut p,
        );
        entries.extend(parse_file(
            Path::new("b.json"),
            r#"{"hostname":"pooled","macs":["52:54:00:00:00:02","52:54:00:00:00:03"],"netboot":{"allow":true}}"#,
            &mut p,
        ));
        assert!(p.is_empty());
        let inv = Arc::new(Inventory::new(Snapshot::new(entries, Default::default())));
        InventoryBackend::new(inv, Arc::new(Store::open(dir).unwrap()))
    }

    /// Regression (found by tests/crash.rs): the lease store asks "is this address someone's
    /// reservation?" with its lock held; this backend answered through `by_ip`, which asks
    /// the lease store again: the first pool DISCOVER deadlocked the DHCP server for good.
    #[test]
    fn pool_offer_and_ack_through_this_backend_do_not_deadlock() {
        use crate::config::{DhcpMode, Pool};
        use crate::dhcp::leases::{self, LeaseStore};
        use crate::dhcp::reply::{self, Ctx, Outcome, Settings, Via};
        use crate::dhcp::request;

        let d = tempfile::tempdir().unwrap();
        let b = backend(d.path());
        let pool = Pool {
            start: "192.0.2.100".parse().unwrap(),
            end: "192.0.2.110".parse().unwrap(),
            prefix: 24,
            gateway: None,
            dns: vec![],
        };
        let leases = Arc::new(LeaseStore::open(d.path(), Some(&pool)).unwrap());
        b.set_leases(leases.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let settings = Settings {
                server_ip: "192.0.2.1".parse().unwrap(),
                mode: DhcpMode::Reservation,
                lease_secs: 3600,
                public_url: "http://192.0.2.1:8080".into(),
                pool: Some(pool),
            };
            let ctx = Ctx { settings: &settings, backend: &b, leases: &leases, now: leases::now() };
            let mac = [0x52, 0x54, 0, 0, 0, 2];
            let offer = reply::respond(&request::parse(&request::tests::discover(mac, &[])).unwrap(), Via::Dhcp, &ctx);
            let Outcome::Reply(r) = offer.outcome else { panic!("no offer: {:?}", offer.outcome) };
            let ip = r.msg.yiaddr();
            let mut pkt = request::tests::discover(mac, &[(50, &ip.octets()), (54, &[192, 0, 2, 1])]);
            pkt[request::HEADER_LEN + 2] = 3; // REQUEST
            let ack = reply::respond(&request::parse(&pkt).unwrap(), Via::Dhcp, &ctx);
            let Outcome::Reply(a) = ack.outcome else { panic!("no ack: {:?}", ack.outcome) };
            tx.send((r.kind, a.kind, a.msg.yiaddr(), b.by_ip(ip).map(|m| m.hostname.clone()))).unwrap();
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the DHCP answer came (no deadlock)");
        let ip: Ipv4Addr = "192.0.2.100".parse().unwrap();
        assert_eq!(got, ("offer", "ack", ip, Some("pooled".to_string())));
    }

    #[test]
    fn finds_machines_by_fixed_ip_lease_and_script_fetch() {
        let d = tempfile::tempdir().unwrap();
        let b = backend(d.path());
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mac = |s: &str| s.parse::<MacAddr>().unwrap();
        assert_eq!(b.by_ip(ip("192.0.2.10")).unwrap().hostname, "fixed");
        assert!(b.by_ip(ip("192.0.2.100")).is_none());
        b.set_leases(Arc::new(FakeLeases(Mutex::new([(ip("192.0.2.100"), mac("52:54:00:00:00:03"))].into()))));
        assert_eq!(b.by_ip(ip("192.0.2.100")).unwrap().hostname, "pooled");

        let snap = b.snapshot();
        let pooled = snap.by_mac(&mac("52:54:00:00:00:02")).unwrap();
        let fixed = snap.by_mac(&mac("52:54:00:00:00:01")).unwrap();
        assert_eq!(b.matches(pooled, ip("192.0.2.100")), Some(Matched::Lease));
        assert_eq!(b.matches(fixed, ip("192.0.2.10")), Some(Matched::FixedIp));
        assert_eq!(b.matches(fixed, ip("192.0.2.100")), None);
        assert_eq!(b.matches(pooled, ip("192.0.2.77")), None);
        b.store().saw_script_fetch(mac("52:54:00:00:00:02"), ip("192.0.2.77"), "t").unwrap();
        assert_eq!(b.matches(pooled, ip("192.0.2.77")), Some(Matched::ScriptFetch));
        assert_eq!(b.entry_by_source(&snap, ip("192.0.2.77")).unwrap().machine.hostname, "pooled");
        // Once that address is leased to another NIC, the old fetch no longer counts.
        b.store().saw_script_fetch(mac("52:54:00:00:00:02"), ip("192.0.2.100"), "t").unwrap();
        assert_eq!(b.matches(pooled, ip("192.0.2.100")), Some(Matched::Lease), "its own lease");
        let other = parse_file(
            Path::new("c.json"),
            r#"{"hostname":"other","macs":["52:54:00:00:00:09"]}"#,
            &mut Problems::default(),
        )
        .remove(0);
        b.store().saw_script_fetch(mac("52:54:00:00:00:09"), ip("192.0.2.100"), "t").unwrap();
        assert_eq!(b.matches(&other, ip("192.0.2.100")), None, "leased to someone else");
        // A fixed-address machine is never matched by a script fetch from elsewhere.
        b.store().saw_script_fetch(mac("52:54:00:00:00:01"), ip("192.0.2.78"), "t").unwrap();
        assert_eq!(b.matches(fixed, ip("192.0.2.78")), None);
        assert!(b.entry_by_source(&snap, ip("192.0.2.78")).is_none());
    }

    #[test]
    fn installed_clears_netboot_until_reinstall() {
        let d = tempfile::tempdir().unwrap();
        let b = backend(d.path());
        let second_nic: MacAddr = "52:54:00:00:00:03".parse().unwrap();
        assert!(b.netboot_allowed(&second_nic));
        let ev = Event {
            machine: second_nic,
            phase: Phase::Installed,
            progress: None,
            message: String::new(),
            time: "t".into(),
            run_id: None,
            seq: None,
            error: vec![],
            hardware: None,
        };
        let key = InventoryBackend::state_key(&b.by_mac(&second_nic).unwrap()).unwrap();
        b.store().record_event(key, &ev, None, "t").unwrap();
        assert!(!b.netboot_allowed(&second_nic));
        assert!(!b.netboot_allowed(&"52:54:00:00:00:02".parse().unwrap()), "state is per machine, not per NIC");
        b.store().reinstall(key, "t2").unwrap();
        assert!(b.netboot_allowed(&second_nic));
        assert!(!b.netboot_allowed(&"52:54:00:00:00:99".parse().unwrap()));
    }
}

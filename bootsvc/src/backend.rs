//! The [`Backend`] the protocol servers use: the current inventory snapshot, the state store
//! (one-shot installs), the DHCP server's leases and the identity sources
//! ([`crate::identity`]).

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use osie_api::MacAddr;

use crate::config::DhcpMode;
use crate::dhcp::requests::DhcpRequests;
use crate::identity::{Identity, IdentityView, Refusal, Sources};
use crate::inventory::{Backend, Entry, Inventory, Leases, Machine, NoLeases, Snapshot};
use crate::state::{MachineState, Store};

pub struct InventoryBackend {
    inventory: Arc<Inventory>,
    store: Arc<Store>,
    /// Set once the DHCP server is bound (it is built with this backend, so comes later).
    leases: OnceLock<Arc<dyn Leases>>,
    identity: Identity,
}

impl InventoryBackend {
    pub fn new(inventory: Arc<Inventory>, store: Arc<Store>) -> InventoryBackend {
        InventoryBackend::with_identity(inventory, store, Identity::default())
    }

    /// With identity sources of the caller's choosing (tests: a neighbour table of their own).
    pub fn with_identity(inventory: Arc<Inventory>, store: Arc<Store>, identity: Identity) -> InventoryBackend {
        InventoryBackend { inventory, store, leases: OnceLock::new(), identity }
    }

    /// Attach the DHCP server's leases; later calls are ignored.
    pub fn set_leases(&self, leases: Arc<dyn Leases>) {
        let _ = self.leases.set(leases);
    }

    /// Attach the DHCP server's mode and the REQUESTs it saw (proxy mode); later calls are
    /// ignored.
    pub fn set_dhcp_requests(&self, mode: DhcpMode, requests: Arc<DhcpRequests>) {
        self.identity.attach_dhcp(mode, requests);
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

    /// Is `ip` the address of the machine of `entry` ([`crate::identity::decide`])?
    pub fn identify(&self, snap: &Snapshot, entry: &Entry, ip: Ipv4Addr) -> Result<Sources, Refusal> {
        self.identity.check(snap, self.leases(), &entry.machine, ip)
    }

    /// The machine a source address belongs to, when the caller does not say its MAC
    /// (cloud-init in the installed OS). `Err`: the refusal of a machine some source named.
    pub fn entry_by_source(&self, snap: &Snapshot, ip: Ipv4Addr) -> Result<(Entry, Sources), Option<(Entry, Refusal)>> {
        self.identity.by_source(snap, self.leases(), ip)
    }

    /// Note that `ip` claimed `m` and was refused; true when it should be logged as a
    /// warning (rate-limited per address and route).
    pub fn refused_claim(&self, m: &Machine, ip: Ipv4Addr, route: &str, why: &Refusal) -> bool {
        match Self::state_key(m) {
            Some(k) => self.identity.refused(k, ip, route, &why.to_string()),
            None => true,
        }
    }

    /// Addresses known for `m` and claims refused on it, for the admin API.
    pub fn identity_view(&self, m: &Machine) -> IdentityView {
        self.identity.view(self.leases(), m)
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
    use crate::identity::neighbours::Neighbours;
    use crate::inventory::load::parse_file;
    use crate::problem::Problems;

    struct FakeLeases(Mutex<HashMap<Ipv4Addr, MacAddr>>);
    impl Leases for FakeLeases {
        fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
            self.0.lock().unwrap().get(&ip).copied()
        }
    }

    /// A neighbour table the test writes.
    #[derive(Default)]
    struct FakeNeighbours(Mutex<HashMap<Ipv4Addr, Vec<MacAddr>>>);
    impl Neighbours for FakeNeighbours {
        fn lookup(&self, ip: Ipv4Addr) -> Result<Vec<MacAddr>, String> {
            Ok(self.0.lock().unwrap().get(&ip).cloned().unwrap_or_default())
        }
        fn by_mac(&self) -> Result<HashMap<MacAddr, Vec<Ipv4Addr>>, String> {
            let mut out: HashMap<MacAddr, Vec<Ipv4Addr>> = HashMap::new();
            for (ip, macs) in self.0.lock().unwrap().iter() {
                for m in macs {
                    out.entry(*m).or_default().push(*ip);
                }
            }
            Ok(out)
        }
    }

    fn backend(dir: &Path) -> InventoryBackend {
        backend_with(dir, Arc::default()).0
    }

    fn backend_with(dir: &Path, n: Arc<FakeNeighbours>) -> (InventoryBackend, Arc<FakeNeighbours>) {
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
        let identity = Identity::with_neighbours(n.clone());
        (InventoryBackend::with_identity(inv, Arc::new(Store::open(dir).unwrap()), identity), n)
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
    fn finds_machines_by_fixed_ip_lease_neighbour_and_request() {
        let d = tempfile::tempdir().unwrap();
        let (b, n) = backend_with(d.path(), Arc::default());
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mac = |s: &str| s.parse::<MacAddr>().unwrap();
        let intruder = mac("02:00:00:00:0e:01");
        assert_eq!(b.by_ip(ip("192.0.2.10")).unwrap().hostname, "fixed");
        assert!(b.by_ip(ip("192.0.2.100")).is_none());
        b.set_leases(Arc::new(FakeLeases(Mutex::new([(ip("192.0.2.100"), mac("52:54:00:00:00:03"))].into()))));
        assert_eq!(b.by_ip(ip("192.0.2.100")).unwrap().hostname, "pooled");

        let snap = b.snapshot();
        let pooled = snap.by_mac(&mac("52:54:00:00:00:02")).unwrap();
        let fixed = snap.by_mac(&mac("52:54:00:00:00:01")).unwrap();
        let host =
            |r: Result<(Entry, Sources), Option<(Entry, Refusal)>>| r.map(|(e, s)| (e.machine.hostname.clone(), s));
        let lease = Sources { lease: true, ..Default::default() };
        assert_eq!(b.identify(&snap, pooled, ip("192.0.2.100")), Ok(lease), "a lease on its second NIC");
        assert_eq!(b.identify(&snap, fixed, ip("192.0.2.10")).map(|s| s.fixed_address), Ok(true));
        assert!(b.identify(&snap, fixed, ip("192.0.2.100")).is_err());
        assert_eq!(b.identify(&snap, pooled, ip("192.0.2.77")), Err(Refusal::NoSource));
        assert_eq!(host(b.entry_by_source(&snap, ip("192.0.2.100"))), Ok(("pooled".into(), lease)));
        assert!(matches!(b.entry_by_source(&snap, ip("192.0.2.77")), Err(None)), "nobody's");

        // On its segment: the neighbour entry.
        n.0.lock().unwrap().insert(ip("192.0.2.77"), vec![mac("52:54:00:00:00:02")]);
        let neighbour = Sources { neighbour: true, ..Default::default() };
        assert_eq!(b.identify(&snap, pooled, ip("192.0.2.77")), Ok(neighbour));
        assert_eq!(host(b.entry_by_source(&snap, ip("192.0.2.77"))), Ok(("pooled".into(), neighbour)));
        // An intruder squatting the leased address: its own NIC answers there.
        n.0.lock().unwrap().insert(ip("192.0.2.100"), vec![intruder]);
        assert_eq!(b.identify(&snap, pooled, ip("192.0.2.100")), Err(Refusal::NeighbourIsAnother(intruder)));
        match b.entry_by_source(&snap, ip("192.0.2.100")) {
            Err(Some((e, Refusal::NeighbourIsAnother(m)))) => {
                assert_eq!((e.machine.hostname.as_str(), m), ("pooled", intruder))
            }
            other => panic!("{:?}", other.map(|(e, s)| (e.machine.hostname.clone(), s))),
        }

        // Proxy mode: the address its latest DHCP REQUEST asked for, relayed (no neighbour entry).
        let requests = DhcpRequests::in_memory();
        b.set_dhcp_requests(DhcpMode::Proxy, requests.clone());
        let asked = |m: &str, a: &str| {
            requests.record(crate::dhcp::requests::Requested { mac: mac(m), ip: ip(a), at: 1, relayed: true })
        };
        asked("52:54:00:00:00:03", "198.51.100.80");
        let req = Sources { dhcp_request: true, ..Default::default() };
        assert_eq!(b.identify(&snap, pooled, ip("198.51.100.80")), Ok(req));
        assert_eq!(host(b.entry_by_source(&snap, ip("198.51.100.80"))), Ok(("pooled".into(), req)));
        // Another machine's fixed address is never a pool machine's, whoever asked for it.
        asked("52:54:00:00:00:02", "192.0.2.10");
        assert_eq!(b.identify(&snap, pooled, ip("192.0.2.10")), Err(Refusal::FixedAddressOfAnother));
        assert_eq!(host(b.entry_by_source(&snap, ip("192.0.2.10"))).map(|(h, _)| h), Ok("fixed".into()));

        // The operator's view: what is known, and what was refused.
        assert!(b.refused_claim(&pooled.machine, ip("192.0.2.66"), "/metadata", &Refusal::NoSource));
        let v = b.identity_view(&pooled.machine);
        let known: Vec<(String, String)> =
            v.addresses.iter().map(|a| (a.address.to_string(), a.source.clone())).collect();
        assert_eq!(
            known,
            [
                ("192.0.2.10".to_string(), "dhcp-request".to_string()),
                ("192.0.2.77".into(), "neighbour".into()),
                ("198.51.100.80".into(), "dhcp-request".into()),
            ]
        );
        assert_eq!(v.refused.len(), 1);
        assert_eq!((v.refused[0].address, v.refused[0].route.as_str()), (ip("192.0.2.66"), "/metadata"));
        assert!(v.refused[0].why.contains("fixed address"), "{}", v.refused[0].why);
        assert!(b.identity_view(&fixed.machine).refused.is_empty());
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

//! Which machine is calling: the sources that bind a source address to a machine, and the
//! decision over them. The security model (sources per mode, the rule, what an attacker on
//! the segment can still do) is `bootsvc/docs/security.md`.
//!
//! - [`decide`]: the decision, a pure function of [`decide::Facts`];
//! - [`decide6`]: the same for IPv6 sources (record `ip6`, NDP entry, EUI-64);
//! - [`neighbours`]: the kernel's neighbour (ARP) table;
//! - [`refused`]: refused claims, shown to the operator on the claimed machine;
//! - [`Identity`]: gathers the facts for a source address from the storage (fixed addresses
//!   from the inventory, bootsvc's pool leases, proxy mode's DHCP requests seen) and the
//!   neighbour table, and asks [`decide::decide`].

pub mod decide;
pub mod decide6;
pub mod neighbours;
pub mod refused;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osie_api::MacAddr;
use serde::{Deserialize, Serialize};

pub use crate::netaddr::unmap;
pub use decide::{decide, Facts, Refusal, Sources};
pub use decide6::{decide6, Facts6};
pub use refused::RefusedClaim;

use crate::config::DhcpMode;
use crate::inventory::{Entry, Machine, Snapshot};
use crate::storage::{state_key, Leases, RequestsSeen, Storage};
use neighbours::Neighbours;

/// An address bootsvc knows for a machine, and from where (the operator's view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownAddress {
    pub address: IpAddr,
    /// `fixed-address`, `lease`, `dhcp-request` or `neighbour`.
    pub source: String,
    #[serde(default)]
    pub mac: Option<MacAddr>,
}

/// What the admin API shows about a machine's identity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IdentityView {
    #[serde(default)]
    pub addresses: Vec<KnownAddress>,
    /// Addresses that claimed the machine and were refused (most recent last).
    #[serde(default)]
    pub refused: Vec<RefusedClaim>,
}

/// Neighbour entries by NIC.
type ByMac = HashMap<MacAddr, Vec<Ipv4Addr>>;

/// The stored records the identity sources come from: bootsvc's pool leases and (proxy
/// mode) the DHCP requests seen.
#[derive(Clone, Copy)]
pub struct Records<'a> {
    pub leases: &'a dyn Leases,
    pub requests: &'a dyn RequestsSeen,
}

impl<'a> Records<'a> {
    pub fn of(storage: &'a dyn Storage) -> Records<'a> {
        Records { leases: storage.leases(), requests: storage.dhcp_requests() }
    }
}

/// What bootsvc knows about one source address, before asking about a machine.
struct Observed {
    lease: Option<MacAddr>,
    requested: Option<MacAddr>,
    neighbours: Option<Vec<MacAddr>>,
}

/// The identity sources besides the storage (the neighbour table), and the refused claims.
pub struct Identity {
    /// The DHCP mode decides which sources count (`decide`).
    mode: DhcpMode,
    neighbours: Arc<dyn Neighbours>,
    claims: refused::Claims,
    /// The neighbour table by NIC for the operator's view: read once for a whole listing,
    /// not once per machine.
    view_cache: Mutex<Option<(Instant, ByMac)>>,
}

impl Identity {
    /// For a DHCP server in `mode`, with the kernel's neighbour table.
    pub fn new(mode: DhcpMode) -> Identity {
        Identity::with_neighbours(mode, Arc::new(neighbours::Kernel::default()))
    }

    /// With a neighbour table of the caller's choosing (tests).
    pub fn with_neighbours(mode: DhcpMode, neighbours: Arc<dyn Neighbours>) -> Identity {
        Identity { mode, neighbours, claims: Default::default(), view_cache: Mutex::new(None) }
    }

    /// What the sources say about `ip`. The neighbour table is read only when `neighbours`
    /// (a fixed address needs no other source).
    fn observe(&self, rec: Records<'_>, ip: Ipv4Addr, neighbours: bool) -> Observed {
        Observed {
            lease: rec.leases.mac_for_ip(ip),
            requested: rec.requests.mac_for_ip(ip),
            neighbours: if neighbours { self.neighbours.lookup(ip).ok() } else { Some(Vec::new()) },
        }
    }

    fn judge(&self, snap: &Snapshot, o: &Observed, m: &Machine, ip: Ipv4Addr) -> Result<Sources, Refusal> {
        let fixed_of_other = snap.by_fixed_ip(ip).is_some_and(|e| e.machine.boot_mac() != m.boot_mac());
        decide(&Facts {
            mode: self.mode,
            source: ip,
            macs: &m.macs,
            fixed: m.ip.as_ref().map(|c| c.address),
            lease: o.lease,
            requested: o.requested,
            neighbours: o.neighbours.as_deref(),
            fixed_of_other,
        })
    }

    /// Is `ip` the address of `m`? (An IPv4-mapped IPv6 address is its IPv4 address.)
    pub fn check(&self, storage: &dyn Storage, snap: &Snapshot, m: &Machine, ip: IpAddr) -> Result<Sources, Refusal> {
        match unmap(ip) {
            IpAddr::V4(a) => self.check_in(Records::of(storage), snap, m, a),
            IpAddr::V6(a) => self.check6(snap, m, a),
        }
    }

    /// Is the IPv6 address `ip` the address of `m` ([`decide6`])? The neighbour table is read
    /// unless `ip` is the record's `ip6`.
    pub fn check6(&self, snap: &Snapshot, m: &Machine, ip: Ipv6Addr) -> Result<Sources, Refusal> {
        let own = m.ip6.as_ref().is_some_and(|c| c.address == ip);
        let neighbours = if own { Some(Vec::new()) } else { self.neighbours.lookup6(ip).ok() };
        self.judge6(snap, neighbours.as_deref(), m, ip)
    }

    fn judge6(
        &self,
        snap: &Snapshot,
        neighbours: Option<&[MacAddr]>,
        m: &Machine,
        ip: Ipv6Addr,
    ) -> Result<Sources, Refusal> {
        let fixed_of_other = snap.by_fixed_ip6(ip).is_some_and(|e| e.machine.boot_mac() != m.boot_mac());
        decide6(&Facts6 {
            source: ip,
            macs: &m.macs,
            fixed: m.ip6.as_ref().map(|c| c.address),
            neighbours,
            fixed_of_other,
        })
    }

    /// [`Identity::check`] over the records themselves (the fuzz target's own tables).
    pub fn check_in(&self, rec: Records<'_>, snap: &Snapshot, m: &Machine, ip: Ipv4Addr) -> Result<Sources, Refusal> {
        let o = self.observe(rec, ip, m.ip.is_none());
        self.judge(snap, &o, m, ip)
    }

    /// The machine `ip` belongs to, for callers that name none (cloud-init in the installed
    /// OS). The owner of `ip` as a fixed address, if any; otherwise every machine some
    /// source names for `ip` is a candidate, each judged by the same
    /// decision (at most one can pass: see the fuzz target `identity`). `Err` carries the
    /// first candidate's refusal, if there was a candidate.
    pub fn by_source(
        &self,
        storage: &dyn Storage,
        snap: &Snapshot,
        ip: IpAddr,
    ) -> Result<(Entry, Sources), Option<(Entry, Refusal)>> {
        match unmap(ip) {
            IpAddr::V4(a) => self.by_source_in(Records::of(storage), snap, a),
            IpAddr::V6(a) => self.by_source6(snap, a),
        }
    }

    /// [`Identity::by_source`] for an IPv6 address: the owner of `ip` as a record's `ip6`,
    /// else the machines its neighbour entries and its EUI-64 name, each judged by
    /// [`decide6`].
    pub fn by_source6(&self, snap: &Snapshot, ip: Ipv6Addr) -> Result<(Entry, Sources), Option<(Entry, Refusal)>> {
        if let Some(e) = snap.by_fixed_ip6(ip) {
            return match self.judge6(snap, Some(&[]), &e.machine, ip) {
                Ok(s) => Ok((e.clone(), s)),
                Err(r) => Err(Some((e.clone(), r))),
            };
        }
        let neighbours = self.neighbours.lookup6(ip).ok();
        let named = neighbours.iter().flatten().copied().chain(crate::netaddr::eui64(ip));
        let mut first_refusal = None;
        let mut seen: Vec<MacAddr> = Vec::new();
        for e in named.filter_map(|mac| snap.by_mac(&mac)) {
            let Some(key) = e.machine.boot_mac() else { continue };
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            match self.judge6(snap, neighbours.as_deref(), &e.machine, ip) {
                Ok(s) => return Ok((e.clone(), s)),
                Err(r) => {
                    first_refusal.get_or_insert((e.clone(), r));
                }
            }
        }
        Err(first_refusal)
    }

    /// [`Identity::by_source`] over the records themselves.
    pub fn by_source_in(
        &self,
        rec: Records<'_>,
        snap: &Snapshot,
        ip: Ipv4Addr,
    ) -> Result<(Entry, Sources), Option<(Entry, Refusal)>> {
        // The owner of a fixed address is that address's machine, and no other can be.
        if let Some(e) = snap.by_fixed_ip(ip) {
            let o = self.observe(rec, ip, false);
            return match self.judge(snap, &o, &e.machine, ip) {
                Ok(s) => Ok((e.clone(), s)),
                Err(r) => Err(Some((e.clone(), r))),
            };
        }
        let o = self.observe(rec, ip, true);
        let mut candidates: Vec<&Entry> = Vec::new();
        let named = [o.lease, o.requested].into_iter().flatten().chain(o.neighbours.iter().flatten().copied());
        for e in named.filter_map(|mac| snap.by_mac(&mac)) {
            if !candidates.iter().any(|c| c.machine.boot_mac() == e.machine.boot_mac()) {
                candidates.push(e);
            }
        }
        let mut first_refusal = None;
        for e in candidates {
            match self.judge(snap, &o, &e.machine, ip) {
                Ok(s) => return Ok((e.clone(), s)),
                Err(r) => {
                    first_refusal.get_or_insert((e.clone(), r));
                }
            }
        }
        Err(first_refusal)
    }

    /// Note that `ip` claimed `m` and was refused; true when it should be logged as a
    /// warning (rate-limited per address and route, see [`refused`]).
    pub fn refused(&self, m: &Machine, ip: IpAddr, route: &str, why: &Refusal) -> bool {
        match state_key(m) {
            Some(key) => self.claims.record(key, ip, route, &why.to_string(), &crate::state::now()),
            None => true,
        }
    }

    /// Addresses bootsvc knows for `m`, and the claims refused on it.
    pub fn view(&self, storage: &dyn Storage, m: &Machine) -> IdentityView {
        let mut addresses = Vec::new();
        if let Some(c) = &m.ip {
            addresses.push(KnownAddress { address: c.address.into(), source: "fixed-address".into(), mac: None });
        }
        if let Some(c) = &m.ip6 {
            addresses.push(KnownAddress { address: c.address.into(), source: "fixed-address".into(), mac: None });
        }
        let neighbours = self.neighbours_by_mac();
        for mac in &m.macs {
            let mut add = |address: Ipv4Addr, source: &str| {
                addresses.push(KnownAddress { address: address.into(), source: source.into(), mac: Some(*mac) })
            };
            if let Some(ip) = storage.leases().lease_of(mac) {
                add(ip, "lease");
            }
            if let Some(r) = storage.dhcp_requests().of_mac(mac) {
                add(r.ip, "dhcp-request");
            }
            for ip in neighbours.get(mac).into_iter().flatten() {
                add(*ip, "neighbour");
            }
        }
        let refused = m.boot_mac().map(|k| self.claims.of(&k)).unwrap_or_default();
        IdentityView { addresses, refused }
    }

    fn neighbours_by_mac(&self) -> ByMac {
        let mut cache = self.view_cache.lock().unwrap_or_else(|p| p.into_inner());
        match &*cache {
            Some((at, map)) if at.elapsed() < Duration::from_millis(250) => map.clone(),
            _ => {
                let map = self.neighbours.by_mac().unwrap_or_default();
                *cache = Some((Instant::now(), map.clone()));
                map
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::inventory::Backend;

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

    /// The identity calls as the HTTP side makes them.
    struct Probe<'a> {
        st: &'a dyn Storage,
        id: &'a Identity,
    }
    impl Probe<'_> {
        fn identify(&self, snap: &Snapshot, e: &Entry, ip: Ipv4Addr) -> Result<Sources, Refusal> {
            self.id.check(self.st, snap, &e.machine, ip.into())
        }
        fn entry_by_source(&self, snap: &Snapshot, ip: Ipv4Addr) -> Result<(Entry, Sources), Option<(Entry, Refusal)>> {
            self.id.by_source(self.st, snap, ip.into())
        }
        fn refused_claim(&self, m: &Machine, ip: Ipv4Addr, route: &str, why: &Refusal) -> bool {
            self.id.refused(m, ip.into(), route, why)
        }
        fn identity_view(&self, m: &Machine) -> IdentityView {
            self.id.view(self.st, m)
        }
    }

    #[test]
    fn finds_machines_by_fixed_ip_lease_neighbour_and_request() {
        let d = tempfile::tempdir().unwrap();
        let st = crate::storage::embedded::tests::storage(d.path());
        let n = Arc::new(FakeNeighbours::default());
        let id = Identity::with_neighbours(DhcpMode::Reservation, n.clone());
        let b = Probe { st: &st, id: &id };
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mac = |s: &str| s.parse::<MacAddr>().unwrap();
        let intruder = mac("02:00:00:00:0e:01");
        assert_eq!(st.by_ip(ip("192.0.2.10")).unwrap().hostname, "fixed");
        assert!(st.by_ip(ip("192.0.2.100")).is_none());
        // The pool machine's second NIC is leased 192.0.2.100 by bootsvc's DHCP.
        let now = crate::storage::leases::now();
        assert!(st.leases().ack(&mac("52:54:00:00:00:03"), ip("192.0.2.100"), now, 3600, &|_| false).unwrap());
        assert_eq!(st.by_ip(ip("192.0.2.100")).unwrap().hostname, "pooled");

        let snap = st.snapshot();
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
        let id = Identity::with_neighbours(DhcpMode::Proxy, n.clone());
        let b = Probe { st: &st, id: &id };
        let asked = |m: &str, a: &str| {
            st.dhcp_requests().record(crate::storage::requests::Requested {
                mac: mac(m),
                ip: ip(a),
                at: 1,
                relayed: true,
            })
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
                ("192.0.2.100".into(), "lease".into()),
                ("198.51.100.80".into(), "dhcp-request".into()),
            ]
        );
        assert_eq!(v.refused.len(), 1);
        assert_eq!((v.refused[0].address, v.refused[0].route.as_str()), (ip("192.0.2.66").into(), "/metadata"));
        assert!(v.refused[0].why.contains("fixed address"), "{}", v.refused[0].why);
        assert!(b.identity_view(&fixed.machine).refused.is_empty());
    }
}

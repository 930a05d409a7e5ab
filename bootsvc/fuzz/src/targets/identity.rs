//! Machine identity: which addresses bootsvc accepts as which machine, over a small world
//! of up to four inventory machines, eight NICs (some not in the inventory: strangers) and
//! eight addresses, with bootsvc's pool leases, the DHCP REQUESTs it saw (through the real
//! table, `storage::requests`), the kernel's neighbour entries and the mode.
//!
//! Input (missing bytes are zero):
//! - byte 0: bit 0 proxy mode, bit 1 the neighbour table cannot be read;
//! - bytes 1–4: machine i's NICs, a bit mask over the eight NICs (a NIC belongs to the
//!   first machine that names it; a machine left without one is not in the inventory);
//! - bytes 5–8: machine i's fixed address: bit 3 set → address `byte & 7` (the first
//!   machine to claim an address gets it);
//! - bytes 9–16: address a's pool lease: bit 7 set → NIC `byte & 7`;
//! - bytes 17–24: address a's neighbour entries, a bit mask over the NICs;
//! - then DHCP traffic, one byte each: NIC `(b >> 3) & 7` REQUESTs address `b & 7`, or
//!   (bit 7) DECLINEs it; recorded only for inventory NICs, as the DHCP server does.
//!
//! The oracle is the rule the security model states, written apart from the decision:
//! - no address is accepted for two machines;
//! - an accepted address is the machine's fixed address; or, for a machine without one, some
//!   source binds it to one of the machine's NICs, it is nobody's fixed address, no lease
//!   and no neighbour entry binds it to another NIC, and with no neighbour entry and no lease
//!   no REQUEST of another NIC names it;
//! - the sources an acceptance reports are true;
//! - the service's own lookup by source address (`Identity::by_source`, used for callers
//!   that name no machine) finds exactly the machine the decision accepts, or none.
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use bootsvc::config::DhcpMode;
use bootsvc::identity::neighbours::Neighbours;
use bootsvc::identity::{decide, Facts, Identity, Records, Sources};
use bootsvc::storage::requests::Requested;
use bootsvc::storage::DhcpRequests;
use bootsvc::storage::Leases;
use osie_api::MacAddr;

const MACHINES: usize = 4;

fn nic(i: u8) -> MacAddr {
    MacAddr::new([2, 0, 0, 0, 0, i & 7])
}

fn addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 11 + (i & 7))
}

struct World {
    proxy: bool,
    unreadable: bool,
    /// Per machine: its NICs and fixed address (machines without NICs left out).
    machines: Vec<(Vec<MacAddr>, Option<Ipv4Addr>)>,
    lease: HashMap<Ipv4Addr, MacAddr>,
    neighbours: HashMap<Ipv4Addr, Vec<MacAddr>>,
}

struct Table(HashMap<Ipv4Addr, Vec<MacAddr>>, bool);

impl Neighbours for Table {
    fn lookup(&self, ip: Ipv4Addr) -> Result<Vec<MacAddr>, String> {
        if self.1 {
            return Err("unreadable".into());
        }
        Ok(self.0.get(&ip).cloned().unwrap_or_default())
    }
    fn by_mac(&self) -> Result<HashMap<MacAddr, Vec<Ipv4Addr>>, String> {
        Err("not used".into())
    }
}

struct LeaseMap(HashMap<Ipv4Addr, MacAddr>);

impl Leases for LeaseMap {
    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.0.get(&ip).copied()
    }
}

fn world(b: &[u8]) -> (World, &[u8]) {
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut owner: HashMap<MacAddr, usize> = HashMap::new();
    let mut fixed_owner: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut machines = Vec::new();
    for m in 0..MACHINES {
        let mask = at(1 + m);
        let macs: Vec<MacAddr> = (0..8u8)
            .filter(|i| mask & (1 << i) != 0)
            .map(nic)
            .filter(|n| match owner.get(n) {
                Some(_) => false,
                None => {
                    owner.insert(*n, m);
                    true
                }
            })
            .collect();
        let f = at(5 + m);
        let fixed = (f & 8 != 0).then(|| addr(f)).filter(|a| {
            let free = !fixed_owner.contains_key(a);
            free && !macs.is_empty() && fixed_owner.insert(*a, m).is_none()
        });
        if !macs.is_empty() {
            machines.push((macs, fixed));
        }
    }
    let mut lease = HashMap::new();
    let mut neighbours = HashMap::new();
    for a in 0..8u8 {
        let l = at(9 + usize::from(a));
        if l & 0x80 != 0 {
            lease.insert(addr(a), nic(l));
        }
        let n = at(17 + usize::from(a));
        let list: Vec<MacAddr> = (0..8u8).filter(|i| n & (1 << i) != 0).map(nic).collect();
        if !list.is_empty() {
            neighbours.insert(addr(a), list);
        }
    }
    let w = World { proxy: at(0) & 1 == 1, unreadable: at(0) & 2 == 2, machines, lease, neighbours };
    (w, b.get(25..).unwrap_or_default())
}

pub fn run(data: &[u8]) {
    let (w, traffic) = world(data);
    let requests = DhcpRequests::in_memory();
    let in_inventory = |n: &MacAddr| w.machines.iter().any(|(macs, _)| macs.contains(n));
    for (t, b) in traffic.iter().enumerate() {
        let (n, a) = (nic(b >> 3), addr(*b));
        if !in_inventory(&n) {
            continue;
        }
        if b & 0x80 != 0 {
            requests.forget(&n, a);
        } else {
            requests.record(Requested { mac: n, ip: a, at: t as u64, relayed: false });
        }
    }
    // The table's invariants: one address per NIC, one NIC per address, both ways.
    for a in 0..8u8 {
        if let Some(n) = requests.mac_for_ip(addr(a)) {
            assert_eq!(requests.of_mac(&n).map(|r| r.ip), Some(addr(a)), "index out of step");
        }
    }
    let mode = if w.proxy { DhcpMode::Proxy } else { DhcpMode::Reservation };

    // The same world as the service holds it.
    let snap = crate::world_snapshot(&w.machines, "ip", 24);
    let identity = Identity::with_neighbours(mode, Arc::new(Table(w.neighbours.clone(), w.unreadable)));
    let leases = LeaseMap(w.lease.clone());
    let rec = Records { leases: &leases, requests: &*requests };

    for a in 0..8u8 {
        let src = addr(a);
        let lease = w.lease.get(&src).copied();
        let requested = requests.mac_for_ip(src);
        let neighbours: Vec<MacAddr> = w.neighbours.get(&src).cloned().unwrap_or_default();
        let mut accepted = Vec::new();
        for (i, (macs, fixed)) in w.machines.iter().enumerate() {
            let fixed_of_other = w.machines.iter().enumerate().any(|(j, (_, f))| j != i && *f == Some(src));
            let facts = Facts {
                mode,
                source: src,
                macs,
                fixed: *fixed,
                lease,
                requested,
                neighbours: (!w.unreadable).then_some(&neighbours[..]),
                fixed_of_other,
            };
            let verdict = decide(&facts);
            let m = &snap.entries()[i].machine;
            assert_eq!(identity.check_in(rec, &snap, m, src), verdict, "the service decides otherwise for m{i}");
            let Ok(s) = verdict else { continue };
            oracle(&w, macs, *fixed, src, lease, requested, &neighbours, s, i);
            accepted.push(i);
        }
        assert!(accepted.len() <= 1, "{src} accepted for machines {accepted:?}");
        let found = identity.by_source_in(rec, &snap, src).ok().map(|(e, _)| e.machine.hostname.clone());
        assert_eq!(found, accepted.first().map(|i| format!("m{i}")), "lookup by source address for {src}");
    }
}

#[allow(clippy::too_many_arguments)]
fn oracle(
    w: &World,
    macs: &[MacAddr],
    fixed: Option<Ipv4Addr>,
    src: Ipv4Addr,
    lease: Option<MacAddr>,
    requested: Option<MacAddr>,
    neighbours: &[MacAddr],
    s: Sources,
    i: usize,
) {
    let ours = |n: &MacAddr| macs.contains(n);
    if let Some(f) = fixed {
        assert_eq!(f, src, "m{i} accepted at {src}, its fixed address is {f}");
        assert_eq!(s, Sources { fixed_address: true, ..Default::default() });
        return;
    }
    assert!(!s.fixed_address, "m{i} has no fixed address");
    assert!(!w.machines.iter().any(|(_, f)| *f == Some(src)), "m{i} accepted at someone's fixed address {src}");
    assert!(!w.unreadable, "m{i} accepted with no neighbour table to refute it");
    assert!(lease.is_none_or(|n| ours(&n)), "m{i} accepted at {src}, leased to {lease:?}");
    assert!(neighbours.iter().all(ours), "m{i} accepted at {src}, whose neighbour entries say {neighbours:?}");
    let bound_by_lease = lease.is_some_and(|n| ours(&n));
    let bound_by_neighbour = !neighbours.is_empty();
    let bound_by_request = w.proxy && requested.is_some_and(|n| ours(&n));
    assert!(bound_by_lease || bound_by_neighbour || bound_by_request, "m{i} accepted at {src} with nothing binding it");
    if !bound_by_lease && !bound_by_neighbour && w.proxy {
        assert!(requested.is_none_or(|n| ours(&n)), "m{i} accepted at {src}, requested by {requested:?}");
    }
    assert_eq!(
        (s.lease, s.neighbour, s.dhcp_request),
        (bound_by_lease, bound_by_neighbour, bound_by_request),
        "m{i} at {src}: the sources reported are not the true ones"
    );
}

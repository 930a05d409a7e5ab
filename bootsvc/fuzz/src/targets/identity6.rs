//! Machine identity over IPv6 (`bootsvc::identity::decide6`): which IPv6 source addresses
//! bootsvc accepts as which machine, over a small world of up to four inventory machines,
//! eight NICs (some not in the inventory: strangers) and 24 source addresses, with records'
//! `ip6` and the kernel's neighbour (NDP) entries, read through the service's own path
//! (`Identity::check6`, `Identity::by_source6`, a `Neighbours` table's `lookup6`).
//!
//! The sources: 8 plain addresses `2001:db8::11`…`::18` (no interface identifier from a MAC:
//! stable-privacy or DHCPv6 addresses), then for each NIC its SLAAC address in
//! `2001:db8::/64` and its link-local address, both EUI-64 (formed from the NIC's MAC, as
//! iPXE and Linux form them; a sender can put any NIC's EUI-64 in its source: a claim, not a
//! proof).
//!
//! Input (missing bytes are zero):
//! - byte 0: bit 1 the neighbour table cannot be read;
//! - bytes 1–4: machine i's NICs, a bit mask over the eight NICs (a NIC belongs to the
//!   first machine that names it; a machine left without one is not in the inventory);
//! - bytes 5–8: machine i's `ip6`: bit 4 set → global source `byte & 15` (a plain address
//!   or a NIC's SLAAC address; the first machine to claim an address gets it);
//! - bytes 9–32: source s's neighbour entries, a bit mask over the NICs.
//!
//! The oracle is the rule `bootsvc/docs/security.md` ("IPv6 callers") states, written apart
//! from the decision, with the EUI-64 each source carries known from how it was built:
//! - no source is accepted for two machines, and a record's `ip6` for no machine but its own;
//! - an accepted source is the machine's `ip6` (reported as that alone); or it is nobody's
//!   `ip6`, the table was read, it has at least one neighbour entry and every entry is one of
//!   the machine's NICs, and the EUI-64 it carries (if any) is one of the machine's NICs;
//!   the EUI-64 is reported as a source exactly when a neighbour entry agrees with it;
//! - the service agrees with the pure decision, and its lookup by source address
//!   (`Identity::by_source6`, for callers that name no machine) finds exactly the machine
//!   the decision accepts, or none.
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use bootsvc::config::DhcpMode;
use bootsvc::identity::neighbours::Neighbours;
use bootsvc::identity::{decide6, Facts6, Identity, Sources};
use osie_api::MacAddr;

const MACHINES: usize = 4;
const SOURCES: u8 = 24;
/// Sources below this are global (may be a record's `ip6`).
const GLOBAL: u8 = 16;

fn nic(i: u8) -> MacAddr {
    MacAddr::new([2, 0, 0, 0, 0, i & 7])
}

/// Source `s`, and the NIC whose EUI-64 it carries.
fn source(s: u8) -> (Ipv6Addr, Option<MacAddr>) {
    let s = s % SOURCES;
    let i = u16::from(s & 7);
    // The EUI-64 of 02:00:00:00:00:0i: the universal/local bit flipped, ff:fe in the middle.
    let eui = |hi: u16| Ipv6Addr::new(hi, 0xdb8 * u16::from(hi == 0x2001), 0, 0, 0, 0x00ff, 0xfe00, i);
    match s {
        0..=7 => (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11 + i), None),
        8..=15 => (eui(0x2001), Some(nic(s))),
        _ => (eui(0xfe80), Some(nic(s))),
    }
}

struct World {
    unreadable: bool,
    /// Per machine: its NICs and `ip6` (machines without NICs left out).
    machines: Vec<(Vec<MacAddr>, Option<Ipv6Addr>)>,
    neighbours: HashMap<Ipv6Addr, Vec<MacAddr>>,
}

struct Table(HashMap<Ipv6Addr, Vec<MacAddr>>, bool);

impl Neighbours for Table {
    fn lookup(&self, _: Ipv4Addr) -> Result<Vec<MacAddr>, String> {
        Err("IPv6 only".into())
    }
    fn by_mac(&self) -> Result<HashMap<MacAddr, Vec<Ipv4Addr>>, String> {
        Err("not used".into())
    }
    fn lookup6(&self, ip: Ipv6Addr) -> Result<Vec<MacAddr>, String> {
        if self.1 {
            return Err("unreadable".into());
        }
        Ok(self.0.get(&ip).cloned().unwrap_or_default())
    }
}

fn world(b: &[u8]) -> World {
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut owned: Vec<MacAddr> = Vec::new();
    let mut taken: Vec<Ipv6Addr> = Vec::new();
    let mut machines = Vec::new();
    for m in 0..MACHINES {
        let mask = at(1 + m);
        let macs: Vec<MacAddr> = (0..8u8).filter(|i| mask & (1 << i) != 0).map(nic).collect();
        let macs: Vec<MacAddr> = macs.into_iter().filter(|n| !owned.contains(n)).collect();
        owned.extend(&macs);
        let f = at(5 + m);
        let ip6 = (f & 0x10 != 0 && !macs.is_empty()).then(|| source(f % GLOBAL).0).filter(|a| !taken.contains(a));
        taken.extend(ip6);
        if !macs.is_empty() {
            machines.push((macs, ip6));
        }
    }
    let mut neighbours = HashMap::new();
    for s in 0..SOURCES {
        let n = at(9 + usize::from(s));
        let list: Vec<MacAddr> = (0..8u8).filter(|i| n & (1 << i) != 0).map(nic).collect();
        if !list.is_empty() {
            neighbours.insert(source(s).0, list);
        }
    }
    World { unreadable: at(0) & 2 == 2, machines, neighbours }
}

pub fn run(data: &[u8]) {
    let w = world(data);
    let snap = crate::world_snapshot(&w.machines, "ip6", 64);
    // The mode is IPv4's business (which DHCP records count); IPv6 has one rule for both.
    let identity =
        Identity::with_neighbours(DhcpMode::Reservation, Arc::new(Table(w.neighbours.clone(), w.unreadable)));

    for s in 0..SOURCES {
        let (src, claimed) = source(s);
        let neighbours: Vec<MacAddr> = w.neighbours.get(&src).cloned().unwrap_or_default();
        let mut accepted = Vec::new();
        for (i, (macs, ip6)) in w.machines.iter().enumerate() {
            let fixed_of_other = w.machines.iter().enumerate().any(|(j, (_, f))| j != i && *f == Some(src));
            let own = *ip6 == Some(src);
            // The service reads the table only for a source that is not the record's own `ip6`.
            let facts = Facts6 {
                source: src,
                macs,
                fixed: *ip6,
                neighbours: if own { Some(&[]) } else { (!w.unreadable).then_some(&neighbours[..]) },
                fixed_of_other,
            };
            let verdict = decide6(&facts);
            let m = &snap.entries()[i].machine;
            assert_eq!(identity.check6(&snap, m, src), verdict, "the service decides otherwise for m{i} at {src}");
            let Ok(got) = verdict else { continue };
            oracle(&w, macs, *ip6, src, claimed, &neighbours, got, i);
            accepted.push(i);
        }
        assert!(accepted.len() <= 1, "{src} accepted for machines {accepted:?}");
        let found = identity.by_source6(&snap, src).ok().map(|(e, _)| e.machine.hostname.clone());
        assert_eq!(found, accepted.first().map(|i| format!("m{i}")), "lookup by source address for {src}");
    }
}

#[allow(clippy::too_many_arguments)]
fn oracle(
    w: &World,
    macs: &[MacAddr],
    ip6: Option<Ipv6Addr>,
    src: Ipv6Addr,
    claimed: Option<MacAddr>,
    neighbours: &[MacAddr],
    got: Sources,
    i: usize,
) {
    if ip6 == Some(src) {
        assert_eq!(got, Sources { fixed_address: true, ..Default::default() }, "m{i} at its ip6 {src}");
        return;
    }
    let ours = |n: &MacAddr| macs.contains(n);
    assert!(!w.machines.iter().any(|(_, f)| *f == Some(src)), "m{i} accepted at another record's ip6 {src}");
    assert!(!w.unreadable, "m{i} accepted at {src} with no neighbour table to refute it");
    assert!(!neighbours.is_empty(), "m{i} accepted at {src} with no neighbour entry (an EUI-64 is no proof)");
    assert!(neighbours.iter().all(ours), "m{i} accepted at {src}, whose neighbour entries say {neighbours:?}");
    assert!(claimed.is_none_or(|n| ours(&n)), "m{i} accepted at {src}, the EUI-64 of {claimed:?}");
    let eui64 = claimed.is_some_and(|n| neighbours.contains(&n));
    assert_eq!(
        got,
        Sources { neighbour: true, eui64, ..Default::default() },
        "m{i} at {src}: the sources reported are not the true ones"
    );
}

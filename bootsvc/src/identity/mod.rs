//! Which machine is calling: the sources that bind a source address to a machine, and the
//! decision over them. The security model (sources per mode, the rule, what an attacker on
//! the segment can still do) is `bootsvc/docs/security.md`.
//!
//! - [`decide`]: the decision, a pure function of [`decide::Facts`];
//! - proxy mode's DHCP REQUESTs seen on the segment or through a relay are recorded by the
//!   DHCP server ([`DhcpRequests`], in `crate::dhcp::requests`);
//! - [`neighbours`]: the kernel's neighbour (ARP) table;
//! - [`refused`]: refused claims, shown to the operator on the claimed machine;
//! - [`Identity`]: gathers the facts for a source address (fixed addresses from the
//!   inventory, bootsvc's pool leases, the two above) and asks [`decide::decide`].

pub mod decide;
pub mod neighbours;
pub mod refused;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use osie_api::MacAddr;
use serde::{Deserialize, Serialize};

pub use decide::{decide, Facts, Refusal, Sources};
pub use refused::RefusedClaim;

use crate::config::DhcpMode;
use crate::dhcp::requests::DhcpRequests;
use crate::inventory::{Entry, Leases, Machine, Snapshot};
use neighbours::Neighbours;

/// An address bootsvc knows for a machine, and from where (the operator's view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownAddress {
    pub address: Ipv4Addr,
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

/// What bootsvc knows about one source address, before asking about a machine.
struct Observed {
    lease: Option<MacAddr>,
    requested: Option<MacAddr>,
    neighbours: Option<Vec<MacAddr>>,
}

/// The identity sources besides the inventory and the leases, and the refused claims.
pub struct Identity {
    mode: OnceLock<DhcpMode>,
    requests: OnceLock<Arc<DhcpRequests>>,
    neighbours: Arc<dyn Neighbours>,
    claims: refused::Claims,
    /// The neighbour table by NIC for the operator's view: read once for a whole listing,
    /// not once per machine.
    view_cache: Mutex<Option<(Instant, ByMac)>>,
}

impl Default for Identity {
    fn default() -> Self {
        Identity::with_neighbours(Arc::new(neighbours::Kernel::default()))
    }
}

impl Identity {
    pub fn with_neighbours(neighbours: Arc<dyn Neighbours>) -> Identity {
        Identity {
            mode: OnceLock::new(),
            requests: OnceLock::new(),
            neighbours,
            claims: Default::default(),
            view_cache: Mutex::new(None),
        }
    }

    /// Attach the DHCP server's mode and REQUEST table; later calls are ignored.
    pub fn attach_dhcp(&self, mode: DhcpMode, requests: Arc<DhcpRequests>) {
        let _ = self.mode.set(mode);
        let _ = self.requests.set(requests);
    }

    fn mode(&self) -> DhcpMode {
        self.mode.get().copied().unwrap_or_default()
    }

    /// What the sources say about `ip`. The neighbour table is read only when `neighbours`
    /// (a fixed address needs no other source).
    fn observe(&self, leases: &dyn Leases, ip: Ipv4Addr, neighbours: bool) -> Observed {
        Observed {
            lease: leases.mac_for_ip(ip),
            requested: self.requests.get().and_then(|r| r.mac_for_ip(ip)),
            neighbours: if neighbours { self.neighbours.lookup(ip).ok() } else { Some(Vec::new()) },
        }
    }

    fn judge(&self, snap: &Snapshot, o: &Observed, m: &Machine, ip: Ipv4Addr) -> Result<Sources, Refusal> {
        let fixed_of_other = snap.by_fixed_ip(ip).is_some_and(|e| e.machine.boot_mac() != m.boot_mac());
        decide(&Facts {
            mode: self.mode(),
            source: ip,
            macs: &m.macs,
            fixed: m.ip.as_ref().map(|c| c.address),
            lease: o.lease,
            requested: o.requested,
            neighbours: o.neighbours.as_deref(),
            fixed_of_other,
        })
    }

    /// Is `ip` the address of `m`?
    pub fn check(&self, snap: &Snapshot, leases: &dyn Leases, m: &Machine, ip: Ipv4Addr) -> Result<Sources, Refusal> {
        let o = self.observe(leases, ip, m.ip.is_none());
        self.judge(snap, &o, m, ip)
    }

    /// The machine `ip` belongs to, for callers that name none (cloud-init in the installed
    /// OS). The owner of `ip` as a fixed address, if any; otherwise every machine some
    /// source names for `ip` is a candidate, each judged by the same
    /// decision (at most one can pass: see the fuzz target `identity`). `Err` carries the
    /// first candidate's refusal, if there was a candidate.
    pub fn by_source(
        &self,
        snap: &Snapshot,
        leases: &dyn Leases,
        ip: Ipv4Addr,
    ) -> Result<(Entry, Sources), Option<(Entry, Refusal)>> {
        // The owner of a fixed address is that address's machine, and no other can be.
        if let Some(e) = snap.by_fixed_ip(ip) {
            let o = self.observe(leases, ip, false);
            return match self.judge(snap, &o, &e.machine, ip) {
                Ok(s) => Ok((e.clone(), s)),
                Err(r) => Err(Some((e.clone(), r))),
            };
        }
        let o = self.observe(leases, ip, true);
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

    /// Note a refused claim on the machine keyed `key`; true when it should be logged as a
    /// warning (see [`refused`]).
    pub fn refused(&self, key: MacAddr, ip: Ipv4Addr, route: &str, why: &str) -> bool {
        self.claims.record(key, ip, route, why, &crate::state::now())
    }

    /// Addresses bootsvc knows for `m`, and the claims refused on it.
    pub fn view(&self, leases: &dyn Leases, m: &Machine) -> IdentityView {
        let mut addresses = Vec::new();
        if let Some(c) = &m.ip {
            addresses.push(KnownAddress { address: c.address, source: "fixed-address".into(), mac: None });
        }
        let neighbours = self.neighbours_by_mac();
        for mac in &m.macs {
            let mut add = |address, source: &str| {
                addresses.push(KnownAddress { address, source: source.into(), mac: Some(*mac) })
            };
            if let Some(ip) = leases.lease_of(mac) {
                add(ip, "lease");
            }
            if let Some(r) = self.requests.get().and_then(|r| r.of_mac(mac)) {
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

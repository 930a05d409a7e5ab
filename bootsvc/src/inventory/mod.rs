//! The machines bootsvc knows: loaded from the inventory directory, reloaded on change.
//!
//! The DHCP server's decisions ask a [`Backend`] (by MAC, by IP), which every storage
//! answers (`crate::storage`); nothing outside this module reads the files.
//!
//! - [`model`]: the native record; [`tinkerbell`]: Tinkerbell `Hardware` converted to it
//!   (with [`tinkerbell_bmc`]: its rufio BMC; [`tinkerbell_workflow`]: its `Workflow` and
//!   `Template` as the install plan, their expressions resolved by [`gotemplate`]);
//! - [`load`]: reading the directory, into [`Entry`]s that keep their [`source`] (file and
//!   field as written, for problems); [`validate`]: per-record and cross-record checks;
//! - [`images`]: the image manifests records refer to by name; [`bmc`]: a record's BMC and
//!   its credentials file; [`checksums`]: the digest a vendor's `SHA256SUMS`/`SHA512SUMS` gives a
//!   file (not wired yet);
//! - [`Snapshot`]: one consistent, validated inventory; [`Inventory`]: the current one;
//! - [`watch`]: hot reload.

pub mod bmc;
pub mod checksums;
pub mod gotemplate;
pub mod images;
pub mod load;
pub mod model;
pub mod source;
pub mod tinkerbell;
pub mod tinkerbell_bmc;
pub mod tinkerbell_workflow;
pub mod validate;
pub mod watch;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use osie_api::MacAddr;

pub use images::Images;
pub use model::Machine;
pub use source::{Entry, Source};

use crate::config::Config;
use crate::problem::{Problem, Problems};

/// What the protocol servers need to know about machines.
pub trait Backend: Send + Sync {
    /// The machine that owns this MAC.
    fn by_mac(&self, mac: &MacAddr) -> Option<Arc<Machine>>;
    /// The machine whose fixed address (or current lease) is `ip`.
    fn by_ip(&self, ip: Ipv4Addr) -> Option<Arc<Machine>>;
    /// The machine whose *fixed* address is `ip`. The DHCP server asks this while it holds
    /// the lease store's lock (is this pool address someone's reservation?), so it must not
    /// consult the leases: an implementation that did would deadlock the DHCP server.
    fn by_fixed_ip(&self, ip: Ipv4Addr) -> Option<Arc<Machine>> {
        self.by_ip(ip).filter(|m| m.ip.as_ref().is_some_and(|c| c.address == ip))
    }
    /// May this MAC netboot now: the record's `netboot.allow`, unless a finished install
    /// has cleared it in the state store.
    fn netboot_allowed(&self, mac: &MacAddr) -> bool;
}

/// One validated inventory, indexed. Immutable: a reload builds a new one.
#[derive(Debug, Default)]
pub struct Snapshot {
    entries: Vec<Entry>,
    by_mac: HashMap<MacAddr, usize>,
    by_ip: HashMap<Ipv4Addr, usize>,
    by_ip6: HashMap<std::net::Ipv6Addr, usize>,
    by_instance: HashMap<String, usize>,
    pub images: Images,
}

impl Snapshot {
    /// Read and validate the inventory and image manifests the config names. Every problem,
    /// or a snapshot with none.
    pub fn load(cfg: &Config) -> Result<Snapshot, Problems> {
        let mut problems = Problems::default();
        let images = images::load_configured(cfg, &mut problems);
        let entries = match &cfg.inventory {
            Some(inv) => load::read_dir(&inv.dir, &mut problems),
            None => {
                problems.0.push(Problem::new(&cfg.source, "inventory", "missing: the machines are in [database]"));
                Vec::new()
            }
        };
        for e in &entries {
            validate::machine(e, cfg, &images, &mut problems);
        }
        validate::across(&entries, &mut problems);
        if problems.is_empty() {
            Ok(Snapshot::new(entries, images))
        } else {
            Err(problems)
        }
    }

    /// The entries that pass validation against `cfg` and `images` (records kept elsewhere,
    /// a database, where one bad record must not take the others out of service), and the
    /// problems of the rest: of two records that share a MAC, address or instance id, the
    /// first is kept.
    pub fn keep_valid(entries: Vec<Entry>, cfg: &Config, images: Images) -> (Snapshot, Problems) {
        let mut problems = Problems::default();
        let mut good = Vec::with_capacity(entries.len());
        for e in entries {
            let mut p = Problems::default();
            validate::machine(&e, cfg, &images, &mut p);
            if p.is_empty() {
                good.push(e);
            } else {
                problems.0.extend(p.0);
            }
        }
        let mut bad = std::collections::HashSet::new();
        for (i, p) in validate::across_each(&good) {
            bad.insert(i);
            problems.0.push(p);
        }
        let good = good.into_iter().enumerate().filter(|(i, _)| !bad.contains(i)).map(|(_, e)| e).collect();
        (Snapshot::new(good, images), problems)
    }

    /// Index validated entries (duplicates already refused: the first one wins here).
    pub fn new(entries: Vec<Entry>, images: Images) -> Snapshot {
        let mut s = Snapshot { images, ..Default::default() };
        for (i, e) in entries.iter().enumerate() {
            for mac in &e.machine.macs {
                s.by_mac.entry(*mac).or_insert(i);
            }
            if let Some(ip) = &e.machine.ip {
                s.by_ip.entry(ip.address).or_insert(i);
            }
            if let Some(ip) = &e.machine.ip6 {
                s.by_ip6.entry(ip.address).or_insert(i);
            }
            s.by_instance.entry(e.machine.instance_id()).or_insert(i);
        }
        s.entries = entries;
        s
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn by_mac(&self, mac: &MacAddr) -> Option<&Entry> {
        self.by_mac.get(mac).map(|i| &self.entries[*i])
    }

    /// By fixed address only (leases are the backend's business).
    pub fn by_fixed_ip(&self, ip: Ipv4Addr) -> Option<&Entry> {
        self.by_ip.get(&ip).map(|i| &self.entries[*i])
    }

    /// By the record's `ip6` address.
    pub fn by_fixed_ip6(&self, ip: std::net::Ipv6Addr) -> Option<&Entry> {
        self.by_ip6.get(&ip).map(|i| &self.entries[*i])
    }

    pub fn by_instance_id(&self, id: &str) -> Option<&Entry> {
        self.by_instance.get(id).map(|i| &self.entries[*i])
    }
}

/// The current inventory. Readers take a cheap `Arc` of the snapshot; a reload swaps it.
pub struct Inventory {
    current: RwLock<Arc<Snapshot>>,
}

impl Inventory {
    pub fn new(s: Snapshot) -> Inventory {
        Inventory { current: RwLock::new(Arc::new(s)) }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        // A panic while holding this lock cannot leave the Arc half-written.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn replace(&self, s: Snapshot) -> Arc<Snapshot> {
        let new = Arc::new(s);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&new);
        new
    }
}

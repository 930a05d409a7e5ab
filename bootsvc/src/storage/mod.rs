//! What bootsvc keeps, behind one interface: the machines (the inventory), each machine's
//! state and events, the DHCP pool's leases, and (proxy mode) the DHCP requests seen.
//! Every consumer goes through [`Storage`]: the DHCP server, the HTTP handlers, the admin
//! API and the identity decision. [`embedded::EmbeddedStorage`] is the implementation that
//! needs nothing but a directory (the inventory directory, `state.dir/bootsvc.redb`, the
//! lease and request files); [`pg::PgStorage`] keeps the same in PostgreSQL, shared by
//! several instances, with copies in memory for the reads that must not block.
//! `ARCHITECTURE.md` ("Storage") shows where it sits.
//!
//! # Calling rules
//!
//! | what | methods | may block? | called |
//! |---|---|---|---|
//! | machines | [`Storage::snapshot`] | no: from memory (a cheap `Arc` of the current snapshot) | per DHCP packet, per HTTP request |
//! | machine state | [`Storage::state`], [`Storage::states`] | no: from memory, kept in step with every write | per DHCP packet (is netboot allowed?), per request |
//! | writes, history | [`Storage::record_event`], [`Storage::reinstall`], [`Storage::deprovision`], [`Storage::events`], [`Storage::put_machine`], [`Storage::remove_machine`] | **yes** (fsync; a database round trip): call them from a blocking thread (`spawn_blocking`) | per event, per admin call |
//! | pool leases | [`Storage::leases`] → [`LeasePool`] | reads no; `offer`, `ack`, `release`, `decline` **yes** (durable before they return; a database round trip when [`LeasePool::blocks`]) | per DHCP packet, from the DHCP server's loop (one packet at a time; when the pool blocks, the loop decides each packet inside `block_in_place`, still one at a time, in arrival order) |
//! | boot trace, installer log | [`Storage::record_steps`], [`Storage::steps`], [`Storage::record_log`], [`Storage::log`] | **yes**: the recorder (`crate::tracer`) calls `record_steps` from its own thread, in batches, never from DHCP or TFTP | per batch of steps, per log chunk, per admin call |
//! | DHCP requests seen | [`Storage::dhcp_requests`] → [`RequestsSeen`] | no (written behind, at most every few seconds) | per DHCP packet, per identity check |
//!
//! Rules every implementation keeps:
//!
//! - An event is durable before [`Storage::record_event`] returns `Ok`, and a re-sent one
//!   (same machine, `run_id`, `seq`) is recognised and not stored twice.
//! - A lease is durable before [`LeasePool::ack`] returns `Ok(true)`.
//! - [`LeasePool::offer`] and [`LeasePool::ack`] call `taken` with the pool's lock held: it
//!   may look at fixed addresses (the snapshot) but never at the leases again.
//! - State reads after a write see the write (the caches are updated before it returns).
//!
//! Machine state is keyed by the machine's first MAC ([`state_key`]), whichever NIC a
//! request names.

pub mod embedded;
pub mod leases;
pub mod pg;
pub mod requests;
#[cfg(test)]
pub(crate) mod trace_rules;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::Result;
use osie_api::{Event, MacAddr};

pub use embedded::EmbeddedStorage;
pub use leases::{Lease, LeaseStore};
pub use pg::PgStorage;
pub use requests::DhcpRequests;

use crate::inventory::{Backend, Machine, Snapshot};
use crate::state::{MachineState, Recorded, StoredEvent};
pub use crate::trace::log::LogOutcome;
use crate::trace::log::{LogBounds, LogView, StoredChunk};
use crate::trace::{StoredStep, TraceStep};

/// A site of the shared database and its number of machines (`site` empty: the machines of
/// no site, which every site serves).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SiteCount {
    pub site: String,
    pub machines: i64,
    /// The site of the instance that answered.
    pub this: bool,
}

/// Whether the shared database answers, and how many acknowledged events wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbHealth {
    pub up: bool,
    pub spooled: usize,
}

/// bootsvc's storage. See the module docs for the calling rules.
pub trait Storage: Send + Sync + 'static {
    /// The current inventory (validated, indexed). Never blocks.
    fn snapshot(&self) -> Arc<Snapshot>;

    /// The state of the machine keyed `key` (default when never seen). Never blocks.
    fn state(&self, key: &MacAddr) -> MachineState;

    /// Every machine with stored state. Never blocks.
    fn states(&self) -> HashMap<MacAddr, MachineState>;

    /// Store `ev` for the machine keyed `key` and update its state, durably. May block.
    fn record_event(&self, key: MacAddr, ev: &Event, source: Option<std::net::IpAddr>, now: &str) -> Result<Recorded>;

    /// Allow netboot again after an install, durably. May block.
    fn reinstall(&self, key: MacAddr, now: &str) -> Result<MachineState>;

    /// Allow netboot and have the next netboot erase the disks (`removable` ones too when
    /// asked), durably. May block.
    fn deprovision(&self, key: MacAddr, now: &str, removable: bool) -> Result<MachineState>;

    /// The last `limit` events of the machine keyed `key`, oldest first. May block.
    fn events(&self, key: &MacAddr, limit: usize) -> Result<Vec<StoredEvent>>;

    /// Store boot trace steps, each under its machine's key, numbering them per machine and
    /// keeping the last `keep` of each machine. One transaction for the batch. May block.
    fn record_steps(&self, steps: &[(MacAddr, TraceStep)], keep: usize) -> Result<()>;

    /// The last `limit` trace steps of the machine keyed `key`, oldest first. May block.
    fn steps(&self, key: &MacAddr, limit: usize) -> Result<Vec<StoredStep>>;

    /// Store a chunk of the installer's log under `bounds` (`crate::trace::log::LogMeta::admit`
    /// decides). Durable before it returns. May block.
    fn record_log(&self, key: MacAddr, chunk: &StoredChunk, bounds: &LogBounds) -> Result<LogOutcome>;

    /// The installer log kept for the machine keyed `key`. May block.
    fn log(&self, key: &MacAddr) -> Result<LogView>;

    /// Store the machine record `m` (validated by the caller against [`Storage::snapshot`]:
    /// `crate::inventory::validate::change`), replacing the machine that has `replacing`
    /// among its MACs, or as a new machine. `from` says who made the change, for the record's
    /// source. Durable, and seen by [`Storage::snapshot`], before it returns. May block.
    fn put_machine(&self, m: &Machine, replacing: Option<&MacAddr>, from: &str) -> Result<(), ChangeError>;

    /// Remove the machine that has `mac` among its MACs: its hostname, or `None` when no
    /// machine has it. Durable and seen before it returns. May block.
    fn remove_machine(&self, mac: &MacAddr) -> Result<Option<String>, ChangeError>;

    /// The DHCP pool (an empty one without `[dhcp.pool]` or outside reservation mode).
    fn leases(&self) -> &dyn LeasePool;

    /// The DHCP requests inventory machines sent to a site server (proxy mode; recording
    /// nothing otherwise).
    fn dhcp_requests(&self) -> &dyn RequestsSeen;

    /// Write out what is written behind (the requests seen, the trace's last commits); called
    /// at shutdown.
    fn flush(&self) -> Result<()>;

    /// For the log: which storage, where.
    fn describe(&self) -> String;

    /// The site of a machine with this NIC that this instance does not serve (another
    /// site's), for the log; `None`: none such.
    fn other_site(&self, _mac: &MacAddr) -> Option<String> {
        None
    }

    /// Every site of the shared database; `None` without one (one instance serves all).
    /// Waits for the database.
    fn sites(&self) -> Result<Option<Vec<SiteCount>>> {
        Ok(None)
    }

    /// This instance's site (`database.site`); `None` without a shared database.
    fn site(&self) -> Option<&str> {
        None
    }

    /// The shared database's health, for `/metrics`; `None`: there is none.
    fn health(&self) -> Option<DbHealth> {
        None
    }
}

/// Why a change to the machines was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The change cannot be made as asked (a concurrent change took a MAC, the record lives in
    /// a file this storage does not rewrite): the message says what to do.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl dyn Storage {
    /// The stored state of `m` (default for a record without a MAC).
    pub fn state_of(&self, m: &Machine) -> MachineState {
        state_key(m).map(|k| self.state(&k)).unwrap_or_default()
    }
}

/// The key a machine's state is filed under: its record's first MAC.
pub fn state_key(m: &Machine) -> Option<MacAddr> {
    m.boot_mac()
}

/// May `m` netboot, given its stored state: the record allows it and no finished install
/// has cleared it since.
pub fn netboot_allowed(m: &Machine, st: &MachineState) -> bool {
    m.netboot.allow && !st.netboot_cleared
}

/// The DHCP server's lookups, answered from the storage's memory (never blocking).
impl<S: Storage + ?Sized> Backend for S {
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
            Some(m) => netboot_allowed(&m, &state_key(&m).map(|k| self.state(&k)).unwrap_or_default()),
            None => false,
        }
    }
}

/// A storage seen as a [`Backend`] where a `&dyn Backend` is wanted (the DHCP reply
/// builder's context): `&dyn Storage` does not coerce to it by itself.
pub struct Lookups<'a>(pub &'a dyn Storage);

impl Backend for Lookups<'_> {
    fn by_mac(&self, mac: &MacAddr) -> Option<Arc<Machine>> {
        self.0.by_mac(mac)
    }
    fn by_ip(&self, ip: Ipv4Addr) -> Option<Arc<Machine>> {
        self.0.by_ip(ip)
    }
    fn by_fixed_ip(&self, ip: Ipv4Addr) -> Option<Arc<Machine>> {
        self.0.by_fixed_ip(ip)
    }
    fn netboot_allowed(&self, mac: &MacAddr) -> bool {
        self.0.netboot_allowed(mac)
    }
}

/// Dynamic leases as the identity decision and the operator's view read them.
pub trait Leases: Send + Sync + 'static {
    /// The MAC currently holding `ip`, if the lease has not expired.
    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr>;
    /// The address `mac` holds now, if any (for the operator's view).
    fn lease_of(&self, _mac: &MacAddr) -> Option<Ipv4Addr> {
        None
    }
}

/// No dynamic leases.
pub struct NoLeases;

impl Leases for NoLeases {
    fn mac_for_ip(&self, _ip: Ipv4Addr) -> Option<MacAddr> {
        None
    }
}

/// The DHCP pool, as the reply builder uses it (`crate::dhcp::reply`). Times are Unix
/// seconds; `taken` says whether an address belongs to something else (a fixed address in
/// the inventory, the server itself) and is called with the pool's lock held.
pub trait LeasePool: Leases {
    /// Is there a pool at all?
    fn has_pool(&self) -> bool;
    /// Do `offer`, `ack`, `release` and `decline` wait for a database (so the DHCP server
    /// calls them where blocking is allowed)? The embedded pool's do not: a small fsync'd
    /// write at most.
    fn blocks(&self) -> bool {
        false
    }
    /// The lease `mac` holds now, if any. From memory.
    fn current(&self, mac: &MacAddr, now: u64) -> Option<Lease>;
    /// Pick an address to offer `mac` and hold it for it a while. `Ok(None)`: no address
    /// left; `Err`: the pool cannot be consulted (a database away).
    fn offer(
        &self,
        mac: &MacAddr,
        requested: Option<Ipv4Addr>,
        now: u64,
        taken: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Result<Option<Ipv4Addr>>;
    /// A client chose another server's offer: free the address held for it.
    fn forget_offer(&self, mac: &MacAddr);
    /// Bind `ip` to `mac` for `secs` (a REQUEST). `Ok(false)`: not ours to give to this
    /// client (the caller NAKs). Durable before it returns.
    fn ack(&self, mac: &MacAddr, ip: Ipv4Addr, now: u64, secs: u32, taken: &dyn Fn(Ipv4Addr) -> bool) -> Result<bool>;
    /// The client is done with `ip` (RELEASE). Durable before it returns.
    fn release(&self, mac: &MacAddr, ip: Ipv4Addr, now: u64) -> Result<bool>;
    /// The client found `ip` in use (DECLINE). Durable before it returns.
    fn decline(&self, mac: &MacAddr, ip: Ipv4Addr, now: u64) -> Result<bool>;
}

/// Proxy mode's table of DHCP requests seen: the address each inventory NIC last asked the
/// site server for (`requests` has the rules: one address per NIC, the latest asker of an
/// address owns it, bounded).
pub trait RequestsSeen: Send + Sync + 'static {
    /// Recording at all (proxy mode).
    fn enabled(&self) -> bool;
    /// `r.mac` asked for `r.ip`.
    fn record(&self, r: requests::Requested) -> requests::Change;
    /// `mac` gave `ip` up (DECLINE, RELEASE). True when that was its recorded address.
    fn forget(&self, mac: &MacAddr, ip: Ipv4Addr) -> bool;
    /// The NIC whose latest request named `ip`.
    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr>;
    /// `mac`'s latest request.
    fn of_mac(&self, mac: &MacAddr) -> Option<requests::Requested>;
}

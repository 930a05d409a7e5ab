//! Proxy mode: the address each inventory machine last asked the site DHCP server for.
//!
//! bootsvc's port-67 socket receives the broadcast REQUESTs clients send to the site server
//! (and relays forward them to every helper address, bootsvc's included). A REQUEST names the
//! address the client takes (option 50 when SELECTING or INIT-REBOOT, `ciaddr` when
//! REBINDING): for an inventory MAC that address becomes one of the identity decision's
//! sources (`crate::identity::decide`); the DHCP server records them (`crate::dhcp::seen`).
//! This is what keeps a machine known when its installed OS's DHCP client (a DUID client
//! identifier) is leased another address than its PXE firmware.
//!
//! - Only MACs in the inventory are recorded, at most [`MAX_ENTRIES`], one address per MAC
//!   (its latest REQUEST), indexed both ways: a later REQUEST for the same address by another
//!   MAC takes it over. A DECLINE or RELEASE of the address drops it.
//! - Kept across restarts (a restart mid-install must not make a machine a stranger) in
//!   `state.dir/dhcp-requests.json`: replaced whole (temporary file, fsync, rename) by a
//!   background thread at most every [`FLUSH_INTERVAL`], so forged REQUESTs at any rate cost
//!   at most one write per interval. A crash loses at most the last interval's changes.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use anyhow::{Context, Result};
use osie_api::MacAddr;
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "dhcp-requests.json";
/// Most MACs remembered (the inventory bounds it anyway).
pub const MAX_ENTRIES: usize = 65536;
/// Longest a change waits before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// One machine's latest REQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requested {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// Unix seconds of the REQUEST (of the first one naming this address).
    pub at: u64,
    /// It came through a relay (`giaddr` set).
    #[serde(default)]
    pub relayed: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    requested: Vec<Requested>,
}

#[derive(Debug, Default)]
struct Table {
    by_mac: HashMap<MacAddr, Requested>,
    by_ip: HashMap<Ipv4Addr, MacAddr>,
}

impl Table {
    fn forget_mac(&mut self, mac: &MacAddr) {
        if let Some(old) = self.by_mac.remove(mac) {
            if self.by_ip.get(&old.ip) == Some(mac) {
                self.by_ip.remove(&old.ip);
            }
        }
    }
}

/// The table and where it is kept.
pub struct DhcpRequests {
    /// Off outside proxy mode: the DHCP server records nothing (`crate::dhcp::seen`).
    enabled: bool,
    path: Option<PathBuf>,
    table: Mutex<Table>,
    dirty: AtomicBool,
}

/// What [`DhcpRequests::record`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Same MAC, same address as before.
    Same,
    /// New or moved; `superseded`: the MAC that had asked for this address before.
    Recorded { superseded: Option<MacAddr> },
    /// Table full: not recorded.
    Full,
}

impl DhcpRequests {
    /// Nothing recorded (reservation mode: bootsvc's own leases are the source there).
    pub fn disabled() -> Arc<DhcpRequests> {
        Arc::new(DhcpRequests::new(false, None))
    }

    /// Recorded in memory only (tests, fuzzing).
    pub fn in_memory() -> Arc<DhcpRequests> {
        Arc::new(DhcpRequests::new(true, None))
    }

    fn new(enabled: bool, path: Option<PathBuf>) -> DhcpRequests {
        DhcpRequests { enabled, path, table: Mutex::default(), dirty: AtomicBool::new(false) }
    }

    /// Load `state_dir/dhcp-requests.json` (if any) and start the writer thread. A file that
    /// does not parse stops bootsvc with an error naming it (it is not overwritten).
    pub fn open(state_dir: &Path) -> Result<Arc<DhcpRequests>> {
        let path = state_dir.join(FILE_NAME);
        let me = DhcpRequests::new(true, Some(path.clone()));
        match std::fs::read(&path) {
            Ok(bytes) => {
                let disk: OnDisk = serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "reading DHCP requests seen: {}: not such a file (remove it: machines without a fixed \
                         address are known again at their next DHCP request)",
                        path.display()
                    )
                })?;
                let mut t = me.lock();
                for r in disk.requested.into_iter().take(MAX_ENTRIES) {
                    t.forget_mac(&r.mac);
                    if let Some(prev) = t.by_ip.insert(r.ip, r.mac) {
                        t.by_mac.remove(&prev);
                    }
                    t.by_mac.insert(r.mac, r);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(state_dir)
                    .with_context(|| format!("creating state directory {}", state_dir.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("reading DHCP requests seen: {}", path.display())),
        }
        let me = Arc::new(me);
        let weak = Arc::downgrade(&me);
        std::thread::Builder::new()
            .name("dhcp-requests".into())
            .spawn(move || writer(weak))
            .context("starting the DHCP requests writer")?;
        Ok(me)
    }

    /// Recording at all (proxy mode).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remember that `r.mac` asked for `r.ip` (its latest request).
    pub fn record(&self, r: Requested) -> Change {
        let mut t = self.lock();
        if t.by_mac.get(&r.mac).is_some_and(|old| old.ip == r.ip) {
            return Change::Same;
        }
        if !t.by_mac.contains_key(&r.mac) && t.by_mac.len() >= MAX_ENTRIES {
            return Change::Full;
        }
        t.forget_mac(&r.mac);
        let superseded = t.by_ip.insert(r.ip, r.mac).filter(|prev| *prev != r.mac);
        if let Some(prev) = superseded {
            t.by_mac.remove(&prev);
        }
        t.by_mac.insert(r.mac, r);
        self.dirty.store(true, Ordering::Relaxed);
        Change::Recorded { superseded }
    }

    /// `mac` gave `ip` up. True when that was its recorded address.
    pub fn forget(&self, mac: &MacAddr, ip: Ipv4Addr) -> bool {
        let mut t = self.lock();
        if t.by_mac.get(mac).is_some_and(|r| r.ip == ip) {
            t.forget_mac(mac);
            self.dirty.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// The MAC whose latest REQUEST named `ip`.
    pub fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.lock().by_ip.get(&ip).copied()
    }

    /// The latest REQUEST of `mac`.
    pub fn of_mac(&self, mac: &MacAddr) -> Option<Requested> {
        self.lock().by_mac.get(mac).copied()
    }

    pub fn len(&self) -> usize {
        self.lock().by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries read from elsewhere (a database), kept as if recorded, not marked changed.
    pub fn load(&self, entries: impl IntoIterator<Item = Requested>) {
        for r in entries.into_iter().take(MAX_ENTRIES) {
            self.record(r);
        }
        self.dirty.store(false, Ordering::Relaxed);
    }

    /// The whole table if it changed since the last call (for a writer other than
    /// [`DhcpRequests::flush`]); [`DhcpRequests::changed_again`] if writing it failed.
    pub fn take_changes(&self) -> Option<Vec<Requested>> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return None;
        }
        Some(self.lock().by_mac.values().copied().collect())
    }

    /// Writing what [`DhcpRequests::take_changes`] gave failed: try again next time.
    pub fn changed_again(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Write the table if it changed since the last write.
    pub fn flush(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let mut requested: Vec<Requested> = self.lock().by_mac.values().copied().collect();
        requested.sort_by_key(|r| (r.at, r.mac.octets()));
        let bytes = serde_json::to_vec_pretty(&OnDisk { version: 1, requested }).context("encoding DHCP requests")?;
        super::leases::write_atomic(path, &bytes).inspect_err(|_| {
            // Try again next time.
            self.dirty.store(true, Ordering::Relaxed);
        })
    }
}

/// Flush every [`FLUSH_INTERVAL`] until the table is dropped.
fn writer(table: Weak<DhcpRequests>) {
    loop {
        std::thread::sleep(FLUSH_INTERVAL);
        let Some(t) = table.upgrade() else { return };
        if let Err(e) = t.flush() {
            tracing::warn!("saving DHCP requests seen: {e:#}");
        }
    }
}

impl super::RequestsSeen for DhcpRequests {
    fn enabled(&self) -> bool {
        self.enabled
    }
    fn record(&self, r: Requested) -> Change {
        DhcpRequests::record(self, r)
    }
    fn forget(&self, mac: &MacAddr, ip: Ipv4Addr) -> bool {
        DhcpRequests::forget(self, mac, ip)
    }
    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        DhcpRequests::mac_for_ip(self, ip)
    }
    fn of_mac(&self, mac: &MacAddr) -> Option<Requested> {
        DhcpRequests::of_mac(self, mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 0xb]);
    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, last)
    }
    fn req(mac: MacAddr, last: u8) -> Requested {
        Requested { mac, ip: ip(last), at: u64::from(last), relayed: false }
    }

    #[test]
    fn one_address_per_mac_and_per_address_the_latest() {
        let t = DhcpRequests::in_memory();
        assert_eq!(t.record(req(A, 79)), Change::Recorded { superseded: None });
        assert_eq!(t.record(req(A, 79)), Change::Same);
        // The installed OS is leased another address: the old one no longer counts.
        assert_eq!(t.record(req(A, 80)), Change::Recorded { superseded: None });
        assert_eq!((t.mac_for_ip(ip(79)), t.mac_for_ip(ip(80))), (None, Some(A)));
        // B asks for A's address: it takes it over, A has none left.
        assert_eq!(t.record(req(B, 80)), Change::Recorded { superseded: Some(A) });
        assert_eq!((t.mac_for_ip(ip(80)), t.of_mac(&A)), (Some(B), None));
        assert!(!t.forget(&B, ip(81)), "not its address");
        assert!(t.forget(&B, ip(80)));
        assert!(t.is_empty() && t.mac_for_ip(ip(80)).is_none());
    }

    #[test]
    fn survives_a_restart_and_bad_files_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let t = DhcpRequests::open(d.path()).unwrap();
        t.record(req(A, 79));
        t.record(req(B, 81));
        t.flush().unwrap();
        assert!(!t.dirty.load(Ordering::Relaxed));
        drop(t);
        let t = DhcpRequests::open(d.path()).unwrap();
        assert_eq!((t.mac_for_ip(ip(79)), t.mac_for_ip(ip(81))), (Some(A), Some(B)));
        std::fs::write(d.path().join(FILE_NAME), b"{oops").unwrap();
        let e = format!("{:#}", DhcpRequests::open(d.path()).err().unwrap());
        assert!(e.contains(FILE_NAME) && e.contains("remove it"), "{e}");
        assert_eq!(std::fs::read(d.path().join(FILE_NAME)).unwrap(), b"{oops");
    }

    #[test]
    fn bounded() {
        let t = DhcpRequests::in_memory();
        for i in 0..MAX_ENTRIES as u32 {
            let o = i.to_be_bytes();
            let mac = MacAddr::new([2, 1, o[0], o[1], o[2], o[3]]);
            assert!(matches!(
                t.record(Requested { mac, ip: Ipv4Addr::from(i + 1), at: 0, relayed: false }),
                Change::Recorded { .. }
            ));
        }
        assert_eq!(t.record(req(A, 1)), Change::Full);
        assert_eq!(t.len(), MAX_ENTRIES);
    }
}

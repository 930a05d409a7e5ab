//! The dynamic pool: addresses for inventory machines that have no fixed address.
//!
//! Leases live in memory and in `state.dir/dhcp-leases.json`, rewritten whole on every
//! change (temp file, fsync, rename, fsync of the directory), so a crash leaves either the
//! old or the new file, never a torn one. The file is small (one line per machine that ever
//! held a pool address) and changes only on ACK, RELEASE and DECLINE. Offers are held in
//! memory only, for [`OFFER_HOLD_SECS`], so two machines discovering at once are not
//! offered the same address.
//!
//! A machine keeps its address across restarts of bootsvc and across expiry, as long as no
//! other machine has taken it: an expired lease is reused by its old owner first, by others
//! only when no never-used address is left.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use osie_api::MacAddr;
use serde::{Deserialize, Serialize};

use super::{LeasePool, Leases};
use crate::config::Pool;

/// How long an offered address is held for the client that was offered it.
pub const OFFER_HOLD_SECS: u64 = 60;

/// Whether an ACK for a lease that ends at `expires` may be answered without writing it
/// again (a reboot, the boot chain's second DHCP): the stored lease still outlasts the
/// client's next renewal, at half of `secs`, with a quarter to spare. Both pools use it.
pub fn renewal_needs_no_write(expires: u64, now: u64, secs: u32) -> bool {
    expires > now + u64::from(secs) * 3 / 4
}
/// How long a declined address (in use by someone else, says the client) is left alone.
pub const DECLINE_HOLD_SECS: u64 = 600;
/// Largest pool accepted: the pool is scanned linearly when offering.
pub const MAX_POOL_SIZE: u32 = 65536;
/// File name under `state.dir`.
pub const FILE_NAME: &str = "dhcp-leases.json";

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// Unix seconds.
    pub expires: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    leases: Vec<Lease>,
    #[serde(default)]
    declined: Vec<Declined>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Declined {
    ip: Ipv4Addr,
    until: u64,
}

#[derive(Debug, Default)]
struct State {
    /// By address; at most one per MAC.
    leases: BTreeMap<Ipv4Addr, Lease>,
    declined: BTreeMap<Ipv4Addr, u64>,
    offers: HashMap<MacAddr, (Ipv4Addr, u64)>,
}

pub struct LeaseStore {
    range: Option<(u32, u32)>,
    path: Option<PathBuf>,
    state: Mutex<State>,
}

/// Check a pool definition; the error says what is wrong with which field.
pub fn validate_pool(pool: &Pool) -> Result<()> {
    let (s, e) = (u32::from(pool.start), u32::from(pool.end));
    if s > e {
        bail!("dhcp.pool: start {} is after end {}", pool.start, pool.end);
    }
    if e - s >= MAX_POOL_SIZE {
        bail!("dhcp.pool: {} addresses from {} to {}; at most {MAX_POOL_SIZE}", e - s + 1, pool.start, pool.end);
    }
    if pool.prefix == 0 || pool.prefix > 30 {
        bail!("dhcp.pool.prefix: {} is not a usable prefix length (1..=30)", pool.prefix);
    }
    let mask = u32::MAX << (32 - pool.prefix);
    if s & mask != e & mask {
        bail!("dhcp.pool: {} and {} are not in one /{} subnet", pool.start, pool.end, pool.prefix);
    }
    Ok(())
}

impl LeaseStore {
    /// Open (or create) the lease file under `state_dir`. A file that does not parse is an
    /// error, never overwritten: it may hold the only record of who has which address.
    pub fn open(state_dir: &Path, pool: Option<&Pool>) -> Result<LeaseStore> {
        let path = state_dir.join(FILE_NAME);
        let mut store = LeaseStore::in_memory(pool)?;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let disk: OnDisk = serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading DHCP leases: {}: not a lease file", path.display()))?;
                let st = store.state.get_mut().unwrap_or_else(|p| p.into_inner());
                for l in disk.leases {
                    st.leases.retain(|_, old| old.mac != l.mac);
                    st.leases.insert(l.ip, l);
                }
                for d in disk.declined {
                    st.declined.insert(d.ip, d.until);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(state_dir)
                    .with_context(|| format!("creating state directory {}", state_dir.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("reading DHCP leases: {}", path.display())),
        }
        store.path = Some(path);
        Ok(store)
    }

    /// A store that persists nothing (tests, and DHCP without a pool).
    pub fn in_memory(pool: Option<&Pool>) -> Result<LeaseStore> {
        if let Some(p) = pool {
            validate_pool(p)?;
        }
        Ok(LeaseStore {
            range: pool.map(|p| (u32::from(p.start), u32::from(p.end))),
            path: None,
            state: Mutex::new(State::default()),
        })
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        self.range.is_some_and(|(s, e)| (s..=e).contains(&u32::from(ip)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing DHCP service; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, st: &State) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let disk = OnDisk {
            version: 1,
            leases: st.leases.values().copied().collect(),
            declined: st.declined.iter().map(|(ip, until)| Declined { ip: *ip, until: *until }).collect(),
        };
        write_atomic(path, &serde_json::to_vec_pretty(&disk).context("encoding DHCP leases")?)
            .with_context(|| format!("saving DHCP leases to {}", path.display()))
    }
}

impl LeasePool for LeaseStore {
    fn has_pool(&self) -> bool {
        self.range.is_some()
    }

    /// The lease `mac` holds now, if any.
    fn current(&self, mac: &MacAddr, now: u64) -> Option<Lease> {
        self.lock().leases.values().find(|l| l.mac == *mac && l.expires > now).copied()
    }

    /// Pick an address to offer `mac` and hold it for a minute. `taken` says whether an
    /// address belongs to something else (a fixed address in the inventory, the server).
    fn offer(
        &self,
        mac: &MacAddr,
        requested: Option<Ipv4Addr>,
        now: u64,
        taken: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Result<Option<Ipv4Addr>> {
        let Some((start, end)) = self.range else { return Ok(None) };
        let mut st = self.lock();
        st.offers.retain(|_, (_, until)| *until > now);
        st.declined.retain(|_, until| *until > now);
        let free_for = |st: &State, ip: Ipv4Addr| -> bool {
            self.in_range(ip)
                && !taken(ip)
                && !st.declined.contains_key(&ip)
                && st.leases.get(&ip).is_none_or(|l| l.mac == *mac || l.expires <= now)
                && !st.offers.iter().any(|(m, (o, _))| *o == ip && m != mac)
        };
        // Its own address (current or expired), then a pending offer, then what it asks for.
        let own = st.leases.values().find(|l| l.mac == *mac).map(|l| l.ip);
        let pending = st.offers.get(mac).map(|(ip, _)| *ip);
        let mut pick = [own, pending, requested].into_iter().flatten().find(|ip| free_for(&st, *ip));
        if pick.is_none() {
            // A never-used address, else the longest-expired one.
            pick = (start..=end).map(Ipv4Addr::from).find(|ip| !st.leases.contains_key(ip) && free_for(&st, *ip));
        }
        if pick.is_none() {
            pick = st
                .leases
                .values()
                .filter(|l| l.expires <= now)
                .min_by_key(|l| l.expires)
                .map(|l| l.ip)
                .filter(|ip| free_for(&st, *ip));
        }
        let Some(ip) = pick else { return Ok(None) };
        st.offers.insert(*mac, (ip, now + OFFER_HOLD_SECS));
        Ok(Some(ip))
    }

    /// Bind `ip` to `mac` for `secs` (a REQUEST). `Ok(false)` when the address is not ours to
    /// give to this client: the caller NAKs. The lease is on disk before this returns.
    fn ack(&self, mac: &MacAddr, ip: Ipv4Addr, now: u64, secs: u32, taken: &dyn Fn(Ipv4Addr) -> bool) -> Result<bool> {
        let mut st = self.lock();
        let held_by_other = st.leases.get(&ip).is_some_and(|l| l.mac != *mac && l.expires > now)
            || st.offers.iter().any(|(m, (o, until))| *o == ip && m != mac && *until > now);
        if !self.in_range(ip) || taken(ip) || held_by_other || st.declined.get(&ip).is_some_and(|u| *u > now) {
            return Ok(false);
        }
        if st.leases.get(&ip).is_some_and(|l| l.mac == *mac && renewal_needs_no_write(l.expires, now, secs)) {
            st.offers.remove(mac);
            return Ok(true);
        }
        let before = st.leases.clone();
        st.leases.retain(|_, l| l.mac != *mac);
        st.leases.insert(ip, Lease { mac: *mac, ip, expires: now + u64::from(secs) });
        st.offers.remove(mac);
        if let Err(e) = self.persist(&st) {
            st.leases = before;
            return Err(e);
        }
        Ok(true)
    }

    /// The client is done with `ip` (RELEASE): the lease ends now, the binding is kept so
    /// the same machine gets the same address next time.
    fn release(&self, mac: &MacAddr, ip: Ipv4Addr, now: u64) -> Result<bool> {
        let mut st = self.lock();
        match st.leases.get_mut(&ip) {
            Some(l) if l.mac == *mac && l.expires > now => {
                l.expires = now;
                self.persist(&st)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The client found `ip` in use by someone else (DECLINE): drop its lease and leave the
    /// address alone for a while.
    fn decline(&self, mac: &MacAddr, ip: Ipv4Addr, now: u64) -> Result<bool> {
        let mut st = self.lock();
        if !self.in_range(ip) {
            return Ok(false);
        }
        if st.leases.get(&ip).is_some_and(|l| l.mac == *mac) {
            st.leases.remove(&ip);
        }
        st.offers.remove(mac);
        st.declined.insert(ip, now + DECLINE_HOLD_SECS);
        self.persist(&st)?;
        Ok(true)
    }

    /// A client chose another server's offer: free the address held for it.
    fn forget_offer(&self, mac: &MacAddr) {
        self.lock().offers.remove(mac);
    }
}

impl Leases for LeaseStore {
    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        let now = now();
        self.lock().leases.get(&ip).filter(|l| l.expires > now).map(|l| l.mac)
    }

    fn lease_of(&self, mac: &MacAddr) -> Option<Ipv4Addr> {
        self.current(mac, now()).map(|l| l.ip)
    }
}

/// Write `bytes` to `path` so that a crash leaves the old or the new content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("lease file has no directory")?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(start: [u8; 4], end: [u8; 4]) -> Pool {
        Pool { start: start.into(), end: end.into(), prefix: 24, gateway: None, dns: vec![] }
    }
    const B: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 0xb]);
    fn none(_: Ipv4Addr) -> bool {
        false
    }

    #[test]
    fn validates_pools() {
        assert!(validate_pool(&pool([192, 0, 2, 100], [192, 0, 2, 150])).is_ok());
        let e = validate_pool(&pool([192, 0, 2, 150], [192, 0, 2, 100])).unwrap_err().to_string();
        assert!(e.contains("after end"), "{e}");
        let e = validate_pool(&pool([192, 0, 2, 100], [192, 0, 3, 1])).unwrap_err().to_string();
        assert!(e.contains("not in one /24"), "{e}");
    }

    fn memory(p: Pool) -> Box<dyn LeasePool> {
        Box::new(LeaseStore::in_memory(Some(&p)).unwrap())
    }

    #[test]
    fn offers_distinct_addresses_and_skips_taken_ones() {
        rules::offers_distinct_addresses_and_skips_taken_ones(&memory);
    }

    #[test]
    fn ack_release_decline() {
        rules::ack_release_decline(&memory);
    }

    #[test]
    fn early_renewals_keep_the_stored_lease() {
        rules::early_renewals_keep_the_stored_lease(&memory);
    }

    #[test]
    fn expired_leases_are_reused_last() {
        rules::expired_leases_are_reused_last(&memory);
    }

    #[test]
    fn leases_survive_reopen_and_bad_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = pool([192, 0, 2, 100], [192, 0, 2, 110]);
        let s = LeaseStore::open(dir.path(), Some(&p)).unwrap();
        let got = s.offer(&B, None, 0, &none).unwrap().unwrap();
        assert!(s.ack(&B, got, 0, 3600, &none).unwrap());
        drop(s);
        let s = LeaseStore::open(dir.path(), Some(&p)).unwrap();
        assert_eq!(s.current(&B, 1).map(|l| l.ip), Some(got));
        assert_eq!(s.offer(&B, None, 1, &none).unwrap(), Some(got));

        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let e = format!("{:#}", LeaseStore::open(dir.path(), Some(&p)).err().unwrap());
        assert!(e.contains(FILE_NAME), "{e}");
        assert_eq!(std::fs::read(dir.path().join(FILE_NAME)).unwrap(), b"{not json");
    }
}

/// The pool's rules, for any [`LeasePool`] made by `make` (fresh, empty, over the pool it is
/// given): the embedded pool runs them above, the PostgreSQL pool against a real server.
#[cfg(test)]
pub(crate) mod rules {
    use super::*;

    pub const A: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 0xa]);
    pub const B: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 0xb]);
    pub const C: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 0xc]);

    pub type Make<'a> = &'a dyn Fn(Pool) -> Box<dyn LeasePool>;

    fn pool(first: u8, last: u8) -> Pool {
        Pool {
            start: Ipv4Addr::new(192, 0, 2, first),
            end: Ipv4Addr::new(192, 0, 2, last),
            prefix: 24,
            gateway: None,
            dns: vec![],
        }
    }
    fn none(_: Ipv4Addr) -> bool {
        false
    }
    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, last)
    }

    pub fn offers_distinct_addresses_and_skips_taken_ones(make: Make) {
        let s = make(pool(100, 102));
        let taken = |x: Ipv4Addr| x == ip(100);
        assert_eq!(s.offer(&A, None, 0, &taken).unwrap(), Some(ip(101)));
        assert_eq!(s.offer(&A, None, 1, &taken).unwrap(), Some(ip(101)), "same client, same offer");
        assert_eq!(s.offer(&B, Some(ip(101)), 1, &taken).unwrap(), Some(ip(102)), "held for A");
        assert_eq!(s.offer(&C, None, 2, &taken).unwrap(), None, "pool exhausted");
        // Offers lapse.
        assert_eq!(s.offer(&C, None, 2 + OFFER_HOLD_SECS, &taken).unwrap(), Some(ip(101)));
    }

    /// A renewal early in the lease is answered without a write (the stored lease outlasts
    /// the client's next renewal); a later one extends it.
    pub fn early_renewals_keep_the_stored_lease(make: Make) {
        let s = make(pool(100, 101));
        assert_eq!(s.offer(&A, None, 0, &none).unwrap(), Some(ip(100)));
        assert!(s.ack(&A, ip(100), 0, 3600, &none).unwrap());
        assert!(s.ack(&A, ip(100), 100, 3600, &none).unwrap());
        assert_eq!(s.current(&A, 100).map(|l| l.expires), Some(3600), "not written again");
        assert_eq!(s.offer(&A, None, 200, &none).unwrap(), Some(ip(100)), "its own address");
        assert!(s.ack(&A, ip(100), 1000, 3600, &none).unwrap());
        assert_eq!(s.current(&A, 1000).map(|l| l.expires), Some(4600), "a quarter gone: extended");
        assert!(!s.ack(&B, ip(100), 1001, 3600, &none).unwrap(), "still A's");
    }

    pub fn ack_release_decline(make: Make) {
        let s = make(pool(100, 101));
        assert_eq!(s.offer(&A, None, 0, &none).unwrap(), Some(ip(100)));
        assert!(s.ack(&A, ip(100), 0, 60, &none).unwrap());
        assert!(!s.ack(&B, ip(100), 1, 60, &none).unwrap(), "A holds it");
        assert!(!s.ack(&B, ip(7), 1, 60, &none).unwrap(), "outside the pool");
        assert_eq!(s.mac_for_ip(ip(100)), None, "expired relative to the wall clock");
        assert_eq!(s.current(&A, 10).map(|l| l.ip), Some(ip(100)));
        assert!(s.release(&A, ip(100), 10).unwrap());
        assert_eq!(s.current(&A, 10), None);
        // Released, but A gets the same address back first.
        assert_eq!(s.offer(&A, None, 11, &none).unwrap(), Some(ip(100)));
        assert!(s.decline(&A, ip(100), 12).unwrap());
        assert_eq!(s.offer(&A, None, 13, &none).unwrap(), Some(ip(101)));
        assert!(!s.ack(&A, ip(100), 13, 60, &none).unwrap(), "declined address");
    }

    pub fn expired_leases_are_reused_last(make: Make) {
        let s = make(pool(100, 101));
        assert!(s.ack(&A, ip(100), 0, 10, &none).unwrap());
        // Expired, but a never-used address is offered first.
        assert_eq!(s.offer(&B, None, 20, &none).unwrap(), Some(ip(101)));
        assert!(s.ack(&B, ip(101), 20, 10, &none).unwrap());
        assert_eq!(s.offer(&C, None, 21, &none).unwrap(), Some(ip(100)), "A's expired lease");
    }
}

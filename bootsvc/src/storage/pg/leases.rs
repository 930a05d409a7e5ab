//! The DHCP pool in PostgreSQL, shared by every instance of a site: the same rules as the
//! embedded pool (`crate::storage::leases`: a machine's own address first, then its pending
//! offer, the address it asks for, a never-used one, the longest-expired one), decided in the
//! database.
//!
//! Each allocating operation (offer, ack, decline) is one transaction holding the site's
//! advisory lock, so two instances answering the same storm take turns, and the tables'
//! uniqueness rules (an address bound to one MAC, a MAC to one address, an address offered
//! to one client) hold even against a mistake here. An ACK is committed durably before it
//! returns; an offer is not (`synchronous_commit = off`: it lapses within a minute anyway).
//! Offers are shared: an instance asked by a machine another instance made an offer to offers
//! the same address, and the client's choice of server does not withdraw it (the instance it
//! chose is likely a sibling acking that very offer); an unused offer lapses after
//! [`OFFER_HOLD_SECS`].
//!
//! Reads (`current`, `mac_for_ip`, `lease_of`: per packet and per HTTP request) come from a
//! copy in memory, updated after every write here and, for other instances' writes, from the
//! `osie_leases` notifications (`super::listen`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, Result};
use deadpool_postgres::GenericClient;
use futures_util::future::{try_join, try_join4, try_join5};
use osie_api::MacAddr;

use super::bridge::{db_err, Bridge};
use crate::config::Pool;
use crate::storage::leases::{now, renewal_needs_no_write, validate_pool, DECLINE_HOLD_SECS, OFFER_HOLD_SECS};
use crate::storage::{Lease, LeasePool, Leases};

/// Channel of the lease notifications; the payload is [`Changed`] as JSON.
pub const CHANNEL: &str = "osie_leases";

/// What a notification says changed: these addresses and these clients' bindings, in
/// this site.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Changed {
    pub site: String,
    pub ips: Vec<Ipv4Addr>,
    #[serde(default)]
    pub macs: Vec<MacAddr>,
}

#[derive(Default)]
pub struct Cache {
    by_ip: HashMap<Ipv4Addr, Lease>,
    by_mac: HashMap<MacAddr, Ipv4Addr>,
}

impl Cache {
    fn remove_ip(&mut self, ip: Ipv4Addr) {
        if let Some(old) = self.by_ip.remove(&ip) {
            if self.by_mac.get(&old.mac) == Some(&ip) {
                self.by_mac.remove(&old.mac);
            }
        }
    }

    fn set(&mut self, l: Lease) {
        if let Some(old_ip) = self.by_mac.insert(l.mac, l.ip) {
            if old_ip != l.ip {
                self.by_ip.remove(&old_ip);
            }
        }
        if let Some(prev) = self.by_ip.insert(l.ip, l) {
            if prev.mac != l.mac && self.by_mac.get(&prev.mac) == Some(&l.ip) {
                self.by_mac.remove(&prev.mac);
            }
        }
    }

    /// The rows now in the database for `ips` and `macs` (those absent from `rows` have
    /// none).
    fn replace(&mut self, ips: &[Ipv4Addr], macs: &[MacAddr], rows: Vec<Lease>) {
        for mac in macs {
            if let Some(ip) = self.by_mac.get(mac).copied() {
                self.remove_ip(ip);
            }
        }
        for ip in ips {
            self.remove_ip(*ip);
        }
        for l in rows {
            self.set(l);
        }
    }
}

pub struct PgLeases {
    bridge: Arc<Bridge>,
    site: String,
    range: Option<(u32, u32)>,
    cache: RwLock<Cache>,
}

fn v4(ip: IpAddr) -> Result<Ipv4Addr> {
    match ip {
        IpAddr::V4(v) => Ok(v),
        IpAddr::V6(v) => Err(anyhow!("pool_leases holds an IPv6 address {v}")),
    }
}

fn lease_row(r: &tokio_postgres::Row) -> Result<Lease> {
    let mac: String = r.get(1);
    Ok(Lease {
        ip: v4(r.get(0))?,
        mac: mac.parse().map_err(|_| anyhow!("pool_leases: bad MAC {mac:?}"))?,
        expires: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
    })
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// Candidates for an offer, best first (`crate::storage::leases` has the order): $1 site,
/// $2 MAC, $3 requested, $4 first address, $5 pool size - 1, $6 now, $7 last address.
/// Plans must not depend on the tables' statistics (a fresh database under a storm has none
/// yet): never-used addresses by set difference (hashed), and each check of a candidate a
/// lookup by primary key (`OFFSET 0` keeps it a per-row lookup, not a join that may scan
/// the site's every row per candidate).
const CANDIDATES: &str = "
SELECT c.ip FROM (
    (SELECT ip, 0::int8 AS prio FROM pool_leases WHERE site = $1 AND mac = $2::text::macaddr)
    UNION ALL
    (SELECT ip, 1 FROM pool_offers WHERE site = $1 AND mac = $2::text::macaddr)
    UNION ALL
    (SELECT $3::inet, 2 WHERE $3::inet IS NOT NULL)
    UNION ALL
    (SELECT f.ip, 3 + (f.ip - $4::inet) FROM (
        SELECT $4::inet + g FROM generate_series(0::int8, $5::int8) AS g
        EXCEPT SELECT ip FROM pool_leases WHERE site = $1
        EXCEPT SELECT ip FROM pool_offers WHERE site = $1
        EXCEPT SELECT ip FROM pool_declined WHERE site = $1
        ORDER BY 1 LIMIT 32) AS f (ip))
    UNION ALL
    (SELECT l.ip, 1000000 + row_number() OVER (ORDER BY l.expires, l.ip) FROM pool_leases l
      WHERE l.site = $1 AND l.expires <= $6
        AND NOT EXISTS (SELECT 1 FROM pool_offers o WHERE o.site = $1 AND o.ip = l.ip OFFSET 0)
        AND NOT EXISTS (SELECT 1 FROM pool_declined d WHERE d.site = $1 AND d.ip = l.ip OFFSET 0)
      ORDER BY l.expires, l.ip LIMIT 32)
) AS c (ip, prio)
WHERE c.ip BETWEEN $4::inet AND $7::inet
  AND NOT EXISTS (SELECT 1 FROM pool_declined d WHERE d.site = $1 AND d.ip = c.ip OFFSET 0)
  AND NOT EXISTS (SELECT 1 FROM pool_leases l
                  WHERE l.site = $1 AND l.ip = c.ip AND l.mac <> $2::text::macaddr AND l.expires > $6 OFFSET 0)
  AND NOT EXISTS (SELECT 1 FROM pool_offers o
                  WHERE o.site = $1 AND o.ip = c.ip AND o.mac <> $2::text::macaddr OFFSET 0)
ORDER BY c.prio
LIMIT 64";

impl PgLeases {
    pub fn new(bridge: Arc<Bridge>, site: &str, pool: Option<&Pool>) -> Result<PgLeases> {
        if let Some(p) = pool {
            validate_pool(p)?;
        }
        Ok(PgLeases {
            bridge,
            site: site.to_string(),
            range: pool.map(|p| (u32::from(p.start), u32::from(p.end))),
            cache: RwLock::default(),
        })
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        self.range.is_some_and(|(s, e)| (s..=e).contains(&u32::from(ip)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The address bound to `mac` in the copy in memory, when it is in the pool, not
    /// `taken`, the one `requested` (if any), and bound for as long as `lasts` says:
    /// a machine that has its address is answered without a round trip (most DHCP traffic:
    /// every boot asks again). The copy follows other instances' writes by notification;
    /// were it stale, the REQUEST's transaction still checks before anything is bound.
    fn still_bound(
        &self,
        mac: &MacAddr,
        requested: Option<Ipv4Addr>,
        now: u64,
        lasts: impl Fn(u64) -> bool,
        taken: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let l = self.current(mac, now)?;
        let fits = requested.is_none_or(|r| r == l.ip) && lasts(l.expires);
        (fits && self.in_range(l.ip) && !taken(l.ip)).then_some(l.ip)
    }

    /// Read every binding of this site (at start and after the notifications were cut).
    pub async fn reload(&self, c: &impl GenericClient) -> Result<()> {
        let rows = c
            .query("SELECT ip, mac::text, expires FROM pool_leases WHERE site = $1", &[&self.site])
            .await
            .map_err(db_err("reading pool leases"))?;
        let mut fresh = Cache::default();
        for r in &rows {
            fresh.set(lease_row(r)?);
        }
        *self.write() = fresh;
        Ok(())
    }

    /// Another instance changed `ch.ips`: read them again.
    pub async fn refresh(&self, c: &impl GenericClient, ch: &Changed) -> Result<()> {
        if ch.site != self.site {
            return Ok(());
        }
        let ips: Vec<IpAddr> = ch.ips.iter().map(|ip| IpAddr::V4(*ip)).collect();
        let macs: Vec<String> = ch.macs.iter().map(MacAddr::to_string).collect();
        let rows = c
            .query(
                "SELECT ip, mac::text, expires FROM pool_leases
                 WHERE site = $1 AND (ip = ANY($2) OR mac = ANY($3::text[]::macaddr[]))",
                &[&self.site, &ips, &macs],
            )
            .await
            .map_err(db_err("reading pool leases"))?;
        let rows = rows.iter().map(lease_row).collect::<Result<Vec<_>>>()?;
        self.write().replace(&ch.ips, &ch.macs, rows);
        Ok(())
    }

    /// The notification of a change to `ip` and `mac`'s binding.
    fn payload(&self, ip: Ipv4Addr, mac: &MacAddr) -> Result<String> {
        Ok(serde_json::to_string(&Changed { site: self.site.clone(), ips: vec![ip], macs: vec![*mac] })?)
    }

    /// Offer an address (see the module docs), in three round trips: BEGIN; the lock, the
    /// clean-up and the choice in one pipeline (sent together, run in order); COMMIT.
    async fn offer_in_db(
        &self,
        mac: &MacAddr,
        requested: Option<Ipv4Addr>,
        now: u64,
        (start, end): (u32, u32),
        taken: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Result<Option<Ipv4Addr>> {
        let mut c = self.bridge.client().await?;
        let tx = c.transaction().await.map_err(db_err("starting a transaction"))?;
        let lock = tx.prepare_cached(LOCK).await.map_err(db_err("preparing"))?;
        let del_offers = tx.prepare_cached(EXPIRE_OFFERS).await.map_err(db_err("preparing"))?;
        let del_declined = tx.prepare_cached(EXPIRE_DECLINED).await.map_err(db_err("preparing"))?;
        let offer = tx.prepare_cached(offer_sql()).await.map_err(db_err("preparing the offer"))?;
        let (t, site, m) = (secs(now), &self.site, mac.to_string());
        let (first, last) = (IpAddr::V4(start.into()), IpAddr::V4(end.into()));
        let span = i64::from(end - start);
        let until = secs(now + OFFER_HOLD_SECS);
        let asked = requested.map(IpAddr::V4);
        let (_, _, _, _, rows) = try_join5(
            // An offer needs no fsync: lost in a crash, it is made again on the next DISCOVER.
            tx.batch_execute("SET LOCAL synchronous_commit = off"),
            tx.execute(&lock, &[site]),
            tx.execute(&del_offers, &[site, &t]),
            tx.execute(&del_declined, &[site, &t]),
            tx.query(&offer, &[site, &m, &asked, &first, &span, &t, &last, &until]),
        )
        .await
        .map_err(db_err("offering an address"))?;
        let mut pick = match rows.first() {
            Some(r) => Some(v4(r.get(0))?),
            None => None,
        };
        if pick.is_some_and(taken) {
            // Rare (validation keeps fixed addresses and the server out of the pool): the
            // next candidate that is free.
            let cands = tx.prepare_cached(CANDIDATES).await.map_err(db_err("preparing"))?;
            let rows = tx
                .query(&cands, &[site, &m, &asked, &first, &span, &t, &last])
                .await
                .map_err(db_err("choosing an address"))?;
            pick = None;
            for r in &rows {
                let ip = v4(r.get(0))?;
                if !taken(ip) {
                    pick = Some(ip);
                    break;
                }
            }
            let set = tx.prepare_cached(HOLD_OFFER).await.map_err(db_err("preparing"))?;
            match pick {
                Some(ip) => tx.execute(&set, &[site, &m, &IpAddr::V4(ip), &until]).await,
                None => {
                    tx.execute("DELETE FROM pool_offers WHERE site = $1 AND mac = $2::text::macaddr", &[site, &m]).await
                }
            }
            .map_err(db_err("holding the offer"))?;
        }
        tx.commit().await.map_err(db_err("committing the offer"))?;
        Ok(pick)
    }

    /// Bind `ip` to `mac`, in four round trips: BEGIN; the lock and the check; the writes;
    /// COMMIT (durable).
    async fn ack_in_db(
        &self,
        mac: &MacAddr,
        ip: Ipv4Addr,
        now: u64,
        secs_: u32,
        taken: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Result<Option<Lease>> {
        let mut c = self.bridge.client().await?;
        let tx = c.transaction().await.map_err(db_err("starting a transaction"))?;
        let lock = tx.prepare_cached(LOCK).await.map_err(db_err("preparing"))?;
        let check = tx.prepare_cached(CHECK).await.map_err(db_err("preparing"))?;
        let (site, m, addr, t) = (&self.site, mac.to_string(), IpAddr::V4(ip), secs(now));
        let (_, row) = try_join(tx.execute(&lock, &[site]), tx.query_one(&check, &[site, &addr, &m, &t]))
            .await
            .map_err(db_err("checking the address"))?;
        let leased_to: Option<String> = row.get(0);
        let (offered_other, declined): (bool, bool) = (row.get(1), row.get(2));
        if taken(ip) || leased_to.is_some_and(|x| x != m) || offered_other || declined {
            return Ok(None);
        }
        let expires = now + u64::from(secs_);
        let unbind = tx.prepare_cached(UNBIND_ELSEWHERE).await.map_err(db_err("preparing"))?;
        let bind = tx.prepare_cached(BIND).await.map_err(db_err("preparing"))?;
        let unoffer = tx.prepare_cached(UNOFFER).await.map_err(db_err("preparing"))?;
        let notify = tx.prepare_cached(NOTIFY).await.map_err(db_err("preparing"))?;
        try_join4(
            tx.execute(&unbind, &[site, &m, &addr]),
            tx.execute(&bind, &[site, &addr, &m, &secs(expires)]),
            tx.execute(&unoffer, &[site, &m, &addr]),
            tx.execute(&notify, &[&CHANNEL, &self.payload(ip, mac)?]),
        )
        .await
        .map_err(db_err("storing the lease"))?;
        tx.commit().await.map_err(db_err("committing the lease"))?;
        let lease = Lease { mac: *mac, ip, expires };
        self.write().replace(&[ip], &[*mac], vec![lease]);
        Ok(Some(lease))
    }

    async fn release_in_db(&self, mac: &MacAddr, ip: Ipv4Addr, now: u64) -> Result<bool> {
        let c = self.bridge.client().await?;
        let (site, t) = (&self.site, secs(now));
        let n = c
            .execute(
                "WITH r AS (UPDATE pool_leases SET expires = $4
                            WHERE site = $1 AND ip = $2 AND mac = $3::text::macaddr AND expires > $4 RETURNING ip)
                 SELECT pg_notify($5, $6) FROM r",
                &[site, &IpAddr::V4(ip), &mac.to_string(), &t, &CHANNEL, &self.payload(ip, mac)?],
            )
            .await
            .map_err(db_err("releasing the lease"))?;
        if n == 0 {
            return Ok(false);
        }
        self.write().set(Lease { mac: *mac, ip, expires: now });
        Ok(true)
    }

    async fn decline_in_db(&self, mac: &MacAddr, ip: Ipv4Addr, now: u64) -> Result<()> {
        let mut c = self.bridge.client().await?;
        let tx = c.transaction().await.map_err(db_err("starting a transaction"))?;
        let lock = tx.prepare_cached(LOCK).await.map_err(db_err("preparing"))?;
        let (site, m, addr) = (&self.site, mac.to_string(), IpAddr::V4(ip));
        let payload = self.payload(ip, mac)?;
        try_join5(
            tx.execute(&lock, &[site]),
            tx.execute(
                "DELETE FROM pool_leases WHERE site = $1 AND ip = $2 AND mac = $3::text::macaddr",
                &[site, &addr, &m],
            ),
            tx.execute("DELETE FROM pool_offers WHERE site = $1 AND mac = $2::text::macaddr", &[site, &m]),
            tx.execute(
                "INSERT INTO pool_declined (site, ip, until) VALUES ($1, $2, $3)
                 ON CONFLICT (site, ip) DO UPDATE SET until = EXCLUDED.until",
                &[site, &addr, &secs(now + DECLINE_HOLD_SECS)],
            ),
            tx.execute(NOTIFY, &[&CHANNEL, &payload]),
        )
        .await
        .map_err(db_err("declining the address"))?;
        tx.commit().await.map_err(db_err("committing the decline"))?;
        let mut cache = self.write();
        if cache.by_ip.get(&ip).is_some_and(|l| l.mac == *mac) {
            cache.remove_ip(ip);
        }
        Ok(())
    }
}

/// The site's lock: the pool's writers take turns.
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('osie pool ' || $1, 0))";
const EXPIRE_OFFERS: &str = "DELETE FROM pool_offers WHERE site = $1 AND until <= $2";
const EXPIRE_DECLINED: &str = "DELETE FROM pool_declined WHERE site = $1 AND until <= $2";
const HOLD_OFFER: &str = "INSERT INTO pool_offers (site, mac, ip, until) VALUES ($1, $2::text::macaddr, $3, $4)
     ON CONFLICT (site, mac) DO UPDATE SET ip = EXCLUDED.ip, until = EXCLUDED.until";
/// Is `$2` leased (to whom), offered to another client, declined? ($1 site, $3 MAC, $4 now)
const CHECK: &str = "SELECT
       (SELECT mac::text FROM pool_leases WHERE site = $1 AND ip = $2 AND expires > $4),
       EXISTS (SELECT 1 FROM pool_offers WHERE site = $1 AND ip = $2 AND mac <> $3::text::macaddr AND until > $4),
       EXISTS (SELECT 1 FROM pool_declined WHERE site = $1 AND ip = $2 AND until > $4)";
const UNBIND_ELSEWHERE: &str = "DELETE FROM pool_leases WHERE site = $1 AND mac = $2::text::macaddr AND ip <> $3";
const BIND: &str = "INSERT INTO pool_leases (site, ip, mac, expires) VALUES ($1, $2, $3::text::macaddr, $4)
     ON CONFLICT (site, ip) DO UPDATE SET mac = EXCLUDED.mac, expires = EXCLUDED.expires";
const UNOFFER: &str = "DELETE FROM pool_offers WHERE site = $1 AND (mac = $2::text::macaddr OR ip = $3)";
const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// Hold the best candidate for the client ($8: until when) and return it.
fn offer_sql() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "INSERT INTO pool_offers (site, mac, ip, until)
             SELECT $1, $2::text::macaddr, c.ip, $8 FROM ({CANDIDATES}) AS c LIMIT 1
             ON CONFLICT (site, mac) DO UPDATE SET ip = EXCLUDED.ip, until = EXCLUDED.until
             RETURNING ip"
        )
    });
    &SQL
}

impl LeasePool for PgLeases {
    fn has_pool(&self) -> bool {
        self.range.is_some()
    }

    fn blocks(&self) -> bool {
        true
    }

    fn current(&self, mac: &MacAddr, now: u64) -> Option<Lease> {
        let c = self.read();
        let ip = c.by_mac.get(mac)?;
        c.by_ip.get(ip).filter(|l| l.expires > now).copied()
    }

    fn offer(
        &self,
        mac: &MacAddr,
        requested: Option<Ipv4Addr>,
        now: u64,
        taken: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Result<Option<Ipv4Addr>> {
        let Some(range) = self.range else { return Ok(None) };
        if let Some(ip) = self.still_bound(mac, requested, now, |expires| expires > now, taken) {
            return Ok(Some(ip));
        }
        self.bridge.run("offering a pool address", self.offer_in_db(mac, requested, now, range, taken))
    }

    /// Nothing: offers are shared by the instances (see the module docs).
    fn forget_offer(&self, _mac: &MacAddr) {}

    fn ack(&self, mac: &MacAddr, ip: Ipv4Addr, now: u64, secs: u32, taken: &dyn Fn(Ipv4Addr) -> bool) -> Result<bool> {
        if !self.in_range(ip) {
            return Ok(false);
        }
        let early = |expires| renewal_needs_no_write(expires, now, secs);
        if self.still_bound(mac, Some(ip), now, early, taken).is_some() {
            return Ok(true);
        }
        let got = self.bridge.run("binding a pool address", self.ack_in_db(mac, ip, now, secs, taken))?;
        Ok(got.is_some())
    }

    fn release(&self, mac: &MacAddr, ip: Ipv4Addr, now: u64) -> Result<bool> {
        if !self.in_range(ip) {
            return Ok(false);
        }
        self.bridge.run("releasing a pool address", self.release_in_db(mac, ip, now))
    }

    fn decline(&self, mac: &MacAddr, ip: Ipv4Addr, now: u64) -> Result<bool> {
        if !self.in_range(ip) {
            return Ok(false);
        }
        self.bridge.run("declining a pool address", self.decline_in_db(mac, ip, now))?;
        Ok(true)
    }
}

impl Leases for PgLeases {
    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        let now = now();
        self.read().by_ip.get(&ip).filter(|l| l.expires > now).map(|l| l.mac)
    }

    fn lease_of(&self, mac: &MacAddr) -> Option<Ipv4Addr> {
        self.current(mac, now()).map(|l| l.ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 0xb]);

    #[test]
    fn cache_keeps_one_address_per_mac_and_one_mac_per_address() {
        let ip = |n| Ipv4Addr::new(192, 0, 2, n);
        let mut c = Cache::default();
        c.set(Lease { mac: A, ip: ip(1), expires: 10 });
        c.set(Lease { mac: A, ip: ip(2), expires: 10 });
        assert_eq!((c.by_ip.len(), c.by_mac[&A]), (1, ip(2)), "A moved");
        c.set(Lease { mac: B, ip: ip(2), expires: 10 });
        assert_eq!((c.by_ip[&ip(2)].mac, c.by_mac.get(&A)), (B, None), "B took A's address");
        c.replace(&[ip(2), ip(3)], &[], vec![Lease { mac: A, ip: ip(3), expires: 5 }]);
        assert_eq!((c.by_ip.len(), c.by_mac.get(&B), c.by_mac[&A]), (1, None, ip(3)));
        // A moved elsewhere (another instance's ACK): its old address goes with the MAC.
        c.replace(&[ip(4)], &[A], vec![Lease { mac: A, ip: ip(4), expires: 5 }]);
        assert_eq!((c.by_ip.len(), c.by_ip.get(&ip(3)), c.by_mac[&A]), (1, None, ip(4)));
    }
}

//! [`Storage`] in PostgreSQL, shared by several bootsvc instances (`[database]` in the
//! config). `bootsvc/docs/database.md` has the schema and the failure model.
//!
//! - [`bridge`]: the trait is synchronous, the client async: a small runtime of its own, and
//!   a way to wait for it from any thread;
//! - [`schema`]: versioned migrations embedded in the binary; `serve` refuses any other
//!   version;
//! - [`machines`], [`state`], [`leases`]: the inventory, machine state and events, the DHCP
//!   pool, each written in transactions whose uniqueness rules hold across instances;
//! - [`listen`]: LISTEN/NOTIFY keeps each instance's copies in memory fresh, so reads per
//!   packet and per request never wait for the database.
//!
//! The DHCP requests seen (proxy mode) are kept in memory as in the embedded store and
//! written behind to `dhcp_requests` every few seconds; an instance reads them at start.

pub mod bridge;
pub mod cli;
pub mod leases;
pub mod listen;
pub mod machines;
pub mod schema;
pub mod spool;
pub mod state;
pub mod trace;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use deadpool_postgres::GenericClient;
use osie_api::{Event, MacAddr};

use self::bridge::{db_err, is_unreachable, Bridge};
use self::leases::PgLeases;
use self::spool::{Spool, Spooled};
use self::state::States;
use super::requests::{Requested, FLUSH_INTERVAL};
use super::{ChangeError, DbHealth, DhcpRequests, LeasePool, RequestsSeen, SiteCount, Storage};
use crate::config::{Config, DhcpMode};
use crate::inventory::{images, watch, Entry, Images, Inventory, Machine, Snapshot};
use crate::problem::Problems;
use crate::state::{MachineState, Recorded, StoredEvent};
use crate::trace::log::{LogBounds, LogOutcome, LogView, StoredChunk};
use crate::trace::{StoredStep, TraceStep};

/// What the listener updates, shared with it.
pub struct Shared {
    bridge: Arc<Bridge>,
    cfg: Arc<Config>,
    /// This instance's site: `pool_leases` and `dhcp_requests` rows are per site.
    site: String,
    inventory: Inventory,
    /// The records as last read, and the images they are validated against.
    records: Mutex<(Vec<Entry>, Images)>,
    /// The NICs of other sites' machines, and their site: so a request from one is logged as
    /// such, not as from an unknown machine.
    others: RwLock<HashMap<MacAddr, String>>,
    states: States,
    leases: PgLeases,
}

impl Shared {
    /// Read the machines again and serve those that pass this instance's validation.
    async fn reload_machines(&self, c: &impl GenericClient) -> Result<()> {
        let entries = machines::load(c, Some(&self.site)).await?;
        let others = machines::other_sites(c, &self.site).await?;
        *self.others.write().unwrap_or_else(|p| p.into_inner()) = others;
        let images = self.records.lock().unwrap_or_else(|p| p.into_inner()).1.clone();
        self.serve_records(entries, images);
        Ok(())
    }

    fn serve_records(&self, entries: Vec<Entry>, images: Images) {
        let (snap, problems) = Snapshot::keep_valid(entries.clone(), &self.cfg, images.clone());
        log_refused(&problems);
        let n = snap.len();
        let old = self.inventory.replace(snap);
        *self.records.lock().unwrap_or_else(|p| p.into_inner()) = (entries, images);
        if old.len() != n || !problems.is_empty() {
            tracing::info!(machines = n, refused = problems.len(), "inventory read from the database");
        }
    }

    /// Everything, at start and when the notifications were cut.
    async fn reload_all(&self) -> Result<()> {
        let c = self.bridge.client().await?;
        self.reload_machines(&c).await?;
        self.states.load(&c, None).await?;
        self.leases.reload(&c).await
    }
}

fn log_refused(problems: &Problems) {
    for p in problems.iter() {
        tracing::warn!(problem = %p, "a machine record in the database is not served by this instance: {p}");
    }
}

pub struct PgStorage {
    shared: Arc<Shared>,
    requests: Arc<DhcpRequests>,
    spool: Arc<Spool>,
    /// Wakes the replay as soon as an event is spooled.
    wake: Arc<tokio::sync::Notify>,
    /// The key of spooled events that carry none of their own (`spool::Spooled::new`):
    /// unique to this process, numbered within it.
    spool_run: String,
    spool_seq: AtomicU64,
}

impl PgStorage {
    /// An operator's change to a machine's state, in the database and then in memory.
    fn change(
        &self,
        key: MacAddr,
        what: &'static str,
        f: impl FnOnce(&MachineState) -> MachineState,
    ) -> Result<MachineState> {
        let (st, version) = self.bridge().run(what, async {
            let mut c = self.bridge().client().await?;
            state::change(&mut c, key, what, f).await
        })?;
        self.shared.states.offer(key, version, st.clone());
        Ok(st)
    }

    /// Connect, refuse a schema other than this bootsvc's, read everything, and keep it
    /// fresh from then on. Blocks; call it outside the async runtime's workers.
    pub fn open(cfg: Arc<Config>, url: &str) -> Result<PgStorage> {
        let db = cfg.database.as_ref().context("no [database] in the config")?;
        let bridge = Arc::new(Bridge::new(url, db.max_connections, Duration::from_secs(db.timeout_secs))?);
        let shown = bridge.shown.clone();
        bridge
            .run("checking the schema", async {
                let c = bridge.client().await?;
                let client: &tokio_postgres::Client = &c;
                schema::check(client).await
            })
            .with_context(|| format!("opening {shown}"))?;
        let pool = match (cfg.dhcp.enabled, cfg.dhcp.mode, &cfg.dhcp.pool) {
            (true, DhcpMode::Reservation, Some(p)) => Some(p),
            _ => None,
        };
        let site = db.site().to_string();
        let mut problems = Problems::default();
        let images = images::load_configured(&cfg, &mut problems);
        for p in problems.iter() {
            tracing::warn!(problem = %p, "an image manifest is not served: {p}");
        }
        let shared = Arc::new(Shared {
            leases: PgLeases::new(Arc::clone(&bridge), &site, pool)?,
            bridge: Arc::clone(&bridge),
            cfg: Arc::clone(&cfg),
            site,
            inventory: Inventory::new(Snapshot::default()),
            records: Mutex::new((Vec::new(), images)),
            others: RwLock::default(),
            states: States::default(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        bridge.handle().spawn(listen::run(Arc::downgrade(&shared), tx));
        bridge
            .run("reading the machines, their state and leases", async {
                rx.await.map_err(|_| anyhow!("the listener stopped"))?
            })
            .with_context(|| format!("opening {shown}"))?;
        let requests = match (cfg.dhcp.enabled, cfg.dhcp.mode) {
            (true, DhcpMode::Proxy) => {
                let r = DhcpRequests::in_memory();
                let site = shared.site.clone();
                let seen = bridge.run("reading the DHCP requests seen", async {
                    let c = bridge.client().await?;
                    read_requests(&c, &site).await
                })?;
                r.load(seen);
                bridge.handle().spawn(write_requests_behind(Arc::downgrade(&shared), Arc::downgrade(&r)));
                r
            }
            _ => DhcpRequests::disabled(),
        };
        bridge.handle().spawn(watch_images(Arc::downgrade(&shared)));
        let spool = Arc::new(Spool::open(&cfg.state.dir)?);
        let wake = Arc::new(tokio::sync::Notify::new());
        bridge.handle().spawn(replay(Arc::downgrade(&shared), Arc::clone(&spool), Arc::clone(&wake)));
        let spool_run = format!("spool-{}-{}", std::process::id(), crate::state::now());
        Ok(PgStorage { shared, requests, spool, wake, spool_run, spool_seq: AtomicU64::new(0) })
    }

    fn bridge(&self) -> &Bridge {
        &self.shared.bridge
    }
}

impl Storage for PgStorage {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.inventory.snapshot()
    }

    fn state(&self, key: &MacAddr) -> MachineState {
        self.shared.states.get(key)
    }

    fn states(&self) -> HashMap<MacAddr, MachineState> {
        self.shared.states.all()
    }

    /// Into the database; while it is unreachable (or events wait in the spool, to keep
    /// their order), into the spool, acknowledged once synced there.
    fn record_event(&self, key: MacAddr, ev: &Event, source: Option<std::net::IpAddr>, now: &str) -> Result<Recorded> {
        if self.spool.is_empty() {
            let r = self.bridge().run("storing an event", async {
                let mut c = self.bridge().client().await?;
                state::record_event(&mut c, key, ev, source, now, None).await
            });
            match r {
                Ok((rec, version)) => {
                    self.shared.states.offer(key, version, rec.state.clone());
                    return Ok(rec);
                }
                Err(e) if !is_unreachable(&e) => return Err(e),
                Err(_) => {}
            }
        }
        let fallback = (self.spool_run.clone(), self.spool_seq.fetch_add(1, Ordering::Relaxed));
        let current = self.shared.states.get(&key);
        if !self.spool.push(Spooled::new(key, ev, source, now, fallback))? {
            return Ok(Recorded { duplicate: true, state: current });
        }
        let state = current.apply(ev, now);
        self.shared.states.set_local(key, state.clone());
        tracing::warn!(mac = %key, phase = ev.phase.as_str(), spooled = self.spool.len(),
            "database unreachable: event kept in the spool, stored when it answers again");
        self.wake.notify_one();
        Ok(Recorded { duplicate: false, state })
    }

    fn reinstall(&self, key: MacAddr, now: &str) -> Result<MachineState> {
        self.change(key, "allowing a reinstall", |s| s.reinstall(now))
    }

    fn deprovision(&self, key: MacAddr, now: &str, removable: bool) -> Result<MachineState> {
        self.change(key, "asking for a deprovisioning", |s| s.deprovision(now, removable))
    }

    fn events(&self, key: &MacAddr, limit: usize) -> Result<Vec<StoredEvent>> {
        self.bridge().run("reading events", async {
            let c = self.bridge().client().await?;
            state::events(&c, key, limit).await
        })
    }

    fn record_steps(&self, steps: &[(MacAddr, TraceStep)], keep: usize) -> Result<()> {
        self.bridge().run("storing trace steps", async {
            let mut c = self.bridge().client().await?;
            trace::record_steps(&mut c, steps, keep).await
        })
    }

    fn steps(&self, key: &MacAddr, limit: usize) -> Result<Vec<StoredStep>> {
        self.bridge().run("reading the trace", async {
            let c = self.bridge().client().await?;
            trace::steps(&c, key, limit).await
        })
    }

    fn record_log(&self, key: MacAddr, chunk: &StoredChunk, bounds: &LogBounds) -> Result<LogOutcome> {
        self.bridge().run("storing a log chunk", async {
            let mut c = self.bridge().client().await?;
            trace::record_log(&mut c, key, chunk, bounds).await
        })
    }

    fn log(&self, key: &MacAddr) -> Result<LogView> {
        self.bridge().run("reading the log", async {
            let c = self.bridge().client().await?;
            trace::log(&c, key).await
        })
    }

    fn put_machine(&self, m: &Machine, replacing: Option<&MacAddr>, from: &str) -> Result<(), ChangeError> {
        let s = &self.shared;
        self.bridge()
            .run("storing a machine", async {
                let mut c = s.bridge.client().await?;
                let tx = c.transaction().await.map_err(db_err("starting a transaction"))?;
                if let Some(mac) = replacing {
                    machines::remove(&tx, mac).await?;
                }
                machines::put(&tx, m, from).await?;
                machines::announce(&tx).await?;
                tx.commit().await.map_err(db_err("committing"))?;
                // Seen by this instance's reads before this returns.
                s.reload_machines(&c).await
            })
            .map_err(changed)
    }

    fn remove_machine(&self, mac: &MacAddr) -> Result<Option<String>, ChangeError> {
        let s = &self.shared;
        self.bridge()
            .run("removing a machine", async {
                let mut c = s.bridge.client().await?;
                let tx = c.transaction().await.map_err(db_err("starting a transaction"))?;
                let gone = machines::remove(&tx, mac).await?;
                machines::announce(&tx).await?;
                tx.commit().await.map_err(db_err("committing"))?;
                s.reload_machines(&c).await?;
                Ok(gone)
            })
            .map_err(changed)
    }

    fn leases(&self) -> &dyn LeasePool {
        &self.shared.leases
    }

    fn dhcp_requests(&self) -> &dyn RequestsSeen {
        &*self.requests
    }

    fn flush(&self) -> Result<()> {
        let Some(all) = self.requests.take_changes() else { return Ok(()) };
        let s = &self.shared;
        let r = self.bridge().run("saving the DHCP requests seen", async {
            let mut c = s.bridge.client().await?;
            store_requests(&mut c, &s.site, &all).await
        });
        if r.is_err() {
            self.requests.changed_again();
        }
        r
    }

    fn describe(&self) -> String {
        format!("postgresql ({})", self.bridge().shown)
    }

    fn other_site(&self, mac: &MacAddr) -> Option<String> {
        self.shared.others.read().unwrap_or_else(|p| p.into_inner()).get(mac).cloned()
    }

    fn site(&self) -> Option<&str> {
        Some(&self.shared.site)
    }

    fn sites(&self) -> Result<Option<Vec<SiteCount>>> {
        let all = self.bridge().run("reading the sites", async {
            let c = self.bridge().client().await?;
            machines::sites(&c).await
        })?;
        let this = &self.shared.site;
        Ok(Some(all.into_iter().map(|(site, machines)| SiteCount { this: site == *this, site, machines }).collect()))
    }

    fn health(&self) -> Option<DbHealth> {
        Some(DbHealth { up: self.bridge().is_up(), spooled: self.spool.len() })
    }
}

/// A uniqueness rule another writer got to first is a conflict; the rest failed.
fn changed(e: anyhow::Error) -> ChangeError {
    match e.downcast_ref::<machines::Conflict>() {
        Some(c) => ChangeError::Conflict(c.0.clone()),
        None => ChangeError::Failed(e),
    }
}

/// Poll the images directory (local files, as the embedded store does) and validate the
/// records against the new manifests when it changes.
async fn watch_images(shared: std::sync::Weak<Shared>) {
    let Some(s) = shared.upgrade() else { return };
    let dir = s.cfg.artifacts.images_dir.clone();
    drop(s);
    let fingerprint = move || {
        let mut fp = watch::Fingerprint::new();
        watch::add_dir(&dir, &mut fp);
        fp
    };
    let mut last = fingerprint();
    let mut tick = tokio::time::interval(watch::INTERVAL);
    loop {
        tick.tick().await;
        let f = fingerprint.clone();
        let Ok(now) = tokio::task::spawn_blocking(f).await else { continue };
        if now == last {
            continue;
        }
        last = now;
        let Some(s) = shared.upgrade() else { return };
        let dir = s.cfg.artifacts.images_dir.clone();
        let keyring = s.cfg.keyring().ok().flatten();
        let Ok((images, problems)) = tokio::task::spawn_blocking(move || {
            let mut p = Problems::default();
            let i = images::load(&dir, keyring.as_deref(), &mut p);
            (i, p)
        })
        .await
        else {
            continue;
        };
        for p in problems.iter() {
            tracing::warn!(problem = %p, "an image manifest is not served: {p}");
        }
        let entries = s.records.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        tracing::info!(images = images.len(), "image manifests read again");
        s.serve_records(entries, images);
    }
}

/// Events replayed per round trip of the spool.
const REPLAY_BATCH: usize = 64;

/// Store the spooled events in order once the database answers (woken by a new one, and
/// every second); while nothing waits and the database is down, see every second whether it
/// is back (`/metrics` says so). An event the database refuses outright (not an outage)
/// would block the rest forever: it is logged and set aside in `events.spool.refused`.
async fn replay(shared: std::sync::Weak<Shared>, spool: Arc<Spool>, wake: Arc<tokio::sync::Notify>) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Some(s) = shared.upgrade() else { return };
        if spool.is_empty() {
            if !s.bridge.is_up() {
                let r = async { s.bridge.client().await?.simple_query("SELECT 1").await.map_err(db_err("ping")) }.await;
                s.bridge.note(&r);
            }
            continue;
        }
        let (mut stored, mut newest) = (0usize, HashMap::new());
        'batches: loop {
            let batch = spool.front(REPLAY_BATCH);
            if batch.is_empty() {
                break;
            }
            let mut done = 0;
            for e in &batch {
                let r = async {
                    let mut c = s.bridge.client().await?;
                    state::record_event(&mut c, e.key, &e.event, e.source, &e.received, Some((&e.run_id, e.seq))).await
                }
                .await;
                s.bridge.note(&r);
                match r {
                    Ok((rec, version)) => {
                        newest.insert(e.key, (version, rec.state));
                    }
                    Err(err) if is_unreachable(&err) => break,
                    Err(err) => {
                        tracing::error!(mac = %e.key, run_id = %e.run_id, seq = e.seq,
                            "database: a spooled event was refused, set aside in {}.refused: {err:#}", spool::FILE);
                        set_aside(&s.cfg.state.dir, e);
                    }
                }
                done += 1;
            }
            if let Err(err) = spool.done(done) {
                tracing::error!("database: rewriting the event spool: {err:#}");
                break;
            }
            stored += done;
            if done < batch.len() {
                break 'batches;
            }
        }
        // A machine's state from the database once none of its events wait any more (until
        // then the local one has them all).
        for (key, (version, state)) in newest {
            if !spool.has_key(&key) {
                s.states.offer(key, version, state);
            }
        }
        if stored > 0 {
            tracing::info!(replayed = stored, waiting = spool.len(), "database: spooled events stored");
        }
    }
}

fn set_aside(dir: &std::path::Path, e: &Spooled) {
    use std::io::Write;
    let path = dir.join(format!("{}.refused", spool::FILE));
    let line = serde_json::to_string(e).unwrap_or_default();
    let r = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| writeln!(f, "{line}"));
    if let Err(err) = r {
        tracing::error!("writing {}: {err}", path.display());
    }
}

async fn read_requests(c: &impl GenericClient, site: &str) -> Result<Vec<Requested>> {
    let rows = c
        .query("SELECT mac::text, ip, at, relayed FROM dhcp_requests WHERE site = $1", &[&site])
        .await
        .map_err(db_err("reading the DHCP requests seen"))?;
    let mut out = Vec::new();
    for r in rows {
        let (mac, ip): (String, IpAddr) = (r.get(0), r.get(1));
        if let (Ok(mac), IpAddr::V4(ip)) = (mac.parse(), ip) {
            out.push(Requested { mac, ip, at: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0), relayed: r.get(3) });
        }
    }
    Ok(out)
}

/// Replace this site's rows with `all`.
async fn store_requests(c: &mut deadpool_postgres::Client, site: &str, all: &[Requested]) -> Result<()> {
    let tx = c.transaction().await.map_err(db_err("starting a transaction"))?;
    tx.execute("DELETE FROM dhcp_requests WHERE site = $1", &[&site]).await.map_err(db_err("clearing"))?;
    let macs: Vec<String> = all.iter().map(|r| r.mac.to_string()).collect();
    let ips: Vec<IpAddr> = all.iter().map(|r| IpAddr::V4(r.ip)).collect();
    let ats: Vec<i64> = all.iter().map(|r| i64::try_from(r.at).unwrap_or(i64::MAX)).collect();
    let relayed: Vec<bool> = all.iter().map(|r| r.relayed).collect();
    tx.execute(
        "INSERT INTO dhcp_requests (site, mac, ip, at, relayed)
         SELECT $1, m::macaddr, i, a, r FROM unnest($2::text[], $3::inet[], $4::int8[], $5::bool[]) AS u (m, i, a, r)",
        &[&site, &macs, &ips, &ats, &relayed],
    )
    .await
    .map_err(db_err("storing"))?;
    tx.commit().await.map_err(db_err("committing"))?;
    Ok(())
}

/// Write the DHCP requests seen every [`FLUSH_INTERVAL`] while they change.
async fn write_requests_behind(shared: std::sync::Weak<Shared>, requests: std::sync::Weak<DhcpRequests>) {
    loop {
        tokio::time::sleep(FLUSH_INTERVAL).await;
        let (Some(s), Some(r)) = (shared.upgrade(), requests.upgrade()) else { return };
        let Some(all) = r.take_changes() else { continue };
        let stored = async {
            let mut c = s.bridge.client().await?;
            store_requests(&mut c, &s.site, &all).await
        }
        .await;
        if let Err(e) = stored {
            r.changed_again();
            tracing::warn!("database: saving the DHCP requests seen: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests;

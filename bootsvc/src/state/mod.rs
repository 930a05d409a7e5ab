//! Events and per-machine state in an embedded, crash-safe store (redb, one file:
//! `<state.dir>/bootsvc.redb`).
//!
//! An event is committed durably (fsync) before [`Store::record_event`] returns, and the
//! HTTP side answers 2xx only after that: an acknowledged event survives a crash. A re-sent
//! event (same machine, `run_id` and `seq`) is recognised and not stored twice.
//!
//! Group commit: events arriving while a commit is under way wait, and the next commit
//! writes all of them in one transaction with one fsync (the caller that finds no commit
//! running does it for everyone queued, then each caller gets its own answer). Hundreds of
//! machines reporting at once cost a few fsyncs, not hundreds in a row.
//!
//! Machine state is keyed by the machine's first MAC (its record's `macs[0]`), whichever NIC
//! an event names. Reads come from an in-memory copy kept in step with the file.

pub mod machine;
mod trace;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock};

use anyhow::{Context, Result};
use osie_api::{Event, MacAddr};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub use machine::{Deprovision, EventSummary, MachineState, Status};

/// Machine key (MAC) → JSON [`MachineState`].
const MACHINES: TableDefinition<&str, &[u8]> = TableDefinition::new("machines");
/// (machine key, event number) → JSON [`StoredEvent`].
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
/// `key|run_id|seq` → event number: events already stored.
const EVENT_IDS: TableDefinition<&str, u64> = TableDefinition::new("event_ids");

/// One event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Number of the event for its machine: 0, 1, 2…
    pub n: u64,
    /// When bootsvc stored it (RFC 3339).
    pub received: String,
    /// Who sent it.
    #[serde(default)]
    pub source: Option<std::net::IpAddr>,
    pub event: Event,
}

/// The outcome of [`Store::record_event`].
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The same event had been stored before; nothing changed.
    pub duplicate: bool,
    pub state: MachineState,
}

pub struct Store {
    db: Database,
    path: PathBuf,
    cache: RwLock<HashMap<MacAddr, MachineState>>,
    /// Serialises writers so the cache is updated in commit order.
    writer: Mutex<()>,
    /// Events waiting for the next group commit, and the answers of finished ones.
    queue: Mutex<Queue>,
    committed: Condvar,
    /// Event commits so far (each one fsync), for tests and figures.
    commits: std::sync::atomic::AtomicU64,
    /// When trace steps were last committed durably (`trace`: most of their commits are not).
    trace_synced: Mutex<Option<std::time::Instant>>,
}

/// One event waiting to be written.
struct Job {
    ticket: u64,
    key: MacAddr,
    ev: Event,
    source: Option<std::net::IpAddr>,
    now: String,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Job>,
    /// A caller is committing a batch now.
    busy: bool,
    /// Answers by ticket, taken by their callers.
    done: HashMap<u64, std::result::Result<Recorded, String>>,
    next: u64,
}

/// redb's page cache. Its default (1 GiB) lets the service's memory grow with the event log
/// for months; the working set (recent events, machine states) is far smaller.
const CACHE_BYTES: usize = 32 << 20;

/// Largest batch per commit: bounds how long one transaction holds the writer.
const MAX_BATCH: usize = 512;

impl Store {
    /// Open (or create) the store in `dir`, creating the directory if needed.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating state directory {}", dir.display()))?;
        let path = dir.join("bootsvc.redb");
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .with_context(|| format!("opening state store {}", path.display()))?;
        let txn = db.begin_write().context("state store: starting a write")?;
        {
            txn.open_table(MACHINES).context("state store: machines table")?;
            txn.open_table(EVENTS).context("state store: events table")?;
            txn.open_table(EVENT_IDS).context("state store: event ids table")?;
            txn.open_table(trace::TRACE).context("state store: trace table")?;
            txn.open_table(trace::TRACE_NEXT).context("state store: trace_next table")?;
            txn.open_table(trace::LOG_CHUNKS).context("state store: log_chunks table")?;
            txn.open_table(trace::LOG_META).context("state store: log_meta table")?;
        }
        txn.commit().context("state store: creating tables")?;
        let mut cache = HashMap::new();
        let read = db.begin_read().context("state store: starting a read")?;
        let machines = read.open_table(MACHINES).context("state store: machines table")?;
        for row in machines.iter().context("state store: reading machines")? {
            let (k, v) = row.context("state store: reading a machine")?;
            let mac: MacAddr =
                k.value().parse().with_context(|| format!("state store: bad machine key {:?}", k.value()))?;
            let st: MachineState = serde_json::from_slice(v.value())
                .with_context(|| format!("state store: machine {mac}: undecodable state"))?;
            cache.insert(mac, st);
        }
        Ok(Store {
            db,
            path,
            cache: RwLock::new(cache),
            writer: Mutex::new(()),
            queue: Mutex::new(Queue::default()),
            committed: Condvar::new(),
            commits: Default::default(),
            trace_synced: Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state of the machine keyed `key` (default when never seen).
    pub fn state(&self, key: &MacAddr) -> MachineState {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned().unwrap_or_default()
    }

    /// Every machine with stored state.
    pub fn all(&self) -> HashMap<MacAddr, MachineState> {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Store `ev` for the machine keyed `key` and update its state, durably, before
    /// returning. A re-sent event (same `run_id` and `seq`) changes nothing. Concurrent
    /// callers share commits (see the module docs).
    pub fn record_event(
        &self,
        key: MacAddr,
        ev: &Event,
        source: Option<std::net::IpAddr>,
        now: &str,
    ) -> Result<Recorded> {
        let mut q = self.lock_queue();
        let ticket = q.next;
        q.next += 1;
        q.pending.push(Job { ticket, key, ev: ev.clone(), source, now: now.to_string() });
        loop {
            if let Some(r) = q.done.remove(&ticket) {
                return r.map_err(|e| anyhow::anyhow!(e));
            }
            if !q.busy {
                // Nobody is committing: commit everything queued, ours included.
                q.busy = true;
                let n = q.pending.len().min(MAX_BATCH);
                let batch: Vec<Job> = q.pending.drain(..n).collect();
                drop(q);
                let results = {
                    // Should the commit panic, the guard still hands out answers and frees
                    // the queue, so no caller waits forever.
                    let mut guard = BatchGuard { store: self, tickets: batch.iter().map(|j| j.ticket).collect() };
                    let r = self.commit_batch(&batch);
                    guard.tickets.clear();
                    r
                };
                q = self.lock_queue();
                q.busy = false;
                for (job, r) in batch.iter().zip(results) {
                    q.done.insert(job.ticket, r);
                }
                self.committed.notify_all();
                continue;
            }
            q = self.committed.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// How many event commits (fsyncs) this store has made.
    pub fn event_commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write `batch` in one transaction: one answer per job, all errors if it fails.
    fn commit_batch(&self, batch: &[Job]) -> Vec<std::result::Result<Recorded, String>> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match self.write_batch(batch) {
            Ok(recorded) => {
                let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
                for (job, r) in batch.iter().zip(&recorded) {
                    if !r.duplicate {
                        cache.insert(job.key, r.state.clone());
                    }
                }
                recorded.into_iter().map(Ok).collect()
            }
            Err(e) => {
                let msg = format!("{e:#}");
                batch.iter().map(|_| Err(msg.clone())).collect()
            }
        }
    }

    fn write_batch(&self, batch: &[Job]) -> Result<Vec<Recorded>> {
        let txn = self.db.begin_write().context("state store: starting a write")?;
        let mut out = Vec::with_capacity(batch.len());
        {
            let mut ids = txn.open_table(EVENT_IDS).context("state store: event ids table")?;
            let mut machines = txn.open_table(MACHINES).context("state store: machines table")?;
            let mut events = txn.open_table(EVENTS).context("state store: events table")?;
            for job in batch {
                let k = job.key.to_string();
                let current: MachineState = match machines.get(k.as_str()).context("state store: reading a machine")? {
                    Some(v) => serde_json::from_slice(v.value()).context("state store: undecodable machine state")?,
                    None => MachineState::default(),
                };
                let id = match (&job.ev.run_id, job.ev.seq) {
                    (Some(run), Some(seq)) => Some(format!("{k}|{run}|{seq}")),
                    _ => None,
                };
                if let Some(id) = &id {
                    if ids.get(id.as_str()).context("state store: looking up an event id")?.is_some() {
                        out.push(Recorded { duplicate: true, state: current });
                        continue;
                    }
                }
                let state = current.apply(&job.ev, &job.now);
                let n = state.events - 1;
                let stored = StoredEvent { n, received: job.now.clone(), source: job.source, event: job.ev.clone() };
                events
                    .insert((k.as_str(), n), serde_json::to_vec(&stored)?.as_slice())
                    .context("state store: storing the event")?;
                machines
                    .insert(k.as_str(), serde_json::to_vec(&state)?.as_slice())
                    .context("state store: storing state")?;
                if let Some(id) = &id {
                    ids.insert(id.as_str(), n).context("state store: storing the event id")?;
                }
                out.push(Recorded { duplicate: false, state });
            }
        }
        // Default durability: fsync before commit returns.
        txn.commit().context("state store: committing events")?;
        self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }

    /// Allow netboot again after an install; durable before returning.
    pub fn reinstall(&self, key: MacAddr, now: &str) -> Result<MachineState> {
        self.change(key, |s| s.reinstall(now))
    }

    /// Erase the disks on the next netboot (`MachineState::deprovision`); durable before
    /// returning.
    pub fn deprovision(&self, key: MacAddr, now: &str, removable: bool) -> Result<MachineState> {
        self.change(key, |s| s.deprovision(now, removable))
    }

    /// An operator's change to the state, durable before returning.
    fn change(&self, key: MacAddr, f: impl FnOnce(&MachineState) -> MachineState) -> Result<MachineState> {
        self.update(key, Durability::Immediate, |s| Some(f(s))).map(|s| s.unwrap_or_else(|| self.state(&key)))
    }

    fn update(
        &self,
        key: MacAddr,
        durability: Durability,
        f: impl FnOnce(&MachineState) -> Option<MachineState>,
    ) -> Result<Option<MachineState>> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let k = key.to_string();
        let mut txn = self.db.begin_write().context("state store: starting a write")?;
        txn.set_durability(durability).map_err(|e| anyhow::anyhow!("state store: setting durability: {e}"))?;
        let new = {
            let mut machines = txn.open_table(MACHINES).context("state store: machines table")?;
            let current = match machines.get(k.as_str()).context("state store: reading a machine")? {
                Some(v) => serde_json::from_slice(v.value()).context("state store: undecodable machine state")?,
                None => MachineState::default(),
            };
            let Some(new) = f(&current) else { return Ok(None) };
            machines.insert(k.as_str(), serde_json::to_vec(&new)?.as_slice()).context("state store: storing state")?;
            new
        };
        txn.commit().context("state store: committing")?;
        self.cache.write().unwrap_or_else(|e| e.into_inner()).insert(key, new.clone());
        Ok(Some(new))
    }

    /// The last `limit` events of the machine keyed `key`, oldest first.
    pub fn events(&self, key: &MacAddr, limit: usize) -> Result<Vec<StoredEvent>> {
        let k = key.to_string();
        let read = self.db.begin_read().context("state store: starting a read")?;
        let events = read.open_table(EVENTS).context("state store: events table")?;
        let range = events.range((k.as_str(), 0)..=(k.as_str(), u64::MAX)).context("state store: reading events")?;
        let mut out = Vec::new();
        for row in range.rev().take(limit) {
            let (_, v) = row.context("state store: reading an event")?;
            out.push(serde_json::from_slice(v.value()).context("state store: undecodable event")?);
        }
        out.reverse();
        Ok(out)
    }
}

/// Frees the group-commit queue if a commit unwinds: its callers get an error, not a wait
/// forever.
struct BatchGuard<'a> {
    store: &'a Store,
    /// Tickets still owed an answer (cleared when the commit returned normally).
    tickets: Vec<u64>,
}

impl Drop for BatchGuard<'_> {
    fn drop(&mut self) {
        if self.tickets.is_empty() {
            return;
        }
        let mut q = self.store.lock_queue();
        q.busy = false;
        for t in self.tickets.drain(..) {
            q.done.insert(t, Err("state store: the commit panicked".into()));
        }
        self.store.committed.notify_all();
    }
}

/// Now, as RFC 3339 UTC.
pub fn now() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    osie_api::time::rfc3339(ms as u64)
}

#[cfg(test)]
mod tests {
    use osie_api::Phase;

    use super::*;

    fn ev(phase: Phase, run: &str, seq: u64) -> Event {
        Event {
            machine: "52:54:00:00:00:01".parse().unwrap(),
            phase,
            progress: None,
            message: format!("{phase}"),
            time: "2026-01-01T00:00:00Z".into(),
            run_id: Some(run.into()),
            seq: Some(seq),
            error: Vec::new(),
            hardware: None,
            erase: None,
        }
    }

    #[test]
    fn events_survive_reopen_and_duplicates_are_noops() {
        let d = tempfile::tempdir().unwrap();
        let key: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let ip = Some(std::net::IpAddr::from([192, 0, 2, 10]));
        {
            let s = Store::open(d.path()).unwrap();
            assert!(!s.record_event(key, &ev(Phase::BootedInstaller, "r1", 0), ip, "t0").unwrap().duplicate);
            assert!(!s.record_event(key, &ev(Phase::Installed, "r1", 1), ip, "t1").unwrap().duplicate);
            let again = s.record_event(key, &ev(Phase::Installed, "r1", 1), ip, "t2").unwrap();
            assert!(again.duplicate);
            assert_eq!(again.state.events, 2);
        }
        let s = Store::open(d.path()).unwrap();
        let st = s.state(&key);
        assert_eq!((st.status, st.netboot_cleared, st.events), (Status::Installed, true, 2));
        let evs = s.events(&key, 10).unwrap();
        assert_eq!(evs.iter().map(|e| e.event.phase).collect::<Vec<_>>(), [Phase::BootedInstaller, Phase::Installed]);
        assert_eq!(evs[1].n, 1);
        assert_eq!(s.events(&key, 1).unwrap()[0].event.phase, Phase::Installed);
        assert!(s.record_event(key, &ev(Phase::Installed, "r1", 1), ip, "t4").unwrap().duplicate);
        let st = s.reinstall(key, "t5").unwrap();
        assert!(!st.netboot_cleared);
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.state(&key).status, Status::ReinstallPending);
        assert_eq!(s.all().len(), 1);
        s.deprovision(key, "t6", true).unwrap();
        drop(s);
        let s = Store::open(d.path()).unwrap();
        let st = s.state(&key);
        assert_eq!((st.status, st.netboot_cleared), (Status::DeprovisionPending, false));
        assert_eq!(st.deprovision.map(|d| (d.requested_at, d.removable)), Some(("t6".to_string(), true)));
    }

    #[test]
    fn concurrent_events_share_commits_and_lose_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(Store::open(d.path()).unwrap());
        let threads: Vec<_> = (0..16u8)
            .map(|t| {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || {
                    let key = MacAddr::new([2, 0, 0, 0, 0, t % 4]);
                    for seq in 0..25 {
                        let mut e = ev(Phase::ImageStreaming, &format!("run-{t}"), seq);
                        e.machine = key;
                        assert!(!s.record_event(key, &e, None, "t").unwrap().duplicate);
                        // Every other event is sent twice, as a retry would.
                        if seq % 2 == 0 {
                            assert!(s.record_event(key, &e, None, "t").unwrap().duplicate);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for m in 0..4 {
            let key = MacAddr::new([2, 0, 0, 0, 0, m]);
            let evs = s.events(&key, 1000).unwrap();
            assert_eq!(evs.len(), 4 * 25, "four threads per machine, 25 events each");
            assert!(evs.iter().enumerate().all(|(i, e)| e.n == i as u64), "numbered without gaps");
            let mut ids: Vec<_> = evs.iter().map(|e| (e.event.run_id.clone(), e.event.seq)).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 100, "each once");
            assert_eq!(s.state(&key).events, 100);
        }
        let commits = s.event_commits();
        eprintln!("{commits} commits for 600 events");
        assert!(commits < 600, "{commits} commits: concurrent events share them");
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.state(&MacAddr::new([2, 0, 0, 0, 0, 3])).events, 100, "durable");
    }

    #[test]
    fn events_without_ids_are_all_stored() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let key: MacAddr = "52:54:00:00:00:02".parse().unwrap();
        let mut e = ev(Phase::FirstBoot, "x", 0);
        e.run_id = None;
        e.seq = None;
        for _ in 0..3 {
            assert!(!s.record_event(key, &e, None, "t").unwrap().duplicate);
        }
        assert_eq!(s.events(&key, 100).unwrap().len(), 3);
        let other: MacAddr = "52:54:00:00:00:03".parse().unwrap();
        assert!(s.events(&other, 100).unwrap().is_empty());
    }
}

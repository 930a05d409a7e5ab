//! Machine state and events in PostgreSQL (`machine_state`, `events`), with the same rules
//! as the embedded store (`crate::state`): an event is committed before `record_event`
//! returns, a re-sent one (machine, `run_id`, `seq`) is stored once whichever instance
//! receives it, and state changes as [`MachineState::apply`] says.
//!
//! One transaction per event: the machine's state row is locked (created if new), the event
//! inserted unless the `(key, run_id, seq)` uniqueness rule finds it stored already, the
//! state updated with a new `version`, and `osie_state` notified with the machine's key so
//! every instance reads the new state (`super::listen`). Two instances receiving the same
//! event take turns on the row lock; the second finds it stored. Reads come from a copy in
//! memory ([`States`]) that only moves forward (by `version`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;

use anyhow::{anyhow, Result};
use deadpool_postgres::GenericClient;
use osie_api::{Event, MacAddr};

use super::bridge::db_err;
use crate::state::{MachineState, Recorded, StoredEvent};

/// Channel of state notifications; the payload is the machine's key (its first MAC).
pub const CHANNEL: &str = "osie_state";

/// Machine states in memory, each with the version it was read or written at, and whether
/// it is this instance's own while its events wait in the spool (`local`).
#[derive(Default)]
pub struct States(RwLock<HashMap<MacAddr, Cached>>);

struct Cached {
    version: i64,
    state: MachineState,
    local: bool,
}

impl States {
    pub fn get(&self, key: &MacAddr) -> MachineState {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(key).map(|c| c.state.clone()).unwrap_or_default()
    }

    pub fn all(&self) -> HashMap<MacAddr, MachineState> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, c)| (*k, c.state.clone())).collect()
    }

    /// Keep `state` unless a newer version is already here. A state made locally (events
    /// in the spool) gives way to the database's from its version on.
    pub fn offer(&self, key: MacAddr, version: i64, state: MachineState) {
        let mut m = self.0.write().unwrap_or_else(|p| p.into_inner());
        match m.get(&key) {
            Some(c) if c.version > version || (c.version == version && !c.local) => {}
            _ => {
                m.insert(key, Cached { version, state, local: false });
            }
        }
    }

    /// The state after events this instance spooled: served until the database's.
    pub fn set_local(&self, key: MacAddr, state: MachineState) {
        let mut m = self.0.write().unwrap_or_else(|p| p.into_inner());
        let version = m.get(&key).map_or(0, |c| c.version);
        m.insert(key, Cached { version, state, local: true });
    }

    /// Read the rows of `keys` (every row when `None`) into memory.
    pub async fn load(&self, c: &impl GenericClient, keys: Option<&[MacAddr]>) -> Result<()> {
        let rows = match keys {
            None => c.query("SELECT key::text, version, state FROM machine_state", &[]).await,
            Some(keys) => {
                let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                c.query(
                    "SELECT key::text, version, state FROM machine_state WHERE key = ANY($1::text[]::macaddr[])",
                    &[&keys],
                )
                .await
            }
        }
        .map_err(db_err("reading machine state"))?;
        for r in rows {
            let key: String = r.get(0);
            let key: MacAddr = key.parse().map_err(|_| anyhow!("machine_state: bad key {key:?}"))?;
            let state: MachineState = serde_json::from_value(r.get(2))
                .map_err(|e| anyhow!("machine_state: machine {key}: undecodable state: {e}"))?;
            self.offer(key, r.get(1), state);
        }
        Ok(())
    }
}

/// Lock (creating if needed) the state row of `key`: its version and state.
async fn lock_state(tx: &impl GenericClient, key: &str) -> Result<(i64, MachineState)> {
    let ins = tx
        .prepare_cached(
            "INSERT INTO machine_state (key, version, state) VALUES ($1::text::macaddr, 0, '{}')
             ON CONFLICT (key) DO NOTHING",
        )
        .await
        .map_err(db_err("preparing"))?;
    tx.execute(&ins, &[&key]).await.map_err(db_err("creating the machine's state"))?;
    let sel = tx
        .prepare_cached("SELECT version, state FROM machine_state WHERE key = $1::text::macaddr FOR UPDATE")
        .await
        .map_err(db_err("preparing"))?;
    let row = tx.query_one(&sel, &[&key]).await.map_err(db_err("locking the machine's state"))?;
    let state = serde_json::from_value(row.get(1)).map_err(|e| anyhow!("machine {key}: undecodable state: {e}"))?;
    Ok((row.get(0), state))
}

/// Write `state` as the next version of `key`'s row and announce it; the new version.
async fn store_state(tx: &impl GenericClient, key: &str, state: &MachineState) -> Result<i64> {
    let up = tx
        .prepare_cached(
            "WITH u AS (UPDATE machine_state SET version = version + 1, state = $2, updated_at = now()
                        WHERE key = $1::text::macaddr RETURNING version)
             SELECT u.version, pg_notify($3, $1) FROM u",
        )
        .await
        .map_err(db_err("preparing"))?;
    let row = tx
        .query_one(&up, &[&key, &serde_json::to_value(state)?, &CHANNEL])
        .await
        .map_err(db_err("storing the machine's state"))?;
    Ok(row.get(0))
}

/// One event, as [`crate::storage::Storage::record_event`]: `(recorded, version)`. It is
/// stored once per `(run_id, seq)`: the event's own, or `dedup` for one that has none (an
/// event replayed from the spool keeps the key it was given there).
pub async fn record_event(
    c: &mut deadpool_postgres::Client,
    key: MacAddr,
    ev: &Event,
    source: Option<std::net::IpAddr>,
    now: &str,
    dedup: Option<(&str, u64)>,
) -> Result<(Recorded, i64)> {
    let k = key.to_string();
    let (run_id, seq) = match dedup {
        Some((r, s)) => (Some(r.to_string()), Some(s)),
        None => (ev.run_id.clone(), ev.seq),
    };
    let tx = c.transaction().await.map_err(db_err("starting a transaction"))?;
    let (version, current) = lock_state(&tx, &k).await?;
    let state = current.apply(ev, now);
    let n = i64::try_from(state.events - 1).unwrap_or(i64::MAX);
    let seq = seq.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
    let ins = tx
        .prepare_cached(
            "INSERT INTO events (key, n, run_id, seq, phase, received, source, event)
             VALUES ($1::text::macaddr, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (key, run_id, seq) DO NOTHING",
        )
        .await
        .map_err(db_err("preparing"))?;
    let stored = tx
        .execute(&ins, &[&k, &n, &run_id, &seq, &ev.phase.as_str(), &now, &source, &serde_json::to_value(ev)?])
        .await
        .map_err(db_err("storing the event"))?;
    if stored == 0 {
        // Stored before (here or through another instance): nothing changes.
        return Ok((Recorded { duplicate: true, state: current }, version));
    }
    let version = store_state(&tx, &k, &state).await?;
    tx.commit().await.map_err(db_err("committing the event"))?;
    Ok((Recorded { duplicate: false, state }, version))
}

/// An operator's change to `key`'s state (a reinstall, a deprovisioning; `what` names it
/// for errors): the new state and its version.
pub async fn change(
    c: &mut deadpool_postgres::Client,
    key: MacAddr,
    what: &'static str,
    f: impl FnOnce(&MachineState) -> MachineState,
) -> Result<(MachineState, i64)> {
    let k = key.to_string();
    let tx = c.transaction().await.map_err(db_err("starting a transaction"))?;
    let (_, current) = lock_state(&tx, &k).await?;
    let state = f(&current);
    let version = store_state(&tx, &k, &state).await?;
    tx.commit().await.map_err(db_err(what))?;
    Ok((state, version))
}

/// The last `limit` events of `key`, oldest first.
pub async fn events(c: &impl GenericClient, key: &MacAddr, limit: usize) -> Result<Vec<StoredEvent>> {
    let rows = c
        .query(
            "SELECT n, received, source, event FROM events WHERE key = $1::text::macaddr ORDER BY n DESC LIMIT $2",
            &[&key.to_string(), &i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .await
        .map_err(db_err("reading events"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows.iter().rev() {
        let source = r.get::<_, Option<IpAddr>>(2);
        out.push(StoredEvent {
            n: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
            received: r.get(1),
            source,
            event: serde_json::from_value(r.get(3)).map_err(|e| anyhow!("events: machine {key}: undecodable: {e}"))?,
        });
    }
    Ok(out)
}

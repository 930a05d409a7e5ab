//! The boot trace and the installer's log in PostgreSQL (`trace_steps`, `log_meta`,
//! `log_chunks`; migration 2), with the embedded store's rules (`crate::state` `trace`):
//! steps numbered per machine in a ring of `keep`, one transaction per batch; a log chunk
//! admitted by `LogMeta::admit` with the machine's `log_meta` row locked, so two instances
//! receiving chunks of one machine take turns.

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use deadpool_postgres::GenericClient;
use osie_api::MacAddr;

use super::bridge::db_err;
use crate::trace::log::{self, Admit, LogBounds, LogMeta, LogOutcome, LogView, StoredChunk};
use crate::trace::{StoredStep, TraceStep};

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Store `steps`, keeping the last `keep` per machine.
pub async fn record_steps(
    c: &mut deadpool_postgres::Client,
    steps: &[(MacAddr, TraceStep)],
    keep: usize,
) -> Result<()> {
    if steps.is_empty() {
        return Ok(());
    }
    let tx = c.transaction().await.map_err(db_err("starting a transaction"))?;
    let mut by_key: HashMap<MacAddr, Vec<&TraceStep>> = HashMap::new();
    for (k, s) in steps {
        by_key.entry(*k).or_default().push(s);
    }
    let next = tx
        .prepare_cached("SELECT coalesce(max(n) + 1, 0) FROM trace_steps WHERE key = $1::text::macaddr")
        .await
        .map_err(db_err("preparing"))?;
    let ins = tx
        .prepare_cached("INSERT INTO trace_steps (key, n, at_ms, step) VALUES ($1::text::macaddr, $2, $3, $4)")
        .await
        .map_err(db_err("preparing"))?;
    let trim = tx
        .prepare_cached("DELETE FROM trace_steps WHERE key = $1::text::macaddr AND n < $2")
        .await
        .map_err(db_err("preparing"))?;
    // In key order: two instances writing the same machines lock them in the same order.
    let mut keys: Vec<_> = by_key.keys().copied().collect();
    keys.sort_by_key(|k| k.to_string());
    for key in keys {
        let k = key.to_string();
        // One writer per machine at a time: the first key insert's conflict would otherwise
        // make a concurrent instance fail; the advisory lock is released at commit.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&k]).await.map_err(db_err("locking the trace"))?;
        let mut n: i64 = tx.query_one(&next, &[&k]).await.map_err(db_err("numbering trace steps"))?.get(0);
        for s in &by_key[&key] {
            tx.execute(&ins, &[&k, &n, &int(s.at_ms), &serde_json::to_value(s)?])
                .await
                .map_err(db_err("storing a trace step"))?;
            n += 1;
        }
        tx.execute(&trim, &[&k, &(n - int(keep as u64))]).await.map_err(db_err("trimming the trace"))?;
    }
    tx.commit().await.map_err(db_err("committing trace steps"))?;
    Ok(())
}

/// The last `limit` steps of `key`, oldest first.
pub async fn steps(c: &impl GenericClient, key: &MacAddr, limit: usize) -> Result<Vec<StoredStep>> {
    let rows = c
        .query(
            "SELECT n, step FROM trace_steps WHERE key = $1::text::macaddr ORDER BY n DESC LIMIT $2",
            &[&key.to_string(), &int(limit as u64)],
        )
        .await
        .map_err(db_err("reading the trace"))?;
    rows.iter()
        .rev()
        .map(|r| {
            let step: TraceStep = serde_json::from_value(r.get(1))
                .map_err(|e| anyhow!("trace_steps: machine {key}: undecodable: {e}"))?;
            Ok(StoredStep { n: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), step })
        })
        .collect()
}

/// Store a chunk under `bounds`.
pub async fn record_log(
    c: &mut deadpool_postgres::Client,
    key: MacAddr,
    chunk: &StoredChunk,
    bounds: &LogBounds,
) -> Result<LogOutcome> {
    let k = key.to_string();
    let tx = c.transaction().await.map_err(db_err("starting a transaction"))?;
    tx.execute(
        "INSERT INTO log_meta (key, meta) VALUES ($1::text::macaddr, '{\"runs\": []}') ON CONFLICT (key) DO NOTHING",
        &[&k],
    )
    .await
    .map_err(db_err("creating the log's bookkeeping"))?;
    let row = tx
        .query_one("SELECT meta FROM log_meta WHERE key = $1::text::macaddr FOR UPDATE", &[&k])
        .await
        .map_err(db_err("locking the log's bookkeeping"))?;
    let mut meta: LogMeta =
        serde_json::from_value(row.get(0)).map_err(|e| anyhow!("log_meta: machine {key}: undecodable: {e}"))?;
    let (outcome, evict) = match meta.admit(&chunk.run_id, chunk.seq, log::size(chunk), bounds) {
        Admit::Duplicate => return Ok(LogOutcome::Duplicate),
        Admit::Store { evict } => (LogOutcome::Stored, evict),
        Admit::Full { evict } => (LogOutcome::Full, evict),
    };
    if !evict.is_empty() {
        tx.execute("DELETE FROM log_chunks WHERE key = $1::text::macaddr AND run_id = ANY($2)", &[&k, &evict])
            .await
            .map_err(db_err("evicting log runs"))?;
    }
    if outcome == LogOutcome::Stored {
        tx.execute(
            "INSERT INTO log_chunks (key, run_id, seq, chunk) VALUES ($1::text::macaddr, $2, $3, $4)",
            &[&k, &chunk.run_id, &int(chunk.seq), &serde_json::to_value(chunk)?],
        )
        .await
        .map_err(db_err("storing a log chunk"))?;
    }
    tx.execute("UPDATE log_meta SET meta = $2 WHERE key = $1::text::macaddr", &[&k, &serde_json::to_value(&meta)?])
        .await
        .map_err(db_err("storing the log's bookkeeping"))?;
    tx.commit().await.map_err(db_err("committing a log chunk"))?;
    Ok(outcome)
}

/// The log kept for `key`.
pub async fn log(c: &impl GenericClient, key: &MacAddr) -> Result<LogView> {
    let k = key.to_string();
    let Some(row) = c
        .query_opt("SELECT meta FROM log_meta WHERE key = $1::text::macaddr", &[&k])
        .await
        .map_err(db_err("reading the log's bookkeeping"))?
    else {
        return Ok(LogView::default());
    };
    let meta: LogMeta =
        serde_json::from_value(row.get(0)).map_err(|e| anyhow!("log_meta: machine {key}: undecodable: {e}"))?;
    let rows = c
        .query("SELECT chunk FROM log_chunks WHERE key = $1::text::macaddr", &[&k])
        .await
        .map_err(db_err("reading the log"))?;
    let chunks = rows
        .iter()
        .map(|r| serde_json::from_value(r.get(0)).map_err(|e| anyhow!("log_chunks: machine {key}: undecodable: {e}")))
        .collect::<Result<Vec<StoredChunk>>>()?;
    Ok(log::view(chunks, &meta))
}

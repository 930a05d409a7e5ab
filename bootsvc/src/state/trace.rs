//! The boot trace and the installer's log in the embedded store (`bootsvc.redb`): steps in
//! a per-machine ring (`trace`, numbered by `trace_next`), log chunks per machine, run and
//! `seq` (`log_chunks`) with each machine's bookkeeping of runs (`log_meta`, decided by
//! `crate::trace::log::LogMeta::admit`). The recorder (`crate::tracer`) writes steps in
//! batches, one transaction each, without an fsync of their own but at most every
//! [`SYNC_EVERY`] (redb's non-durable commit: the next durable one, an event's or this,
//! writes them): a crash loses a few seconds of trace at most, and the trace never makes
//! the disk a bottleneck for the events.

use anyhow::{Context, Result};
use osie_api::MacAddr;
use std::time::{Duration, Instant};

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::Store;
use crate::trace::log::{self, Admit, LogBounds, LogMeta, LogOutcome, LogView, StoredChunk};
use crate::trace::{StoredStep, TraceStep};

/// (machine key, step number) → JSON [`TraceStep`].
pub(super) const TRACE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("trace");
/// Machine key → the next step's number.
pub(super) const TRACE_NEXT: TableDefinition<&str, u64> = TableDefinition::new("trace_next");
/// (machine key, run id, seq) → JSON [`StoredChunk`].
pub(super) const LOG_CHUNKS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("log_chunks");
/// Machine key → JSON [`LogMeta`].
pub(super) const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("log_meta");

/// Trace commits without an fsync for at most this long.
pub const SYNC_EVERY: Duration = Duration::from_secs(2);

impl Store {
    /// Store `steps` (machine key, step), keeping the last `keep` per machine.
    pub fn record_steps(&self, steps: &[(MacAddr, TraceStep)], keep: usize) -> Result<()> {
        if steps.is_empty() {
            return Ok(());
        }
        // Encoded before the transaction: the write lock (which events wait for) is held for
        // the inserts alone.
        let encoded = steps
            .iter()
            .map(|(k, s)| Ok((k.to_string(), serde_json::to_vec(s)?)))
            .collect::<Result<Vec<(String, Vec<u8>)>>>()?;
        let mut txn = self.db.begin_write().context("state store: starting a trace write")?;
        let mut synced = self.trace_synced.lock().unwrap_or_else(|p| p.into_inner());
        let durable = synced.is_none_or(|t| t.elapsed() >= SYNC_EVERY);
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| anyhow::anyhow!("state store: setting durability: {e}"))?;
        }
        {
            let mut next = txn.open_table(TRACE_NEXT).context("state store: trace_next table")?;
            let mut trace = txn.open_table(TRACE).context("state store: trace table")?;
            for (k, step) in &encoded {
                let n = next.get(k.as_str()).context("state store: reading trace_next")?.map_or(0, |v| v.value());
                trace.insert((k.as_str(), n), step.as_slice()).context("state store: storing a trace step")?;
                next.insert(k.as_str(), n + 1).context("state store: storing trace_next")?;
                // The ring: one in, the one `keep` behind out (bounded work per step).
                if let Some(old) = (n + 1).checked_sub(keep as u64 + 1) {
                    trace.remove((k.as_str(), old)).context("state store: trimming the trace")?;
                }
            }
        }
        txn.commit().context("state store: committing trace steps")?;
        if durable {
            *synced = Some(Instant::now());
        }
        Ok(())
    }

    /// Make the trace's commits so far durable (at shutdown).
    pub fn sync_trace(&self) -> Result<()> {
        let txn = self.db.begin_write().context("state store: starting a write")?;
        txn.commit().context("state store: syncing the trace")?;
        *self.trace_synced.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// The last `limit` steps of `key`, oldest first.
    pub fn steps(&self, key: &MacAddr, limit: usize) -> Result<Vec<StoredStep>> {
        let k = key.to_string();
        let read = self.db.begin_read().context("state store: starting a read")?;
        let trace = read.open_table(TRACE).context("state store: trace table")?;
        let range = trace.range((k.as_str(), 0)..=(k.as_str(), u64::MAX)).context("state store: reading the trace")?;
        let mut out = Vec::new();
        for row in range.rev().take(limit) {
            let (kk, v) = row.context("state store: reading a trace step")?;
            let step: TraceStep = serde_json::from_slice(v.value()).context("state store: undecodable trace step")?;
            out.push(StoredStep { n: kk.value().1, step });
        }
        out.reverse();
        Ok(out)
    }

    /// Store a log chunk under `bounds`, durably.
    pub fn record_log(&self, key: MacAddr, chunk: &StoredChunk, bounds: &LogBounds) -> Result<LogOutcome> {
        let k = key.to_string();
        let txn = self.db.begin_write().context("state store: starting a log write")?;
        let outcome = {
            let mut meta_t = txn.open_table(LOG_META).context("state store: log_meta table")?;
            let mut chunks = txn.open_table(LOG_CHUNKS).context("state store: log_chunks table")?;
            let mut meta: LogMeta = match meta_t.get(k.as_str()).context("state store: reading log_meta")? {
                Some(v) => serde_json::from_slice(v.value()).context("state store: undecodable log_meta")?,
                None => LogMeta::default(),
            };
            let (outcome, evict) = match meta.admit(&chunk.run_id, chunk.seq, log::size(chunk), bounds) {
                Admit::Duplicate => return Ok(LogOutcome::Duplicate),
                Admit::Store { evict } => (LogOutcome::Stored, evict),
                Admit::Full { evict } => (LogOutcome::Full, evict),
            };
            for run in &evict {
                let doomed: Vec<u64> = chunks
                    .range((k.as_str(), run.as_str(), 0)..=(k.as_str(), run.as_str(), u64::MAX))
                    .context("state store: reading log chunks")?
                    .map(|r| r.map(|(kk, _)| kk.value().2))
                    .collect::<std::result::Result<_, _>>()
                    .context("state store: reading a log chunk")?;
                for seq in doomed {
                    chunks.remove((k.as_str(), run.as_str(), seq)).context("state store: evicting a log run")?;
                }
            }
            if outcome == LogOutcome::Stored {
                chunks
                    .insert((k.as_str(), chunk.run_id.as_str(), chunk.seq), serde_json::to_vec(chunk)?.as_slice())
                    .context("state store: storing a log chunk")?;
            }
            meta_t
                .insert(k.as_str(), serde_json::to_vec(&meta)?.as_slice())
                .context("state store: storing log_meta")?;
            outcome
        };
        txn.commit().context("state store: committing a log chunk")?;
        Ok(outcome)
    }

    /// The log kept for `key`.
    pub fn log(&self, key: &MacAddr) -> Result<LogView> {
        let k = key.to_string();
        let read = self.db.begin_read().context("state store: starting a read")?;
        let meta: LogMeta = match read.open_table(LOG_META).context("state store: log_meta table")?.get(k.as_str())? {
            Some(v) => serde_json::from_slice(v.value()).context("state store: undecodable log_meta")?,
            None => return Ok(LogView::default()),
        };
        let chunks_t = read.open_table(LOG_CHUNKS).context("state store: log_chunks table")?;
        let mut chunks = Vec::new();
        for run in &meta.runs {
            let range = chunks_t
                .range((k.as_str(), run.run_id.as_str(), 0)..=(k.as_str(), run.run_id.as_str(), u64::MAX))
                .context("state store: reading log chunks")?;
            for row in range {
                let (_, v) = row.context("state store: reading a log chunk")?;
                chunks.push(serde_json::from_slice(v.value()).context("state store: undecodable log chunk")?);
            }
        }
        Ok(log::view(chunks, &meta))
    }
}

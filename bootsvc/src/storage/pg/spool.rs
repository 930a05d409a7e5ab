//! Events acknowledged while the database was unreachable: kept in a local file,
//! `<state.dir>/events.spool`, one JSON line per event, written and synced before the event
//! is acknowledged, and replayed into the database in the order they came once it answers
//! again (`super::PgStorage`). A crash or `kill -9` loses nothing acknowledged: a restarted
//! instance reads the file and replays it.
//!
//! Replaying never doubles an event: each is stored under its `(run_id, seq)` (the
//! installer's own, the same key its retries carry) or, for an event without one (a
//! phone-home), a key made here once and kept in the file. An event replayed and then
//! replayed again (a crash between the database's commit and the file's rewrite) is
//! recognised by that key.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use osie_api::{Event, MacAddr};
use serde::{Deserialize, Serialize};

/// The spool's file in the state directory.
pub const FILE: &str = "events.spool";

/// One acknowledged event waiting for the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spooled {
    pub key: MacAddr,
    pub event: Event,
    pub source: Option<std::net::IpAddr>,
    /// When it was received (stored as such when replayed).
    pub received: String,
    /// The `(run_id, seq)` it is stored under.
    pub run_id: String,
    pub seq: u64,
}

impl Spooled {
    /// `ev` as received now; `fallback` names an event that has no `(run_id, seq)`.
    pub fn new(
        key: MacAddr,
        ev: &Event,
        source: Option<std::net::IpAddr>,
        received: &str,
        fallback: (String, u64),
    ) -> Spooled {
        let (run_id, seq) = match (&ev.run_id, ev.seq) {
            (Some(r), Some(s)) => (r.clone(), s),
            _ => fallback,
        };
        Spooled { key, event: ev.clone(), source, received: received.to_string(), run_id, seq }
    }

    fn same_as(&self, other: &Spooled) -> bool {
        self.key == other.key && self.run_id == other.run_id && self.seq == other.seq
    }
}

pub struct Spool {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    pending: VecDeque<Spooled>,
}

impl Spool {
    /// Open (or create) the spool in `dir` and read what a previous run left in it. A last
    /// line cut short by a crash was never acknowledged (the sync comes before the
    /// answer): it is skipped with a warning.
    pub fn open(dir: &Path) -> Result<Spool> {
        let path = dir.join(FILE);
        let mut pending = VecDeque::new();
        match File::open(&path) {
            Ok(f) => {
                for (i, line) in BufReader::new(f).lines().enumerate() {
                    let line = line.with_context(|| format!("reading {}", path.display()))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Spooled>(&line) {
                        Ok(s) => pending.push_back(s),
                        Err(e) => {
                            tracing::warn!(file = %path.display(), line = i + 1, "spooled event skipped: {e}")
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        }
        if !pending.is_empty() {
            tracing::info!(file = %path.display(), events = pending.len(), "events spooled by an earlier run, to replay");
        }
        let file = append(&path)?;
        Ok(Spool { path, inner: Mutex::new(Inner { file, pending }) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().pending.is_empty()
    }

    /// Keep `s` durably. `Ok(false)`: the same event (key, run and sequence) is already
    /// waiting, nothing was written.
    pub fn push(&self, s: Spooled) -> Result<bool> {
        let mut inner = self.lock();
        if inner.pending.iter().any(|p| p.same_as(&s)) {
            return Ok(false);
        }
        let mut line = serde_json::to_vec(&s).context("encoding a spooled event")?;
        line.push(b'\n');
        inner.file.write_all(&line).with_context(|| format!("writing {}", self.path.display()))?;
        inner.file.sync_data().with_context(|| format!("syncing {}", self.path.display()))?;
        inner.pending.push_back(s);
        Ok(true)
    }

    /// Whether an event of `key` is waiting.
    pub fn has_key(&self, key: &MacAddr) -> bool {
        self.lock().pending.iter().any(|p| p.key == *key)
    }

    /// The oldest `n` events waiting, in order.
    pub fn front(&self, n: usize) -> Vec<Spooled> {
        self.lock().pending.iter().take(n).cloned().collect()
    }

    /// The oldest `n` are in the database: rewrite the file with the rest (a new file
    /// renamed over the old, so a crash leaves one or the other whole).
    pub fn done(&self, n: usize) -> Result<()> {
        let mut inner = self.lock();
        let n = n.min(inner.pending.len());
        inner.pending.drain(..n);
        let tmp = self.path.with_extension("spool.new");
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        for s in &inner.pending {
            let mut line = serde_json::to_vec(s).context("encoding a spooled event")?;
            line.push(b'\n');
            f.write_all(&line).with_context(|| format!("writing {}", tmp.display()))?;
        }
        f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("renaming {} over {}", tmp.display(), self.path.display()))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))?;
        }
        inner.file = append(&self.path)?;
        Ok(())
    }
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use osie_api::Phase;

    fn ev(mac: MacAddr, run: Option<&str>, seq: Option<u64>, phase: Phase) -> Event {
        Event {
            machine: mac,
            phase,
            progress: None,
            message: String::new(),
            time: "2026-01-01T00:00:00Z".into(),
            run_id: run.map(str::to_string),
            seq,
            error: Vec::new(),
            hardware: None,
            erase: None,
        }
    }

    #[test]
    fn keeps_order_across_reopen_skips_a_torn_line_and_rewrites_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let sp = Spool::open(d.path()).unwrap();
        assert!(sp.is_empty());
        let a = Spooled::new(mac, &ev(mac, Some("r1"), Some(0), Phase::BootedInstaller), None, "t0", ("x".into(), 9));
        let b = Spooled::new(mac, &ev(mac, None, None, Phase::FirstBoot), None, "t1", ("spool-1".into(), 7));
        assert_eq!((b.run_id.as_str(), b.seq), ("spool-1", 7), "an event without a run gets the fallback key");
        assert!(sp.push(a.clone()).unwrap());
        assert!(!sp.push(a.clone()).unwrap(), "the same event again is not written twice");
        assert!(sp.push(b.clone()).unwrap());
        drop(sp);

        // A crash in the middle of a write leaves a torn last line.
        let path = d.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"key\":\"52:54").unwrap();
        drop(f);

        let sp = Spool::open(d.path()).unwrap();
        assert_eq!(sp.front(10), vec![a.clone(), b.clone()]);
        sp.done(1).unwrap();
        assert_eq!(sp.front(10), vec![b.clone()]);
        let c = Spooled::new(mac, &ev(mac, Some("r1"), Some(1), Phase::Installed), None, "t2", ("x".into(), 0));
        sp.push(c.clone()).unwrap();
        drop(sp);
        let sp = Spool::open(d.path()).unwrap();
        assert_eq!(sp.front(10), vec![b, c]);
        sp.done(5).unwrap();
        assert!(sp.is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }
}

//! Live updates of the status page: one watcher task finds which machines changed and hands
//! each change, as a server-sent event, to every open stream.
//!
//! Event ingest never waits for a page: a stored event (or a reinstall, a power action, a
//! record change) only pokes the watcher ([`Live::poke`], a `Notify`); the watcher compares
//! every machine's view with the last one it sent (and looks every [`RESCAN`] anyway, for
//! changes it is not poked for: an inventory reload, another instance on the same database)
//! and queues the changed ones to each stream without waiting: a stream whose queue
//! ([`QUEUE`] messages) is full is dropped, its connection closes and the page reconnects
//! and starts from the full list again. At most [`MAX_STREAMS`] streams are open at once.
//!
//! What a stream sends: `retry: 2000`, then `event: machines` (every machine), then
//! `event: machine` (one machine's new view) and `event: removed` (`{"mac": …}`) as they
//! come, and a comment every [`PING`] so a closed page is noticed and proxies keep it open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use osie_api::MacAddr;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};

/// Streams open at once at most.
pub const MAX_STREAMS: usize = 32;
/// Messages queued for one stream at most; past that the stream is dropped.
pub const QUEUE: usize = 256;
/// The watcher looks at every machine this often even when not poked.
pub const RESCAN: Duration = Duration::from_secs(2);
/// After a scan the watcher waits this long, so a burst of events makes one scan.
const SETTLE: Duration = Duration::from_millis(200);
/// A comment line this often on an idle stream.
pub const PING: Duration = Duration::from_secs(15);

/// A machine as the page shows it, rendered to JSON by the caller.
pub struct Seen {
    pub mac: MacAddr,
    pub json: String,
}

/// The open streams and the watcher's bell.
#[derive(Default)]
pub struct Live {
    streams: Mutex<Vec<(u64, mpsc::Sender<Bytes>)>>,
    next_id: AtomicU64,
    poke: Notify,
    started: AtomicBool,
    /// Streams dropped for not keeping up.
    pub dropped: AtomicU64,
}

/// A stream's place; given back when the stream ends.
pub struct Subscription {
    live: Arc<Live>,
    id: u64,
    pub rx: mpsc::Receiver<Bytes>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.live.streams.lock().unwrap_or_else(|e| e.into_inner()).retain(|(id, _)| *id != self.id);
    }
}

/// One server-sent event, `data` on one line (JSON has no raw newlines).
pub fn sse(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {}\n\n", data.replace(['\r', '\n'], " ")))
}

impl Live {
    /// Something changed: look soon. Never waits.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// A new stream, or `None` at [`MAX_STREAMS`].
    pub fn subscribe(self: &Arc<Self>) -> Option<Subscription> {
        let mut s = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() >= MAX_STREAMS {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        s.push((id, tx));
        Some(Subscription { live: Arc::clone(self), id, rx })
    }

    pub fn streams(&self) -> usize {
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Queue `msg` to every stream without waiting; a stream that is full (or gone) is
    /// dropped. How many were dropped.
    pub fn send(&self, msg: &Bytes) -> usize {
        let mut s = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let before = s.len();
        s.retain(|(_, tx)| tx.try_send(msg.clone()).is_ok());
        let gone = before - s.len();
        if gone > 0 {
            self.dropped.fetch_add(gone as u64, Ordering::Relaxed);
            tracing::info!(dropped = gone, "status page: dropped live streams that did not keep up (they reconnect)");
        }
        gone
    }

    /// Start the watcher once; `look` gives every machine as the page shows it now.
    pub fn start(self: &Arc<Self>, look: impl Fn() -> Vec<Seen> + Send + 'static) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let live = Arc::clone(self);
        tokio::spawn(async move {
            let mut last: HashMap<MacAddr, [u8; 32]> = HashMap::new();
            loop {
                let _ = tokio::time::timeout(RESCAN, live.poke.notified()).await;
                if live.streams() == 0 {
                    // A new stream starts from the full list anyway.
                    last.clear();
                    continue;
                }
                let now = look();
                for m in changes(&mut last, now) {
                    live.send(&m);
                }
                tokio::time::sleep(SETTLE).await;
            }
        });
    }
}

/// The messages for what changed since `last` (which is brought up to date).
fn changes(last: &mut HashMap<MacAddr, [u8; 32]>, now: Vec<Seen>) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut seen = HashMap::with_capacity(now.len());
    for m in now {
        let h: [u8; 32] = Sha256::digest(m.json.as_bytes()).into();
        if last.get(&m.mac) != Some(&h) {
            out.push(sse("machine", &m.json));
        }
        seen.insert(m.mac, h);
    }
    for mac in last.keys().filter(|k| !seen.contains_key(*k)) {
        out.push(sse("removed", &serde_json::json!({ "mac": mac }).to_string()));
    }
    *last = seen;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(mac: &str, json: &str) -> Seen {
        Seen { mac: mac.parse().unwrap(), json: json.into() }
    }

    fn text(b: &[Bytes]) -> Vec<String> {
        b.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
    }

    #[test]
    fn only_changes_are_sent() {
        let mut last = HashMap::new();
        let a = "52:54:00:00:00:0a";
        let b = "52:54:00:00:00:0b";
        let first = changes(&mut last, vec![seen(a, "{\"n\":1}"), seen(b, "{\"n\":2}")]);
        assert_eq!(first.len(), 2);
        assert!(changes(&mut last, vec![seen(a, "{\"n\":1}"), seen(b, "{\"n\":2}")]).is_empty());
        let next = text(&changes(&mut last, vec![seen(a, "{\"n\":3}")]));
        assert_eq!(
            next,
            ["event: machine\ndata: {\"n\":3}\n\n", "event: removed\ndata: {\"mac\":\"52:54:00:00:00:0b\"}\n\n"]
        );
    }

    #[test]
    fn data_stays_on_one_line() {
        assert_eq!(sse("x", "a\nb\rc"), Bytes::from("event: x\ndata: a b c\n\n"));
    }

    #[tokio::test]
    async fn a_slow_stream_is_dropped_and_never_blocks() {
        let live = Arc::new(Live::default());
        let mut fast = live.subscribe().unwrap();
        let slow = live.subscribe().unwrap();
        let msg = Bytes::from_static(b"event: machine\ndata: {}\n\n");
        for _ in 0..QUEUE {
            assert_eq!(live.send(&msg), 0);
            fast.rx.try_recv().unwrap();
        }
        // The slow one's queue is full: the next message drops it, the fast one gets it.
        assert_eq!(live.send(&msg), 1);
        assert_eq!(live.streams(), 1);
        assert!(fast.rx.try_recv().is_ok());
        let mut slow = slow;
        let mut n = 0;
        while slow.rx.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, QUEUE, "the dropped stream ends after what it had");
        assert_eq!(live.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn streams_are_bounded() {
        let live = Arc::new(Live::default());
        let subs: Vec<_> = (0..MAX_STREAMS).map(|_| live.subscribe().unwrap()).collect();
        assert!(live.subscribe().is_none());
        drop(subs);
        assert_eq!(live.streams(), 0);
        assert!(live.subscribe().is_some());
    }
}

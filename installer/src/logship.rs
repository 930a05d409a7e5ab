//! The installer's console log, shipped to bootsvc as it runs (`POST {base}/log`,
//! `osie_api::log::LogChunk`), so it is kept after a failure even when the machine reboots
//! (`bootsvc machine <mac> log`).
//!
//! Every line the logger prints (and [`crate::logging::say`]'s) is also put in a bounded
//! buffer ([`Tap`], [`MAX_BUFFERED`] lines) under a short lock: never a wait on the network.
//! When the buffer is full the oldest line goes and is counted; the count is sent with the
//! next chunk (`dropped`). A thread of its own ([`start`], once the run's servers, MAC and
//! `run_id` are known; lines from before are kept in the buffer) sends a chunk every
//! [`INTERVAL`] or when [`osie_api::log::MAX_CHUNK_LINES`] lines wait, one request at a time
//! with a short timeout; a chunk that fails [`TRIES`] times is dropped and counted, and once
//! bootsvc says the run's log is full the thread stops sending. [`flush`] waits, bounded, for
//! what is buffered to go (before a reboot).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use osie_api::log::{LogAck, LogChunk, MAX_CHUNK_BYTES, MAX_CHUNK_LINES, MAX_LINE};
use osie_api::MacAddr;
use reqwest::blocking::Client;

use crate::servers::Servers;

/// Lines buffered at most while bootsvc is slow or not yet known.
pub const MAX_BUFFERED: usize = 2000;
/// How often a chunk goes out when fewer than a chunk's lines wait.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Attempts per chunk before it is dropped.
pub const TRIES: u32 = 3;
/// Each attempt's time limit: a slow bootsvc costs lines, never the install.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The buffer between the logger and the sender.
#[derive(Default)]
pub struct Tap {
    state: Mutex<Buffered>,
    wake: Condvar,
}

#[derive(Default)]
struct Buffered {
    lines: VecDeque<String>,
    /// Lines dropped and not yet reported in a chunk.
    dropped: u64,
    /// The sender is sending a chunk taken from `lines` (for [`Tap::idle`]).
    sending: bool,
    /// Nothing more will be sent (the run's log is full at bootsvc).
    closed: bool,
}

impl Tap {
    /// Keep `text`'s lines (cut to [`MAX_LINE`] characters). Never blocks on I/O.
    pub fn push(&self, text: &str) {
        let Ok(mut b) = self.state.lock() else { return };
        if b.closed {
            return;
        }
        for line in text.lines() {
            if b.lines.len() >= MAX_BUFFERED {
                b.lines.pop_front();
                b.dropped += 1;
            }
            b.lines.push_back(line.chars().take(MAX_LINE).collect());
        }
        if b.lines.len() >= MAX_CHUNK_LINES {
            self.wake.notify_one();
        }
    }

    /// The next chunk's lines (within the chunk limits) and the drops to report, waiting up
    /// to `wait` for a full chunk.
    fn take(&self, wait: Duration) -> Option<(Vec<String>, u64)> {
        let b = self.state.lock().ok()?;
        let (mut b, _) =
            self.wake.wait_timeout_while(b, wait, |b| b.lines.len() < MAX_CHUNK_LINES && !b.closed).ok()?;
        if b.closed {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(l) = b.lines.front() {
            if out.len() == MAX_CHUNK_LINES || bytes + l.len() > MAX_CHUNK_BYTES {
                break;
            }
            bytes += l.len();
            out.extend(b.lines.pop_front());
        }
        let dropped = std::mem::take(&mut b.dropped);
        b.sending = !out.is_empty() || dropped > 0;
        Some((out, dropped))
    }

    fn done_sending(&self, lost: u64) {
        if let Ok(mut b) = self.state.lock() {
            b.sending = false;
            b.dropped += lost;
        }
        self.wake.notify_all();
    }

    fn close(&self) {
        if let Ok(mut b) = self.state.lock() {
            b.closed = true;
            b.lines.clear();
        }
        self.wake.notify_all();
    }

    /// Nothing buffered and nothing being sent.
    fn idle(&self) -> bool {
        self.state.lock().map(|b| b.closed || b.lines.is_empty() && !b.sending && b.dropped == 0).unwrap_or(true)
    }
}

static TAP: OnceLock<Tap> = OnceLock::new();
static STARTED: OnceLock<()> = OnceLock::new();

/// The process's buffer.
pub fn tap() -> &'static Tap {
    TAP.get_or_init(Tap::default)
}

/// Start sending to the bootsvc in use of `servers`, as `mac`, for run `run_id` (once per
/// process; later calls do nothing).
pub fn start(client: Client, servers: Servers, mac: MacAddr, run_id: String) {
    if STARTED.set(()).is_err() {
        return;
    }
    let spawned =
        std::thread::Builder::new().name("log".into()).spawn(move || sender(tap(), client, servers, mac, run_id));
    if let Err(e) = spawned {
        tracing::warn!("the console log will not be sent to bootsvc: cannot start its thread: {e}");
    }
}

/// Wait up to `timeout` until everything buffered was sent (or given up). True when it was.
pub fn flush(timeout: Duration) -> bool {
    if STARTED.get().is_none() {
        return true;
    }
    let deadline = Instant::now() + timeout;
    let t = tap();
    t.wake.notify_all();
    while Instant::now() < deadline {
        if t.idle() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
        t.wake.notify_all();
    }
    false
}

fn sender(tap: &Tap, client: Client, servers: Servers, mac: MacAddr, run_id: String) {
    let mut seq = 0u64;
    while let Some((lines, dropped)) = tap.take(INTERVAL) {
        if lines.is_empty() && dropped == 0 {
            tap.done_sending(0);
            continue;
        }
        let n = lines.len() as u64;
        let chunk = LogChunk { machine: mac, run_id: run_id.clone(), seq, lines, dropped };
        let base = servers.current().1;
        let url = format!("{base}{}", osie_api::paths::LOG);
        let mut outcome = Err(String::new());
        for _ in 0..TRIES {
            outcome = send(&client, &url, mac, &chunk);
            if outcome.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        seq += 1;
        match outcome {
            Ok(ack) if ack.full => {
                // bootsvc keeps no more of this run: stop sending, stop buffering.
                tap.close();
                return;
            }
            Ok(_) => tap.done_sending(0),
            // Lost: counted with the next chunk, never retried for ever (the install goes on).
            Err(_) => tap.done_sending(n + dropped),
        }
    }
}

fn send(client: &Client, url: &str, mac: MacAddr, chunk: &LogChunk) -> Result<LogAck, String> {
    let resp = client
        .post(url)
        .timeout(TIMEOUT)
        .header(osie_api::MAC_HEADER, mac.to_string())
        .json(chunk)
        .send()
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    resp.json::<LogAck>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_is_bounded_and_counts_what_it_drops() {
        let t = Tap::default();
        for i in 0..MAX_BUFFERED + 10 {
            t.push(&format!("line {i}"));
        }
        let (lines, dropped) = t.take(Duration::ZERO).unwrap();
        assert_eq!((lines.len(), dropped), (MAX_CHUNK_LINES, 10));
        assert_eq!(lines[0], "line 10", "the oldest went");
        t.done_sending(0);
        let (_, dropped) = t.take(Duration::ZERO).unwrap();
        assert_eq!(dropped, 0, "reported once");
    }

    #[test]
    fn chunks_keep_within_the_byte_limit_and_lines_are_cut() {
        let t = Tap::default();
        t.push(&"x".repeat(MAX_LINE + 100));
        for _ in 0..40 {
            t.push(&"y".repeat(1000));
        }
        let (lines, _) = t.take(Duration::ZERO).unwrap();
        assert_eq!(lines[0].len(), MAX_LINE);
        assert!(lines.iter().map(String::len).sum::<usize>() <= MAX_CHUNK_BYTES);
        assert!(lines.len() < 41, "the rest waits for the next chunk");
    }

    #[test]
    fn a_full_run_stops_buffering() {
        let t = Tap::default();
        t.push("a\nb");
        t.close();
        t.push("c");
        assert!(t.take(Duration::ZERO).is_none());
        assert!(t.idle());
    }

    /// A bootsvc that never answers costs lines, never time: pushing stays instant while the
    /// sender is stuck in its request.
    #[test]
    fn pushing_never_waits_for_the_sender() {
        let t = Tap::default();
        let _held = t.take(Duration::ZERO);
        let started = Instant::now();
        for i in 0..100_000 {
            t.push(&format!("line {i}"));
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        let (_, dropped) = t.take(Duration::ZERO).unwrap();
        assert_eq!(dropped, 100_000 - MAX_BUFFERED as u64);
    }
}

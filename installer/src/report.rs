//! Events to bootsvc (`POST {base}/events`), retried until acknowledged.
//!
//! Events are queued and sent by a background thread, so a slow or restarting bootsvc never
//! stalls the disk. Each carries this run's random `run_id` and a `seq`, which makes a retry
//! of an event bootsvc already stored a no-op there. [`Reporter::flush`] waits (bounded)
//! until everything queued was acknowledged; the install calls it before it returns.
//! Every event is also logged on the console.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use osie_api::{Event, EventAck, Hardware, MacAddr, Phase, Progress};
use reqwest::blocking::Client;

use crate::backoff::Backoff;
use crate::http::HttpConfig;

/// How long [`Reporter::flush`] waits for bootsvc before giving up on the queue.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);

enum Cmd {
    Send(Box<Event>),
    Flush(Sender<()>),
}

pub struct Reporter {
    pub base_url: String,
    pub mac: MacAddr,
    pub run_id: String,
    seq: AtomicU64,
    tx: Option<Mutex<Sender<Cmd>>>,
    hardware: Mutex<Option<Hardware>>,
}

impl Reporter {
    /// Report to bootsvc at `base_url`, as the machine `mac`.
    pub fn new(base_url: &str, mac: MacAddr) -> Reporter {
        Self::with_http(base_url, mac, &HttpConfig::default())
    }

    pub fn with_http(base_url: &str, mac: MacAddr, http: &HttpConfig) -> Reporter {
        let mut r = Self::disabled(mac);
        r.base_url = base_url.trim_end_matches('/').to_string();
        match http.client() {
            Ok(client) => {
                let (tx, rx) = channel();
                let url = format!("{}{}", r.base_url, osie_api::paths::EVENTS);
                let spawned =
                    std::thread::Builder::new().name("events".into()).spawn(move || sender(client, url, mac, rx));
                match spawned {
                    Ok(_) => r.tx = Some(Mutex::new(tx)),
                    Err(e) => tracing::error!("events will only be logged: cannot start the sender thread: {e}"),
                }
            }
            Err(e) => tracing::error!("events will only be logged: {e:#}"),
        }
        r
    }

    /// Log events only (`--no-events`).
    pub fn disabled(mac: MacAddr) -> Reporter {
        Reporter {
            base_url: String::new(),
            mac,
            run_id: crate::image::hex(&crate::random::bytes::<8>()),
            seq: AtomicU64::new(0),
            tx: None,
            hardware: Mutex::new(None),
        }
    }

    /// Hardware inventory to send with the next event (the first of the run).
    pub fn set_hardware(&self, hw: Hardware) {
        if let Ok(mut h) = self.hardware.lock() {
            *h = Some(hw);
        }
    }

    pub fn event(&self, phase: Phase, message: impl Into<String>) {
        self.emit(phase, message.into(), None, Vec::new());
    }

    pub fn progress(&self, phase: Phase, p: &Progress, message: impl Into<String>) {
        self.emit(phase, message.into(), Some(p.clone()), Vec::new());
    }

    /// Report `failed` with the whole error chain, outermost first, and wait (bounded) until
    /// bootsvc has it: what follows a failure is a reboot.
    pub fn failed(&self, err: &anyhow::Error) {
        let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
        self.emit(Phase::Failed, format!("{err:#}"), None, chain);
        self.flush();
    }

    fn emit(&self, phase: Phase, message: String, progress: Option<Progress>, error: Vec<String>) {
        if phase == Phase::Failed {
            tracing::error!("event {phase}: {message}");
        } else if progress.is_none() {
            tracing::info!("event {phase}: {message}");
        }
        let Some(tx) = &self.tx else { return };
        let hardware = self.hardware.lock().ok().and_then(|mut h| h.take());
        let ev = Event {
            machine: self.mac,
            phase,
            progress,
            message,
            time: osie_api::time::rfc3339(now_ms()),
            run_id: Some(self.run_id.clone()),
            seq: Some(self.seq.fetch_add(1, Ordering::Relaxed)),
            error,
            hardware,
        };
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(Cmd::Send(Box::new(ev)));
        }
    }

    /// Wait until every queued event was acknowledged, at most [`FLUSH_TIMEOUT`]. False when
    /// some could not be delivered in time.
    pub fn flush(&self) -> bool {
        self.flush_within(FLUSH_TIMEOUT)
    }

    pub fn flush_within(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else { return true };
        let (done_tx, done_rx) = channel();
        if tx.lock().map(|t| t.send(Cmd::Flush(done_tx))).is_err() {
            return false;
        }
        let ok = done_rx.recv_timeout(timeout).is_ok();
        if !ok {
            tracing::warn!("events not all delivered to {} within {timeout:?}", self.base_url);
        }
        ok
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The background sender: one event at a time, in order, each until acknowledged.
fn sender(client: Client, url: String, mac: MacAddr, rx: Receiver<Cmd>) {
    // Patient: bootsvc restarting for a minute must not lose the install's report.
    let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10), 40);
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Flush(done) => {
                let _ = done.send(());
            }
            Cmd::Send(ev) => {
                let started = Instant::now();
                let r = backoff.retry(&format!("sending event {}", ev.phase), |_| post(&client, &url, mac, &ev));
                if let Err(e) = r {
                    tracing::error!("event {} dropped after {:?}: {e}", ev.phase, started.elapsed());
                }
            }
        }
    }
}

fn post(client: &Client, url: &str, mac: MacAddr, ev: &Event) -> Result<(), (String, bool)> {
    let resp = client.post(url).header(osie_api::MAC_HEADER, mac.to_string()).json(ev).send().map_err(|e| {
        let retry = !crate::http::permanent(&e);
        (format!("POST {url}: {:#}", anyhow::anyhow!(e.without_url())), retry)
    })?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().unwrap_or_default();
        // A 4xx other than the transient ones is bootsvc refusing the event: retrying the
        // same bytes will not change its mind.
        return Err((format!("POST {url}: {status}: {}", body.trim()), crate::http::retryable_status(status)));
    }
    match resp.json::<EventAck>() {
        Ok(ack) if ack.stored => Ok(()),
        Ok(_) => Err((format!("POST {url}: bootsvc did not store the event"), true)),
        Err(e) => Err((format!("POST {url}: unreadable acknowledgement: {e}"), true)),
    }
}

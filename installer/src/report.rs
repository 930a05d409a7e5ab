//! Events to bootsvc (`POST {base}/events`), retried until acknowledged, on the bootsvc in
//! use ([`Servers`]): a connection error or 5xx moves on to the next one.
//!
//! Events are queued and sent by a background thread, so a slow or restarting bootsvc never
//! stalls the disk. Each carries this run's random `run_id` and a `seq`, which makes a retry
//! of an event bootsvc already stored a no-op there. [`Reporter::flush`] waits (bounded)
//! until everything queued was acknowledged; the install calls it before it returns.
//! Every event is also logged on the console. When the bootsvc in use changed since the last
//! event (for the metadata, the image or an event), the next event's message ends with a
//! `[failover: http://a failed (why), now http://b]` note, so the record says which instance
//! served the rest of the install.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use osie_api::{DiskErase, Event, EventAck, Hardware, MacAddr, Phase, Progress};
use reqwest::blocking::Client;

use crate::backoff::Backoff;
use crate::http::{self, HttpConfig};
use crate::servers::{Failure, Servers};

/// How long [`Reporter::flush`] waits for bootsvc before giving up on the queue.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);

enum Cmd {
    Send(Box<Event>),
    Flush(Sender<()>),
}

pub struct Reporter {
    /// Where events go; `None` when they are only logged.
    pub servers: Option<Servers>,
    pub mac: MacAddr,
    pub run_id: String,
    seq: AtomicU64,
    tx: Option<Mutex<Sender<Cmd>>>,
    hardware: Mutex<Option<Hardware>>,
}

impl Reporter {
    /// Report to the bootsvc in use of `servers`, as the machine `mac`.
    pub fn new(servers: &Servers, mac: MacAddr) -> Reporter {
        Self::with_http(servers, mac, &HttpConfig::default())
    }

    pub fn with_http(servers: &Servers, mac: MacAddr, http: &HttpConfig) -> Reporter {
        let mut r = Self::disabled(mac);
        r.servers = Some(servers.clone());
        match http.client() {
            Ok(client) => {
                crate::logship::start(client.clone(), servers.clone(), mac, r.run_id.clone());
                let (tx, rx) = channel();
                let servers = servers.clone();
                let spawned =
                    std::thread::Builder::new().name("events".into()).spawn(move || sender(client, servers, mac, rx));
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
            servers: None,
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
        self.emit(phase, message.into(), None, Vec::new(), None);
    }

    pub fn progress(&self, phase: Phase, p: &Progress, message: impl Into<String>) {
        self.emit(phase, message.into(), Some(p.clone()), Vec::new(), None);
    }

    /// `disk-erased`, with the disk's report.
    pub fn disk_erased(&self, r: DiskErase, message: impl Into<String>) {
        self.emit(Phase::DiskErased, message.into(), None, Vec::new(), Some(r));
    }

    /// Report `failed` with the whole error chain, outermost first, and wait (bounded) until
    /// bootsvc has it: what follows a failure is a reboot.
    pub fn failed(&self, err: &anyhow::Error) {
        let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
        self.emit(Phase::Failed, format!("{err:#}"), None, chain, None);
        self.flush();
    }

    fn emit(
        &self,
        phase: Phase,
        message: String,
        progress: Option<Progress>,
        error: Vec<String>,
        erase: Option<DiskErase>,
    ) {
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
            erase,
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
        // The console log's last lines too (bounded: a slow bootsvc costs lines, not time).
        crate::logship::flush(timeout.min(crate::logship::TIMEOUT * 2));
        let (done_tx, done_rx) = channel();
        if tx.lock().map(|t| t.send(Cmd::Flush(done_tx))).is_err() {
            return false;
        }
        let ok = done_rx.recv_timeout(timeout).is_ok();
        if !ok {
            let to = self.servers.as_ref().map(|s| s.urls().join(",")).unwrap_or_default();
            tracing::warn!("events not all delivered to {to} within {timeout:?}");
        }
        ok
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The background sender: one event at a time, in order, each until acknowledged.
fn sender(client: Client, servers: Servers, mac: MacAddr, rx: Receiver<Cmd>) {
    // Patient: bootsvc restarting for a minute must not lose the install's report.
    let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10), 40);
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Flush(done) => {
                let _ = done.send(());
            }
            Cmd::Send(mut ev) => {
                let started = Instant::now();
                let r = servers.run(&format!("sending event {}", ev.phase), backoff, |base| {
                    add_notes(&mut ev.message, servers.take_notes());
                    post(&client, &format!("{base}{}", osie_api::paths::EVENTS), mac, &ev)
                });
                if let Err(e) = r {
                    tracing::error!("event {} dropped after {:?}: {e:#}", ev.phase, started.elapsed());
                }
            }
        }
    }
}

/// The failover notes at the end of a message, once each.
fn add_notes(message: &mut String, notes: Vec<String>) {
    for n in notes {
        message.push_str(&format!(" [{n}]"));
    }
}

fn post(client: &Client, url: &str, mac: MacAddr, ev: &Event) -> Result<(), Failure> {
    let what = format!("POST {url}");
    let resp = client
        .post(url)
        .header(osie_api::MAC_HEADER, mac.to_string())
        .json(ev)
        .send()
        .map_err(|e| http::send_failure(&what, e))?;
    let status = resp.status();
    if !status.is_success() {
        // A 4xx other than the transient ones is bootsvc refusing the event: retrying the
        // same bytes, here or elsewhere, will not change its mind.
        return Err(http::status_failure(&what, status, &resp.text().unwrap_or_default()));
    }
    match resp.json::<EventAck>() {
        Ok(ack) if ack.stored => Ok(()),
        Ok(_) => Err(Failure::Unreachable(anyhow::anyhow!("{what}: bootsvc did not store the event"))),
        Err(e) => Err(Failure::Unreachable(anyhow::anyhow!("{what}: unreadable acknowledgement: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_go_at_the_end_once() {
        let mut m = "sha256 ok".to_string();
        add_notes(&mut m, vec!["failover: http://a failed (refused), now http://b".into()]);
        add_notes(&mut m, Vec::new());
        assert_eq!(m, "sha256 ok [failover: http://a failed (refused), now http://b]");
    }
}

//! The recorder of the boot trace (`crate::trace`): protocol code hands it steps, it stores
//! them off the hot paths. [`Tracer::record`] never blocks: it looks the NIC up in the
//! inventory snapshot (from memory), counts and forgets steps of unknown MACs, and puts the
//! step in a bounded queue (`trace.queue`), dropping and counting it when the queue is full.
//! One writer thread takes what is queued, at most [`BATCH`] at a time, and stores it in
//! one transaction ([`Storage::record_steps`]); it also derives the phase durations from the
//! steps in order ([`Timings`]) for `/metrics`. `bootsvc/docs/trace.md` has the rules.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use osie_api::MacAddr;

use crate::config::Trace;
use crate::metrics::Metrics;
use crate::storage::{state_key, Storage};
use crate::trace::{Step, TraceStep};

/// Most steps stored in one transaction.
pub const BATCH: usize = 512;
/// How long the writer gathers steps after the first before it stores them: a boot storm
/// costs a few transactions a second, not one per packet.
pub const LINGER: Duration = Duration::from_millis(250);

pub struct Tracer {
    tx: SyncSender<(MacAddr, TraceStep)>,
    storage: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    /// Steps queued or being stored (for [`Tracer::flush`]).
    pending: Arc<AtomicUsize>,
}

impl Tracer {
    /// Start the writer thread; steps go to `storage`, counts and durations to `metrics`.
    pub fn start(cfg: &Trace, storage: Arc<dyn Storage>, metrics: Arc<Metrics>) -> std::io::Result<Arc<Tracer>> {
        let (tx, rx) = sync_channel(cfg.queue.max(1));
        let keep = cfg.steps_per_machine;
        let (s, m) = (Arc::clone(&storage), Arc::clone(&metrics));
        let pending = Arc::new(AtomicUsize::new(0));
        let p = Arc::clone(&pending);
        std::thread::Builder::new().name("trace-writer".into()).spawn(move || writer(rx, s, m, keep, &p))?;
        Ok(Arc::new(Tracer { tx, storage, metrics, pending }))
    }

    /// Wait up to `limit` until every queued step is stored (at shutdown). True when it is.
    pub fn flush(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while self.pending.load(Ordering::Acquire) > 0 {
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Record the step `make` builds for the machine with the NIC `mac` (built only for a
    /// machine of the inventory). Never blocks.
    pub fn record(&self, mac: &MacAddr, make: impl FnOnce() -> TraceStep) {
        let snap = self.storage.snapshot();
        let Some(key) = snap.by_mac(mac).and_then(|e| state_key(&e.machine)) else {
            self.metrics.trace_step("unknown-machine", 1);
            return;
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        let r = self.tx.try_send((key, make()));
        if r.is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        match r {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.metrics.trace_step("dropped", 1),
            // The writer is gone (it only ends with the process): nothing to record into.
            Err(TrySendError::Disconnected(_)) => self.metrics.trace_step("failed", 1),
        }
    }

    /// Record the step `make` builds for the machine that holds `ip` (TFTP knows only the
    /// address): its fixed address, bootsvc's lease, or (proxy mode) the address its DHCP
    /// request named. Counted as unknown when no inventory machine holds it. Never blocks.
    pub fn record_ip(&self, ip: std::net::IpAddr, make: impl FnOnce(MacAddr) -> TraceStep) {
        match mac_of(&*self.storage, ip) {
            Some(mac) => self.record(&mac, || make(mac)),
            None => self.metrics.trace_step("unknown-machine", 1),
        }
    }

    /// Record `step` of `mac` now.
    pub fn step(&self, mac: MacAddr, source: Option<std::net::IpAddr>, run_id: Option<String>, step: Step) {
        self.record(&mac, || TraceStep { at_ms: crate::trace::now_ms(), mac, source, run_id, step });
    }
}

/// The machine (its boot MAC) an address is attributed to in the trace and the logs: by fixed
/// address (`ip`, `ip6`), pool lease or DHCP request for IPv4, by the EUI-64 an IPv6 address
/// was formed from. A claim, as a DHCP request is (`docs/trace.md`): nothing is served on it.
pub fn mac_of(storage: &dyn Storage, ip: std::net::IpAddr) -> Option<MacAddr> {
    let snap = storage.snapshot();
    match crate::netaddr::unmap(ip) {
        std::net::IpAddr::V4(v4) => snap
            .by_fixed_ip(v4)
            .and_then(|e| e.machine.boot_mac())
            .or_else(|| storage.leases().mac_for_ip(v4))
            .or_else(|| storage.dhcp_requests().mac_for_ip(v4)),
        std::net::IpAddr::V6(v6) => snap
            .by_fixed_ip6(v6)
            .or_else(|| crate::netaddr::eui64(v6).and_then(|m| snap.by_mac(&m)))
            .and_then(|e| e.machine.boot_mac()),
    }
}

/// An optional tracer (servers built without one, in tests, record nothing).
pub type MaybeTracer = Option<Arc<Tracer>>;

fn writer(
    rx: Receiver<(MacAddr, TraceStep)>,
    storage: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    keep: usize,
    pending: &AtomicUsize,
) {
    let mut timings = Timings::default();
    let mut last_warn: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let until = Instant::now() + LINGER;
        while batch.len() < BATCH {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        for (key, s) in &batch {
            for (phase, secs) in timings.observe(*key, s) {
                metrics.phase_duration(phase, secs);
            }
        }
        match storage.record_steps(&batch, keep) {
            Ok(()) => metrics.trace_step("stored", batch.len() as u64),
            Err(e) => {
                metrics.trace_step("failed", batch.len() as u64);
                // One line a minute at most: a database away must not flood the log.
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(steps = batch.len(), error = %format!("{e:#}"), "storing boot trace steps failed; dropped");
                    last_warn = Some(Instant::now());
                }
            }
        }
        pending.fetch_sub(batch.len(), Ordering::AcqRel);
    }
}

/// Where one machine's attempt stands, for the durations.
#[derive(Debug, Default, Clone)]
struct Marks {
    first_dhcp: Option<u64>,
    script: Option<u64>,
    installer: bool,
    image: Option<u64>,
    installed: Option<u64>,
}

/// Phase durations derived from the steps in order (pure; the writer feeds it):
///
/// - `dhcp-to-script`: the attempt's first DHCP request → the installer script served;
/// - `script-to-installer`: the script → the installer's first event;
/// - `image`: the first `image-streaming` event → `image-verified`;
/// - `install-total`: the attempt's first DHCP request → `installed`;
/// - `installed-to-first-boot`: `installed` → `first-boot`.
#[derive(Debug, Default)]
pub struct Timings {
    machines: HashMap<MacAddr, Marks>,
}

/// Machines followed at most (inventory machines only reach here; this bounds it anyway).
const MAX_FOLLOWED: usize = 100_000;

impl Timings {
    /// The durations `step` completes, in seconds.
    pub fn observe(&mut self, key: MacAddr, step: &TraceStep) -> Vec<(&'static str, f64)> {
        if !self.machines.contains_key(&key) && self.machines.len() >= MAX_FOLLOWED {
            return Vec::new();
        }
        let m = self.machines.entry(key).or_default();
        let t = step.at_ms;
        let secs = |from: u64| t.saturating_sub(from) as f64 / 1000.0;
        let mut out = Vec::new();
        match &step.step {
            // An attempt starts with the first DHCP request after nothing, a failure or an
            // install (the installer's and the installed OS's own DHCP change nothing).
            Step::Dhcp(d) if (d.message == "discover" || d.message == "request") && m.first_dhcp.is_none() => {
                m.first_dhcp = Some(t);
            }
            Step::Script(s) if s.script == "installer" => {
                if let Some(d) = m.first_dhcp {
                    out.push(("dhcp-to-script", secs(d)));
                }
                m.script = Some(t);
                m.installer = false;
                m.installed = None;
            }
            Step::Event(e) => {
                if !m.installer && e.phase != "first-boot" && e.phase != "power" {
                    m.installer = true;
                    if let Some(s) = m.script {
                        out.push(("script-to-installer", secs(s)));
                    }
                }
                match e.phase.as_str() {
                    "image-streaming" if m.image.is_none() => m.image = Some(t),
                    "image-verified" => {
                        if let Some(i) = m.image.take() {
                            out.push(("image", secs(i)));
                        }
                    }
                    "installed" => {
                        if let Some(d) = m.first_dhcp {
                            out.push(("install-total", secs(d)));
                        }
                        *m = Marks { installed: Some(t), ..Marks::default() };
                    }
                    "failed" => *m = Marks::default(),
                    "first-boot" => {
                        if let Some(i) = m.installed {
                            out.push(("installed-to-first-boot", secs(i)));
                        }
                        self.machines.remove(&key);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{DhcpStep, EventStep, ScriptStep};

    fn at(s: u64, step: Step) -> TraceStep {
        TraceStep { at_ms: s * 1000, mac: "52:54:00:00:00:01".parse().unwrap(), source: None, run_id: None, step }
    }

    fn dhcp() -> Step {
        Step::Dhcp(DhcpStep {
            message: "discover".into(),
            via: "dhcp".into(),
            arch: None,
            class: String::new(),
            vendor_class: None,
            answer: Some("offer".into()),
            address: None,
            boot_file: None,
            reason: String::new(),
        })
    }

    fn ev(p: &str) -> Step {
        Step::Event(EventStep { phase: p.into(), percent: None, message: String::new() })
    }

    #[test]
    fn durations_of_one_install() {
        let k: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let mut t = Timings::default();
        let steps = [
            at(100, dhcp()),
            at(101, dhcp()),
            at(104, Step::Script(ScriptStep { script: "installer".into(), status: 200 })),
            at(110, dhcp()),
            at(116, ev("booted-installer")),
            at(120, ev("image-streaming")),
            at(125, ev("image-streaming")),
            at(160, ev("image-verified")),
            at(170, ev("installed")),
            at(200, dhcp()),
            at(260, ev("first-boot")),
        ];
        let got: Vec<_> = steps.iter().flat_map(|s| t.observe(k, s)).collect();
        assert_eq!(
            got,
            [
                ("dhcp-to-script", 4.0),
                ("script-to-installer", 12.0),
                ("image", 40.0),
                ("install-total", 70.0),
                ("installed-to-first-boot", 90.0)
            ]
        );
        assert!(t.machines.is_empty(), "forgotten after the first boot");
    }
}

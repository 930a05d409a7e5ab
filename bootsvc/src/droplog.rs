//! Logging dropped packets without letting a flood write the log: the first few drops of
//! each reason in an interval get a line of their own, the rest are counted, and at the end
//! of the interval one summary line says how many were dropped, by reason, and from which
//! sources most. (The metrics, `osie_dropped_packets_total{reason=…}`, count every drop;
//! this is only about the log.) 9000 malformed DHCP packets in a second make five lines
//! and a summary, not 9000 lines.
//!
//! [`Window`] is the pure part (counting and deciding); [`DropLog`] shares one between a
//! server's loops and writes the summaries. DHCP and TFTP each have one. [`RateLog`] is the
//! plainer kind for one sort of event (the HTTP listeners' refused connections): one line per
//! period, saying how many it stands for.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a summary is written (when some drop went unlogged).
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Drops of one reason logged one by one per interval.
pub const LOGGED_PER_REASON: u64 = 5;
/// Sources named in a summary.
const TOP_SOURCES: usize = 3;
/// Distinct sources remembered per interval (a spoofing flood must not grow the map).
const MAX_SOURCES: usize = 4096;

/// The drops of the current interval.
#[derive(Debug, Default)]
pub struct Window {
    by_reason: BTreeMap<&'static str, Count>,
    by_source: HashMap<IpAddr, u64>,
    /// Drops from sources beyond [`MAX_SOURCES`], or with no source.
    unattributed: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Count {
    dropped: u64,
    logged: u64,
}

/// What one interval saw, when not all of it was logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub dropped: u64,
    pub logged: u64,
    /// By count, largest first.
    pub reasons: Vec<(&'static str, u64)>,
    pub top_sources: Vec<(IpAddr, u64)>,
    /// Drops not attributed to a listed source.
    pub other_sources: u64,
}

impl Window {
    /// Count one drop; `true` when it should get a log line of its own.
    pub fn record(&mut self, reason: &'static str, source: Option<IpAddr>) -> bool {
        let c = self.by_reason.entry(reason).or_default();
        c.dropped += 1;
        let log = c.logged < LOGGED_PER_REASON;
        if log {
            c.logged += 1;
        }
        match source {
            Some(ip) if self.by_source.len() < MAX_SOURCES || self.by_source.contains_key(&ip) => {
                *self.by_source.entry(ip).or_default() += 1;
            }
            _ => self.unattributed += 1,
        }
        log
    }

    /// End the interval: its summary if some drop went unlogged, and a fresh window.
    pub fn take(&mut self) -> Option<Summary> {
        let w = std::mem::take(self);
        let dropped: u64 = w.by_reason.values().map(|c| c.dropped).sum();
        let logged: u64 = w.by_reason.values().map(|c| c.logged).sum();
        if dropped == logged {
            return None;
        }
        let mut reasons: Vec<_> = w.by_reason.iter().map(|(r, c)| (*r, c.dropped)).collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut sources: Vec<_> = w.by_source.into_iter().collect();
        sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let top_sources: Vec<_> = sources.iter().take(TOP_SOURCES).copied().collect();
        let listed: u64 = top_sources.iter().map(|s| s.1).sum();
        Some(Summary { dropped, logged, reasons, top_sources, other_sources: dropped - listed })
    }
}

impl fmt::Display for Summary {
    /// `9000 dropped, 5 of them logged: dhcp-truncated 9000; from 192.0.2.3 (9000)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dropped, {} of them logged: ", self.dropped, self.logged)?;
        let reasons: Vec<String> = self.reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        write!(f, "{}; from ", reasons.join(", "))?;
        let mut sources: Vec<String> = self.top_sources.iter().map(|(ip, n)| format!("{ip} ({n})")).collect();
        if self.other_sources > 0 {
            sources.push(format!("others ({})", self.other_sources));
        }
        f.write_str(&sources.join(", "))
    }
}

/// One protocol's drop log, shared by its loops.
#[derive(Debug)]
pub struct DropLog {
    /// `DHCP`, `TFTP`: starts the summary line.
    proto: &'static str,
    window: Mutex<Window>,
}

impl DropLog {
    pub fn new(proto: &'static str) -> DropLog {
        DropLog { proto, window: Mutex::default() }
    }

    /// Count a drop for the summary; `true` when the caller should log it on its own line.
    pub fn note(&self, reason: &'static str, source: Option<IpAddr>) -> bool {
        self.window.lock().unwrap_or_else(|e| e.into_inner()).record(reason, source)
    }

    /// End the interval: log its summary, if anything went unlogged.
    pub fn flush(&self) {
        let summary = self.window.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(s) = summary {
            let reasons: Vec<String> = s.reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
            tracing::info!(
                proto = self.proto, dropped = s.dropped, logged = s.logged, reasons = %reasons.join(","),
                "{} packets dropped in the last {} s: {s}", self.proto, INTERVAL.as_secs()
            );
        }
    }

    /// Flush every [`INTERVAL`], until the future is dropped.
    pub async fn summarize(&self) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush();
        }
    }
}

/// At most one log line per period: [`RateLog::hit`] says when to write one, and how many
/// events it stands for.
pub struct RateLog {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLog {
    pub fn new(every: Duration) -> RateLog {
        RateLog { every, state: Mutex::new((None, 0)) }
    }

    /// Count one event at `now`; `Some(n)`: log now, for `n` events (this one included).
    pub fn hit(&self, now: Instant) -> Option<u64> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += 1;
        if g.0.is_some_and(|last| now.duration_since(last) < self.every) {
            return None;
        }
        let n = std::mem::take(&mut g.1);
        g.0 = Some(now);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_first_few_of_each_reason_are_logged_the_rest_summarized() {
        let mut w = Window::default();
        let mut lines = 0;
        for i in 0..9000u32 {
            let reason = if i % 3 == 0 { "dhcp-malformed" } else { "dhcp-truncated" };
            let from = if i % 100 == 0 { ip("192.0.2.9") } else { ip("192.0.2.3") };
            lines += u64::from(w.record(reason, from));
        }
        assert_eq!(lines, 2 * LOGGED_PER_REASON);
        let s = w.take().unwrap();
        assert_eq!((s.dropped, s.logged), (9000, 10));
        assert_eq!(s.reasons, [("dhcp-truncated", 6000), ("dhcp-malformed", 3000)]);
        assert_eq!(s.top_sources, [("192.0.2.3".parse().unwrap(), 8910), ("192.0.2.9".parse().unwrap(), 90)]);
        assert_eq!(
            s.to_string(),
            "9000 dropped, 10 of them logged: dhcp-truncated 6000, dhcp-malformed 3000; from 192.0.2.3 (8910), 192.0.2.9 (90)"
        );
        // A new interval logs again, and says nothing when everything was logged.
        assert!(w.record("dhcp-malformed", ip("192.0.2.3")));
        assert_eq!(w.take(), None);
        assert_eq!(w.take(), None);
    }

    #[test]
    fn sources_are_bounded_and_the_rest_counted() {
        let mut w = Window::default();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            w.record("tftp-malformed", Some(IpAddr::from(u32::to_be_bytes(0xc000_0200 + i))));
        }
        w.record("tftp-receive-error", None);
        assert_eq!(w.by_source.len(), MAX_SOURCES);
        let s = w.take().unwrap();
        assert_eq!(s.dropped, MAX_SOURCES as u64 + 101);
        assert_eq!(s.top_sources.len(), TOP_SOURCES);
        assert_eq!(s.other_sources, s.dropped - TOP_SOURCES as u64);
        assert!(s.to_string().ends_with(&format!("others ({})", s.other_sources)), "{s}");
    }

    #[test]
    fn rate_log_writes_one_line_per_period() {
        let log = RateLog::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(log.hit(t), Some(1));
        assert_eq!(log.hit(t + Duration::from_secs(1)), None);
        assert_eq!(log.hit(t + Duration::from_secs(9)), None);
        assert_eq!(log.hit(t + Duration::from_secs(10)), Some(3));
        assert_eq!(log.hit(t + Duration::from_secs(11)), None);
    }
}

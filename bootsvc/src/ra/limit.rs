//! How often bootsvc answers, and whether it should at all: per-source rate limits (a
//! neighbour soliciting in a loop gets a few answers a second, not one per packet, and a
//! spoofing flood cannot grow the table), and in `auto` mode the quiet that follows hearing
//! another router. Pure: the caller passes the time.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

/// Answers one source may get in a burst, and how fast that refills. iPXE and Linux send a
/// solicitation, then a few more seconds apart: each is answered.
pub const BURST: u32 = 3;
pub const REFILL: Duration = Duration::from_secs(1);
/// Answers in all per [`REFILL`], whatever the sources: the bound on what a flood of
/// solicitations from made-up addresses makes bootsvc send.
pub const TOTAL_PER_REFILL: u32 = 100;
/// Sources remembered at once; beyond that, sources not yet in the table are refused until
/// old entries expire.
pub const MAX_SOURCES: usize = 4096;

#[derive(Debug)]
pub struct Limiter {
    sources: HashMap<Ipv6Addr, Bucket>,
    total: Bucket,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    since: Instant,
}

impl Bucket {
    fn full(now: Instant, tokens: u32) -> Bucket {
        Bucket { tokens, since: now }
    }

    /// Refill by whole periods since the last refill, up to `max`; then take one if any.
    fn take(&mut self, now: Instant, max: u32, per_refill: u32) -> bool {
        let periods = now.saturating_duration_since(self.since).as_nanos() / REFILL.as_nanos();
        if periods > 0 {
            let added = u32::try_from(periods).unwrap_or(u32::MAX).saturating_mul(per_refill);
            self.tokens = self.tokens.saturating_add(added).min(max);
            self.since = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Why an answer was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// This source asked too often.
    Source,
    /// Everyone together asked too often, or the table of sources is full.
    Total,
}

impl Limited {
    pub fn reason(self) -> &'static str {
        match self {
            Limited::Source => "ra-rate-source",
            Limited::Total => "ra-rate-total",
        }
    }
}

impl Limiter {
    pub fn new(now: Instant) -> Limiter {
        Limiter { sources: HashMap::new(), total: Bucket::full(now, TOTAL_PER_REFILL) }
    }

    /// May `source` be answered now? Counts the answer when it may.
    pub fn allow(&mut self, source: Ipv6Addr, now: Instant) -> Result<(), Limited> {
        if !self.sources.contains_key(&source) && self.sources.len() >= MAX_SOURCES {
            // Forget sources whose bucket has refilled: they are as good as new.
            let full_after = REFILL * BURST;
            self.sources.retain(|_, b| now.saturating_duration_since(b.since) < full_after);
            if self.sources.len() >= MAX_SOURCES {
                return Err(Limited::Total);
            }
        }
        let bucket = self.sources.entry(source).or_insert_with(|| Bucket::full(now, BURST));
        if !bucket.take(now, BURST, 1) {
            return Err(Limited::Source);
        }
        if !self.total.take(now, TOTAL_PER_REFILL, TOTAL_PER_REFILL) {
            return Err(Limited::Total);
        }
        Ok(())
    }
}

/// `auto` mode: after another router's configuring advertisement, bootsvc stays quiet this
/// long (longer than the longest interval between a router's unsolicited advertisements,
/// RFC 4861 6.2.1's MaxRtrAdvInterval of at most 1800 s).
pub const QUIET_FOR: Duration = Duration::from_secs(3600);

/// Whether another router serves the link, as last heard.
#[derive(Debug, Default)]
pub struct Quiet {
    until: Option<Instant>,
}

impl Quiet {
    /// Another router advertised configuration at `now`. `true` when bootsvc was answering
    /// until then (worth a log line).
    pub fn heard(&mut self, now: Instant) -> bool {
        let was_answering = !self.is_quiet(now);
        self.until = Some(now + QUIET_FOR);
        was_answering
    }

    pub fn is_quiet(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, n >> 8, n & 0xff)
    }

    #[test]
    fn a_source_gets_a_burst_then_one_a_second() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        for _ in 0..BURST {
            assert_eq!(l.allow(addr(1), t0), Ok(()));
        }
        assert_eq!(l.allow(addr(1), t0), Err(Limited::Source));
        // Another source is not held back by the first.
        assert_eq!(l.allow(addr(2), t0), Ok(()));
        assert_eq!(l.allow(addr(1), t0 + REFILL / 2), Err(Limited::Source));
        assert_eq!(l.allow(addr(1), t0 + REFILL), Ok(()));
        assert_eq!(l.allow(addr(1), t0 + REFILL), Err(Limited::Source));
        // A long pause refills up to the burst, no more.
        let later = t0 + REFILL * 100;
        for _ in 0..BURST {
            assert_eq!(l.allow(addr(1), later), Ok(()));
        }
        assert_eq!(l.allow(addr(1), later), Err(Limited::Source));
    }

    #[test]
    fn a_flood_from_many_sources_is_bounded() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        let sent = (0..10_000u16).filter(|&n| l.allow(addr(n), t0).is_ok()).count();
        assert_eq!(sent, TOTAL_PER_REFILL as usize);
        assert!(l.sources.len() <= MAX_SOURCES);
        // Full table, nothing expired: a new source is refused as part of the flood.
        assert_eq!(l.allow(addr(60_000), t0), Err(Limited::Total));
        // Once the old entries have refilled, they are forgotten and new sources get answers.
        let later = t0 + REFILL * (BURST + 1);
        assert_eq!(l.allow(addr(60_000), later), Ok(()));
        assert!(l.sources.len() < MAX_SOURCES);
    }

    #[test]
    fn quiet_for_an_hour_after_another_router() {
        let t0 = Instant::now();
        let mut q = Quiet::default();
        assert!(!q.is_quiet(t0));
        assert!(q.heard(t0), "the first router heard is news");
        assert!(q.is_quiet(t0 + QUIET_FOR / 2));
        assert!(!q.heard(t0 + QUIET_FOR / 2), "still quiet: not news");
        assert!(q.is_quiet(t0 + QUIET_FOR));
        assert!(!q.is_quiet(t0 + QUIET_FOR / 2 + QUIET_FOR));
    }
}

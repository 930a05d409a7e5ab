//! Per-source rate limits for answers sent to unauthenticated senders on the segment (router
//! advertisements, DHCPv6): a source asking in a loop gets a burst, then one answer per
//! refill period; everyone together gets a bounded number per period, and the table of
//! sources is bounded, so a flood from made-up addresses can grow neither it nor the answers
//! sent. Pure: the caller passes the time.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

/// One protocol's limits, and the metrics labels of its refusals.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Answers one source may get in a burst.
    pub burst: u32,
    /// A source gets one more answer per `refill`.
    pub refill: Duration,
    /// Answers in all per `refill`, whatever the sources.
    pub total_per_refill: u32,
    /// Sources remembered at once; beyond that, sources not yet in the table are refused
    /// until old entries expire.
    pub max_sources: usize,
    /// The labels of [`Limited::Source`] and [`Limited::Total`] (metrics, logs).
    pub labels: [&'static str; 2],
}

#[derive(Debug)]
pub struct Limiter {
    rates: Rates,
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
    fn take(&mut self, now: Instant, refill: Duration, max: u32, per_refill: u32) -> bool {
        let periods = now.saturating_duration_since(self.since).as_nanos() / refill.as_nanos().max(1);
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

impl Limiter {
    pub fn new(rates: Rates, now: Instant) -> Limiter {
        Limiter { rates, sources: HashMap::new(), total: Bucket::full(now, rates.total_per_refill) }
    }

    /// The metrics label of a refusal.
    pub fn reason(&self, l: Limited) -> &'static str {
        match l {
            Limited::Source => self.rates.labels[0],
            Limited::Total => self.rates.labels[1],
        }
    }

    /// May `source` be answered now? Counts the answer when it may.
    pub fn allow(&mut self, source: Ipv6Addr, now: Instant) -> Result<(), Limited> {
        let r = self.rates;
        if !self.sources.contains_key(&source) && self.sources.len() >= r.max_sources {
            // Forget sources whose bucket has refilled: they are as good as new.
            let full_after = r.refill * r.burst;
            self.sources.retain(|_, b| now.saturating_duration_since(b.since) < full_after);
            if self.sources.len() >= r.max_sources {
                return Err(Limited::Total);
            }
        }
        let bucket = self.sources.entry(source).or_insert_with(|| Bucket::full(now, r.burst));
        if !bucket.take(now, r.refill, r.burst, 1) {
            return Err(Limited::Source);
        }
        if !self.total.take(now, r.refill, r.total_per_refill, r.total_per_refill) {
            return Err(Limited::Total);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: Rates = Rates {
        burst: 3,
        refill: Duration::from_secs(1),
        total_per_refill: 100,
        max_sources: 4096,
        labels: ["t-source", "t-total"],
    };
    const BURST: u32 = RATES.burst;
    const REFILL: Duration = RATES.refill;

    fn addr(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, n >> 8, n & 0xff)
    }

    #[test]
    fn a_source_gets_a_burst_then_one_a_period() {
        let t0 = Instant::now();
        let mut l = Limiter::new(RATES, t0);
        for _ in 0..BURST {
            assert_eq!(l.allow(addr(1), t0), Ok(()));
        }
        assert_eq!(l.allow(addr(1), t0), Err(Limited::Source));
        assert_eq!(l.reason(Limited::Source), "t-source");
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
        let mut l = Limiter::new(RATES, t0);
        let sent = (0..10_000u16).filter(|&n| l.allow(addr(n), t0).is_ok()).count();
        assert_eq!(sent, RATES.total_per_refill as usize);
        assert!(l.sources.len() <= RATES.max_sources);
        // Full table, nothing expired: a new source is refused as part of the flood.
        assert_eq!(l.allow(addr(60_000), t0), Err(Limited::Total));
        assert_eq!(l.reason(Limited::Total), "t-total");
        // Once the old entries have refilled, they are forgotten and new sources get answers.
        let later = t0 + REFILL * (BURST + 1);
        assert_eq!(l.allow(addr(60_000), later), Ok(()));
        assert!(l.sources.len() < RATES.max_sources);
    }
}

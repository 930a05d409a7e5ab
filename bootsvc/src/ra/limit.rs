//! How often bootsvc answers, and whether it should at all: per-source rate limits (a
//! neighbour soliciting in a loop gets a few answers a second, not one per packet, and a
//! spoofing flood cannot grow the table: [`RATES`] for [`crate::ratelimit`]), and in `auto`
//! mode the quiet that follows hearing another router. Pure: the caller passes the time.

use std::time::{Duration, Instant};

use crate::ratelimit::Rates;

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

/// The limits of router advertisements.
pub const RATES: Rates = Rates {
    burst: BURST,
    refill: REFILL,
    total_per_refill: TOTAL_PER_REFILL,
    max_sources: MAX_SOURCES,
    labels: ["ra-rate-source", "ra-rate-total"],
};

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

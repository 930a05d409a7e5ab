//! Retry delays: exponential, capped, bounded in number. [`crate::servers::Tries`] decides
//! with them when to wait, go on to the next bootsvc, or give up.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Attempts in all (the first try included); with several bootsvc instances, rounds
    /// that try each once ([`crate::servers::Tries`]).
    pub tries: u32,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration, tries: u32) -> Backoff {
        Backoff { first, max, tries }
    }

    /// The delay before retry number `n` (1 = the first retry).
    pub fn delay(&self, n: u32) -> Duration {
        let f = 1u32.checked_shl(n.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        self.first.saturating_mul(f).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 5);
        let d: Vec<_> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(400), Duration::from_secs(1));
    }
}

//! Retry delays: exponential, capped, bounded in number.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Attempts in all (the first try included).
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

    /// Run `f` until it succeeds, it says the error is permanent (`Err((e, false))`), or the
    /// tries run out; sleeps between tries. `what` names the operation in logs.
    pub fn retry<T, E: std::fmt::Display>(
        &self,
        what: &str,
        mut f: impl FnMut(u32) -> Result<T, (E, bool)>,
    ) -> Result<T, E> {
        let mut n = 0;
        loop {
            match f(n) {
                Ok(v) => return Ok(v),
                Err((e, retryable)) => {
                    n += 1;
                    if !retryable || n >= self.tries {
                        return Err(e);
                    }
                    let d = self.delay(n);
                    tracing::warn!("{what} failed (try {n}/{}): {e}; retrying in {d:?}", self.tries);
                    std::thread::sleep(d);
                }
            }
        }
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

    #[test]
    fn retry_stops_on_permanent_errors_and_bounds_tries() {
        let b = Backoff::new(Duration::from_millis(1), Duration::from_millis(2), 3);
        let mut calls = 0;
        let r: Result<(), &str> = b.retry("t", |_| {
            calls += 1;
            Err(("transient", true))
        });
        assert_eq!((r, calls), (Err("transient"), 3));
        calls = 0;
        let r: Result<(), &str> = b.retry("t", |_| {
            calls += 1;
            Err(("permanent", false))
        });
        assert_eq!((r, calls), (Err("permanent"), 1));
        let r: Result<u32, &str> = b.retry("t", |n| if n < 2 { Err(("again", true)) } else { Ok(n) });
        assert_eq!(r, Ok(2));
    }
}

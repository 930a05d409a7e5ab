//! Failed-token back-off of the admin API, per source address, as a pure state machine
//! (time is passed in, so it is tested without waiting).
//!
//! A source may get the token wrong [`FREE_FAILURES`] times; the next failure locks it out
//! for [`FIRST_LOCKOUT`], and every failure after a lock-out ends locks it out again for
//! twice as long as the last time, up to [`MAX_LOCKOUT`]. While locked out, every request
//! from that source is refused (429 with `Retry-After`) without looking at its token, so a
//! right guess during a lock-out gains nothing. A correct token outside a lock-out clears
//! the source's record. A source quiet for [`FORGET_AFTER`] starts afresh.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FREE_FAILURES: u32 = 5;
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(1);
pub const MAX_LOCKOUT: Duration = Duration::from_secs(300);
pub const FORGET_AFTER: Duration = Duration::from_secs(900);
/// Sources remembered at most; past that, the longest-quiet ones are forgotten first.
const MAX_SOURCES: usize = 4096;

/// Where a request came from: an address, or `None` for the admin Unix socket.
pub type Source = Option<IpAddr>;

#[derive(Debug, Clone, Default)]
struct Record {
    failures: u32,
    /// Lock-outs so far (the next one lasts `FIRST_LOCKOUT << level`).
    level: u32,
    locked_until: Option<Instant>,
    last: Option<Instant>,
    /// Requests refused during the current lock-out.
    refused: u64,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Check its token.
    Check,
    /// Refuse it unread: try again after this long.
    LockedOut(Duration),
}

/// A lock-out just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    pub period: Duration,
    /// Failed tokens that led to it (since the source's record began).
    pub failures: u64,
    /// Requests refused during the previous lock-out.
    pub refused_before: u64,
}

#[derive(Debug, Default)]
pub struct Backoff {
    sources: Mutex<HashMap<Source, (Record, u64)>>,
}

impl Backoff {
    /// Before the token is looked at.
    pub fn check(&self, src: Source, now: Instant) -> Verdict {
        let mut m = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(&src) {
            Some((r, _)) => match r.locked_until {
                Some(until) if until > now => {
                    r.refused += 1;
                    Verdict::LockedOut(until - now)
                }
                _ => Verdict::Check,
            },
            None => Verdict::Check,
        }
    }

    /// A wrong or missing token from `src`; `Some` when this failure starts a lock-out.
    pub fn failed(&self, src: Source, now: Instant) -> Option<Lockout> {
        let mut m = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_SOURCES && !m.contains_key(&src) {
            forget_quiet(&mut m, now);
        }
        let (r, total) = m.entry(src).or_default();
        if r.last.is_some_and(|t| now.duration_since(t) >= FORGET_AFTER) && r.locked_until.is_none_or(|u| u <= now) {
            (*r, *total) = (Record::default(), 0);
        }
        r.last = Some(now);
        r.failures += 1;
        *total += 1;
        if r.failures <= FREE_FAILURES {
            return None;
        }
        let period = FIRST_LOCKOUT.saturating_mul(1 << r.level.min(20)).min(MAX_LOCKOUT);
        r.level += 1;
        r.locked_until = Some(now + period);
        // One more failure after this lock-out ends locks the source out again.
        r.failures = FREE_FAILURES;
        Some(Lockout { period, failures: *total, refused_before: std::mem::take(&mut r.refused) })
    }

    /// A correct token from `src` (not locked out): its record is cleared.
    pub fn succeeded(&self, src: Source) {
        self.sources.lock().unwrap_or_else(|e| e.into_inner()).remove(&src);
    }
}

/// Make room: drop sources neither locked out nor heard from within `FORGET_AFTER`, and if
/// that is not enough, the longest-quiet half.
fn forget_quiet(m: &mut HashMap<Source, (Record, u64)>, now: Instant) {
    m.retain(|_, (r, _)| {
        r.locked_until.is_some_and(|u| u > now) || r.last.is_some_and(|t| now.duration_since(t) < FORGET_AFTER)
    });
    if m.len() >= MAX_SOURCES {
        let mut lasts: Vec<Instant> = m.values().filter_map(|(r, _)| r.last).collect();
        lasts.sort_unstable();
        if let Some(&cut) = lasts.get(lasts.len() / 2) {
            m.retain(|_, (r, _)| r.last.is_some_and(|t| t > cut));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Source {
        Some(s.parse().unwrap())
    }

    #[test]
    fn lockouts_grow_and_a_right_token_does_not_help_during_one() {
        let b = Backoff::default();
        let (bad, good) = (ip("192.0.2.66"), ip("192.0.2.1"));
        let t0 = Instant::now();
        for i in 0..FREE_FAILURES {
            assert_eq!(b.check(bad, t0), Verdict::Check, "failure {i} is free");
            assert_eq!(b.failed(bad, t0), None);
        }
        let l = b.failed(bad, t0).expect("locked out");
        assert_eq!((l.period, l.failures), (FIRST_LOCKOUT, u64::from(FREE_FAILURES) + 1));
        assert_eq!(b.check(bad, t0), Verdict::LockedOut(FIRST_LOCKOUT));
        assert_eq!(b.check(good, t0), Verdict::Check, "another source is unaffected");
        // After the lock-out one failure is enough for the next, twice as long.
        let t1 = t0 + FIRST_LOCKOUT;
        assert_eq!(b.check(bad, t1), Verdict::Check);
        let l = b.failed(bad, t1).unwrap();
        assert_eq!((l.period, l.refused_before), (2 * FIRST_LOCKOUT, 1));
        let mut t = t1;
        let mut period = l.period;
        for _ in 0..20 {
            t += period;
            period = b.failed(bad, t).unwrap().period;
        }
        assert_eq!(period, MAX_LOCKOUT, "capped");
        // A correct token clears the record (the caller only asks while not locked out).
        t += period;
        assert_eq!(b.check(bad, t), Verdict::Check);
        b.succeeded(bad);
        assert_eq!(b.failed(bad, t), None, "free failures again");
    }

    #[test]
    fn a_quiet_source_starts_afresh_and_memory_is_bounded() {
        let b = Backoff::default();
        let src = ip("192.0.2.66");
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            b.failed(src, t0);
        }
        assert_eq!(b.failed(src, t0 + FORGET_AFTER), None, "forgotten after a quiet period");
        for i in 0..(MAX_SOURCES as u32 + 100) {
            b.failed(Some(IpAddr::from(i.to_be_bytes())), t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(b.sources.lock().unwrap().len() <= MAX_SOURCES);
    }
}

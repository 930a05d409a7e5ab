//! Progress of a stream: bytes, rate over the last interval, time left.

use std::time::Duration;

use osie_api::Progress;

const STALLED: u64 = 4096;

/// Turns successive byte counts into [`Progress`] reports.
pub struct Meter {
    total: Option<u64>,
    last_bytes: u64,
    /// Smoothed rate (bytes/s), so one slow interval does not make the ETA jump.
    rate: Option<f64>,
}

impl Meter {
    pub fn new(total: Option<u64>) -> Meter {
        Meter { total, last_bytes: 0, rate: None }
    }

    /// `done` bytes after `elapsed` since the previous sample.
    pub fn sample(&mut self, done: u64, elapsed: Duration) -> Progress {
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 {
            let now = done.saturating_sub(self.last_bytes) as f64 / secs;
            self.rate = Some(match self.rate {
                Some(r) => 0.5 * r + 0.5 * now,
                None => now,
            });
        }
        self.last_bytes = done;
        let rate = self.rate.map(|r| r as u64);
        let eta_secs = match (self.total, rate) {
            // Below a few KiB/s the transfer is stalled: no estimate rather than a silly one.
            (Some(t), Some(r)) if r >= STALLED => Some(t.saturating_sub(done).div_ceil(r)),
            _ => None,
        };
        Progress { bytes_done: done, bytes_total: self.total, rate, eta_secs }
    }
}

/// `1.2 GiB/2.0 GiB (60%), 310 MiB/s, 3 s left` for the console.
pub fn describe(p: &Progress) -> String {
    let mut s = mib(p.bytes_done);
    if let Some(t) = p.bytes_total {
        s += &format!("/{}", mib(t));
    }
    if let Some(pc) = p.percent() {
        s += &format!(" ({pc:.0}%)");
    }
    if let Some(r) = p.rate {
        s += &format!(", {}/s", mib(r));
    }
    if let Some(e) = p.eta_secs {
        s += &format!(", {e} s left");
    }
    s
}

fn mib(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_eta() {
        let mut m = Meter::new(Some(1000 << 20));
        let p = m.sample(100 << 20, Duration::from_secs(2));
        assert_eq!(p.rate, Some(50 << 20));
        assert_eq!(p.eta_secs, Some(18));
        let p = m.sample(300 << 20, Duration::from_secs(2));
        assert_eq!(p.rate, Some(75 << 20), "smoothed between 50 and 100 MiB/s");
        assert_eq!(describe(&p), "300 MiB/1000 MiB (30%), 75 MiB/s, 10 s left");
        let p = Meter::new(None).sample(5, Duration::ZERO);
        assert_eq!((p.rate, p.eta_secs), (None, None));
        let p = Meter::new(Some(1 << 30)).sample(100, Duration::from_secs(2));
        assert_eq!((p.rate, p.eta_secs), (Some(50), None), "stalled: no ETA");
    }
}

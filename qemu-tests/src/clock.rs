//! Times as bootsvc writes them (RFC 3339, UTC) turned into `SystemTime`, so log lines,
//! stored events and what the harness saw itself share one clock (they all come from this
//! host), and offsets from a machine's power-on can be printed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-11-21T18:03:21Z`, `…21.123Z`, `…21.123456Z` or with `+00:00`; other offsets are
/// applied. `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Split the time of day from the zone: `Z`, or `+hh:mm` / `-hh:mm`.
    let (tod, offset_secs) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0i64)
    } else {
        let i = rest.rfind(['+', '-'])?;
        let (t, z) = rest.split_at(i);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (hh, mm) = z[1..].split_once(':')?;
        (t, sign * (hh.parse::<i64>().ok()? * 3600 + mm.parse::<i64>().ok()? * 60))
    };
    let (hms, frac) = tod.split_once('.').unwrap_or((tod, ""));
    let mut t = hms.splitn(3, ':');
    let h: i64 = t.next()?.parse().ok()?;
    let min: i64 = t.next()?.parse().ok()?;
    let sec: i64 = t.next()?.parse().ok()?;
    if h > 23 || min > 59 || sec > 60 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        let digits = &frac[..frac.len().min(9)];
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    let secs = days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + sec - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Howard Hinnant's civil-to-days algorithm (proleptic Gregorian), the inverse of the one
/// in `osie_api::time`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `t - since`, zero when `t` is earlier (a log line from before power-on).
pub fn offset(t: SystemTime, since: SystemTime) -> Duration {
    t.duration_since(since).unwrap_or_default()
}

/// `+12.3 s` / `+3 m 05.2 s`, for timelines.
pub fn fmt_offset(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("+{s:.1} s")
    } else {
        format!("+{} m {:04.1} s", (s / 60.0).floor() as u64, s % 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: SystemTime) -> u128 {
        t.duration_since(UNIX_EPOCH).unwrap().as_millis()
    }

    #[test]
    fn round_trips_osie_api_times() {
        for t in [0u64, 951_782_400_000, 1_795_284_201_123, 4_102_444_800_999] {
            let s = osie_api::time::rfc3339(t);
            assert_eq!(ms(parse_rfc3339(&s).unwrap()), t as u128, "{s}");
        }
    }

    #[test]
    fn reads_tracing_timestamps_and_offsets() {
        let t = parse_rfc3339("2026-11-21T18:03:21.123456Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_micros(), 1_795_284_201_123_456);
        assert_eq!(ms(parse_rfc3339("2026-11-21T19:03:21.123+01:00").unwrap()), 1_795_284_201_123);
        assert_eq!(ms(parse_rfc3339("2026-11-21T18:03:21Z").unwrap()), 1_795_284_201_000);
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for s in ["", "2026-11-21", "2026-13-01T00:00:00Z", "2026-11-21T25:00:00Z", "2026-11-21T18:03:21.x1Z", "now"] {
            assert!(parse_rfc3339(s).is_none(), "{s:?}");
        }
    }

    #[test]
    fn formats_offsets() {
        assert_eq!(fmt_offset(Duration::from_millis(3_240)), "+3.2 s");
        assert_eq!(fmt_offset(Duration::from_millis(185_240)), "+3 m 05.2 s");
    }
}

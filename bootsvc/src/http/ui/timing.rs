//! How long each phase of an install took, over the last installs: computed from the event
//! timelines bootsvc keeps (the time bootsvc received each event, so every machine is
//! measured by one clock).
//!
//! One install is one installer run (`run_id`) that reached `installed`. A phase lasts from
//! its first event to the first event of the next phase of the run; `install` is
//! `booted-installer` → `installed`, and `first-boot` is `installed` → the installed OS's
//! `first-boot` event (when it came).

use std::collections::BTreeMap;

use osie_api::Phase;
use serde::Serialize;

use crate::state::StoredEvent;

/// One install's durations, seconds per phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Install {
    pub hostname: String,
    pub installed: String,
    /// `(phase or span name, seconds)` in the order of the run.
    pub spans: Vec<(String, f64)>,
}

/// The distribution of one span over the installs that had it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub name: String,
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    pub installs: Vec<Install>,
    pub spans: Vec<Spread>,
}

/// Milliseconds since the epoch of bootsvc's own timestamps (`2026-11-21T18:03:21.123Z`).
pub fn parse_time(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &s[19..];
    let ms = match rest.strip_prefix('.') {
        Some(f) => {
            let digits: String = f.chars().take_while(|c| c.is_ascii_digit()).collect();
            let mut v: String = digits.chars().take(3).collect();
            while v.len() < 3 {
                v.push('0');
            }
            if !f[digits.len()..].eq_ignore_ascii_case("z") {
                return None;
            }
            v.parse::<i64>().ok()?
        }
        None if rest.eq_ignore_ascii_case("z") => 0,
        None => return None,
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days-from-civil (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t = ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms;
    u64::try_from(t).ok()
}

/// The durations of the last install in `events` (oldest first), if one reached `installed`.
pub fn last_install(hostname: &str, events: &[StoredEvent]) -> Option<Install> {
    let done = events.iter().rposition(|e| e.event.phase == Phase::Installed)?;
    let run = events[done].event.run_id.clone();
    let ofrun = |e: &&StoredEvent| run.is_none() || e.event.run_id == run;
    // The run's first event of each phase, in the order they came.
    let mut firsts: Vec<(Phase, u64)> = Vec::new();
    for e in events[..=done].iter().filter(ofrun) {
        let p = e.event.phase;
        if matches!(p, Phase::Power | Phase::Unknown | Phase::FirstBoot) {
            continue;
        }
        if p == Phase::BootedInstaller {
            // A run starts over at its boot (an earlier attempt under the same id is not this one).
            firsts.clear();
        }
        if !firsts.iter().any(|(q, _)| *q == p) {
            firsts.push((p, parse_time(&e.received)?));
        }
    }
    let installed_at = firsts.last().filter(|(p, _)| *p == Phase::Installed)?.1;
    let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1000.0;
    let mut spans: Vec<(String, f64)> =
        firsts.windows(2).map(|w| (w[0].0.as_str().to_string(), secs(w[0].1, w[1].1))).collect();
    if let Some((Phase::BootedInstaller, start)) = firsts.first() {
        spans.push(("install".into(), secs(*start, installed_at)));
    }
    let booted =
        events[done..].iter().find(|e| e.event.phase == Phase::FirstBoot).and_then(|e| parse_time(&e.received));
    if let Some(b) = booted {
        spans.push(("first-boot".into(), secs(installed_at, b)));
    }
    Some(Install { hostname: hostname.to_string(), installed: events[done].received.clone(), spans })
}

/// The spread of every span over `installs` (in the order spans first appear).
pub fn spread(installs: Vec<Install>) -> Timing {
    let mut by: BTreeMap<usize, (String, Vec<f64>)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for i in &installs {
        for (name, s) in &i.spans {
            let idx = match order.iter().position(|n| n == name) {
                Some(i) => i,
                None => {
                    order.push(name.clone());
                    order.len() - 1
                }
            };
            by.entry(idx).or_insert_with(|| (name.clone(), Vec::new())).1.push(*s);
        }
    }
    let spans = by
        .into_values()
        .map(|(name, mut v)| {
            v.sort_by(f64::total_cmp);
            let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
            Spread { name, count: v.len(), min: v[0], p50: q(0.5), p90: q(0.9), max: v[v.len() - 1] }
        })
        .collect();
    Timing { installs, spans }
}

#[cfg(test)]
mod tests {
    use osie_api::Event;

    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_time("2026-11-21T18:03:21.123Z"), Some(1_795_284_201_123));
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(parse_time("2000-02-29T00:00:00.5Z"), Some(951_782_400_500));
        for bad in ["", "2000-02-29", "2000-02-29T00:00:00", "2000-13-01T00:00:00Z", "2000-02-29T00:00:00.1+01:00"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        for ms in [0u64, 1, 999, 86_399_999, 1_795_284_201_123] {
            assert_eq!(parse_time(&osie_api::time::rfc3339(ms)), Some(ms));
        }
    }

    fn ev(n: u64, phase: Phase, run: &str, at_s: u64) -> StoredEvent {
        StoredEvent {
            n,
            received: osie_api::time::rfc3339(1_000_000_000_000 + at_s * 1000),
            source: None,
            event: Event {
                machine: "52:54:00:00:00:01".parse().unwrap(),
                phase,
                progress: None,
                message: String::new(),
                time: String::new(),
                run_id: Some(run.into()),
                seq: Some(n),
                error: vec![],
                hardware: None,
                erase: None,
            },
        }
    }

    #[test]
    fn one_install_in_spans() {
        let evs = vec![
            ev(0, Phase::BootedInstaller, "r0", 0),
            ev(1, Phase::Failed, "r0", 5),
            ev(2, Phase::BootedInstaller, "r1", 100),
            ev(3, Phase::Network, "r1", 101),
            ev(4, Phase::ImageStreaming, "r1", 103),
            ev(5, Phase::ImageStreaming, "r1", 110),
            ev(6, Phase::ImageVerified, "r1", 160),
            ev(7, Phase::Power, "r1", 161),
            ev(8, Phase::Installed, "r1", 170),
            ev(9, Phase::FirstBoot, "r1", 230),
        ];
        let i = last_install("node1", &evs).unwrap();
        let got: Vec<(&str, f64)> = i.spans.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        assert_eq!(
            got,
            [
                ("booted-installer", 1.0),
                ("network", 2.0),
                ("image-streaming", 57.0),
                ("image-verified", 10.0),
                ("install", 70.0),
                ("first-boot", 60.0)
            ]
        );
        assert_eq!(last_install("node1", &evs[..7]), None, "not installed yet");
    }

    #[test]
    fn spread_over_installs() {
        let mk = |s: &[f64]| Install {
            hostname: "h".into(),
            installed: String::new(),
            spans: s.iter().map(|v| ("install".to_string(), *v)).collect(),
        };
        let t = spread(vec![mk(&[30.0]), mk(&[10.0]), mk(&[20.0])]);
        assert_eq!(t.spans, [Spread { name: "install".into(), count: 3, min: 10.0, p50: 20.0, p90: 30.0, max: 30.0 }]);
        assert!(spread(vec![]).spans.is_empty());
    }
}

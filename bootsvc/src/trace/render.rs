//! The boot trace, its diagnosis and the installer's log as text, for the CLI
//! (`bootsvc machines`, `bootsvc machine <mac> trace`, `… log`). Pure.

use super::log::LogView;
use super::{Diagnosis, Health, Step, StoredStep, TraceView};

/// `HH:MM:SS.mmm` (UTC) of a Unix-ms time.
fn clock(ms: u64) -> String {
    let t = osie_api::time::rfc3339(ms);
    t.get(11..23).unwrap_or(&t).to_string()
}

/// A duration in words: `42 s`, `3 min 5 s`, `2 h 4 min`.
pub fn human(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// The `DIAGNOSIS` cell of `bootsvc machines`: the health, where, and the cause when stuck.
pub fn cell(d: Option<&Diagnosis>) -> String {
    let Some(d) = d else { return "-".into() };
    let s = match (&d.health, &d.cause) {
        (Health::Idle, _) => "idle".to_string(),
        (Health::Stuck, Some(c)) => format!("STUCK: {c}"),
        (h, _) => format!("{}: {}", h.as_str(), d.at),
    };
    s.chars().take(120).collect()
}

/// One line of a step: its kind and what happened.
pub fn describe(s: &StoredStep) -> (String, String) {
    match &s.step.step {
        Step::Dhcp(d) => {
            let mut w = format!("{} via {} ({}", d.message, d.via, d.class);
            if let Some(a) = d.arch {
                w += &format!(", arch {a}");
            }
            if let Some(v) = &d.vendor_class {
                w += &format!(", {v}");
            }
            w += ") → ";
            w += d.answer.as_deref().unwrap_or("no answer");
            if let Some(a) = d.address {
                w += &format!(" {a}");
            }
            if let Some(f) = &d.boot_file {
                w += &format!(", boot file {f}");
            }
            if !d.reason.is_empty() {
                w += &format!(" [{}]", d.reason);
            }
            ("dhcp".into(), w)
        }
        Step::Tftp(t) => {
            let size = t.size.map_or_else(|| "?".into(), |s| s.to_string());
            let mut w = format!("{} {}: {} of {size} bytes, block {}", t.file, t.outcome.as_str(), t.bytes, t.block);
            if !t.options.is_empty() {
                w += &format!(" ({})", t.options.join(" "));
            }
            if !t.reason.is_empty() {
                w += &format!(" [{}]", t.reason);
            }
            ("tftp".into(), w)
        }
        Step::Script(x) => ("script".into(), format!("{} (HTTP {})", x.script, x.status)),
        Step::Download(d) => {
            let mut w = format!("{} {} HTTP {} {}", d.artifact.as_str(), d.path, d.status, d.outcome.as_str());
            if let Some(s) = d.size {
                w += &format!(": {} of {s} bytes ({:.0} %)", d.bytes, d.percent());
            }
            if !d.reason.is_empty() {
                w += &format!(" [{}]", d.reason);
            }
            ("download".into(), w)
        }
        Step::Metadata(m) => ("metadata".into(), format!("{} (HTTP {})", m.path, m.status)),
        Step::Event(e) => {
            let pct = e.percent.map(|p| format!(" {p:.0} %")).unwrap_or_default();
            let msg = if e.message.is_empty() { String::new() } else { format!(": {}", e.message) };
            ("event".into(), format!("{}{pct}{msg}", e.phase))
        }
    }
}

/// `bootsvc machine <mac> trace`: the diagnosis, then one line per step.
pub fn trace_text(v: &TraceView) -> String {
    let d = &v.diagnosis;
    let since = d
        .since_ms
        .map(|s| format!(" (since {}, {} ago)", clock(s), human(v.now_ms.saturating_sub(s) / 1000)))
        .unwrap_or_default();
    let mut out = format!("{} ({}): {} at {}{since}\n", v.hostname, v.mac, d.health.as_str(), d.at);
    if let Some(c) = &d.cause {
        out += &format!("  likely cause: {c}\n");
    }
    if v.steps.is_empty() {
        return out + "\nno steps recorded\n";
    }
    out += "\n";
    let first = v.steps[0].step.at_ms;
    let rows: Vec<[String; 5]> = v
        .steps
        .iter()
        .map(|s| {
            let (kind, what) = describe(s);
            let rel = format!("+{:.1}", s.step.at_ms.saturating_sub(first) as f64 / 1000.0);
            let run = s.step.run_id.as_deref().map(|r| r.chars().take(8).collect()).unwrap_or_else(|| "-".into());
            [clock(s.step.at_ms), rel, kind, run, what]
        })
        .collect();
    out + &table(&["TIME (UTC)", "+S", "STEP", "RUN", "WHAT"], &rows)
}

/// `bootsvc machine <mac> log`: every run kept (or the one named), whole.
pub fn log_text(v: &LogView, run: Option<&str>) -> String {
    let mut out = String::new();
    let runs: Vec<_> = v.runs.iter().filter(|r| run.is_none_or(|x| r.run_id.starts_with(x))).collect();
    if runs.is_empty() {
        return "no installer log kept\n".into();
    }
    for r in runs {
        out += &format!(
            "=== run {} ({} to {} UTC, {} lines",
            r.run_id,
            osie_api::time::rfc3339(r.first_ms),
            clock(r.last_ms),
            r.lines.len()
        );
        if r.dropped > 0 {
            out += &format!(", {} dropped by the installer", r.dropped);
        }
        if r.refused > 0 {
            out += &format!(", {} chunks refused: the run's log was full", r.refused);
        }
        if !r.gaps.is_empty() {
            out += &format!(", chunks missing: {:?}", r.gaps);
        }
        out += ") ===\n";
        for l in &r.lines {
            out += &l.text;
            out.push('\n');
        }
    }
    out
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                let pad = w[i].saturating_sub(c.chars().count());
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Artifact, DownloadStep, Outcome, TraceStep};

    #[test]
    fn a_stuck_trace_reads_well() {
        let step = |n, at_ms, step| StoredStep {
            n,
            step: TraceStep { at_ms, mac: "52:54:00:00:00:01".parse().unwrap(), source: None, run_id: None, step },
        };
        let steps = vec![
            step(0, 1_000, Step::Script(crate::trace::ScriptStep { script: "installer".into(), status: 200 })),
            step(
                1,
                1_500,
                Step::Download(DownloadStep {
                    artifact: Artifact::Kernel,
                    path: "vmlinuz".into(),
                    status: 404,
                    bytes: 0,
                    size: None,
                    outcome: Outcome::Refused,
                    reason: "not found".into(),
                }),
            ),
        ];
        let diagnosis = crate::trace::diagnose::diagnose(&steps, 61_500, &Default::default());
        let v = TraceView {
            hostname: "node1".into(),
            mac: "52:54:00:00:00:01".parse().unwrap(),
            now_ms: 61_500,
            steps,
            diagnosis,
        };
        let t = trace_text(&v);
        assert!(
            t.starts_with(
                "node1 (52:54:00:00:00:01): stuck at kernel vmlinuz refused (since 00:00:01.500, 60 s ago)\n"
            ),
            "{t}"
        );
        assert!(t.contains("  likely cause: kernel vmlinuz answered HTTP 404: not found"), "{t}");
        assert!(t.contains("00:00:01.500  +0.5  download  -    kernel vmlinuz HTTP 404 refused [not found]"), "{t}");
        assert!(cell(Some(&v.diagnosis)).starts_with("STUCK: kernel vmlinuz answered HTTP 404"));
        assert_eq!(cell(None), "-");
    }
}

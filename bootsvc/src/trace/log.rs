//! The installer's console log as bootsvc keeps it: chunks (`osie_api::log::LogChunk`)
//! cleaned of control characters, bounded per run (`trace.log_run_bytes`) and per machine
//! (`trace.log_runs`, the oldest run goes first), and read back whole per run. The bounds
//! are decided here ([`LogMeta::admit`], pure) for both storage implementations.

use serde::{Deserialize, Serialize};

use osie_api::log::{LogChunk, MAX_CHUNK_BYTES, MAX_CHUNK_LINES, MAX_LINE};

/// One chunk as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredChunk {
    pub run_id: String,
    pub seq: u64,
    /// When bootsvc stored it (Unix ms).
    pub at_ms: u64,
    pub lines: Vec<String>,
    /// Lines the installer said it dropped before this chunk.
    #[serde(default)]
    pub dropped: u64,
}

/// The bounds of `[trace]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// Most bytes of text kept per run.
    pub run_bytes: u64,
    /// Most runs kept per machine.
    pub runs: usize,
}

/// What is kept of one run: its bytes, and whether chunks were refused for want of room.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunMeta {
    pub run_id: String,
    pub bytes: u64,
    pub seqs: Vec<u64>,
    /// Chunks refused because the run was full.
    #[serde(default)]
    pub refused: u64,
}

/// Per machine: its runs, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogMeta {
    pub runs: Vec<RunMeta>,
}

/// What to do with a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Store it, and delete the chunks of these runs (evicted: too many runs).
    Store { evict: Vec<String> },
    /// Stored before: acknowledge, change nothing.
    Duplicate,
    /// The run is full: not stored (counted in the run's `refused`); the evictions still
    /// apply (the run was taken in).
    Full { evict: Vec<String> },
}

impl LogMeta {
    /// Decide on a chunk of `bytes` for `run_id`/`seq`, updating the bookkeeping.
    pub fn admit(&mut self, run_id: &str, seq: u64, bytes: u64, b: &LogBounds) -> Admit {
        let mut evict = Vec::new();
        let idx = match self.runs.iter().position(|r| r.run_id == run_id) {
            Some(i) => i,
            None => {
                self.runs.push(RunMeta { run_id: run_id.to_string(), ..Default::default() });
                while self.runs.len() > b.runs.max(1) {
                    evict.push(self.runs.remove(0).run_id);
                }
                self.runs.len() - 1
            }
        };
        let r = &mut self.runs[idx];
        if r.seqs.contains(&seq) {
            return Admit::Duplicate;
        }
        if r.bytes + bytes > b.run_bytes {
            r.refused += 1;
            return Admit::Full { evict };
        }
        r.bytes += bytes;
        r.seqs.push(seq);
        Admit::Store { evict }
    }
}

/// What became of a chunk in storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutcome {
    Stored,
    /// Stored before (same run and `seq`).
    Duplicate,
    /// The run's log is full: not stored.
    Full,
}

/// Why a chunk is refused before storage (400 with this text).
pub fn check(c: &LogChunk) -> Result<(), String> {
    if c.run_id.is_empty() || c.run_id.len() > 64 || !c.run_id.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
    {
        return Err("run_id: 1 to 64 letters, digits or '-'".into());
    }
    if c.lines.len() > MAX_CHUNK_LINES {
        return Err(format!("{} lines in one chunk; at most {MAX_CHUNK_LINES}", c.lines.len()));
    }
    let bytes: usize = c.lines.iter().map(String::len).sum();
    if bytes > MAX_CHUNK_BYTES {
        return Err(format!("{bytes} bytes in one chunk; at most {MAX_CHUNK_BYTES}"));
    }
    Ok(())
}

/// The chunk's lines made safe to keep and print (control characters escaped, tabs kept,
/// each line at most `MAX_LINE` characters), stamped `now`.
pub fn stored(c: &LogChunk, now_ms: u64) -> StoredChunk {
    let lines = c.lines.iter().map(|l| clean_line(l)).collect();
    StoredChunk { run_id: c.run_id.clone(), seq: c.seq, at_ms: now_ms, lines, dropped: c.dropped }
}

fn clean_line(l: &str) -> String {
    let l = l.strip_suffix('\n').unwrap_or(l);
    let mut out = String::with_capacity(l.len());
    for (i, ch) in l.chars().enumerate() {
        if i >= MAX_LINE {
            out.push('…');
            break;
        }
        match ch {
            '\t' => out.push(ch),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

/// Text bytes of a stored chunk (what the bounds count).
pub fn size(c: &StoredChunk) -> u64 {
    c.lines.iter().map(|l| l.len() as u64 + 1).sum()
}

/// One run's log, whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRun {
    pub run_id: String,
    pub first_ms: u64,
    pub last_ms: u64,
    pub lines: Vec<LogLine>,
    /// Lines the installer dropped (bootsvc too slow to take them).
    pub dropped: u64,
    /// Chunks bootsvc refused because the run's log was full.
    #[serde(default)]
    pub refused: u64,
    /// Chunk numbers missing between those kept (lost, or still being retried).
    #[serde(default)]
    pub gaps: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// When bootsvc received it (Unix ms).
    pub at_ms: u64,
    pub text: String,
}

/// `GET /admin/machines/{mac}/log`: the runs kept, oldest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LogView {
    pub runs: Vec<LogRun>,
}

/// Put stored chunks together, per run in the order of `meta` (runs unknown to it last),
/// chunks by `seq`.
pub fn view(mut chunks: Vec<StoredChunk>, meta: &LogMeta) -> LogView {
    chunks.sort_by(|a, b| (&a.run_id, a.seq).cmp(&(&b.run_id, b.seq)));
    let mut runs: Vec<LogRun> = Vec::new();
    for c in chunks {
        if runs.last().map(|r| r.run_id != c.run_id).unwrap_or(true) {
            runs.push(LogRun {
                run_id: c.run_id.clone(),
                first_ms: c.at_ms,
                last_ms: c.at_ms,
                lines: Vec::new(),
                dropped: 0,
                refused: 0,
                gaps: Vec::new(),
            });
        }
        let r = runs.last_mut().expect("pushed above");
        r.first_ms = r.first_ms.min(c.at_ms);
        r.last_ms = r.last_ms.max(c.at_ms);
        r.dropped += c.dropped;
        r.lines.extend(c.lines.into_iter().map(|text| LogLine { at_ms: c.at_ms, text }));
    }
    for r in &mut runs {
        if let Some(m) = meta.runs.iter().find(|m| m.run_id == r.run_id) {
            r.refused = m.refused;
            let mut seqs = m.seqs.clone();
            seqs.sort_unstable();
            if let Some(&max) = seqs.last() {
                r.gaps = (0..max).filter(|s| seqs.binary_search(s).is_err()).take(100).collect();
            }
        }
    }
    let pos = |id: &str| meta.runs.iter().position(|m| m.run_id == id).unwrap_or(usize::MAX);
    runs.sort_by_key(|r| (pos(&r.run_id), r.first_ms));
    LogView { runs }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: LogBounds = LogBounds { run_bytes: 100, runs: 2 };

    #[test]
    fn runs_are_bounded_oldest_out_first() {
        let mut m = LogMeta::default();
        assert_eq!(m.admit("a", 0, 10, &B), Admit::Store { evict: vec![] });
        assert_eq!(m.admit("b", 0, 10, &B), Admit::Store { evict: vec![] });
        assert_eq!(m.admit("c", 0, 10, &B), Admit::Store { evict: vec!["a".into()] });
        assert_eq!(m.runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    }

    #[test]
    fn a_run_is_bounded_and_refusals_counted() {
        let mut m = LogMeta::default();
        assert_eq!(m.admit("a", 0, 60, &B), Admit::Store { evict: vec![] });
        assert_eq!(m.admit("a", 0, 60, &B), Admit::Duplicate, "a re-sent chunk is stored once");
        assert_eq!(m.admit("a", 1, 60, &B), Admit::Full { evict: vec![] });
        assert_eq!(m.admit("a", 2, 40, &B), Admit::Store { evict: vec![] }, "what still fits is kept");
        assert_eq!(m.admit("a", 3, 1, &B), Admit::Full { evict: vec![] });
        assert_eq!((m.runs[0].bytes, m.runs[0].refused), (100, 2));
    }

    #[test]
    fn control_characters_are_escaped_and_lines_cut() {
        let c = LogChunk {
            machine: "52:54:00:00:00:01".parse().unwrap(),
            run_id: "ab12".into(),
            seq: 0,
            lines: vec!["ok\tx\n".into(), "\x1b]0;pwned\x07<script>".into(), "y".repeat(MAX_LINE + 5)],
            dropped: 0,
        };
        let s = stored(&c, 5);
        assert_eq!(s.lines[0], "ok\tx");
        assert_eq!(s.lines[1], "\\u{1b}]0;pwned\\u{7}<script>");
        assert_eq!(s.lines[2].chars().count(), MAX_LINE + 1);
    }

    #[test]
    fn chunks_are_checked() {
        let mut c = LogChunk {
            machine: "52:54:00:00:00:01".parse().unwrap(),
            run_id: "ab12".into(),
            seq: 0,
            lines: vec![],
            dropped: 0,
        };
        assert!(check(&c).is_ok());
        c.run_id = "../x".into();
        assert!(check(&c).is_err());
        c.run_id = "a".into();
        c.lines = vec!["x".into(); MAX_CHUNK_LINES + 1];
        assert!(check(&c).unwrap_err().contains("lines"));
        c.lines = vec!["x".repeat(MAX_CHUNK_BYTES / 2 + 1); 2];
        assert!(check(&c).unwrap_err().contains("bytes"));
    }

    #[test]
    fn view_puts_runs_together_in_order_with_gaps() {
        let ch = |run: &str, seq, line: &str| StoredChunk {
            run_id: run.into(),
            seq,
            at_ms: seq,
            lines: vec![line.into()],
            dropped: 0,
        };
        let mut m = LogMeta::default();
        for (r, s) in [("z", 0), ("z", 2), ("a", 0)] {
            m.admit(r, s, 1, &LogBounds { run_bytes: 1000, runs: 5 });
        }
        let v = view(vec![ch("a", 0, "a0"), ch("z", 2, "z2"), ch("z", 0, "z0")], &m);
        assert_eq!(v.runs.len(), 2);
        assert_eq!(v.runs[0].run_id, "z", "runs in the order they started");
        assert_eq!(v.runs[0].lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["z0", "z2"]);
        assert_eq!(v.runs[0].gaps, [1]);
    }
}

//! One suite per item of `BENCHMARKS.md`. Each runs osie and its baselines side by side,
//! the same number of runs each, and writes `build/bench/<item>.json`: a list of
//! [`Record`]s (one per case and tool, every run's figures, the exact commands, evidence of
//! what limits the figure). `report` turns them into the Markdown.

pub mod dhcp;
pub mod e2e;
pub mod http;
pub mod image;
pub mod qcow2;
pub mod size;
pub mod tftp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::stats;

/// The items, in the order they run and appear in the report.
pub const ITEMS: [&str; 7] = ["dhcp", "tftp", "http", "image", "qcow2", "e2e", "size"];

/// Where things are and how hard to try.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The workspace root.
    pub root: PathBuf,
    /// `build/bench`: results.
    pub out: PathBuf,
    /// `build/bench/work`: configurations, logs, scratch files (kept for inspection).
    pub work: PathBuf,
    pub bootsvc: PathBuf,
    pub installer: PathBuf,
    pub coreos_installer: PathBuf,
    /// Runs per figure (the report gives medians).
    pub runs: usize,
    /// Smoke mode: tiny sizes, short durations, so the harness is exercised in seconds.
    pub quick: bool,
    /// Before each item, wait for the 1-minute load average to drop below this…
    pub max_load: Option<f64>,
    /// …at most this long.
    pub max_wait: std::time::Duration,
    /// Only the cases whose name contains this (investigations; the report notes it).
    pub only: Option<String>,
}

impl Ctx {
    /// Whether the case named `case` is to run.
    pub fn wants(&self, case: &str) -> bool {
        self.only.as_deref().is_none_or(|o| case.contains(o))
    }

    /// A scratch directory for one suite, emptied first.
    pub fn scratch(&self, name: &str) -> Result<PathBuf> {
        let d = self.work.join(name);
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("emptying {}", d.display()))?;
        }
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }
}

/// One tool in one case: every run's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// `dhcp`, `tftp`, `http`, `image`, `e2e`, `size`.
    pub item: String,
    /// E.g. `window 64`, `50 MB × 10 clients, atftp windowsize 16`, `(b) 1 GiB random`.
    pub case: String,
    /// `bootsvc`, `dnsmasq`, `kea-dhcp4`, `installer write-image`, `curl | zstd | dd`…
    pub tool: String,
    /// True for osie's own tools: ratios are osie / baseline.
    pub osie: bool,
    /// Figures of each run, by name (`exchanges_per_sec`, `p99_us`, `mb_per_sec`,
    /// `server_cpu_s`…).
    pub runs: Vec<BTreeMap<String, f64>>,
    /// The exact commands behind the figures (server, client).
    pub commands: Vec<String>,
    /// Evidence of what limits the figure: system call counts, CPU use, granted options.
    pub evidence: Vec<String>,
    /// A run that failed, and why (the record is kept so the report says so).
    pub error: Option<String>,
}

impl Record {
    pub fn new(item: &str, case: &str, tool: &str, osie: bool) -> Record {
        Record { item: item.into(), case: case.into(), tool: tool.into(), osie, ..Record::default() }
    }

    /// The median of one figure over the runs.
    pub fn median(&self, key: &str) -> Option<f64> {
        let v: Vec<f64> = self.runs.iter().filter_map(|r| r.get(key).copied()).collect();
        stats::median(&v)
    }
}

/// Results of one suite, with the machine's load while it ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SuiteResult {
    pub item: String,
    pub load_start: f64,
    pub load_end: f64,
    pub seconds: f64,
    pub quick: bool,
    pub runs: usize,
    pub records: Vec<Record>,
    /// Free text the report prints under the table (setup details).
    pub notes: Vec<String>,
}

pub fn write(out: &Path, r: &SuiteResult) -> Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let p = out.join(format!("{}.json", r.item));
    std::fs::write(&p, serde_json::to_string_pretty(r)?).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

pub fn read(out: &Path, item: &str) -> Result<Option<SuiteResult>> {
    let p = out.join(format!("{item}.json"));
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?))
}

/// Run `f` as the suite `item`: time it, note the load before and after, write the JSON.
pub fn run_suite(ctx: &Ctx, item: &str, f: impl FnOnce(&Ctx, &mut SuiteResult) -> Result<()>) -> Result<SuiteResult> {
    if let Some(t) = ctx.max_load {
        crate::machine::wait_for_quiet(t, ctx.max_wait);
    }
    let start = std::time::Instant::now();
    let mut r = SuiteResult {
        item: item.into(),
        load_start: crate::machine::load_average(),
        quick: ctx.quick,
        runs: ctx.runs,
        ..SuiteResult::default()
    };
    eprintln!("== {item} (load {:.2})", r.load_start);
    f(ctx, &mut r).with_context(|| format!("benchmark {item}"))?;
    r.load_end = crate::machine::load_average();
    r.seconds = start.elapsed().as_secs_f64();
    let p = write(&ctx.out, &r)?;
    eprintln!("== {item}: {:.0} s, results in {}", r.seconds, p.display());
    Ok(r)
}

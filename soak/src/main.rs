//! `osie-soak`: see the library docs and `scripts/soak`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "osie-soak", about = "Installs under faults against bootsvc; every disk and event checked.")]
struct Args {
    /// Number of installs (one machine each, at most 240).
    #[arg(long, default_value_t = 200)]
    installs: usize,
    /// Installs running at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seed of every random choice (faults, image bytes).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No proxy faults, no slow links, no kills: the baseline.
    #[arg(long)]
    no_faults: bool,
    /// Kill bootsvc (SIGKILL) about every this many seconds (0: never).
    #[arg(long, default_value_t = 20.0)]
    kill_every: f64,
    /// The installer's --read-timeout, seconds; stalls last longer than this.
    #[arg(long, default_value_t = 3.0)]
    read_timeout: f64,
    #[arg(long, default_value = "target/release/bootsvc")]
    bootsvc: PathBuf,
    #[arg(long, default_value = "target/release/installer")]
    installer: PathBuf,
    /// Working directory (image, site, loop device files, logs); created, kept.
    #[arg(long)]
    work: PathBuf,
    /// Where to write every install's outcome and the summary (JSON).
    #[arg(long)]
    report: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("osie-soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(a: Args) -> Result<bool> {
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let opts = osie_soak::run::Options {
        installs: a.installs,
        concurrency: a.concurrency,
        seed: a.seed,
        faults: !a.no_faults,
        kill_every: (!a.no_faults && a.kill_every > 0.0).then(|| Duration::from_secs_f64(a.kill_every)),
        bootsvc: abs(a.bootsvc),
        installer: abs(a.installer),
        work: abs(a.work),
        read_timeout: a.read_timeout,
    };
    let (outcomes, summary) = osie_soak::run::run(&opts)?;
    if let Some(r) = &a.report {
        let v = serde_json::json!({ "summary": summary, "installs": outcomes });
        std::fs::write(r, serde_json::to_string_pretty(&v)?).with_context(|| format!("writing {}", r.display()))?;
    }
    for o in outcomes.iter().filter(|o| !o.ok()) {
        eprintln!("install {} ({}): NOT OK: {}", o.machine, o.mac, serde_json::to_string(o)?);
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(summary.clean())
}

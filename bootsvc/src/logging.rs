//! Logs through `tracing`, to stderr, as text or JSON lines (`log.format`). The filter is
//! `log.level` unless `RUST_LOG` is set, which wins (for a quick `RUST_LOG=debug`).

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat, level: &str) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).with_context(|| format!("RUST_LOG={v:?}"))?,
        _ => EnvFilter::try_new(level).with_context(|| format!("log.level {level:?}"))?,
    };
    // Colours only on a terminal: a log file or the journal gets plain text to grep.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let r = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().flatten_event(true).try_init(),
    };
    r.map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}

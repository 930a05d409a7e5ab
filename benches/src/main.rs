//! `osie-bench`: run the benchmark suites and write `BENCHMARKS.md` (`scripts/bench` is the
//! front door), or drive a server by hand with one of the load generators.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "osie's benchmarks and load generators")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run benchmark suites (as root), write build/bench/<item>.json, regenerate BENCHMARKS.md.
    Run(osie_bench::cli::RunArgs),
    /// Regenerate BENCHMARKS.md from the JSON results in build/bench/.
    Report {
        /// Workspace root.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Results directory (default <root>/build/bench).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Where to write (default <root>/BENCHMARKS.md).
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// DHCP load: many machines' DISCOVER → OFFER → REQUEST → ACK; prints a JSON report.
    DhcpLoad(osie_bench::cli::DhcpLoadArgs),
    /// TFTP load: concurrent read transfers of one file; prints a JSON report.
    TftpLoad(osie_bench::cli::TftpLoadArgs),
    /// HTTP load: concurrent GETs of one path; prints a JSON report.
    HttpLoad(osie_bench::cli::HttpLoadArgs),
    /// Machines booting at once: DHCP, TFTP boot file, HTTP downloads; prints a JSON report.
    Storm(osie_bench::cli::StormArgs),
    /// bootsvc on PostgreSQL beside its embedded store (as root): leases, DHCP exchanges,
    /// events; prints a Markdown table with the ratios.
    Fleet(osie_bench::fleet::FleetArgs),
    /// Machines netbooting at once through one bootsvc on PostgreSQL, then two on the same
    /// database, each under its own CPU quota (as root); prints a Markdown table.
    FleetStorm(osie_bench::fleet_storm::FleetStormArgs),
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run(a) => osie_bench::cli::run(a),
        Cmd::Report { root, results, to } => {
            let results = results.unwrap_or_else(|| root.join("build/bench"));
            let to = to.unwrap_or_else(|| root.join("BENCHMARKS.md"));
            osie_bench::report::write_from(&root, &results, &to).map(|p| eprintln!("wrote {}", p.display()))
        }
        Cmd::DhcpLoad(a) => osie_bench::cli::dhcp_load(a),
        Cmd::TftpLoad(a) => osie_bench::cli::tftp_load(a),
        Cmd::HttpLoad(a) => osie_bench::cli::http_load(a),
        Cmd::Storm(a) => osie_bench::cli::storm(a),
        Cmd::Fleet(a) => osie_bench::fleet::run(a),
        Cmd::FleetStorm(a) => osie_bench::fleet_storm::run(a),
    }
}

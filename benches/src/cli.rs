//! The `osie-bench` subcommands: `run` (the suites), and the load generators by hand.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use osie_testkit::dhcp::{packet, ClientConfig, DhcpClient, Identity};

use crate::dhcp::{self, LoadSpec};
use crate::suites::{self, Ctx, ITEMS};

#[derive(Args)]
pub struct RunArgs {
    /// Items to run: dhcp, tftp, http, image, qcow2, e2e, size, or all.
    #[arg(required = true)]
    items: Vec<String>,
    /// Smoke mode: tiny inputs, one short run each (exercises the harness in seconds).
    #[arg(long)]
    quick: bool,
    /// Runs per figure (default 5; 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Workspace root.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Results directory (default <root>/build/bench).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    bootsvc: Option<PathBuf>,
    #[arg(long)]
    installer: Option<PathBuf>,
    #[arg(long)]
    coreos_installer: Option<PathBuf>,
    /// Do not regenerate BENCHMARKS.md afterwards.
    #[arg(long)]
    no_report: bool,
    /// Before each item, wait until the 1-minute load average is below this (the machine
    /// is shared); 0: do not wait. Default 1.5 (no wait with --quick).
    #[arg(long)]
    max_load: Option<f64>,
    /// Wait at most this many minutes per item, then run anyway (the report shows the load).
    #[arg(long, default_value_t = 60)]
    max_wait_minutes: u64,
    /// Only cases whose name contains this, e.g. "50MB × 1," or "(b)" (for investigating;
    /// results go to build/bench/partial unless --out is given).
    #[arg(long)]
    only: Option<String>,
}

pub fn run(a: RunArgs) -> Result<()> {
    let root = std::fs::canonicalize(&a.root).with_context(|| format!("workspace root {}", a.root.display()))?;
    // Smoke and partial runs keep their results apart from the full run's.
    let partial = a.quick || a.only.is_some();
    let out = a.out.unwrap_or_else(|| {
        root.join(match (a.quick, a.only.is_some()) {
            (true, _) => "build/bench/quick",
            (false, true) => "build/bench/partial",
            _ => "build/bench",
        })
    });
    // Configurations written for the servers name paths in it: make it absolute.
    let out = std::path::absolute(&out).with_context(|| format!("results directory {}", out.display()))?;
    let ctx = Ctx {
        work: out.join("work"),
        out,
        bootsvc: a.bootsvc.unwrap_or_else(|| root.join("target/release/bootsvc")),
        installer: a
            .installer
            .unwrap_or_else(|| root.join("target/x86_64-unknown-linux-musl/release-installer/installer")),
        coreos_installer: a
            .coreos_installer
            .unwrap_or_else(|| root.join("build/tools/coreos-installer/bin/coreos-installer")),
        runs: a.runs.unwrap_or(if a.quick { 1 } else { 5 }).max(1),
        quick: a.quick,
        max_load: a.max_load.or(if a.quick { None } else { Some(1.5) }).filter(|l| *l > 0.0),
        max_wait: Duration::from_secs(a.max_wait_minutes * 60),
        only: a.only.clone(),
        root,
    };
    let items: Vec<&str> = if a.items.iter().any(|i| i == "all") {
        ITEMS.to_vec()
    } else {
        for i in &a.items {
            if !ITEMS.contains(&i.as_str()) {
                bail!("unknown item {i:?}: expected one of {} or all", ITEMS.join(", "));
            }
        }
        ITEMS.iter().copied().filter(|i| a.items.iter().any(|x| x == i)).collect()
    };
    let machine = crate::machine::describe(&ctx.work);
    let mut failed = Vec::new();
    for item in &items {
        let r = suites::run_suite(&ctx, item, |ctx, out| match *item {
            "dhcp" => suites::dhcp::run(ctx, out),
            "tftp" => suites::tftp::run(ctx, out),
            "http" => suites::http::run(ctx, out),
            "image" => suites::image::run(ctx, out),
            "qcow2" => suites::qcow2::run(ctx, out),
            "e2e" => suites::e2e::run(ctx, out),
            "size" => suites::size::run(ctx, out),
            _ => unreachable!("checked above"),
        });
        if let Err(e) = r {
            eprintln!("!! {item} failed: {e:#}");
            failed.push(format!("{item}: {e:#}"));
        }
    }
    let mut m = machine;
    m.load_end = crate::machine::load_average();
    m.load_threshold = ctx.max_load;
    m.load_wait_minutes = ctx.max_wait.as_secs() / 60;
    m.versions = crate::report::tool_versions(&ctx);
    std::fs::write(ctx.out.join("machine.json"), serde_json::to_string_pretty(&m)?)?;
    if !a.no_report {
        // Smoke and partial runs report next to their results, never over the repository's.
        let p = if partial {
            crate::report::write_from(&ctx.root, &ctx.out, &ctx.out.join("BENCHMARKS.md"))?
        } else {
            crate::report::write(&ctx.root)?
        };
        eprintln!("wrote {}", p.display());
    }
    if !failed.is_empty() {
        bail!("{} item(s) failed:\n{}", failed.len(), failed.join("\n"));
    }
    Ok(())
}

#[derive(Args)]
pub struct DhcpLoadArgs {
    /// Broadcast on this interface, as machines on the segment do (run inside the clients'
    /// network namespace).
    #[arg(long, conflicts_with = "relay")]
    interface: Option<String>,
    /// Act as a relay agent at this address (must be local) instead; needs --server.
    #[arg(long, requires = "server")]
    relay: Option<Ipv4Addr>,
    /// The DHCP server (relay mode).
    #[arg(long)]
    server: Option<Ipv4Addr>,
    /// Distinct machines (MACs 02:0b:00:00:00:00 on).
    #[arg(long, default_value_t = 250)]
    machines: u32,
    /// Exchanges in flight at once.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Counted duration.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Uncounted warm-up.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop after this many exchanges.
    #[arg(long)]
    max_exchanges: Option<u64>,
    /// Option 93 (0 BIOS, 7 UEFI x64…).
    #[arg(long, default_value_t = 0)]
    arch: u16,
    /// Send option 77 "iPXE", as iPXE's own DHCP does.
    #[arg(long)]
    ipxe: bool,
    /// Seconds before a message is sent again.
    #[arg(long, default_value_t = 1.0)]
    timeout: f64,
}

pub fn dhcp_load(a: DhcpLoadArgs) -> Result<()> {
    let mut cfg = match (a.interface, a.relay, a.server) {
        (Some(i), None, _) => ClientConfig::broadcast(&i),
        (None, Some(g), Some(s)) => ClientConfig::relay(g, s),
        _ => bail!("give --interface (broadcast) or --relay with --server"),
    };
    cfg.timeout = Duration::from_secs_f64(a.timeout);
    let clients = (0..a.machines).map(|n| Identity { mac: packet::nth_mac(n), arch: a.arch, ipxe: a.ipxe }).collect();
    let spec = LoadSpec {
        clients,
        window: a.window,
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.seconds),
        max_exchanges: a.max_exchanges,
        expect: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(async move {
        let client = Arc::new(DhcpClient::bind(cfg)?);
        anyhow::Ok(dhcp::load::run(client, spec).await)
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[derive(Args)]
pub struct TftpLoadArgs {
    #[arg(long)]
    server: Ipv4Addr,
    #[arg(long)]
    file: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Transfers per client, one after another.
    #[arg(long, default_value_t = 1)]
    each: usize,
    #[arg(long, default_value_t = 1468)]
    blksize: u16,
    #[arg(long, default_value_t = 1)]
    windowsize: u16,
}

pub fn tftp_load(a: TftpLoadArgs) -> Result<()> {
    let opts = osie_testkit::tftp::FetchOptions {
        blksize: Some(a.blksize),
        windowsize: Some(a.windowsize),
        ..osie_testkit::tftp::FetchOptions::default()
    };
    let server = SocketAddrV4::new(a.server, 69);
    let file: Arc<str> = a.file.into();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(crate::fanout::run(a.clients, a.each, move |_| {
        let (opts, file) = (opts.clone(), file.clone());
        async move { osie_testkit::tftp::fetch(server, &file, &opts, None).await.map(|f| f.bytes) }
    }));
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[derive(Args)]
pub struct HttpLoadArgs {
    /// ip:port
    #[arg(long)]
    server: SocketAddrV4,
    #[arg(long)]
    path: String,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 1)]
    each: usize,
}

pub fn http_load(a: HttpLoadArgs) -> Result<()> {
    let path: Arc<str> = a.path.into();
    let server = a.server;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(crate::fanout::run(a.clients, a.each, move |_| {
        let path = path.clone();
        async move {
            osie_testkit::http::get(server, &path, None, &[], Duration::from_secs(600), None).await.map(|g| g.bytes)
        }
    }));
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[derive(Args)]
pub struct StormArgs {
    /// The machines' interface (run inside the clients' network namespace).
    #[arg(long)]
    interface: String,
    #[arg(long, default_value_t = 500)]
    machines: u32,
    /// Machines booting at the same time.
    #[arg(long, default_value_t = 500)]
    window: usize,
    /// Option 93 (0 BIOS → undionly.kpxe over TFTP, 7 UEFI → ipxe.efi).
    #[arg(long, default_value_t = 0)]
    arch: u16,
    /// Boot as iPXE (option 77): DHCP answers with the script's URL.
    #[arg(long)]
    ipxe: bool,
    /// Skip fetching the DHCP boot file over TFTP.
    #[arg(long)]
    no_tftp: bool,
    #[arg(long, default_value_t = 1468)]
    blksize: u16,
    #[arg(long, default_value_t = 1)]
    windowsize: u16,
    /// HTTP server (ip:port) for --http-path.
    #[arg(long)]
    http_server: Option<SocketAddrV4>,
    /// Paths to GET after TFTP, in order; `{mac}` is the machine's MAC. Repeatable.
    #[arg(long)]
    http_path: Vec<String>,
    /// Send TFTP and HTTP from each machine's leased address (put them on the interface first).
    #[arg(long)]
    from_lease: bool,
    /// DHCP: seconds before a message is sent again, and how many times.
    #[arg(long, default_value_t = 1.0)]
    timeout: f64,
    #[arg(long, default_value_t = 4)]
    retries: u32,
}

pub fn storm(a: StormArgs) -> Result<()> {
    let mut cfg = ClientConfig::broadcast(&a.interface);
    cfg.timeout = Duration::from_secs_f64(a.timeout);
    cfg.retries = a.retries;
    let spec = crate::storm::StormSpec {
        machines: (0..a.machines).map(|n| Identity { mac: packet::nth_mac(n), arch: a.arch, ipxe: a.ipxe }).collect(),
        window: a.window,
        tftp: (!a.no_tftp).then(|| osie_testkit::tftp::FetchOptions {
            blksize: Some(a.blksize),
            windowsize: Some(a.windowsize),
            ..osie_testkit::tftp::FetchOptions::default()
        }),
        http_server: a.http_server,
        http_paths: a.http_path,
        from_lease: a.from_lease,
        http_timeout: Duration::from_secs(600),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = rt.block_on(async move {
        let client = Arc::new(DhcpClient::bind(cfg)?);
        anyhow::Ok(crate::storm::run(client, spec).await)
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.failed > 0 {
        bail!("{} of {} machines did not boot: {:?}", report.failed, report.machines, report.errors);
    }
    Ok(())
}

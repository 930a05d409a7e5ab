//! `osie-bench fleet`: bootsvc with its machines, leases and events in PostgreSQL beside the
//! same bootsvc on its embedded store, one after the other in one run, on the same lab: new
//! machines leased from the pool, known machines' DHCP exchanges, events stored. Prints a
//! Markdown table of medians and the ratio PostgreSQL ÷ embedded (`BENCHMARKS.md`, section
//! "Fleet").
//!
//! PostgreSQL is a throwaway cluster from the test kit with fsync on (as a production server
//! runs), on a Unix socket on the same machine; a fresh database per run, so every run
//! leases the pool from empty.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use osie_testkit::dhcp::{packet, Identity};
use osie_testkit::postgres::{Options, Postgres};

use crate::dhcp::LoadSpec;
use crate::servers::{self, BootsvcOptions, Lab, Reservation, HTTP_PORT, SERVER_IP};
use crate::suites::dhcp::generate;

/// Machines with fixed addresses that post events (192.0.2.3 on).
const EVENT_MACHINES: u32 = 64;
/// Machines without one, leased from the pool (192.0.2.100–.254).
const POOL_MACHINES: u32 = 150;
/// Events in flight at once.
const EVENT_THREADS: u32 = 16;
const WINDOW: usize = 64;

#[derive(Args)]
pub struct FleetArgs {
    /// The bootsvc binary to measure.
    #[arg(long, default_value = "target/release/bootsvc")]
    bootsvc: PathBuf,
    /// Runs of each case and store (the table gives medians).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds each counted load runs.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Scratch directory (configurations, logs).
    #[arg(long, default_value = "build/bench/work/fleet")]
    work: PathBuf,
}

const STORES: [&str; 2] = ["embedded", "postgresql"];
const CASES: [(&str, &str); 3] = [
    ("new machines leased from the pool (150, 64 at once)", "leases/s"),
    ("known machines' DHCP exchanges (150 pool machines, 64 at once)", "exchanges/s"),
    ("events stored (64 machines, 16 in flight)", "events/s"),
];

pub fn run(a: FleetArgs) -> Result<()> {
    let bin = std::fs::canonicalize(&a.bootsvc).with_context(|| format!("bootsvc binary {}", a.bootsvc.display()))?;
    let work = std::path::absolute(&a.work).with_context(|| format!("{}", a.work.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    let lab = Lab::new(&work)?;
    let events_from: Vec<Ipv4Addr> =
        (0..EVENT_MACHINES).map(|i| Ipv4Addr::from(u32::from(SERVER_IP) + 2 + i)).collect();
    for ip in &events_from {
        lab.pair.client.ip(&["addr", "add", &format!("{ip}/32"), "dev", &lab.pair.client_if])?;
    }
    let reservations: Vec<Reservation> = servers::reservations(EVENT_MACHINES)?;
    let pooled: Vec<Identity> =
        (0..POOL_MACHINES).map(|n| Identity { mac: packet::nth_mac(1000 + n), arch: 0, ipxe: false }).collect();
    let pg = Postgres::start_with("osie-bench-fleet", Options { durable: true })
        .context("PostgreSQL's server programs are missing (scripts/setup installs them)")?;
    let seconds = Duration::from_secs_f64(a.seconds);
    let mut figures: BTreeMap<(usize, &str), Vec<f64>> = BTreeMap::new();
    for run in 0..a.runs {
        for store in STORES {
            let database = if store == "postgresql" {
                let db = format!("fleet{run}");
                pg.create_database(&db)?;
                Some(pg.url(&db))
            } else {
                None
            };
            let opts = BootsvcOptions {
                reservations: reservations.clone(),
                pool_machines: pooled.iter().map(|i| packet::mac_string(&i.mac)).collect(),
                pool: Some((Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 254))),
                database,
                ..BootsvcOptions::default()
            };
            let mut srv = lab.bootsvc(&bin, &opts)?;
            ready(&lab).with_context(|| format!("bootsvc ({store}) did not answer: {}", srv.log_tail(20)))?;

            let spec = |duration, max| LoadSpec {
                clients: pooled.clone(),
                window: WINDOW,
                warmup: Duration::ZERO,
                duration,
                max_exchanges: max,
                expect: Vec::new(),
            };
            let (first, _) = generate(&lab, spec(Duration::from_secs(120), Some(u64::from(POOL_MACHINES))))?;
            if first.exchanges < u64::from(POOL_MACHINES) {
                bail!("{store}: {} of {POOL_MACHINES} machines leased: {:?}", first.exchanges, first.failures);
            }
            let (known, _) = generate(&lab, spec(seconds, None))?;
            let events = post_events(&lab, &events_from, &reservations, run, seconds)?;
            srv.check_running()?;
            srv.stop();
            servers::kill_all(&lab.pair.server);
            let got = [first.exchanges as f64 / first.seconds, known.exchanges_per_sec, events];
            eprintln!("run {run}, {store}: {:.0} leases/s, {:.0} exchanges/s, {:.0} events/s", got[0], got[1], got[2]);
            for (case, v) in got.into_iter().enumerate() {
                figures.entry((case, store)).or_default().push(v);
            }
        }
    }
    println!("| case | embedded (redb) | PostgreSQL | PostgreSQL ÷ embedded |");
    println!("|---|---:|---:|---:|");
    for (case, (name, unit)) in CASES.iter().enumerate() {
        let e = median(&figures[&(case, "embedded")]);
        let p = median(&figures[&(case, "postgresql")]);
        println!("| {name} | {e:.0} {unit} | {p:.0} {unit} | {:.2}× |", p / e);
    }
    println!(
        "\nMedians of {} runs of {:.0} s each (the lease case: until all {POOL_MACHINES} have one); every run's \
         figures: {figures:?}",
        a.runs, a.seconds
    );
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One DHCP exchange of the first reserved machine, retried until bootsvc answers.
fn ready(lab: &Lab) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spec = LoadSpec {
            clients: vec![Identity { mac: packet::nth_mac(0), arch: 0, ipxe: false }],
            window: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(2),
            max_exchanges: Some(1),
            expect: Vec::new(),
        };
        if generate(lab, spec)?.0.exchanges == 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no DHCP exchange within 30 s");
        }
    }
}

/// Events posted for `seconds` by [`EVENT_THREADS`] threads, each machine from its own
/// address, a new `(run_id, seq)` each: events stored per second.
fn post_events(lab: &Lab, from: &[Ipv4Addr], res: &[Reservation], run: usize, seconds: Duration) -> Result<f64> {
    let machines: Arc<Vec<(Ipv4Addr, String)>> =
        Arc::new(from.iter().copied().zip(res.iter().map(|r| r.mac.clone())).collect());
    let stored = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&stored);
    let started = Instant::now();
    lab.pair
        .client
        .spawn(move || {
            let to = SocketAddrV4::new(SERVER_IP, HTTP_PORT);
            let deadline = Instant::now() + seconds;
            let threads: Vec<_> = (0..EVENT_THREADS as usize)
                .map(|t| {
                    let (machines, stored) = (Arc::clone(&machines), Arc::clone(&counted));
                    std::thread::spawn(move || -> Result<()> {
                        let mine: Vec<&(Ipv4Addr, String)> = machines.iter().skip(t).step_by(EVENT_THREADS as usize).collect();
                        let mut seq = 0u64;
                        while Instant::now() < deadline {
                            for (ip, mac) in &mine {
                                let ev = format!(
                                    r#"{{"machine":"{mac}","phase":"image-streaming","time":"2026-01-01T00:00:00Z","run_id":"bench-{run}","seq":{seq}}}"#
                                );
                                let h = [("Content-Type", "application/json")];
                                let (status, body) = osie_testkit::http::request(*ip, to, "POST", "/events", &h, ev.as_bytes(), Duration::from_secs(30))
                                    .with_context(|| format!("posting an event from {ip}"))?;
                                if status != 200 {
                                    bail!("an event from {ip}: {status} {}", String::from_utf8_lossy(&body));
                                }
                                stored.fetch_add(1, Ordering::Relaxed);
                            }
                            seq += 1;
                        }
                        Ok(())
                    })
                })
                .collect();
            for t in threads {
                t.join().map_err(|_| anyhow::anyhow!("an event thread panicked"))??;
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the event generator panicked"))??;
    Ok(stored.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

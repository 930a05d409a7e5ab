//! Item 2, DHCP: the same reservations in bootsvc, dnsmasq and kea-dhcp4 (memfile; single-
//! and multi-threaded); the load generator broadcasts from the client namespace as PXE
//! machines on the segment do, full DISCOVER → OFFER → REQUEST → ACK exchanges, with 1 and
//! 64 exchanges in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use osie_testkit::dhcp::{packet, ClientConfig, DhcpClient, Identity};

use super::{Ctx, Record, SuiteResult};
use crate::dhcp::{load, LoadReport, LoadSpec};
use crate::measure::{self, Cpu};
use crate::servers::{self, BootsvcOptions, Lab, Reservation, Server};

const MACHINES: u32 = 250;

#[derive(Clone, Copy)]
enum Which {
    Bootsvc,
    Dnsmasq,
    Kea(Option<u32>),
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Bootsvc => "bootsvc",
            Which::Dnsmasq => "dnsmasq",
            Which::Kea(None) => "kea-dhcp4",
            Which::Kea(Some(_)) => "kea-dhcp4 (multi-threaded)",
        }
    }
}

pub fn run(ctx: &Ctx, out: &mut SuiteResult) -> Result<()> {
    let dir = ctx.scratch("dhcp")?;
    let lab = Lab::new(&dir)?;
    let res = servers::reservations(if ctx.quick { 20 } else { MACHINES })?;
    let windows: &[usize] = if ctx.quick { &[8] } else { &[1, 64] };
    let (warmup, duration) = if ctx.quick {
        (Duration::from_millis(200), Duration::from_millis(500))
    } else {
        (Duration::from_secs(1), Duration::from_secs(4))
    };
    let order = [Which::Bootsvc, Which::Dnsmasq, Which::Kea(None), Which::Kea(Some(2))];
    out.notes.push(format!(
        "{} machines with fixed addresses (192.0.2.3–{}), the same in every server. The client namespace \
         broadcasts from port 68 with the broadcast flag, as a PXE ROM does (options 53, 57, 55, 93 = 0, 94, \
         97, 60 `PXEClient:Arch:00000:UNDI:002001`); every server answers with the reserved address, router, \
         DNS and boot file `undionly.kpxe`. Each run counts exchanges for {:?} (after one uncounted {:?} \
         warm-up run per case); latency is DISCOVER sent → ACK received. Server CPU is that of every process \
         in the server namespace over the run.",
        res.len(),
        res.last().map(|r| r.ip.to_string()).unwrap_or_default(),
        duration,
        warmup
    ));
    for which in order {
        eprintln!("-- DHCP: {}", which.name());
        let mut srv = start(ctx, &lab, which, &res)?;
        wait_ready(&lab, &res).with_context(|| format!("{} did not answer: {}", which.name(), srv.log_tail(20)))?;
        for &window in windows {
            if !ctx.wants(&format!("window {window}")) {
                continue;
            }
            let mut rec =
                Record::new("dhcp", &format!("window {window}"), which.name(), matches!(which, Which::Bootsvc));
            rec.commands.push(srv.command.clone());
            rec.commands.push(format!(
                "osie-bench dhcp-load --interface <client veth> --machines {} --window {window} --seconds {}",
                res.len(),
                duration.as_secs_f64()
            ));
            // Warm-up, not counted: caches, ARP, the server's first allocations.
            generate(&lab, spec(&res, window, Duration::ZERO, warmup))?;
            for _ in 0..ctx.runs {
                srv.check_running()?;
                let spec = spec(&res, window, Duration::ZERO, duration);
                let before = lab.server_cpu();
                let (report, gen_cpu) = generate(&lab, spec)?;
                let cpu = lab.server_cpu().since(before);
                check(&report, which.name())?;
                rec.runs.push(figures(&report, cpu, gen_cpu));
            }
            let ex = rec.median("exchanges_per_sec").unwrap_or(0.0);
            eprintln!("   window {window}: {ex:.0} exchanges/s, p99 {:.0} µs", rec.median("p99_us").unwrap_or(0.0));
            out.records.push(rec);
        }
        if !ctx.quick && ctx.only.is_none() {
            // System calls per exchange, under strace (slow: counts only).
            let n = 2000u64;
            let trace = dir.join(format!("strace-{}.txt", which.name().replace(' ', "_")));
            let pid = srv.pid();
            let (r, counts) = measure::syscall_counts(pid, &trace, || {
                let mut s = spec(&res, 16, Duration::ZERO, Duration::from_secs(60));
                s.max_exchanges = Some(n);
                generate(&lab, s)
            })?;
            let (report, _) = r?;
            let done = report.exchanges.max(1) as f64;
            let total: u64 = counts.iter().map(|c| c.1).sum();
            let top: Vec<String> =
                counts.iter().take(5).map(|(name, c)| format!("{name} {:.1}", *c as f64 / done)).collect();
            let text = format!(
                "{}: {:.1} system calls per exchange (strace -c -f over {} exchanges): {}",
                which.name(),
                total as f64 / done,
                report.exchanges,
                top.join(", ")
            );
            for rec in out.records.iter_mut().filter(|r| r.tool == which.name()) {
                rec.evidence.push(text.clone());
            }
        }
        srv.stop();
        servers::kill_all(&lab.pair.server);
    }
    Ok(())
}

fn start(ctx: &Ctx, lab: &Lab, which: Which, res: &[Reservation]) -> Result<Server> {
    match which {
        Which::Bootsvc => {
            lab.bootsvc(&ctx.bootsvc, &BootsvcOptions { reservations: res.to_vec(), ..BootsvcOptions::default() })
        }
        Which::Dnsmasq => lab.dnsmasq_dhcp(res),
        Which::Kea(threads) => lab.kea(res, threads),
    }
}

fn identities(res: &[Reservation]) -> Vec<Identity> {
    (0..res.len() as u32).map(|n| Identity { mac: packet::nth_mac(n), arch: 0, ipxe: false }).collect()
}

fn spec(res: &[Reservation], window: usize, warmup: Duration, duration: Duration) -> LoadSpec {
    LoadSpec {
        clients: identities(res),
        window,
        warmup,
        duration,
        max_exchanges: None,
        expect: res.iter().map(|r| r.ip).collect(),
    }
}

/// Run the generator on a thread in the client namespace; its report and its CPU time.
pub fn generate(lab: &Lab, spec: LoadSpec) -> Result<(LoadReport, Cpu)> {
    let iface = lab.pair.client_if.clone();
    lab.pair
        .client
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let before = measure::thread_cpu();
            let report = rt.block_on(async move {
                let client = Arc::new(DhcpClient::bind(ClientConfig::broadcast(&iface))?);
                anyhow::Ok(load::run(client, spec).await)
            })?;
            Ok((report, measure::thread_cpu().since(before)))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the DHCP load generator thread panicked"))?
}

/// Servers take a moment to bind (kea opens raw sockets): exchange until one succeeds.
fn wait_ready(lab: &Lab, res: &[Reservation]) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut s = spec(&res[..1], 1, Duration::ZERO, Duration::from_secs(2));
        s.max_exchanges = Some(1);
        let (r, _) = generate(lab, s)?;
        if r.exchanges == 1 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("no DHCP exchange completed within 20 s ({:?})", r.failures);
        }
    }
}

fn check(r: &LoadReport, who: &str) -> Result<()> {
    if r.exchanges == 0 {
        bail!("{who}: no exchange completed ({:?})", r.failures);
    }
    if r.wrong_addresses > 0 {
        bail!("{who}: {} ACKs carried an address other than the machine's reservation", r.wrong_addresses);
    }
    Ok(())
}

fn figures(r: &LoadReport, server: Cpu, generator: Cpu) -> BTreeMap<String, f64> {
    let failed: u64 = r.failures.values().sum();
    BTreeMap::from([
        ("exchanges_per_sec".into(), r.exchanges_per_sec),
        ("exchanges".into(), r.exchanges as f64),
        ("seconds".into(), r.seconds),
        ("p50_us".into(), r.latency.p50_us),
        ("p99_us".into(), r.latency.p99_us),
        ("max_us".into(), r.latency.max_us),
        ("failed".into(), failed as f64),
        ("retransmits".into(), r.retransmits as f64),
        ("server_cpu_s".into(), server.total()),
        ("server_user_s".into(), server.user),
        ("server_sys_s".into(), server.sys),
        // CPU per wall second: 1.0 is one core busy all the time.
        ("server_cores".into(), server.total() / r.seconds),
        ("server_cpu_us_per_exchange".into(), server.total() * 1e6 / r.exchanges.max(1) as f64),
        ("generator_cores".into(), generator.total() / r.seconds),
    ])
}

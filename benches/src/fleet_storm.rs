//! `osie-bench fleet-storm`: 500 machines netboot at once through one bootsvc instance on
//! PostgreSQL, then through two instances on the same database and segment; completions
//! per second of each, and the ratio two ÷ one (`BENCHMARKS.md`, section "Fleet").
//!
//! Each machine goes as a BIOS machine with iPXE does, against whichever instance answers
//! first: DHCP as a PXE ROM (its reserved address), TFTP `undionly.kpxe` from its address,
//! DHCP again as iPXE, its script from the instance named in that answer, the initramfs
//! from it (1 MiB, as in the load test `bootsvc/tests/load.rs`; with `--real-artifacts` the
//! real kernel and initramfs), its metadata, and its first event (stored in PostgreSQL). A
//! machine is complete when its event is acknowledged; any wrong answer counts it failed.
//!
//! Each instance runs under its own CPU quota (`--cpu`, a cgroup), as if each had a host of
//! its own: this machine has 2 cores for the instances, PostgreSQL and the 500 clients
//! together, so without quotas a second process would only share the same cores and the
//! ratio would say nothing about whether instances add up on one database.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use osie_testkit::dhcp::{packet, ClientConfig, DhcpClient, Identity};
use osie_testkit::postgres::{Options, Postgres};
use osie_testkit::site::config::{Database, Dhcp, Tftp};
use osie_testkit::site::Config;
use osie_testkit::tftp::{self, FetchOptions};
use osie_testkit::{ChildGuard, Netns};

use crate::cgroup::CpuLimit;

const INSTANCES: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];

#[derive(Args)]
pub struct FleetStormArgs {
    /// The bootsvc binary to measure.
    #[arg(long, default_value = "target/release/bootsvc")]
    bootsvc: PathBuf,
    /// Runs of each case (the table gives medians).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Machines booting at once (at most 500: the lab's two /24s).
    #[arg(long, default_value_t = 500)]
    machines: usize,
    /// CPU each instance may use, in cores (a cgroup quota each); several (`0.2,0.5`): the
    /// whole comparison at each.
    #[arg(long, value_delimiter = ',', default_values_t = [0.2, 0.5])]
    cpu: Vec<f64>,
    /// Each machine downloads the real kernel and initramfs (`scripts/build`'s, 15 MB) instead
    /// of the load test's 1 MiB initramfs: then the clients' copying of 7 GB, not the
    /// instances, sets the pace on this machine.
    #[arg(long)]
    real_artifacts: bool,
    /// Where `undionly.kpxe`, the kernel and the initramfs come from (`scripts/build`'s output).
    #[arg(long, default_value = "build")]
    build: PathBuf,
    /// Scratch directory (configurations, records, logs).
    #[arg(long, default_value = "build/bench/work/fleet-storm")]
    work: PathBuf,
}

/// Machine `i`'s reserved address: 192.0.2.4–253, then 198.51.100.1–250.
fn addr(i: usize) -> Ipv4Addr {
    if i < 250 {
        Ipv4Addr::new(192, 0, 2, 4 + i as u8)
    } else {
        Ipv4Addr::new(198, 51, 100, 1 + (i - 250) as u8)
    }
}

fn mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0x03, (i >> 8) as u8, i as u8]
}

/// One storm: how many booted, how long from the first DISCOVER to the last event, which
/// instance served each.
#[derive(Debug)]
struct Storm {
    booted: usize,
    seconds: f64,
    by_instance: [usize; 2],
    /// Of the instances' scheduler periods during the storm, the share in which a quota
    /// stopped one: near 1, the instances were the bottleneck.
    throttled: f64,
    errors: Vec<String>,
}

/// The file sizes each machine must receive whole.
#[derive(Clone, Copy)]
struct Sizes {
    undionly: u64,
    /// 0: not fetched.
    kernel: u64,
    initrd: u64,
}

pub fn run(a: FleetStormArgs) -> Result<()> {
    if a.machines == 0 || a.machines > 500 {
        bail!("--machines {}: give 1 to 500", a.machines);
    }
    // Everything this starts (PostgreSQL, the instances, the clients' threads) inherits the
    // highest priority, so other work on the machine does not decide the figures; the
    // instances are held to their quotas all the same.
    // SAFETY: setpriority has no memory-safety preconditions.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) } != 0 {
        eprintln!("warning: could not raise the priority: {}", std::io::Error::last_os_error());
    }
    let bin = std::fs::canonicalize(&a.bootsvc).with_context(|| format!("bootsvc binary {}", a.bootsvc.display()))?;
    let work = std::path::absolute(&a.work).with_context(|| format!("{}", a.work.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    let files = place_files(&std::path::absolute(&a.build)?, &work, a.real_artifacts)?;
    write_records(&work.join("records"), a.machines)?;
    let pg = Postgres::start_with("osie-bench-fleet-storm", Options { durable: true })
        .context("PostgreSQL's server programs are missing (scripts/setup installs them)")?;

    println!(
        "| CPU per instance | one instance | two instances | two ÷ one | periods throttled (one / two) | failed (one / two) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut shares = Vec::new();
    for &cpu in &a.cpu {
        let mut results: [Vec<Storm>; 2] = [Vec::new(), Vec::new()];
        for run in 0..a.runs {
            for n in [1, 2] {
                let db = format!("storm{}c{run}n{n}", (cpu * 100.0) as u32);
                pg.create_database(&db)?;
                let s = storm_once(&bin, &work, &pg.url(&db), n, cpu, a.machines, files)
                    .with_context(|| format!("{cpu} core, run {run}, {n} instance(s)"))?;
                eprintln!(
                    "{cpu} core, run {run}, {n} instance(s): {} of {} booted in {:.2} s ({:.1}/s), served {:?}, \
                     {:.0} % of periods throttled{}",
                    s.booted,
                    a.machines,
                    s.seconds,
                    s.booted as f64 / s.seconds,
                    &s.by_instance[..n],
                    s.throttled * 100.0,
                    if s.errors.is_empty() { String::new() } else { format!("; first failures: {:?}", s.errors) }
                );
                results[n - 1].push(s);
            }
        }
        let median = |v: &[Storm], f: &dyn Fn(&Storm) -> f64| {
            let mut r: Vec<f64> = v.iter().map(f).collect();
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        };
        let rate = |s: &Storm| s.booted as f64 / s.seconds;
        let (one, two) = (median(&results[0], &rate), median(&results[1], &rate));
        let thr = |v: &[Storm]| median(v, &|s: &Storm| s.throttled) * 100.0;
        let failed = |v: &[Storm]| v.iter().map(|s| a.machines - s.booted).sum::<usize>();
        println!(
            "| {cpu} core | {one:.1} machines/s | {two:.1} machines/s | {:.2}× | {:.0} % / {:.0} % | {} / {} |",
            two / one,
            thr(&results[0]),
            thr(&results[1]),
            failed(&results[0]),
            failed(&results[1])
        );
        shares.extend(results[1].iter().map(|s| format!("{}/{}", s.by_instance[0], s.by_instance[1])));
    }
    println!(
        "\n{} machines at once; medians of {} runs. Machines served by the first/second instance in each \
         two-instance run: {}",
        a.machines,
        a.runs,
        shares.join(", ")
    );
    Ok(())
}

/// `undionly.kpxe` into a TFTP root, the kernel and initramfs into an artifacts directory
/// (hard links where the file system allows).
fn place_files(build: &Path, work: &Path, real: bool) -> Result<Sizes> {
    let put = |from: PathBuf, dir: &str, name: &str| -> Result<u64> {
        let d = work.join(dir);
        std::fs::create_dir_all(&d)?;
        let to = d.join(name);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} (scripts/build makes it)", from.display()))?;
        }
        Ok(std::fs::metadata(&to)?.len())
    };
    let undionly = put(build.join("tftp/undionly.kpxe"), "tftp", "undionly.kpxe")?;
    if real {
        return Ok(Sizes {
            undionly,
            kernel: put(build.join("boot/vmlinuz"), "artifacts", "vmlinuz")?,
            initrd: put(build.join("boot/initramfs.img"), "artifacts", "initramfs.img")?,
        });
    }
    let d = work.join("artifacts");
    std::fs::create_dir_all(&d)?;
    let initrd: Vec<u8> = (0..1024 * 1024 + 5).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(d.join("initramfs.img"), &initrd)?;
    std::fs::write(d.join("vmlinuz"), b"not fetched")?;
    Ok(Sizes { undionly, kernel: 0, initrd: initrd.len() as u64 })
}

fn write_records(dir: &Path, machines: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..machines {
        let gateway = if i < 250 { serde_json::json!("192.0.2.1") } else { serde_json::Value::Null };
        let mut ip = serde_json::json!({ "address": addr(i), "prefix": 24 });
        if !gateway.is_null() {
            ip["gateway"] = gateway;
        }
        let rec = serde_json::json!({
            "hostname": format!("s{i:03}"),
            "macs": [packet::mac_string(&mac(i))],
            "ip": ip,
            "netboot": { "allow": true },
            "install": { "image": { "url": "http://192.0.2.1:8080/images/x.raw.zst",
                "sha256": "0000000000000000000000000000000000000000000000000000000000000000" } },
        });
        std::fs::write(dir.join(format!("s{i:03}.json")), rec.to_string())?;
    }
    Ok(())
}

/// An instance's `bootsvc.toml` in `work/<name>/`.
fn config(work: &Path, name: &str, iface: &str, address: Ipv4Addr, url: &str) -> Result<PathBuf> {
    let d = work.join(name);
    std::fs::create_dir_all(&d)?;
    let mut c = Config::new(iface, address);
    c.dhcp = Dhcp { enabled: Some(true), lease_secs: Some(600), ..Dhcp::default() };
    c.tftp = Tftp { enabled: Some(true), root: work.join("tftp"), max_transfers_per_client: None };
    c.artifacts.dir = work.join("artifacts");
    c.artifacts.images_dir = work.join("artifacts");
    c.state_dir = d.join("state");
    c.database = Some(Database::new(url));
    c.write(&d)
}

fn bootsvc(bin: &Path, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(bin).args(args).env_remove("RUST_LOG").output()?;
    if !out.status.success() {
        bail!("bootsvc {}: {}", args[..2].join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A running instance, its namespace, and its CPU quota (dropped in that order).
struct Instance {
    guard: ChildGuard,
    limit: CpuLimit,
    log: PathBuf,
}

fn start(ns: &Netns, bin: &Path, cfg: &Path, limit: CpuLimit, ip: Ipv4Addr) -> Result<Instance> {
    let log = cfg.with_file_name("bootsvc.log");
    let mut cmd = ns.cmd(bin);
    cmd.args(["serve", "--config"])
        .arg(cfg)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    let mut guard = ChildGuard::spawn("bootsvc serve", &mut cmd)?;
    limit.add(guard.pid())?;
    let url = format!("http://{ip}:8080/healthz");
    osie_testkit::wait_for(&format!("bootsvc at {ip} to answer"), Duration::from_secs(30), || {
        if guard.check_running().is_err() {
            return Some(());
        }
        let ok = ns.run("curl", &["-sf", "-o", "/dev/null", "--max-time", "2", &url]).is_ok_and(|o| o.status.success());
        ok.then_some(())
    })?;
    guard.check_running().with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    Ok(Instance { guard, limit, log })
}

/// One storm through `n` instances on a fresh database `url`.
fn storm_once(bin: &Path, work: &Path, url: &str, n: usize, cpu: f64, machines: usize, sizes: Sizes) -> Result<Storm> {
    // The segment: a bridge in the first instance's namespace, the second instance and the
    // machines on their own namespaces on it.
    let hub = Netns::new()?;
    let bridge = "stormbr";
    hub.add_bridge(bridge, &format!("{}/24", INSTANCES[0]))?;
    hub.ip(&["route", "add", "198.51.100.0/24", "dev", bridge])?;
    let other = Netns::new()?;
    let (_, other_if) = hub.veth(&other, Some(bridge), None, Some(&format!("{}/24", INSTANCES[1])))?;
    other.ip(&["route", "add", "198.51.100.0/24", "dev", &other_if])?;
    let client = Netns::new()?;
    let (_, cli_if) = hub.veth(&client, Some(bridge), None, None)?;
    let batch = work.join("client-addrs.batch");
    let lines: String = (0..machines).map(|i| format!("addr add {}/32 dev {cli_if}\n", addr(i))).collect();
    std::fs::write(&batch, lines + &format!("route add 192.0.2.0/24 dev {cli_if}\n"))?;
    client.ip(&["-batch", &batch.to_string_lossy()])?;

    let cfg_a = config(work, "a", bridge, INSTANCES[0], url)?;
    let cfg_b = config(work, "b", &other_if, INSTANCES[1], url)?;
    let (a, records) = (cfg_a.to_string_lossy().into_owned(), work.join("records").to_string_lossy().into_owned());
    bootsvc(bin, &["db", "migrate", "--config", &a])?;
    bootsvc(bin, &["db", "import", &records, "--config", &a])?;
    let mut instances = vec![start(&hub, bin, &cfg_a, CpuLimit::new("osie-bench-a", cpu)?, INSTANCES[0])?];
    if n == 2 {
        instances.push(start(&other, bin, &cfg_b, CpuLimit::new("osie-bench-b", cpu)?, INSTANCES[1])?);
    }

    let throttled =
        |is: &[Instance]| is.iter().map(|i| i.limit.throttled()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let before = throttled(&instances);
    let iface = cli_if.clone();
    let mut storm = client
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async move {
                let mut cfg = ClientConfig::broadcast(&iface);
                cfg.retries = 10;
                let dhcp = Arc::new(DhcpClient::bind(cfg)?);
                let started = Instant::now();
                let tasks: Vec<_> = (0..machines).map(|i| tokio::spawn(boot(i, Arc::clone(&dhcp), sizes))).collect();
                let mut s = Storm { booted: 0, seconds: 0.0, by_instance: [0, 0], throttled: 0.0, errors: Vec::new() };
                for (i, t) in tasks.into_iter().enumerate() {
                    match t.await {
                        Ok(Ok(server)) => {
                            s.booted += 1;
                            s.by_instance[usize::from(server == INSTANCES[1])] += 1;
                        }
                        Ok(Err(e)) if s.errors.len() < 5 => s.errors.push(format!("machine {i}: {e:#}")),
                        Ok(Err(_)) => {}
                        Err(e) => s.errors.push(format!("machine {i}: {e}")),
                    }
                }
                s.seconds = started.elapsed().as_secs_f64();
                Ok(s)
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the storm's client panicked"))??;
    let after = throttled(&instances);
    storm.throttled = (after.1 - before.1) as f64 / (after.0 - before.0).max(1) as f64;
    for i in &mut instances {
        i.guard.check_running().with_context(|| std::fs::read_to_string(&i.log).unwrap_or_default())?;
    }
    drop(instances);
    Ok(storm)
}

/// One machine's boot (see the module doc); the instance that served its script.
async fn boot(i: usize, dhcp: Arc<DhcpClient>, sizes: Sizes) -> Result<Ipv4Addr> {
    let (ip, mac) = (addr(i), mac(i));
    let m = packet::mac_string(&mac);
    let timeout = Duration::from_secs(120);
    let pxe = dhcp.exchange(&Identity { mac, arch: 0, ipxe: false }).await?;
    ensure!(pxe.address == ip, "PXE DHCP gave {} instead of its reserved {ip}", pxe.address);
    ensure!(pxe.boot_file.as_deref() == Some("undionly.kpxe"), "PXE boot file {:?}", pxe.boot_file);
    let next = if pxe.next_server.is_unspecified() { pxe.server_id } else { pxe.next_server };
    let opts = FetchOptions { local: Some(ip), timeout: Duration::from_secs(2), retries: 10, ..Default::default() };
    let f = tftp::fetch(SocketAddrV4::new(next, 69), "undionly.kpxe", &opts, None).await?;
    ensure!(f.bytes == sizes.undionly, "TFTP undionly.kpxe: {} of {} bytes", f.bytes, sizes.undionly);

    let ipxe = dhcp.exchange(&Identity { mac, arch: 0, ipxe: true }).await?;
    ensure!(ipxe.address == ip, "iPXE DHCP gave {}", ipxe.address);
    let url = ipxe.boot_file.unwrap_or_default();
    let (server, path) = crate::storm::split_url(&url).with_context(|| format!("iPXE boot file {url:?}"))?;
    ensure!(path == format!("/boot/{m}.ipxe"), "iPXE boot file {url}");
    let mut script = Vec::new();
    osie_testkit::http::get(server, &path, Some(ip), &[], timeout, Some(&mut script)).await?;
    ensure!(String::from_utf8_lossy(&script).contains(&format!("osie.mac={m}")), "not its script");
    for (file, size) in [("vmlinuz", sizes.kernel), ("initramfs.img", sizes.initrd)].into_iter().filter(|(_, s)| *s > 0)
    {
        let got = osie_testkit::http::get(server, &format!("/artifacts/{file}"), Some(ip), &[], timeout, None).await?;
        ensure!(got.bytes == size, "{file}: {} of {size} bytes", got.bytes);
    }
    osie_testkit::http::get(server, "/metadata", Some(ip), &[("X-Osie-Mac", &m)], timeout, None).await?;
    let ev = format!(
        r#"{{"machine":"{m}","phase":"booted-installer","time":"2026-01-01T00:00:00Z","run_id":"storm-{i}","seq":0}}"#
    );
    let post = move || {
        let h = [("Content-Type", "application/json")];
        osie_testkit::http::request(ip, server, "POST", "/events", &h, ev.as_bytes(), timeout)
    };
    let (status, body) = tokio::task::spawn_blocking(post).await??;
    ensure!(status == 200, "event: {status} {}", String::from_utf8_lossy(&body));
    Ok(*server.ip())
}

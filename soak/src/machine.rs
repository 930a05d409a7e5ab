//! One install of the soak: a machine namespace joined to the site's bridge, its proxy, a
//! loop device full of old data, the real installer in command mode, then the disk and
//! bootsvc's record of the machine checked.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use osie_testkit::{LoopDev, Netns};
use serde::Serialize;

use crate::image::{Image, IMAGE_SIZE};
use crate::proxy::{self, Plan, Proxy};
use crate::rng::Rng;
use crate::site::{self, Site};
use crate::verify;

/// Disk size: the image and room for the GPT fix to move the backup header.
pub const DISK_SIZE: u64 = 96 << 20;

/// What every install shares.
pub struct Ctx {
    pub site: Arc<Site>,
    pub image: Arc<Image>,
    pub installer: PathBuf,
    pub work: PathBuf,
    pub rng: Rng,
    pub faults: bool,
    /// The installer's `--read-timeout`, seconds (stalls are made longer than this).
    pub read_timeout: f64,
    /// An install taking longer than this is killed and counted as hung.
    pub install_timeout: Duration,
}

/// The fault plan of machine `i`.
pub fn plan(ctx: &Ctx, rng: &mut Rng) -> (Plan, Option<u64>) {
    if !ctx.faults {
        return (Plan::clean(), None);
    }
    let plan = Plan {
        reset: [0.0, 0.2, 0.4][rng.below(3) as usize],
        stall: [0.0, 0.0, 0.15][rng.below(3) as usize],
        stall_secs: ctx.read_timeout + 1.5,
        corrupt: if rng.chance(0.05) { 0.7 } else { 0.0 },
        latency_ms: rng.range(0, 150),
        lose_ack: 0.1,
        duplicate: 0.1,
        replay: 0.15,
    };
    let slow = rng.chance(0.3).then(|| rng.range(40, 200));
    (plan, slow)
}

/// What happened to one install.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub machine: usize,
    pub mac: String,
    /// `installed`, `failed` (the installer said so, with a reason) or `hung`.
    pub result: String,
    /// The installer's last error line, for failed installs.
    pub reason: Option<String>,
    pub seconds: f64,
    pub plan: Option<Plan>,
    pub slow_link_mbit: Option<u64>,
    pub proxy: proxy::Log,
    pub disk: Option<verify::DiskCheck>,
    /// The disk holds something it must not (a corrupt install, or a failed one that looks
    /// installed).
    pub corrupt: Option<String>,
    /// bootsvc's record: status, error, and the events of the run.
    pub status: String,
    pub last_error: Vec<String>,
    pub events_stored: usize,
    /// Acknowledged by bootsvc but not in its store.
    pub lost: Vec<String>,
    /// Stored more than once.
    pub duplicated: Vec<String>,
    /// Anything else wrong with bootsvc's record of this machine.
    pub problems: Vec<String>,
}

impl Outcome {
    /// Installed or failed with a reason, and nothing wrong anywhere.
    pub fn ok(&self) -> bool {
        self.corrupt.is_none()
            && self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.problems.is_empty()
            && self.proxy.anomalies.is_empty()
            && (self.result == "installed" || (self.result == "failed" && self.reason.is_some()))
    }
}

/// Fill the disk with old data: any block the installer fails to write shows.
fn old_data(dev: &Path, rng: &mut Rng) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(dev)?;
    let mut block = vec![0xa5u8; 4 << 20];
    for _ in 0..(IMAGE_SIZE / block.len() as u64) {
        rng.fill(&mut block[..4096]);
        f.write_all(&block)?;
    }
    f.sync_all()?;
    Ok(())
}

/// Run install `i` and check everything about it.
pub fn install(ctx: &Ctx, i: usize) -> Result<Outcome> {
    let mut rng = ctx.rng.fork(1000 + i as u64);
    let (plan, slow) = plan(ctx, &mut rng);
    let mac = site::mac(i);
    let mut out =
        Outcome { machine: i, mac: mac.clone(), plan: Some(plan.clone()), slow_link_mbit: slow, ..Default::default() };

    let ns = Netns::new()?;
    let (here, there) = ctx.site.attach(&ns)?;
    ns.ip(&["addr", "add", &format!("{}/24", site::addr(i)), "dev", &there])?;
    ns.ip(&["addr", "add", &format!("{}/32", site::PUBLIC), "dev", "lo"])?;
    if let Some(mbit) = slow {
        ctx.site.slow_link(&here, mbit)?;
    }
    let log = Arc::new(Mutex::new(proxy::Log::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let proxy = Proxy {
        listen: SocketAddrV4::new(site::PUBLIC, site::PORT),
        upstream: SocketAddrV4::new(site::BRIDGE_ADDR, site::PORT),
        source: site::addr(i),
        plan,
    };
    let proxy_thread = {
        let (rng, log, stop) = (rng.fork(7), Arc::clone(&log), Arc::clone(&stop));
        ns.spawn(move || proxy.run(rng, log, stop))
    };

    let disk = LoopDev::new(&ctx.work, DISK_SIZE).context("a loop device for the install")?;
    old_data(&disk.path, &mut rng)?;
    let logs = ctx.work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log_file = logs.join(format!("install-{i}.log"));
    let f = std::fs::File::create(&log_file)?;
    let started = Instant::now();
    let mut child = ns
        .cmd(&ctx.installer)
        .args(["--read-timeout", &ctx.read_timeout.to_string(), "install", "--metadata-url"])
        .arg(format!("http://{}:{}", site::PUBLIC, site::PORT))
        .args(["--mac", &mac, "--disk"])
        .arg(&disk.path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .context("starting the installer")?;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if started.elapsed() > ctx.install_timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    out.seconds = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    match proxy_thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => out.problems.push(format!("proxy: {e:#}")),
        Err(_) => out.problems.push("proxy thread panicked".into()),
    }
    out.proxy = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let text = std::fs::read_to_string(&log_file).unwrap_or_default();
    match status {
        Some(st) if st.success() => {
            out.result = "installed".into();
            let scratch = tempfile::tempdir_in(&ctx.work)?;
            match verify::installed(&disk.path, &ctx.image, &site::user_data(i), scratch.path()) {
                Ok(d) => out.disk = Some(d),
                Err(e) => out.corrupt = Some(format!("{e:#}")),
            }
        }
        Some(_) => {
            out.result = "failed".into();
            out.reason = text.lines().rev().find(|l| l.contains("error")).map(|l| l.trim().to_string());
            if let Err(e) = verify::not_installed(&disk.path, &ctx.image) {
                out.corrupt = Some(format!("{e:#}"));
            }
        }
        None => out.result = "hung".into(),
    }
    drop(disk);
    drop(ns);
    check_record(ctx, &mut out);
    Ok(out)
}

/// bootsvc's record of the machine agrees with what happened, and holds every event it
/// acknowledged, once.
fn check_record(ctx: &Ctx, out: &mut Outcome) {
    let m = match ctx.site.get_json(&format!("/admin/machines/{}", out.mac)) {
        Ok(v) => v,
        Err(e) => {
            out.problems.push(format!("reading the machine from bootsvc: {e:#}"));
            return;
        }
    };
    out.status = m["state"]["status"].as_str().unwrap_or_default().to_string();
    out.last_error = m["state"]["last_error"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e.as_str().map(String::from)).collect())
        .unwrap_or_default();
    match out.result.as_str() {
        "installed" if out.status != "installed" => {
            out.problems.push(format!("installed, but bootsvc says {}", out.status))
        }
        "failed" if out.status != "failed" || out.last_error.is_empty() => {
            out.problems.push(format!("failed, but bootsvc says {} with error {:?}", out.status, out.last_error))
        }
        _ => {}
    }
    let evs = match ctx.site.get_json(&format!("/admin/machines/{}/events?limit=10000", out.mac)) {
        Ok(v) => v.as_array().cloned().unwrap_or_default(),
        Err(e) => {
            out.problems.push(format!("reading the events from bootsvc: {e:#}"));
            return;
        }
    };
    out.events_stored = evs.len();
    let mut stored = std::collections::BTreeMap::<(String, u64), usize>::new();
    for (n, e) in evs.iter().enumerate() {
        if e["n"] != n as u64 {
            out.problems.push(format!("event numbers have a gap at {n}"));
        }
        let key =
            (e["event"]["run_id"].as_str().unwrap_or_default().to_string(), e["event"]["seq"].as_u64().unwrap_or(0));
        *stored.entry(key).or_default() += 1;
    }
    for ((run, seq), n) in &stored {
        if *n > 1 {
            out.duplicated.push(format!("{run}/{seq} ×{n}"));
        }
    }
    for a in &out.proxy.acked {
        if !stored.contains_key(&(a.run_id.clone(), a.seq)) {
            out.lost.push(format!("{}/{} {}", a.run_id, a.seq, a.phase));
        }
    }
    out.lost.sort();
    out.lost.dedup();
    // Each run's events are there from 0 to its last, and the last says how it ended.
    let runs: std::collections::BTreeSet<&String> = stored.keys().map(|(r, _)| r).collect();
    for run in runs {
        let seqs: Vec<u64> = stored.keys().filter(|(r, _)| r == run).map(|(_, s)| *s).collect();
        let max = seqs.iter().copied().max().unwrap_or(0);
        if seqs.len() as u64 != max + 1 {
            out.problems.push(format!("run {run}: {} events stored for seq 0..={max}", seqs.len()));
        }
    }
    let last = evs.last().and_then(|e| e["event"]["phase"].as_str()).unwrap_or_default();
    let want = match out.result.as_str() {
        "installed" => "installed",
        "failed" => "failed",
        _ => "",
    };
    if !want.is_empty() && !evs.iter().any(|e| e["event"]["phase"] == want) {
        out.problems.push(format!("no {want} event stored (last: {last})"));
    }
}

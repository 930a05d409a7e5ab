//! The whole soak: build the image, start the site, run the installs `concurrency` at a time
//! while a killer thread SIGKILLs and restarts bootsvc at random moments, then add it all up.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::image;
use crate::machine::{self, Ctx, Outcome};
use crate::rng::Rng;
use crate::site::Site;

#[derive(Debug, Clone)]
pub struct Options {
    pub installs: usize,
    pub concurrency: usize,
    pub seed: u64,
    pub faults: bool,
    /// Kill bootsvc every `kill_every` (uniform in half to one and a half of it); `None`: never.
    pub kill_every: Option<Duration>,
    pub bootsvc: PathBuf,
    pub installer: PathBuf,
    pub work: PathBuf,
    pub read_timeout: f64,
}

/// The figures of one soak.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub installs: usize,
    pub installed: usize,
    pub failed_with_reason: usize,
    pub hung_or_unexplained: usize,
    pub corrupt_disks: usize,
    pub lost_events: usize,
    pub duplicated_events: usize,
    pub record_problems: usize,
    pub anomalies: usize,
    pub bootsvc_kills: usize,
    pub resets: u64,
    pub stalls: u64,
    pub bytes_flipped: u64,
    pub upstream_refused: u64,
    pub acks_lost: u64,
    pub duplicates_sent: u64,
    pub replays_sent: u64,
    pub slow_links: usize,
    pub events_stored: usize,
    pub seconds: f64,
    pub install_seconds_p50: f64,
    pub install_seconds_max: f64,
    pub seed: u64,
}

impl Summary {
    pub fn of(outcomes: &[Outcome], kills: usize, seconds: f64, seed: u64) -> Summary {
        let mut s = Summary { installs: outcomes.len(), bootsvc_kills: kills, seconds, seed, ..Default::default() };
        let mut secs: Vec<f64> = outcomes.iter().map(|o| o.seconds).collect();
        secs.sort_by(f64::total_cmp);
        s.install_seconds_p50 = secs.get(secs.len() / 2).copied().unwrap_or(0.0);
        s.install_seconds_max = secs.last().copied().unwrap_or(0.0);
        for o in outcomes {
            match o.result.as_str() {
                "installed" => s.installed += 1,
                "failed" if o.reason.is_some() => s.failed_with_reason += 1,
                _ => s.hung_or_unexplained += 1,
            }
            s.corrupt_disks += usize::from(o.corrupt.is_some());
            s.lost_events += o.lost.len();
            s.duplicated_events += o.duplicated.len();
            s.record_problems += o.problems.len();
            s.anomalies += o.proxy.anomalies.len();
            s.resets += o.proxy.resets;
            s.stalls += o.proxy.stalls;
            s.bytes_flipped += o.proxy.bytes_flipped;
            s.upstream_refused += o.proxy.upstream_refused;
            s.acks_lost += o.proxy.acks_lost;
            s.duplicates_sent += o.proxy.duplicates_sent;
            s.replays_sent += o.proxy.replays_sent;
            s.slow_links += usize::from(o.slow_link_mbit.is_some());
            s.events_stored += o.events_stored;
        }
        s
    }

    /// Every install ended as installed or failed-with-a-reason, and nothing was wrong.
    pub fn clean(&self) -> bool {
        self.installed + self.failed_with_reason == self.installs
            && self.corrupt_disks == 0
            && self.lost_events == 0
            && self.duplicated_events == 0
            && self.record_problems == 0
            && self.anomalies == 0
    }
}

/// Run the soak; the outcomes of every install and the summary.
pub fn run(opts: &Options) -> Result<(Vec<Outcome>, Summary)> {
    osie_testkit::require_tools("soak", &["sgdisk", "mkfs.ext4", "zstd", "e2fsck", "debugfs", "tc", "curl", "losetup"]);
    std::fs::create_dir_all(&opts.work)?;
    let started = Instant::now();
    let rng = Rng::new(opts.seed);
    tracing::info!(dir = %opts.work.display(), "building the soak image");
    let image = Arc::new(image::build(&opts.work, opts.seed).context("building the soak image")?);
    let site_dir = opts.work.join("site");
    let site = Arc::new(Site::new(&site_dir, &opts.bootsvc, &image, opts.installs)?);
    let ctx = Arc::new(Ctx {
        site: Arc::clone(&site),
        image,
        installer: opts.installer.clone(),
        work: opts.work.clone(),
        rng: rng.clone(),
        faults: opts.faults,
        read_timeout: opts.read_timeout,
        install_timeout: Duration::from_secs(15 * 60),
    });

    let done = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = opts.kill_every.map(|every| {
        let (site, done, kills, mut rng) = (Arc::clone(&site), Arc::clone(&done), Arc::clone(&kills), rng.fork(99));
        std::thread::spawn(move || -> Result<()> {
            let ms = every.as_millis() as u64;
            loop {
                let wait = Instant::now() + Duration::from_millis(rng.range(ms / 2, ms * 3 / 2));
                while Instant::now() < wait {
                    if done.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                site.kill9();
                kills.fetch_add(1, Ordering::Relaxed);
                tracing::info!("bootsvc killed (SIGKILL)");
                std::thread::sleep(Duration::from_millis(rng.range(200, 3000)));
                site.start().context("restarting bootsvc")?;
                tracing::info!("bootsvc restarted");
            }
        })
    });

    let next = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..opts.concurrency.max(1))
        .map(|_| {
            let (ctx, next, outcomes, n) = (Arc::clone(&ctx), Arc::clone(&next), Arc::clone(&outcomes), opts.installs);
            std::thread::spawn(move || -> Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    let o = machine::install(&ctx, i).with_context(|| format!("install {i}"))?;
                    tracing::info!(
                        machine = i, result = %o.result, secs = format!("{:.1}", o.seconds), resets = o.proxy.resets,
                        stalls = o.proxy.stalls, events = o.events_stored, ok = o.ok(),
                        "install done{}", o.corrupt.as_deref().map(|c| format!(": {c}")).unwrap_or_default()
                    );
                    outcomes.lock().unwrap_or_else(|e| e.into_inner()).push(o);
                }
            })
        })
        .collect();
    let mut errors = Vec::new();
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(_) => errors.push("a worker panicked".into()),
        }
    }
    done.store(true, Ordering::Relaxed);
    if let Some(k) = killer {
        match k.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("killer: {e:#}")),
            Err(_) => errors.push("the killer thread panicked".into()),
        }
    }
    if !site.running() {
        site.start()?;
    }
    site.stop().context("stopping bootsvc at the end")?;
    if !errors.is_empty() {
        bail!("the soak could not run every install:\n{}", errors.join("\n"));
    }
    let mut outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()));
    outcomes.sort_by_key(|o| o.machine);
    let summary = Summary::of(&outcomes, kills.load(Ordering::Relaxed), started.elapsed().as_secs_f64(), opts.seed);
    Ok((outcomes, summary))
}

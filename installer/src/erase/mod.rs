//! Deprovisioning: erase every disk of the machine ([`run`]), reporting each one
//! (`disk-erased`, with method, bytes and seconds), then `deprovisioned`; the caller powers
//! off. Which disks and which methods: [`choose`]; NVMe commands: [`nvme`]; the read-back
//! that decides whether a method worked: [`readback`].

pub mod choose;
pub mod nvme;
pub mod readback;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use osie_api::{DiskErase, EraseMethod, ErasePlan, Phase, Progress};
use serde::Serialize;

use crate::disk::{self, sysfs, DiskInfo};
use crate::report::Reporter;
use crate::target::{ioctl, Target};

/// How the erase runs; tests and the `erase` command adjust it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where sysfs is mounted.
    pub sys: PathBuf,
    /// Only these devices (loop devices too); none: every disk of the machine.
    pub named: Vec<PathBuf>,
    /// Use this method only (tests: `zeroout` on a device that discards).
    pub only: Option<EraseMethod>,
    /// How long a sanitize may run.
    pub sanitize_limit: Duration,
    /// Between `erasing` progress events of a long discard or zeroout.
    pub progress_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sys: PathBuf::from("/sys"),
            named: Vec::new(),
            only: None,
            sanitize_limit: Duration::from_secs(12 * 3600),
            progress_every: Duration::from_secs(5),
        }
    }
}

/// What an erase did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub erased: Vec<DiskErase>,
    /// Disks left alone, and why.
    pub kept: Vec<(String, String)>,
}

impl Outcome {
    /// The `deprovisioned` event's message.
    pub fn summary(&self) -> String {
        let erased: Vec<String> = self.erased.iter().map(|e| format!("{} ({})", e.path, e.method)).collect();
        let mut s = format!(
            "{} disk{} erased{}",
            self.erased.len(),
            if self.erased.len() == 1 { "" } else { "s" },
            if erased.is_empty() { String::new() } else { format!(": {}", erased.join(", ")) }
        );
        if !self.kept.is_empty() {
            let kept: Vec<String> = self.kept.iter().map(|(p, why)| format!("{p} ({why})")).collect();
            s += &format!("; kept: {}", kept.join(", "));
        }
        s + "; powering off"
    }
}

/// Erase the disks `plan` and `opts` choose, each reported as it is done, then report
/// `deprovisioned` and wait (bounded) for bootsvc to have it. The first disk that cannot be
/// erased ends the run with its error (the caller reports `failed`).
pub fn run(plan: &ErasePlan, reporter: &Reporter, opts: &Options) -> Result<Outcome> {
    let devices = sysfs::scan(&opts.sys)?;
    let in_use = sysfs::devices_in_use();
    let named: Vec<String> = opts.named.iter().map(|p| disk::kernel_name(p)).collect::<Result<_>>()?;
    if let Some(missing) = named.iter().find(|n| !devices.disks.iter().any(|d| &d.name == *n)) {
        bail!("{missing} is not a disk this machine lists in {}/block", opts.sys.display());
    }
    let mut out = Outcome::default();
    for (d, verdict) in choose::disks(&devices.disks, &named, &in_use, plan) {
        let path = d.path.display().to_string();
        if let Err(why) = verdict {
            tracing::warn!("{path}: kept: {why}");
            out.kept.push((path, why.to_string()));
            continue;
        }
        let r = erase_disk(d, opts, reporter).with_context(|| format!("erasing {path}"))?;
        let msg = describe(&r);
        reporter.disk_erased(r.clone(), msg);
        out.erased.push(r);
    }
    reporter.event(Phase::Deprovisioned, out.summary());
    if !reporter.flush() {
        tracing::warn!("bootsvc did not acknowledge every event; the disks are erased anyway");
    }
    Ok(out)
}

/// `/dev/vda: discard, 4294967296 bytes in 0.3 s (14316 MB/s); 66 samples read back zero`.
pub fn describe(r: &DiskErase) -> String {
    let mut s = format!(
        "{}: {}, {} bytes in {:.1} s ({:.0} MB/s); {} samples read back zero",
        r.path,
        r.method,
        r.bytes,
        r.seconds,
        r.bytes as f64 / r.seconds.max(1e-3) / 1e6,
        r.verified_samples
    );
    if !r.fallbacks.is_empty() {
        s += &format!("; not used: {}", r.fallbacks.join("; "));
    }
    s
}

/// One disk: each method in turn until one leaves zeros behind.
fn erase_disk(d: &DiskInfo, opts: &Options, reporter: &Reporter) -> Result<DiskErase> {
    let start = Instant::now();
    let path = d.path.display().to_string();
    let target = Target::open(&d.path)?;
    let ns = if d.name.starts_with("nvme") { nvme::Namespace::open(&target.file)? } else { None };
    let nvme = match &ns {
        Some(ns) => match ns.caps() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("{path}: NVMe Identify failed, no NVMe erase: {e:#}");
                None
            }
        },
        None => None,
    };
    let caps = choose::Caps {
        nvme: nvme.map(|(c, _)| c),
        discard_max_bytes: sysfs_num(&opts.sys, &d.name, "queue/discard_max_bytes"),
    };
    let mut methods = choose::methods(&caps);
    if let Some(only) = opts.only {
        methods.retain(|m| *m == only);
        if methods.is_empty() {
            bail!("{path} cannot be erased by {only} (it offers {:?})", choose::methods(&caps));
        }
    }
    tracing::info!("{path}: {} bytes; methods in order: {methods:?}", target.device_size);
    let mut fallbacks = Vec::new();
    for m in methods {
        reporter.event(Phase::Erasing, format!("{path}: {m}, {} bytes", target.device_size));
        let t = Instant::now();
        let applied = match m {
            EraseMethod::NvmeSanitizeCrypto | EraseMethod::NvmeSanitizeBlock => match &ns {
                Some(ns) => ns.sanitize(m == EraseMethod::NvmeSanitizeCrypto, opts.sanitize_limit),
                None => Err(anyhow::anyhow!("not an NVMe namespace")),
            },
            EraseMethod::NvmeFormatCrypto | EraseMethod::NvmeFormat => match (&ns, nvme) {
                (Some(ns), Some((_, f))) => ns.format(f, m == EraseMethod::NvmeFormatCrypto),
                _ => Err(anyhow::anyhow!("not an NVMe namespace")),
            },
            EraseMethod::Discard => in_chunks(&target, &path, opts, reporter, |off, len| {
                if ioctl::discard(&target.file, off, len).with_context(|| format!("BLKDISCARD {len} bytes at {off}"))? {
                    Ok(())
                } else {
                    bail!("the device does not discard")
                }
            }),
            EraseMethod::Zeroout => in_chunks(&target, &path, opts, reporter, |off, len| target.zero_abs(off, len)),
            EraseMethod::Unknown => Err(anyhow::anyhow!("unknown method")),
        };
        let checked = applied.and_then(|()| {
            // What the page cache still holds of the old contents is not the disk's.
            ioctl::flush_buffers(&target.file).context("BLKFLSBUF")?;
            target.sync()?;
            readback::all_zero_samples(&d.path, target.device_size, target.logical_sector)
        });
        match checked {
            Ok(samples) => {
                tracing::info!("{path}: {m} done in {:.1} s", t.elapsed().as_secs_f64());
                // The partitions the kernel knew are gone.
                if let Err(e) = target.reread_partitions() {
                    tracing::warn!("{path}: {e:#}");
                }
                return Ok(DiskErase {
                    path,
                    method: m,
                    bytes: target.device_size,
                    seconds: start.elapsed().as_secs_f64(),
                    fallbacks,
                    verified_samples: samples,
                });
            }
            Err(e) => {
                tracing::warn!("{path}: {m} not used: {e:#}");
                fallbacks.push(format!("{m}: {e:#}"));
            }
        }
    }
    bail!("no method left zeros on {path}: {}", fallbacks.join("; "))
}

/// Bytes per discard or zeroout call: a progress event can go out between them.
const CHUNK: u64 = 1 << 30;

/// `f(offset, len)` over the whole device in chunks, with `erasing` progress events.
fn in_chunks(
    target: &Target,
    path: &str,
    opts: &Options,
    reporter: &Reporter,
    f: impl Fn(u64, u64) -> Result<()>,
) -> Result<()> {
    let total = target.device_size;
    let start = Instant::now();
    let mut last = Instant::now();
    let mut off = 0;
    while off < total {
        let len = CHUNK.min(total - off);
        f(off, len)?;
        off += len;
        if last.elapsed() >= opts.progress_every && off < total {
            last = Instant::now();
            let rate = (off as f64 / start.elapsed().as_secs_f64().max(1e-3)) as u64;
            let p = Progress {
                bytes_done: off,
                bytes_total: Some(total),
                rate: Some(rate),
                eta_secs: (rate > 0).then(|| (total - off) / rate),
            };
            reporter.progress(Phase::Erasing, &p, format!("{path}: {off} of {total} bytes"));
        }
    }
    Ok(())
}

fn sysfs_num(sys: &Path, name: &str, attr: &str) -> u64 {
    std::fs::read_to_string(sys.join("block").join(name).join(attr))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

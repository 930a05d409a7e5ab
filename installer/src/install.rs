//! The install flow: metadata → disk → image → GPT → cloud-init → `installed`.
//!
//! Each step reports its phase to bootsvc ([`Reporter`]); the first error ends the flow and
//! is returned with its context — the caller reports `failed` with the chain. Nothing is
//! written to any disk before the metadata parsed and a disk was chosen.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use osie_api::{Hardware, MacAddr, Metadata, Phase};

use crate::backoff::Backoff;
use crate::disk::{self, wipe};
use crate::http::HttpConfig;
use crate::image::{self, progress, ImageSpec, Tuning};
use crate::report::Reporter;
use crate::target::Target;
use crate::{cloudinit, gpt, metadata};

/// What the flow needs to know; [`crate::init`] fills it from the kernel command line, the
/// `install` command from its arguments.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    /// bootsvc base URL (`osie.url`).
    pub base_url: String,
    /// The NIC the machine booted from (`osie.mac`); sent as `X-Osie-Mac`.
    pub mac: MacAddr,
    /// Target disk override; `None` picks one from the metadata's hints.
    pub disk: Option<PathBuf>,
    /// Sent with the first event when known.
    pub hardware: Option<Hardware>,
}

/// How the flow runs; the defaults are the installer's, tests and the CLI adjust them.
#[derive(Debug, Clone)]
pub struct Options {
    pub http: HttpConfig,
    /// Only these devices are considered when choosing by hints (none: every non-loop disk).
    pub candidates: Vec<PathBuf>,
    /// Where sysfs is mounted.
    pub sys: PathBuf,
    pub tuning: Tuning,
    pub metadata_retry: Backoff,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            http: HttpConfig::default(),
            candidates: Vec::new(),
            sys: PathBuf::from("/sys"),
            tuning: Tuning::default(),
            metadata_retry: metadata::RETRY,
        }
    }
}

/// Run the whole install. On success the disk holds the verified image and `installed` has
/// been reported; the returned metadata says what to do next (reboot, poweroff, kexec).
pub fn run(req: &InstallRequest, reporter: &Reporter) -> Result<Metadata> {
    run_with(req, reporter, &Options::default())
}

pub fn run_with(req: &InstallRequest, reporter: &Reporter, opts: &Options) -> Result<Metadata> {
    if let Some(hw) = &req.hardware {
        reporter.set_hardware(hw.clone());
    }
    let client = opts.http.client()?;
    let md = metadata::fetch(&client, &req.base_url, req.mac, opts.metadata_retry)?;
    reporter.event(Phase::Metadata, format!("instance {} hostname {}", md.instance_id, md.hostname));
    let Some(plan) = &md.install else {
        bail!("bootsvc has no install plan for {}; no disk was touched", req.mac);
    };
    let spec = ImageSpec::from_api(&plan.image)?;
    let layout = !plan.gpt.layout.is_empty();

    let need = spec.raw_size.unwrap_or(0);
    let d = disk::choose(&opts.sys, &plan.disk, need, req.disk.as_deref(), &opts.candidates)
        .context("choosing the target disk")?;
    reporter.event(
        Phase::DiskSelected,
        format!(
            "{} ({} bytes, {}/{} sectors, model {}, serial {})",
            d.path.display(),
            d.size,
            d.logical_sector_size,
            d.physical_sector_size,
            d.model.as_deref().unwrap_or("-"),
            d.serial.as_deref().unwrap_or("-")
        ),
    );

    let whole = Target::open(&d.path)?;
    let known: Vec<(u64, u64)> = d.partitions.iter().map(|p| (p.start, p.size)).collect();
    let n = wipe::wipe(&whole, &known).with_context(|| format!("wiping {}", d.path.display()))?;
    reporter.event(Phase::DiskWiped, format!("{}: {n} signature areas zeroed", d.path.display()));

    let (target, layout_parts) = if layout {
        let parts = gpt::create_layout(&whole, &plan.gpt.layout).context("creating the partition layout")?;
        let idx = plan.gpt.layout.iter().position(|p| p.image).context("no partition is marked `image`")?;
        let p = &parts[idx];
        // The partition's old contents may still hold a filesystem: wipe its ends too.
        wipe::plan(p.len, &[]).iter().try_for_each(|&(s, l)| whole.zero_abs(p.start + s, l))?;
        tracing::info!("image goes into partition {} {:?} at byte {}", p.number, p.name, p.start);
        (Target::open(&d.path)?.region(p.start, p.len)?, Some(parts))
    } else {
        (Target::open(&d.path)?, None)
    };

    let tuning = image::Tuning { timeouts: opts.http.timeouts(), ..opts.tuning.clone() };
    let out = image::stream(&client, &spec, &target, &tuning, &|p| {
        tracing::info!("image: {}", progress::describe(p));
        reporter.progress(Phase::ImageStreaming, p, progress::describe(p));
    })
    .with_context(|| format!("writing the image to {}", target.describe()))?;
    let secs = out.elapsed.as_secs_f64().max(1e-3);
    reporter.event(
        Phase::ImageVerified,
        format!(
            "sha256 {} ok; {} bytes in {secs:.1} s ({:.0} MB/s); {} resumes, {} restarts; {}",
            out.sha256,
            out.raw_bytes,
            out.raw_bytes as f64 / secs / 1e6,
            out.resumes,
            out.restarts,
            out.timings.describe(out.elapsed)
        ),
    );

    if let Some(parts) = layout_parts {
        let v: Vec<String> = parts.iter().map(|p| format!("{}:{}", p.number, p.name)).collect();
        reporter.event(Phase::GptFixed, format!("fresh GPT: {}", v.join(" ")));
    } else {
        let f = gpt::fix(&whole, plan.gpt.grow_last_partition).context("fixing the GPT after writing")?;
        let grown = match f.grown {
            Some((n, a, b)) => format!("; partition {n} grown from {a} to {b} bytes"),
            None => String::new(),
        };
        let nums: Vec<String> = f.partitions.iter().map(|p| p.number.to_string()).collect();
        reporter.event(
            Phase::GptFixed,
            format!(
                "backup GPT moved from LBA {} to {}; partitions {}{grown}",
                f.backup_lba_before,
                f.backup_lba_after,
                nums.join(",")
            ),
        );
    }
    whole.reread_partitions()?;

    let s = cloudinit::seed(&whole, &md).context("seeding cloud-init")?;
    reporter.event(
        Phase::CloudInitSeeded,
        format!("partition {} ({}): {}", s.partition, s.fs.kernel_name(), s.files.join(", ")),
    );
    reporter.event(Phase::Installed, format!("{} installed on {}", md.hostname, d.path.display()));
    if !reporter.flush() {
        tracing::warn!("bootsvc did not acknowledge every event; the disk is installed anyway");
    }
    Ok(md)
}

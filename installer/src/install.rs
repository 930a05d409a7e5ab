//! The install flow: metadata → disk → image → GPT → cloud-init → the record's steps →
//! (UEFI) boot entry → `installed`; or, when the metadata asks for an erase, metadata →
//! [`crate::erase`].
//!
//! Each step reports its phase to bootsvc ([`Reporter`]); the first error ends the flow and
//! is returned with its context — the caller reports `failed` with the chain. Nothing is
//! written to any disk before the metadata parsed and a disk was chosen.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use osie_api::{BootOrder, Hardware, InstallPlan, MacAddr, Metadata, Phase};
use reqwest::blocking::Client;

use crate::backoff::Backoff;
use crate::disk::{self, wipe, DiskInfo};
use crate::gpt::Part;
use crate::http::HttpConfig;
use crate::image::{self, progress, ImageSpec, Tuning};
use crate::report::Reporter;
use crate::servers::Servers;
use crate::target::Target;
use crate::{bootentry, cloudinit, gpt, metadata, steps};

/// What the flow needs to know; [`crate::init`] fills it from the kernel command line, the
/// `install` command from its arguments.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    /// bootsvc's base URLs (`osie.url`), shared with the [`Reporter`] so that metadata,
    /// image and events fail over together.
    pub servers: Servers,
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
    /// Write the installed OS's UEFI boot entry into this machine's firmware
    /// ([`bootentry`]). Only when the installer is the machine's own `/init`: in command mode
    /// the firmware is the host's, not the target disk's.
    pub boot_entry: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            http: HttpConfig::default(),
            candidates: Vec::new(),
            sys: PathBuf::from("/sys"),
            tuning: Tuning::default(),
            metadata_retry: metadata::RETRY,
            boot_entry: false,
        }
    }
}

/// Run the whole install. On success the disk holds the verified image and `installed` has
/// been reported; the returned metadata says what to do next (reboot, poweroff, kexec).
pub fn run(req: &InstallRequest, reporter: &Reporter) -> Result<Metadata> {
    run_with(req, reporter, &Options { boot_entry: true, ..Options::default() })
}

/// The phases in order; each reports its own event.
pub fn run_with(req: &InstallRequest, reporter: &Reporter, opts: &Options) -> Result<Metadata> {
    if let Some(hw) = &req.hardware {
        reporter.set_hardware(hw.clone());
    }
    let client = opts.http.client()?;
    let md = fetch_metadata(&client, req, opts, reporter)?;
    if let Some(plan) = &md.erase {
        // Deprovisioning: erase instead of installing ([`crate::erase`]).
        let named = req.disk.iter().chain(&opts.candidates).cloned().collect();
        crate::erase::run(
            plan,
            reporter,
            &crate::erase::Options { sys: opts.sys.clone(), named, ..Default::default() },
        )?;
        return Ok(md);
    }
    let Some(plan) = &md.install else {
        bail!("bootsvc has no install plan for {}; no disk was touched", req.mac);
    };
    let spec = ImageSpec::from_api(&plan.image)?;
    steps::check(&plan.steps)?;
    let disk = select_disk(plan, &spec, req, opts, reporter)?;
    let whole = wipe_disk(&disk, reporter)?;
    let dest = destination(&whole, &disk, plan)?;
    let sources = req.servers.for_url(&spec.url);
    stream_image(&client, &spec, &sources, &dest.target, opts, reporter)?;
    fix_gpt(&whole, plan, dest.layout.as_deref(), reporter)?;
    seed_cloud_init(&whole, &cloudinit::on_current(&md, &req.servers), reporter)?;
    steps::run_all(&whole, &plan.steps, reporter).context("running the record's steps")?;
    let entry = if opts.boot_entry { boot_entry(&whole, plan) } else { "no UEFI boot entry (command mode)".into() };
    installed(&md, &disk, &entry, reporter);
    Ok(md)
}

/// `metadata`: this machine's metadata from bootsvc (retried while it is unreachable).
fn fetch_metadata(client: &Client, req: &InstallRequest, opts: &Options, reporter: &Reporter) -> Result<Metadata> {
    let md = metadata::fetch(client, &req.servers, req.mac, &reporter.run_id, opts.metadata_retry)?;
    reporter.event(Phase::Metadata, format!("instance {} hostname {}", md.instance_id, md.hostname));
    Ok(md)
}

/// `disk-selected`: the request's disk, else the one the plan's hints choose.
fn select_disk(
    plan: &InstallPlan,
    spec: &ImageSpec,
    req: &InstallRequest,
    opts: &Options,
    reporter: &Reporter,
) -> Result<DiskInfo> {
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
    Ok(d)
}

/// `disk-wiped`: old signatures gone; returns the whole disk, open for writing.
fn wipe_disk(d: &DiskInfo, reporter: &Reporter) -> Result<Target> {
    let whole = Target::open(&d.path)?;
    let known: Vec<(u64, u64)> = d.partitions.iter().map(|p| (p.start, p.size)).collect();
    let n = wipe::wipe(&whole, &known).with_context(|| format!("wiping {}", d.path.display()))?;
    reporter.event(Phase::DiskWiped, format!("{}: {n} signature areas zeroed", d.path.display()));
    Ok(whole)
}

/// Where the image goes.
struct Destination {
    target: Target,
    /// Layout mode: the fresh GPT's partitions.
    layout: Option<Vec<Part>>,
}

/// The whole disk; or in layout mode, a fresh GPT and the partition marked `image`.
fn destination(whole: &Target, d: &DiskInfo, plan: &InstallPlan) -> Result<Destination> {
    if plan.gpt.layout.is_empty() {
        return Ok(Destination { target: Target::open(&d.path)?, layout: None });
    }
    let parts = gpt::create_layout(whole, &plan.gpt.layout).context("creating the partition layout")?;
    let idx = plan.gpt.layout.iter().position(|p| p.image).context("no partition is marked `image`")?;
    let p = &parts[idx];
    // The partition's old contents may still hold a filesystem: wipe its ends too.
    wipe::plan(p.len, &[]).iter().try_for_each(|&(s, l)| whole.zero_abs(p.start + s, l))?;
    tracing::info!("image goes into partition {} {:?} at byte {}", p.number, p.name, p.start);
    Ok(Destination { target: Target::open(&d.path)?.region(p.start, p.len)?, layout: Some(parts) })
}

/// `image-streaming` (progress) and `image-verified`.
/// The image comes from the bootsvc in use when its URL is on one of them (`sources`).
fn stream_image(
    client: &Client,
    spec: &ImageSpec,
    sources: &Servers,
    target: &Target,
    opts: &Options,
    reporter: &Reporter,
) -> Result<()> {
    let tuning = image::Tuning { timeouts: opts.http.timeouts(), ..opts.tuning.clone() };
    let out = image::stream_from(client, spec, sources, target, &tuning, &|p| {
        tracing::info!("image: {}", progress::describe(p));
        reporter.progress(Phase::ImageStreaming, p, progress::describe(p));
    })
    .with_context(|| format!("writing the image to {}", target.describe()))?;
    let secs = out.elapsed.as_secs_f64().max(1e-3);
    reporter.event(
        Phase::ImageVerified,
        format!(
            "{} {} ok; {} bytes in {secs:.1} s ({:.0} MB/s) from {}; {} resumes, {} restarts; {}",
            image::algo_name(spec.algo),
            out.sha256,
            out.raw_bytes,
            out.raw_bytes as f64 / secs / 1e6,
            sources.current().1,
            out.resumes,
            out.restarts,
            out.timings.describe(out.elapsed)
        ),
    );
    Ok(())
}

/// `gpt-fixed`: the image's GPT fitted to the disk (or the fresh layout reported); then the
/// kernel rereads the partitions.
fn fix_gpt(whole: &Target, plan: &InstallPlan, layout: Option<&[Part]>, reporter: &Reporter) -> Result<()> {
    if let Some(parts) = layout {
        let v: Vec<String> = parts.iter().map(|p| format!("{}:{}", p.number, p.name)).collect();
        reporter.event(Phase::GptFixed, format!("fresh GPT: {}", v.join(" ")));
    } else {
        let f = gpt::fix(whole, plan.gpt.grow_last_partition).context("fixing the GPT after writing")?;
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
    whole.reread_partitions()
}

/// `cloud-init-seeded`.
fn seed_cloud_init(whole: &Target, md: &Metadata, reporter: &Reporter) -> Result<()> {
    let s = cloudinit::seed(whole, md).context("seeding cloud-init")?;
    reporter.event(
        Phase::CloudInitSeeded,
        format!("partition {} ({}): {}", s.partition, s.fs.kernel_name(), s.files.join(", ")),
    );
    Ok(())
}

/// On a UEFI machine, the installed OS's boot entry and `BootOrder` by the plan's policy
/// ([`bootentry`]); what was done, for the `installed` event. Not fatal: without the entry
/// the firmware still finds the disk's `\EFI\BOOT\BOOTX64.EFI` (`BOOTAA64.EFI`) once the
/// network declines.
fn boot_entry(whole: &Target, plan: &InstallPlan) -> String {
    let policy = match plan.uefi.boot_order {
        BootOrder::NetworkFirst => bootentry::Policy::NetworkFirst,
        BootOrder::DiskFirst => bootentry::Policy::DiskFirst,
    };
    match bootentry::esp::apply(whole, policy) {
        Ok(bootentry::esp::Outcome::NotUefi) => "BIOS boot: no UEFI boot entry".into(),
        Ok(bootentry::esp::Outcome::Written(w)) => w.to_string(),
        Err(e) => {
            tracing::warn!("UEFI boot entry not written: {e:#}");
            format!("UEFI boot entry not written ({policy}): {e:#}")
        }
    }
}

/// `installed`, and every event delivered (or given up on: the disk is done either way).
fn installed(md: &Metadata, d: &DiskInfo, entry: &str, reporter: &Reporter) {
    reporter.event(Phase::Installed, format!("{} installed on {}; {entry}", md.hostname, d.path.display()));
    if !reporter.flush() {
        tracing::warn!("bootsvc did not acknowledge every event; the disk is installed anyway");
    }
}

//! Disks: what the machine has (from `/sys`, [`sysfs`]), which one to install to
//! ([`select`]), and wiping it ([`wipe`]).

pub mod select;
pub mod sysfs;
pub mod wipe;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use osie_api::DiskHints;

pub use sysfs::DiskInfo;

/// The kernel name behind a device path (`/dev/disk/by-id/…` → `sda`).
pub fn kernel_name(path: &Path) -> Result<String> {
    let real = std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    real.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} names no device", path.display()))
}

/// The target disk: `explicit` when given (still refused if removable, read-only, in use or
/// too small), else chosen by `hints` among `candidates` (or, when none are given, the
/// machine's disks: [`sysfs::BlockDevices::pool`]).
pub fn choose(
    sys: &Path,
    hints: &DiskHints,
    need: u64,
    explicit: Option<&Path>,
    candidates: &[PathBuf],
) -> Result<DiskInfo> {
    let devices = sysfs::scan(sys)?;
    let in_use = sysfs::devices_in_use();
    if let Some(p) = explicit {
        let name = kernel_name(p)?;
        let Some(d) = devices.disks.iter().find(|d| d.name == name) else {
            if let Some((_, why)) = devices.not_disks.iter().find(|(n, _)| *n == name) {
                bail!("{} ({name}) is not a disk to install to: {why}", p.display());
            }
            bail!("{} ({name}) is not a disk this machine lists in {}/block", p.display(), sys.display());
        };
        let reasons =
            select::assess(d, &DiskHints { min_size: hints.min_size, ..Default::default() }, need, None, &in_use);
        if !reasons.is_empty() {
            let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            bail!("refusing {}: {}", p.display(), why.join(", "));
        }
        return Ok(d.clone());
    }
    let wanted: Vec<String> = candidates.iter().map(|c| kernel_name(c)).collect::<Result<_>>()?;
    let pool = devices.pool(&wanted);
    let path_name = hints.path.as_deref().map(|p| kernel_name(Path::new(p))).transpose().context("disk hint path")?;
    Ok(select::select(&pool, hints, need, path_name.as_deref(), &in_use)?.clone())
}

/// `installer disks`: every disk and why it would be refused; in text, also the block
/// devices that are not disks, and why.
pub fn print_report(min_size: Option<u64>, json: bool) -> Result<()> {
    let devices = sysfs::scan(Path::new("/sys"))?;
    let disks = &devices.disks;
    let in_use = sysfs::devices_in_use();
    let hints = DiskHints { min_size, ..Default::default() };
    if json {
        let v: Vec<serde_json::Value> = disks
            .iter()
            .map(|d| {
                let r: Vec<String> =
                    select::assess(d, &hints, 0, None, &in_use).iter().map(ToString::to_string).collect();
                serde_json::json!({ "disk": d.to_api(), "refused": r })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<14} {:>14} {:>9} {:>3} {:>3} {:>3}  {:<20} {:<20} {:<24} VERDICT",
        "PATH", "SIZE", "SECTOR", "ROT", "RM", "RO", "MODEL", "SERIAL", "WWN"
    );
    for d in disks {
        let mut r: Vec<String> = select::assess(d, &hints, 0, None, &in_use).iter().map(ToString::to_string).collect();
        if d.is_loop {
            r.push("a loop device (only chosen when named)".into());
        }
        let verdict = if r.is_empty() { "usable".to_string() } else { format!("refused: {}", r.join(", ")) };
        let yn = |b: bool| if b { "yes" } else { "no" };
        println!(
            "{:<14} {:>14} {:>9} {:>3} {:>3} {:>3}  {:<20} {:<20} {:<24} {verdict}",
            d.path.display(),
            d.size,
            format!("{}/{}", d.logical_sector_size, d.physical_sector_size),
            yn(d.rotational),
            yn(d.removable),
            yn(d.read_only),
            d.model.as_deref().unwrap_or("-"),
            d.serial.as_deref().unwrap_or("-"),
            d.wwn.as_deref().unwrap_or("-"),
        );
    }
    for (name, why) in &devices.not_disks {
        println!("{:<14} not a disk: {why}", format!("/dev/{name}"));
    }
    Ok(())
}

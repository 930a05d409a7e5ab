//! Choosing the target disk from the metadata's hints: a pure function over what
//! [`super::sysfs`] read, so every rule is tested without hardware.
//!
//! Rules: a disk named by `path`, `serial` or `wwn` must match; `model`, `min_size` and
//! `max_size` narrow further; removable, read-only, in-use and too-small disks are refused
//! (also when named explicitly — then with the reason). Among the disks left, the smallest
//! wins (the usual boot disk next to big data disks), ties by name.

use std::collections::HashSet;
use std::fmt;

use osie_api::DiskHints;

use super::sysfs::DiskInfo;

/// Why a disk cannot be the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Removable,
    ReadOnly,
    TooSmall { need: u64 },
    TooLarge { max: u64 },
    InUse,
    Stacked,
    NotNamed(&'static str),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Removable => f.write_str("removable"),
            Refusal::ReadOnly => f.write_str("read-only"),
            Refusal::TooSmall { need } => write!(f, "too small (needs at least {need} bytes)"),
            Refusal::TooLarge { max } => write!(f, "larger than max_size {max}"),
            Refusal::InUse => f.write_str("in use (a partition of it is mounted or used as swap)"),
            Refusal::Stacked => f.write_str("in use (device-mapper or md sits on it)"),
            Refusal::NotNamed(h) => write!(f, "does not match the {h} hint"),
        }
    }
}

/// Every reason `d` cannot be the target; empty when it can. `need` is the image's size;
/// `path_name` is the kernel name the `path` hint resolved to.
pub fn assess(
    d: &DiskInfo,
    hints: &DiskHints,
    need: u64,
    path_name: Option<&str>,
    in_use: &HashSet<String>,
) -> Vec<Refusal> {
    let mut r = Vec::new();
    if hints.path.is_some() && path_name != Some(d.name.as_str()) {
        r.push(Refusal::NotNamed("path"));
    }
    if let Some(s) = &hints.serial {
        if !d.serial.as_deref().is_some_and(|v| v.trim().eq_ignore_ascii_case(s.trim())) {
            r.push(Refusal::NotNamed("serial"));
        }
    }
    if let Some(w) = &hints.wwn {
        if d.wwn.as_deref().is_none_or(|v| norm_wwn(v) != norm_wwn(w)) {
            r.push(Refusal::NotNamed("wwn"));
        }
    }
    if let Some(m) = &hints.model {
        if !d.model.as_deref().is_some_and(|v| v.trim().eq_ignore_ascii_case(m.trim())) {
            r.push(Refusal::NotNamed("model"));
        }
    }
    if d.removable {
        r.push(Refusal::Removable);
    }
    if d.read_only {
        r.push(Refusal::ReadOnly);
    }
    let need = need.max(hints.min_size.unwrap_or(0));
    if d.size < need {
        r.push(Refusal::TooSmall { need });
    }
    if let Some(max) = hints.max_size {
        if d.size > max {
            r.push(Refusal::TooLarge { max });
        }
    }
    if in_use.contains(&d.dev) || d.partitions.iter().any(|p| in_use.contains(&p.dev)) {
        r.push(Refusal::InUse);
    }
    if d.has_holders {
        r.push(Refusal::Stacked);
    }
    r
}

/// `naa.5000C500A1B2C3D4`, `0x5000c500a1b2c3d4` and `5000c500a1b2c3d4` are one WWN.
fn norm_wwn(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    ["naa.", "eui.", "t10.", "0x"].iter().find_map(|p| s.strip_prefix(p)).unwrap_or(&s).to_string()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("the disk the hints name ({disk}) cannot be used: {reasons}")]
    NamedRefused { disk: String, reasons: String },
    #[error("no disk matches the hints {hints}; disks seen: {seen}")]
    NoneMatches { hints: String, seen: String },
    #[error("no usable disk (hints {hints}); disks seen: {seen}")]
    NoneUsable { hints: String, seen: String },
}

/// Pick the target among `disks`.
pub fn select<'a>(
    disks: &'a [DiskInfo],
    hints: &DiskHints,
    need: u64,
    path_name: Option<&str>,
    in_use: &HashSet<String>,
) -> Result<&'a DiskInfo, SelectError> {
    let assessed: Vec<(&DiskInfo, Vec<Refusal>)> =
        disks.iter().map(|d| (d, assess(d, hints, need, path_name, in_use))).collect();
    let seen = || {
        let v: Vec<String> = assessed
            .iter()
            .map(|(d, r)| {
                let why = if r.is_empty() { "usable".to_string() } else { join(r) };
                format!("{} ({} bytes): {why}", d.path.display(), d.size)
            })
            .collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join("; ")
        }
    };
    let named = hints.path.is_some() || hints.serial.is_some() || hints.wwn.is_some();
    let identified: Vec<&(&DiskInfo, Vec<Refusal>)> =
        assessed.iter().filter(|(_, r)| !r.iter().any(|x| matches!(x, Refusal::NotNamed(_)))).collect();
    if named && identified.len() == 1 && !identified[0].1.is_empty() {
        let (d, r) = identified[0];
        return Err(SelectError::NamedRefused { disk: d.path.display().to_string(), reasons: join(r) });
    }
    if identified.is_empty() {
        return Err(SelectError::NoneMatches { hints: describe(hints), seen: seen() });
    }
    assessed
        .iter()
        .filter(|(_, r)| r.is_empty())
        .map(|(d, _)| *d)
        .min_by(|a, b| a.size.cmp(&b.size).then_with(|| a.name.cmp(&b.name)))
        .ok_or_else(|| SelectError::NoneUsable { hints: describe(hints), seen: seen() })
}

fn join(r: &[Refusal]) -> String {
    r.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn describe(h: &DiskHints) -> String {
    serde_json::to_string(h).unwrap_or_else(|_| format!("{h:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const G: u64 = 1 << 30;

    fn d(name: &str, size: u64) -> DiskInfo {
        DiskInfo {
            name: name.into(),
            path: PathBuf::from("/dev").join(name),
            size,
            logical_sector_size: 512,
            physical_sector_size: 512,
            dev: format!("8:{}", name.len()),
            ..Default::default()
        }
    }

    fn pick<'a>(disks: &'a [DiskInfo], h: &DiskHints, need: u64) -> Result<&'a str, SelectError> {
        let path_name = h.path.as_deref().map(|p| p.trim_start_matches("/dev/"));
        select(disks, h, need, path_name, &HashSet::new()).map(|d| d.name.as_str())
    }

    #[test]
    fn smallest_usable_disk_by_default() {
        let disks = [d("sda", 500 * G), d("sdb", 20 * G), d("nvme0n1", 10 * G)];
        assert_eq!(pick(&disks, &DiskHints::default(), 2 * G), Ok("nvme0n1"));
        assert_eq!(pick(&disks, &DiskHints::default(), 15 * G), Ok("sdb"), "too small ones are skipped");
        let h = DiskHints { min_size: Some(100 * G), ..Default::default() };
        assert_eq!(pick(&disks, &h, 2 * G), Ok("sda"));
        let h = DiskHints { max_size: Some(15 * G), ..Default::default() };
        assert_eq!(pick(&disks, &h, 2 * G), Ok("nvme0n1"));
    }

    #[test]
    fn removable_readonly_and_in_use_are_refused() {
        let mut usb = d("sdc", 8 * G);
        usb.removable = true;
        let mut ro = d("sdd", 9 * G);
        ro.read_only = true;
        let mut mounted = d("vda", 10 * G);
        mounted.partitions.push(super::super::sysfs::PartInfo { dev: "254:1".into(), ..Default::default() });
        let mut stacked = d("sde", 11 * G);
        stacked.has_holders = true;
        let disks = [usb, ro, mounted, stacked, d("sdf", 12 * G)];
        let in_use: HashSet<String> = ["254:1".to_string()].into();
        let got = select(&disks, &DiskHints::default(), G, None, &in_use).unwrap();
        assert_eq!(got.name, "sdf");

        let only_bad = &disks[..4];
        let e = select(only_bad, &DiskHints::default(), G, None, &in_use).unwrap_err().to_string();
        for want in ["/dev/sdc (8589934592 bytes): removable", "read-only", "mounted", "device-mapper"] {
            assert!(e.contains(want), "{want:?} missing from: {e}");
        }
    }

    #[test]
    fn named_disks_must_match_and_are_refused_with_the_reason() {
        let mut a = d("sda", 100 * G);
        a.serial = Some("WD-123".into());
        a.wwn = Some("naa.5000c500a1b2c3d4".into());
        a.model = Some("WDC WD1003".into());
        let mut b = d("sdb", 10 * G);
        b.serial = Some("S2".into());
        b.removable = true;
        let disks = [a, b, d("sdc", 5 * G)];

        let by = |h: DiskHints| pick(&disks, &h, G);
        assert_eq!(by(DiskHints { serial: Some("wd-123".into()), ..Default::default() }), Ok("sda"));
        assert_eq!(by(DiskHints { wwn: Some("0x5000C500A1B2C3D4".into()), ..Default::default() }), Ok("sda"));
        assert_eq!(by(DiskHints { path: Some("/dev/sda".into()), ..Default::default() }), Ok("sda"));
        assert_eq!(by(DiskHints { model: Some("WDC WD1003".into()), ..Default::default() }), Ok("sda"));

        let e = by(DiskHints { serial: Some("S2".into()), ..Default::default() }).unwrap_err();
        assert_eq!(e, SelectError::NamedRefused { disk: "/dev/sdb".into(), reasons: "removable".into() });
        let e = pick(&disks, &DiskHints { path: Some("/dev/sdc".into()), ..Default::default() }, 6 * G).unwrap_err();
        assert!(e.to_string().contains("/dev/sdc") && e.to_string().contains("too small"), "{e}");
        let e = by(DiskHints { serial: Some("nope".into()), ..Default::default() }).unwrap_err();
        assert!(matches!(e, SelectError::NoneMatches { .. }), "{e:?}");
        assert!(e.to_string().contains("does not match the serial hint"), "{e}");
    }

    #[test]
    fn selection_over_a_sys_tree() {
        use crate::disk::sysfs::{self, fake};
        let t = tempfile::tempdir().unwrap();
        let sectors = |g: u64| g * G / 512;
        fake::write(
            t.path(),
            &[
                fake::FakeDisk { serial: Some("BOOT-1"), model: Some("SSD"), ..fake::disk("sda", sectors(240)) },
                fake::FakeDisk { wwid: Some("naa.600508b1001c4d7a"), ..fake::disk("sdb", sectors(4000)) },
                fake::FakeDisk { removable: true, serial: Some("USB-9"), ..fake::disk("sdc", sectors(16)) },
                fake::FakeDisk { ro: true, ..fake::disk("sdd", sectors(100)) },
                fake::disk("nvme0n1", sectors(960)),
            ],
        );
        let disks = sysfs::scan(t.path()).unwrap().disks;
        assert_eq!(disks.len(), 5);
        let none = HashSet::new();
        let pick = |h: DiskHints| select(&disks, &h, 10 * G, None, &none).map(|d| d.name.clone());
        assert_eq!(
            pick(DiskHints::default()),
            Ok("sda".into()),
            "smallest usable: not the USB stick, not the read-only one"
        );
        assert_eq!(pick(DiskHints { wwn: Some("0x600508B1001C4D7A".into()), ..Default::default() }), Ok("sdb".into()));
        assert_eq!(pick(DiskHints { serial: Some("BOOT-1".into()), ..Default::default() }), Ok("sda".into()));
        assert_eq!(pick(DiskHints { min_size: Some(500 * G), ..Default::default() }), Ok("nvme0n1".into()));
        let e = pick(DiskHints { serial: Some("USB-9".into()), ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("/dev/sdc") && e.contains("removable"), "{e}");
        let e = select(&disks, &DiskHints::default(), 5000 * G, None, &none).unwrap_err().to_string();
        assert!(e.contains("no usable disk") && e.contains("/dev/sdd") && e.contains("read-only"), "{e}");
    }
}

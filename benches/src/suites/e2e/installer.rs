//! Inside the installer: how long each of its phases took, from the times it stamped on its
//! own events (one clock, the guest's, so no delivery lag between them), and how the image
//! phase split between the network, the disk and the CPU, from the breakdown the installer
//! puts in its `image-verified` message (`installer/src/image/timing.rs`,
//! `Timings::describe`). Pure: events in, figures out.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use osie_api::{Event, Phase};
use osie_qemu_tests::clock::parse_rfc3339;

/// The image phase as the installer measured it: each stage's busy time as a share of the
/// stream's wall time (the stages run on their own threads and overlap), the wall time,
/// the CPU time of all stages, and the bytes written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageSplit {
    pub network_pct: f64,
    pub disk_pct: f64,
    pub decompress_pct: f64,
    pub sha256_pct: f64,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub raw_bytes: Option<f64>,
}

impl ImageSplit {
    /// The CPU stages together: decompression and sha256.
    pub fn cpu_pct(&self) -> f64 {
        self.decompress_pct + self.sha256_pct
    }
}

/// Read the split from an `image-verified` message:
/// `sha256 … ok; 2147483648 bytes in 18.2 s (118 MB/s); 0 resumes, 0 restarts; network 12%,
/// disk 85%, decompress 40%, sha256 15% of 18.2 s; CPU 9.1 s`.
pub fn parse_split(message: &str) -> Result<ImageSplit> {
    let what = || format!("the image-verified message {message:?}");
    let parts: Vec<&str> = message.split("; ").map(str::trim).collect();
    let Some(i) = parts.iter().position(|p| p.starts_with("network ")) else {
        bail!("{}: no stage breakdown (`network N%, disk N%, …`); an installer older than its timings?", what());
    };
    let mut shares: BTreeMap<&str, f64> = BTreeMap::new();
    let mut wall = None;
    for item in parts[i].split(", ") {
        let (name, rest) = item.split_once(' ').with_context(|| format!("{}: stage {item:?}", what()))?;
        let (pct, tail) = rest.split_once('%').with_context(|| format!("{}: no % in {item:?}", what()))?;
        let pct: f64 = pct.trim().parse().with_context(|| format!("{}: share in {item:?}", what()))?;
        shares.insert(name, pct);
        if let Some(w) = tail.trim().strip_prefix("of ") {
            wall = Some(seconds(w).with_context(|| format!("{}: wall time in {item:?}", what()))?);
        }
    }
    let cpu = parts
        .get(i + 1)
        .and_then(|p| p.strip_prefix("CPU "))
        .with_context(|| format!("{}: no `CPU N s` after the breakdown", what()))?;
    let share = |k: &str| shares.get(k).copied().with_context(|| format!("{}: no {k} share", what()));
    let raw_bytes =
        parts.iter().find_map(|p| p.split_once(" bytes in ").and_then(|(n, _)| n.trim().parse::<f64>().ok()));
    Ok(ImageSplit {
        network_pct: share("network")?,
        disk_pct: share("disk")?,
        decompress_pct: share("decompress")?,
        sha256_pct: share("sha256")?,
        wall_s: wall.with_context(|| format!("{}: no `of N s`", what()))?,
        cpu_s: seconds(cpu).with_context(|| format!("{}: CPU time {cpu:?}", what()))?,
        raw_bytes,
    })
}

/// `4.2 s` → 4.2.
fn seconds(s: &str) -> Result<f64> {
    let n = s.trim().strip_suffix(" s").with_context(|| format!("{s:?} is not `N s`"))?;
    n.trim().parse().with_context(|| format!("{s:?} is not a number of seconds"))
}

/// The installer's phases, between the events it sends in order (`installer/src/install.rs`).
pub const STAGES: [(&str, &str, Phase, Phase); 7] = [
    ("inst_metadata", "metadata fetched", Phase::BootedInstaller, Phase::Metadata),
    ("inst_disk_select", "disk selected", Phase::Metadata, Phase::DiskSelected),
    ("inst_wipe", "disk wiped (old signatures)", Phase::DiskSelected, Phase::DiskWiped),
    ("inst_image", "image streamed and verified", Phase::DiskWiped, Phase::ImageVerified),
    ("inst_gpt", "GPT fixed", Phase::ImageVerified, Phase::GptFixed),
    ("inst_seed", "cloud-init seeded", Phase::GptFixed, Phase::CloudInitSeeded),
    ("inst_report", "installed reported", Phase::CloudInitSeeded, Phase::Installed),
];

/// The installer's figures from its events: `<stage>_s` for each of [`STAGES`] (by the
/// sender's own timestamps), `inst_total_s`, and the image split (`image_*`) when the
/// `image-verified` message carries it. The split's absence is an error: it is what this
/// item reports.
pub fn figures(events: &[Event]) -> Result<BTreeMap<String, f64>> {
    let sent = |p: Phase| events.iter().find(|e| e.phase == p).and_then(|e| parse_rfc3339(&e.time));
    let mut f = BTreeMap::new();
    for (key, _, from, to) in STAGES {
        if let (Some(a), Some(b)) = (sent(from), sent(to)) {
            f.insert(format!("{key}_s"), b.duration_since(a).unwrap_or_default().as_secs_f64());
        }
    }
    if let (Some(a), Some(b)) = (sent(Phase::BootedInstaller), sent(Phase::Installed)) {
        f.insert("inst_total_s".into(), b.duration_since(a).unwrap_or_default().as_secs_f64());
    }
    let verified = events.iter().find(|e| e.phase == Phase::ImageVerified).context("no image-verified event")?;
    let s = parse_split(&verified.message)?;
    f.insert("image_network_pct".into(), s.network_pct);
    f.insert("image_disk_pct".into(), s.disk_pct);
    f.insert("image_decompress_pct".into(), s.decompress_pct);
    f.insert("image_sha256_pct".into(), s.sha256_pct);
    f.insert("image_cpu_pct".into(), s.cpu_pct());
    f.insert("image_stream_s".into(), s.wall_s);
    f.insert("image_cpu_s".into(), s.cpu_s);
    if let Some(b) = s.raw_bytes {
        f.insert("image_mb_per_sec".into(), b / s.wall_s.max(1e-3) / 1e6);
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message as `installer/src/install.rs` formats it, the breakdown as
    /// `Timings::describe` does (its own test pins that format).
    const VERIFIED: &str = "sha256 914911a131d6be6f3f980a2cc96906acb04b1369ff8b0dd00b2ed2dd86a71781 ok; \
                            2147483648 bytes in 17.9 s (120 MB/s); 0 resumes, 0 restarts; network 12%, disk 61%, \
                            decompress 48%, sha256 9% of 17.9 s; CPU 10.4 s";

    #[test]
    fn reads_the_installers_breakdown() {
        let s = parse_split(VERIFIED).unwrap();
        assert_eq!(
            s,
            ImageSplit {
                network_pct: 12.0,
                disk_pct: 61.0,
                decompress_pct: 48.0,
                sha256_pct: 9.0,
                wall_s: 17.9,
                cpu_s: 10.4,
                raw_bytes: Some(2_147_483_648.0),
            }
        );
        assert_eq!(s.cpu_pct(), 57.0);
    }

    #[test]
    fn refuses_messages_without_a_whole_breakdown() {
        let old = "sha256 abc ok; 2147483648 bytes in 17.9 s (120 MB/s); 0 resumes, 0 restarts";
        let e = format!("{:#}", parse_split(old).unwrap_err());
        assert!(e.contains("no stage breakdown"), "{e}");
        for bad in [
            "network 12%, disk 61%, decompress 48% of 17.9 s; CPU 10.4 s",
            "network 12%, disk 61%, decompress 48%, sha256 9%; CPU 10.4 s",
            "network 12%, disk x%, decompress 48%, sha256 9% of 17.9 s; CPU 10.4 s",
            "network 12%, disk 61%, decompress 48%, sha256 9% of 17.9 s",
            "network 12%, disk 61%, decompress 48%, sha256 9% of 17.9 s; CPU ten s",
        ] {
            assert!(parse_split(bad).is_err(), "{bad}");
        }
    }

    fn event(phase: Phase, ms: u64, message: &str) -> Event {
        Event {
            machine: "52:54:00:be:00:01".parse().unwrap(),
            phase,
            progress: None,
            message: message.into(),
            time: osie_api::time::rfc3339(1_795_284_000_000 + ms),
            run_id: None,
            seq: None,
            error: vec![],
            hardware: None,
            erase: None,
        }
    }

    #[test]
    fn stages_come_from_the_senders_timestamps() {
        let events = vec![
            event(Phase::BootedInstaller, 0, "installer up"),
            event(Phase::Metadata, 350, ""),
            event(Phase::DiskSelected, 400, ""),
            event(Phase::DiskWiped, 1_150, ""),
            event(Phase::ImageStreaming, 5_000, "50%"),
            event(Phase::ImageVerified, 19_100, VERIFIED),
            event(Phase::GptFixed, 19_300, ""),
            event(Phase::CloudInitSeeded, 20_000, ""),
            event(Phase::Installed, 20_010, ""),
        ];
        let f = figures(&events).unwrap();
        let near = |k: &str, v: f64| {
            let got = f.get(k).copied().unwrap_or_else(|| panic!("no {k}: {f:?}"));
            assert!((got - v).abs() < 1e-9, "{k} = {got}, want {v}");
        };
        near("inst_metadata_s", 0.35);
        near("inst_disk_select_s", 0.05);
        near("inst_wipe_s", 0.75);
        near("inst_image_s", 17.95);
        near("inst_gpt_s", 0.2);
        near("inst_seed_s", 0.7);
        near("inst_report_s", 0.01);
        near("inst_total_s", 20.01);
        near("image_cpu_pct", 57.0);
        near("image_disk_pct", 61.0);
        near("image_mb_per_sec", 2_147_483_648.0 / 17.9 / 1e6);

        // Without the breakdown, the item has nothing to report: an error, not zeros.
        let mut old = events.clone();
        old[5].message = "sha256 abc ok".into();
        assert!(figures(&old).is_err());
        assert!(figures(&events[..5]).is_err());
    }
}

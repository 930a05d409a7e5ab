//! Wipe old signatures before writing, so nothing of the previous install is found later
//! (a stale backup GPT, an md or LVM label, a filesystem that blkid still recognises).
//!
//! Zeroed: the disk's first and last MiB (MBR, primary and backup GPT, md 1.0 and 0.90
//! superblocks at the end), and for every partition the old table or the kernel knew of,
//! its first and last MiB (filesystem superblocks, LVM labels, swap) and btrfs's first
//! superblock mirror at 64 MiB.

use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context, Result};

use crate::target::Target;

const MIB: u64 = 1 << 20;
const BTRFS_MIRROR: u64 = 64 * MIB;

/// Byte ranges (start, len) of every partition the disk's current MBR or GPT describes.
pub fn partitions_on_disk(t: &Target) -> Vec<(u64, u64)> {
    let mut f = &t.file;
    let mut out = Vec::new();
    if let Ok(gpt) = gptman::GPT::read_from(&mut f, u64::from(t.logical_sector)) {
        let ss = gpt.sector_size;
        out.extend(
            gpt.iter()
                .filter(|(_, p)| p.is_used())
                .map(|(_, p)| (p.starting_lba * ss, (p.ending_lba.saturating_sub(p.starting_lba) + 1) * ss)),
        );
    }
    let mut mbr = [0u8; 512];
    if f.seek(SeekFrom::Start(0)).is_ok() && f.read_exact(&mut mbr).is_ok() && mbr[510..] == [0x55, 0xaa] {
        for e in mbr[446..510].chunks(16) {
            let kind = e[4];
            let start = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]])) * 512;
            let len = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]])) * 512;
            if kind != 0 && kind != 0xee && len > 0 {
                out.push((start, len));
            }
        }
    }
    out
}

/// The ranges to zero for a disk of `size` bytes with these partitions, clipped to the disk.
pub fn plan(size: u64, partitions: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut r = vec![(0, MIB.min(size)), (size.saturating_sub(MIB), MIB.min(size))];
    for &(start, len) in partitions {
        r.push((start, MIB.min(len)));
        r.push((start + len.saturating_sub(MIB), MIB.min(len)));
        if len > BTRFS_MIRROR + MIB {
            r.push((start + BTRFS_MIRROR, MIB));
        }
    }
    let mut r: Vec<(u64, u64)> =
        r.into_iter().filter(|&(s, _)| s < size).map(|(s, l)| (s, l.min(size - s))).filter(|&(_, l)| l > 0).collect();
    r.sort_unstable();
    r.dedup();
    r
}

/// Zero every old signature on the whole device behind `t`, then re-read its (now empty)
/// partition table.
pub fn wipe(t: &Target, known_partitions: &[(u64, u64)]) -> Result<usize> {
    let mut parts = partitions_on_disk(t);
    parts.extend_from_slice(known_partitions);
    let ranges = plan(t.device_size, &parts);
    for &(s, l) in &ranges {
        t.zero_abs(s, l).with_context(|| format!("wiping bytes {s}..{} of {}", s + l, t.path.display()))?;
    }
    t.sync()?;
    t.reread_partitions()?;
    Ok(ranges.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_disk_ends_and_partitions() {
        let size = 1 << 30;
        let r = plan(size, &[(MIB, 100 * MIB), (200 * MIB, MIB / 2)]);
        assert_eq!(
            r,
            vec![(0, MIB), (MIB, MIB), (65 * MIB, MIB), (100 * MIB, MIB), (200 * MIB, MIB / 2), (size - MIB, MIB)]
        );
        assert_eq!(plan(4096, &[]), vec![(0, 4096)], "a tiny disk is zeroed once, within its size");
        assert_eq!(
            plan(size, &[(size + MIB, MIB)]),
            vec![(0, MIB), (size - MIB, MIB)],
            "stale entries beyond the end are ignored"
        );
    }
}

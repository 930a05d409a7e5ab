//! The partition table after the image is written, with gptman: the `gpt` crate renumbers
//! partitions when it writes (1, 14, 15 become 1, 2, 3), which breaks real cloud images;
//! gptman keeps every number and relocates the backup header.
//!
//! - [`fix`]: an image made for a small disk has its backup GPT in the middle of ours; move
//!   it to the real end and, when asked, grow the last partition (only the last) to fill
//!   the disk. Numbers, GUIDs, names and attributes stay as they were.
//! - [`create_layout`]: layout mode, a fresh GPT from the metadata's partition list, for
//!   images that are one partition's contents.
//!
//! The GPT is read with the disk's logical sector size: a 4Kn disk needs an image built for
//! 4096-byte sectors, and the error says so when it is not.

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{anyhow, bail, Context, Result};
use gptman::{GPTPartitionEntry, GPT};
use osie_api::metadata::PartitionSpec;
use osie_api::size::SizeSpec;

use crate::target::Target;

const MIB: u64 = 1 << 20;

pub const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
pub const LINUX_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
pub const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
pub const SWAP: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";

/// A partition as it ended up on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub name: String,
    pub type_guid: String,
    pub start: u64,
    pub len: u64,
}

#[derive(Debug, Clone)]
pub struct Fixed {
    pub partitions: Vec<Part>,
    /// The partition grown and its old and new size in bytes.
    pub grown: Option<(u32, u64, u64)>,
    pub backup_lba_before: u64,
    pub backup_lba_after: u64,
}

/// Read the disk's GPT with its logical sector size, explaining a sector-size mismatch.
pub fn read(t: &Target) -> Result<GPT> {
    let ss = u64::from(t.logical_sector);
    let mut f = &t.file;
    match GPT::read_from(&mut f, ss) {
        Ok(g) => Ok(g),
        Err(e) => {
            let other = if ss == 512 { 4096 } else { 512 };
            if GPT::read_from(&mut f, other).is_ok() {
                bail!(
                    "the image's GPT is laid out for {other}-byte sectors but {} has {ss}-byte logical sectors: use an image built for this disk",
                    t.path.display()
                );
            }
            Err(anyhow!(e).context(format!("reading the GPT of {}", t.path.display())))
        }
    }
}

/// Move the backup GPT to the end of the disk and optionally grow the last partition.
pub fn fix(t: &Target, grow_last: bool) -> Result<Fixed> {
    let mut gpt = read(t)?;
    let ss = gpt.sector_size;
    let mut f = &t.file;
    let before = gpt.header.backup_lba;
    gpt.header.update_from(&mut f, ss).context("sizing the GPT to the disk")?;
    let mut grown = None;
    if grow_last {
        let last = gpt.iter().filter(|(_, p)| p.is_used()).max_by_key(|(_, p)| p.ending_lba).map(|(i, _)| i);
        if let Some(i) = last {
            let end = gpt.header.last_usable_lba;
            let p = &mut gpt[i];
            if end > p.ending_lba {
                let old = (p.ending_lba - p.starting_lba + 1) * ss;
                p.ending_lba = end;
                grown = Some((i, old, (end - p.starting_lba + 1) * ss));
            }
        }
    }
    gpt.write_into(&mut f).with_context(|| format!("writing the GPT of {}", t.path.display()))?;
    // The image's old backup header now sits in free space (or inside the grown partition):
    // blank it so no tool mistakes it for this disk's table.
    if before != gpt.header.backup_lba && before > gpt.header.primary_lba {
        t.write_abs(before * ss, &vec![0u8; ss as usize]).context("blanking the image's old backup GPT header")?;
    }
    update_protective_mbr(t, ss)?;
    t.sync()?;
    t.reread_partitions()?;
    Ok(Fixed { partitions: list(&gpt), grown, backup_lba_before: before, backup_lba_after: gpt.header.backup_lba })
}

/// Set the protective MBR's size to the disk's. Only a standard 0xEE entry is touched: the
/// boot code and a hybrid MBR's other entries stay.
fn update_protective_mbr(t: &Target, ss: u64) -> Result<()> {
    let mut f = &t.file;
    let mut mbr = [0u8; 512];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut mbr).context("reading the MBR")?;
    if mbr[510..] != [0x55, 0xaa] || mbr[446 + 4] != 0xee {
        return Ok(());
    }
    let sectors = (t.device_size / ss).saturating_sub(1).min(u64::from(u32::MAX)) as u32;
    mbr[446 + 12..446 + 16].copy_from_slice(&sectors.to_le_bytes());
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&mbr).context("writing the protective MBR")
}

pub fn list(gpt: &GPT) -> Vec<Part> {
    let ss = gpt.sector_size;
    gpt.iter()
        .filter(|(_, p)| p.is_used())
        .map(|(i, p)| Part {
            number: i,
            name: p.partition_name.as_str().to_string(),
            type_guid: format_guid(&p.partition_type_guid),
            start: p.starting_lba * ss,
            len: (p.ending_lba - p.starting_lba + 1) * ss,
        })
        .collect()
}

/// Sector ranges `(first, last)` for `specs` between `first_usable` and `last_usable`, each
/// start aligned to `align` sectors. Fixed sizes and percentages (of the usable space) are
/// placed in order; one `rest` takes what the others leave.
pub fn plan_layout(
    first_usable: u64,
    last_usable: u64,
    align: u64,
    ss: u64,
    specs: &[PartitionSpec],
) -> Result<Vec<(u64, u64)>> {
    let usable = (last_usable + 1).saturating_sub(first_usable) * ss;
    let rests = specs.iter().filter(|s| s.size == SizeSpec::Rest).count();
    if rests > 1 {
        bail!("only one partition may have size `rest` ({rests} do)");
    }
    let up = |v: u64| v.div_ceil(align) * align;
    let want: Vec<Option<u64>> = specs
        .iter()
        .map(|s| match s.size {
            SizeSpec::Bytes(b) => Some(up(b.div_ceil(ss))),
            SizeSpec::Percent(p) => Some((usable / ss * u64::from(p) / 100) / align * align),
            SizeSpec::Rest => None,
        })
        .collect();
    let start0 = up(first_usable);
    let mut cur = start0;
    let mut out = Vec::new();
    for (spec, w) in specs.iter().zip(&want) {
        let start = up(cur);
        let len = match w {
            Some(0) => bail!("partition {:?}: size {} is zero", spec.name, spec.size),
            Some(l) => *l,
            None => {
                // Later partitions keep their (aligned) sizes; the rest ends where they must
                // start, rounded down to alignment so they stay aligned.
                let later: u64 = want[out.len() + 1..].iter().flatten().sum();
                let avail = (last_usable + 1).saturating_sub(start).saturating_sub(later);
                let l = if later > 0 { avail / align * align } else { avail };
                if l == 0 {
                    bail!("partition {:?}: no space left for `rest`", spec.name);
                }
                l
            }
        };
        let end = start + len - 1;
        if end > last_usable {
            bail!(
                "partition {:?} ({}) does not fit: the layout needs {} bytes, the disk has {} usable",
                spec.name,
                spec.size,
                (end + 1 - start0) * ss,
                usable
            );
        }
        out.push((start, end));
        cur = end + 1;
    }
    Ok(out)
}

/// Write a fresh GPT (and protective MBR) with the layout; returns the partitions.
pub fn create_layout(t: &Target, specs: &[PartitionSpec]) -> Result<Vec<Part>> {
    let ss = u64::from(t.logical_sector);
    let mut f = &t.file;
    let mut gpt = GPT::new_from(&mut f, ss, crate::random::guid()).context("making a new GPT")?;
    gpt.align = (MIB / ss).max(1);
    let ranges = plan_layout(gpt.header.first_usable_lba, gpt.header.last_usable_lba, gpt.align, ss, specs)?;
    for (i, (spec, (start, end))) in specs.iter().zip(ranges).enumerate() {
        gpt[i as u32 + 1] = GPTPartitionEntry {
            partition_type_guid: type_guid(&spec.type_guid).with_context(|| format!("partition {:?}", spec.name))?,
            unique_partition_guid: crate::random::guid(),
            starting_lba: start,
            ending_lba: end,
            attribute_bits: 0,
            partition_name: spec.name.as_str().into(),
        };
    }
    gpt.write_into(&mut f).with_context(|| format!("writing the new GPT of {}", t.path.display()))?;
    GPT::write_protective_mbr_into(&mut f, ss).context("writing the protective MBR")?;
    t.sync()?;
    t.reread_partitions()?;
    Ok(list(&gpt))
}

/// A type GUID from an alias or a GUID string.
pub fn type_guid(s: &str) -> Result<[u8; 16]> {
    let g = match s.to_ascii_lowercase().as_str() {
        "linux" => LINUX_FS,
        "linux-root-x86-64" => LINUX_ROOT_X86_64,
        "esp" | "efi" => ESP,
        "bios-boot" => BIOS_BOOT,
        "swap" => SWAP,
        _ => s,
    };
    parse_guid(g)
}

/// `0FC63DAF-8483-4772-8E79-3D69D8477DE4` → GPT's on-disk bytes (first three fields
/// little-endian).
pub fn parse_guid(s: &str) -> Result<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let groups: Vec<usize> = s.split('-').map(str::len).collect();
    if hex.len() != 32 || groups != [8, 4, 4, 4, 12] {
        bail!("{s:?} is not a GUID (or one of linux, linux-root-x86-64, esp, bios-boot, swap)");
    }
    let mut b = [0u8; 16];
    for (i, o) in b.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).with_context(|| format!("{s:?} is not a GUID"))?;
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Ok(b)
}

pub fn format_guid(b: &[u8; 16]) -> String {
    format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, size: &str) -> PartitionSpec {
        PartitionSpec { name: name.into(), type_guid: "linux".into(), size: size.parse().unwrap(), image: false }
    }

    #[test]
    fn guids_round_trip_in_mixed_endian() {
        let g = parse_guid(LINUX_FS).unwrap();
        assert_eq!(&g[..4], &[0xaf, 0x3d, 0xc6, 0x0f]);
        assert_eq!(format_guid(&g), LINUX_FS);
        assert_eq!(type_guid("esp").unwrap(), parse_guid(ESP).unwrap());
        assert!(type_guid("ext4").is_err());
        assert!(parse_guid("0FC63DAF84834772-8E79-3D69-D8477DE4").is_err());
    }

    #[test]
    fn layout_sizes() {
        // 1 GiB disk of 512-byte sectors: usable 34..=2097118, align 2048.
        let (first, last, align) = (34, 2_097_118, 2048);
        let r = plan_layout(first, last, align, 512, &[spec("esp", "100MiB"), spec("root", "rest")]).unwrap();
        assert_eq!(r[0], (2048, 2048 + 204_800 - 1));
        assert_eq!(r[1], (206_848, last), "rest runs to the last usable sector");

        let r = plan_layout(first, last, align, 512, &[spec("a", "rest"), spec("b", "100MiB")]).unwrap();
        assert_eq!(r[1].1 - r[1].0 + 1, 204_800, "b keeps its size after a leading rest");
        assert_eq!(r[0].0, 2048);
        assert_eq!(r[1].0 % align, 0);
        assert!(r[1].1 <= last);

        let r = plan_layout(first, last, align, 512, &[spec("a", "50%"), spec("b", "25%")]).unwrap();
        assert_eq!(r[0].1 - r[0].0 + 1, (2_097_085 * 50 / 100) / 2048 * 2048);
        assert!(r[1].0 > r[0].1);

        let e = plan_layout(first, last, align, 512, &[spec("a", "2GiB")]).unwrap_err().to_string();
        assert!(e.contains("does not fit"), "{e}");
        assert!(plan_layout(first, last, align, 512, &[spec("a", "rest"), spec("b", "rest")]).is_err());

        // 4Kn: 1 GiB = 262144 sectors, usable 6..=262138, align 256.
        let r = plan_layout(6, 262_138, 256, 4096, &[spec("esp", "64MiB"), spec("root", "rest")]).unwrap();
        assert_eq!(r[0], (256, 256 + 16_384 - 1));
        assert_eq!(r[1], (16_640, 262_138));
    }
}

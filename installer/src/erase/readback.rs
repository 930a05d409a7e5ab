//! Reading a disk back after an erase: samples spread over the whole device, read around
//! the page cache (`O_DIRECT`), must all be zero. A discard that the device ignored in
//! places, or that leaves old data readable, fails here and the next method runs.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::io::aligned::{is_zero, AlignedBuf};

/// The first and last MiB, and this many more spread evenly in between.
const SPREAD: u64 = 62;
const EDGE: u64 = 1 << 20;
const SAMPLE: u64 = 64 << 10;

/// Where to read: (offset, length) pairs, sector-aligned, inside `size`.
pub fn samples(size: u64, sector: u32) -> Vec<(u64, u64)> {
    let sector = u64::from(sector.max(512));
    let edge = EDGE.min(size);
    let mut out = vec![(0, edge)];
    if size > edge {
        for i in 1..=SPREAD {
            let at = (size / (SPREAD + 1) * i) / sector * sector;
            let len = SAMPLE.min(size - at) / sector * sector;
            if len > 0 {
                out.push((at, len));
            }
        }
        let tail = (size - edge) / sector * sector;
        out.push((tail, size - tail));
    }
    out
}

/// Read every sample of `dev`; the number read, or where non-zero data was found.
pub fn all_zero_samples(dev: &Path, size: u64, sector: u32) -> Result<u32> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .or_else(|_| OpenOptions::new().read(true).open(dev))
        .with_context(|| format!("opening {} to read it back", dev.display()))?;
    let mut buf = AlignedBuf::new(EDGE as usize);
    let mut n = 0;
    for (at, len) in samples(size, sector) {
        buf.set_len(len as usize);
        f.read_exact_at(&mut buf, at).with_context(|| format!("reading {len} bytes at {at} of {}", dev.display()))?;
        if !is_zero(&buf) {
            let first = buf.iter().position(|b| *b != 0).unwrap_or(0) as u64;
            bail!("read back non-zero data at byte {}", at + first);
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_cover_both_ends_and_stay_aligned_inside() {
        let size = 4u64 << 30;
        let s = samples(size, 512);
        assert_eq!(s.len(), 64);
        assert_eq!(s[0], (0, 1 << 20));
        assert_eq!(*s.last().unwrap(), (size - (1 << 20), 1 << 20));
        assert!(s.iter().all(|(at, len)| at % 512 == 0 && len % 512 == 0 && at + len <= size && *len > 0));
        // A disk smaller than a MiB: read whole, once.
        assert_eq!(samples(64 << 10, 512), [(0, 64 << 10)]);
        // 4K sectors and an odd size still end at the last byte.
        let odd = (1u64 << 30) + 4096 * 3;
        let s = samples(odd, 4096);
        assert!(s.iter().all(|(at, len)| at % 4096 == 0 && len % 4096 == 0 && at + len <= odd));
        assert_eq!(s.last().map(|(a, l)| a + l), Some(odd));
    }

    #[test]
    fn a_file_with_one_byte_left_is_found() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        assert_eq!(all_zero_samples(&p, 8 << 20, 512).unwrap(), 64);
        f.write_all_at(&[7], (8 << 20) - 10).unwrap();
        let e = all_zero_samples(&p, 8 << 20, 512).unwrap_err().to_string();
        assert_eq!(e, format!("read back non-zero data at byte {}", (8 << 20) - 10));
    }
}

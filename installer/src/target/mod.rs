//! Where an image goes: a whole disk, a partition's byte range on it, or (tests) a file.
//!
//! Bulk writes go through an `O_DIRECT` descriptor (no page-cache copy, no cache pressure on
//! a machine with little RAM); pieces that are not sector-aligned — the tail of an image whose
//! size is not a multiple of the sector — go through an ordinary one. The block-device
//! ioctls it needs (and the partition ones [`crate::cloudinit`] uses) are in [`ioctl`].

pub mod ioctl;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::io::aligned::{AlignedBuf, ALIGN};

const ZERO_FILL: usize = 1 << 20;

pub struct Target {
    pub path: PathBuf,
    /// Buffered descriptor: ioctls, unaligned writes, GPT work.
    pub file: File,
    direct: Option<File>,
    /// Where the image region starts on the device (0, or a partition's first byte).
    pub offset: u64,
    /// Bytes available from `offset`.
    pub len: u64,
    /// Size of the whole device.
    pub device_size: u64,
    pub logical_sector: u32,
    zeroout_works: std::sync::atomic::AtomicBool,
}

impl Target {
    /// The whole device or file at `path`.
    pub fn open(path: &Path) -> Result<Target> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {} for writing", path.display()))?;
        let device_size = ioctl::size(&file).with_context(|| format!("reading the size of {}", path.display()))?;
        let logical_sector = ioctl::logical_sector_size(&file)
            .with_context(|| format!("reading the sector size of {}", path.display()))?;
        // tmpfs and some filesystems refuse O_DIRECT: buffered writes are correct there too.
        let direct = OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok();
        if direct.is_none() {
            tracing::debug!("{}: no O_DIRECT, using buffered writes", path.display());
        }
        Ok(Target {
            path: path.to_path_buf(),
            file,
            direct,
            offset: 0,
            len: device_size,
            device_size,
            logical_sector,
            zeroout_works: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Narrow to the byte range `[offset, offset + len)` (a partition).
    pub fn region(mut self, offset: u64, len: u64) -> Result<Target> {
        if offset.checked_add(len).is_none_or(|end| end > self.device_size) {
            bail!("region {offset}+{len} lies beyond the end of {} ({} bytes)", self.path.display(), self.device_size);
        }
        self.offset = offset;
        self.len = len;
        Ok(self)
    }

    pub fn describe(&self) -> String {
        if self.offset == 0 && self.len == self.device_size {
            self.path.display().to_string()
        } else {
            format!("{} (bytes {}..{})", self.path.display(), self.offset, self.offset + self.len)
        }
    }

    /// Write `data` at `at` within the region.
    pub fn write_at(&self, at: u64, data: &[u8]) -> Result<()> {
        self.write_abs(self.offset + at, data)
    }

    /// Write `data` at `abs` bytes from the start of the whole device.
    pub fn write_abs(&self, abs: u64, data: &[u8]) -> Result<()> {
        let sector = u64::from(self.logical_sector.max(512));
        let aligned = abs.is_multiple_of(sector)
            && (data.len() as u64).is_multiple_of(sector)
            && (data.as_ptr() as usize).is_multiple_of(ALIGN);
        let f = match &self.direct {
            Some(d) if aligned => d,
            _ => &self.file,
        };
        f.write_all_at(data, abs)
            .with_context(|| format!("writing {} bytes at byte {abs} of {}", data.len(), self.path.display()))
    }

    /// Zero `len` bytes at `at` within the region: BLKZEROOUT where the device can, else
    /// written zeros.
    pub fn zero(&self, at: u64, len: u64) -> Result<()> {
        self.zero_abs(self.offset + at, len)
    }

    /// [`Target::zero`] at an offset from the start of the whole device.
    pub fn zero_abs(&self, abs: u64, len: u64) -> Result<()> {
        let sector = u64::from(self.logical_sector.max(512));
        if self.zeroout_works.load(std::sync::atomic::Ordering::Relaxed)
            && abs.is_multiple_of(sector)
            && len.is_multiple_of(sector)
        {
            if ioctl::zeroout(&self.file, abs, len)
                .with_context(|| format!("BLKZEROOUT {len} bytes at {abs} on {}", self.path.display()))?
            {
                return Ok(());
            }
            tracing::debug!("{} cannot BLKZEROOUT; writing zeros", self.path.display());
            self.zeroout_works.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        let mut fill = AlignedBuf::new(ZERO_FILL.min(len as usize));
        let cap = fill.capacity();
        fill.set_len(cap);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(cap as u64) as usize;
            self.write_abs(abs + done, &fill[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// Flush everything written so far to stable storage.
    pub fn sync(&self) -> Result<()> {
        if let Some(d) = &self.direct {
            d.sync_all().with_context(|| format!("fsync {}", self.path.display()))?;
        }
        self.file.sync_all().with_context(|| format!("fsync {}", self.path.display()))
    }

    pub fn reread_partitions(&self) -> Result<()> {
        ioctl::reread_partitions(&self.file)
            .with_context(|| format!("re-reading the partition table of {} (BLKRRPART)", self.path.display()))
    }
}

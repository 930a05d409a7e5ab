//! The writing end of the pipeline: large aligned writes, zero runs as BLKZEROOUT, and the
//! first MiB held back until the caller has verified the whole stream.

use anyhow::{bail, Result};

use crate::io::aligned::{is_zero, AlignedBuf};
use crate::target::Target;

/// Zero runs are detected per aligned segment of this size; it is also the size held back.
pub const SEGMENT: u64 = 1 << 20;

/// What the sink did with a whole stream.
pub struct Written {
    /// The image's first MiB, held back: the caller writes it once the checksum matched.
    pub head: AlignedBuf,
    pub bytes_written: u64,
    pub bytes_zeroed: u64,
}

pub struct Sink<'a> {
    target: &'a Target,
    /// Bytes of the image received so far (the next byte's offset in the image).
    pos: u64,
    held: AlignedBuf,
    /// Pending zero run (image offset, length): issued when data follows or at the end, so
    /// consecutive zero segments become one BLKZEROOUT.
    zero_run: Option<(u64, u64)>,
    pub bytes_zeroed: u64,
    pub bytes_written: u64,
}

impl<'a> Sink<'a> {
    pub fn new(target: &'a Target) -> Sink<'a> {
        Sink {
            target,
            pos: 0,
            held: AlignedBuf::new(SEGMENT as usize),
            zero_run: None,
            bytes_zeroed: 0,
            bytes_written: 0,
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Take the next bytes of the image.
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        let end = self.pos + data.len() as u64;
        if end > self.target.len {
            bail!(
                "the image is larger than {} ({} bytes): it does not fit at byte {}",
                self.target.describe(),
                self.target.len,
                self.pos
            );
        }
        // Contiguous non-zero segments are gathered into one write.
        let mut pending: Option<(usize, usize)> = None;
        let mut off = 0usize;
        while off < data.len() {
            let p = self.pos + off as u64;
            let seg_len = ((SEGMENT - p % SEGMENT) as usize).min(data.len() - off);
            let seg = &data[off..off + seg_len];
            if p < SEGMENT {
                self.held.extend_from(seg);
            } else if seg_len as u64 == SEGMENT && is_zero(seg) {
                if let Some((a, b)) = pending.take() {
                    self.write(self.pos + a as u64, &data[a..b])?;
                }
                self.zero_run = match self.zero_run {
                    Some((s, l)) if s + l == p => Some((s, l + SEGMENT)),
                    other => {
                        if let Some((s, l)) = other {
                            self.zero(s, l)?;
                        }
                        Some((p, SEGMENT))
                    }
                };
            } else {
                if let Some((s, l)) = self.zero_run.take() {
                    self.zero(s, l)?;
                }
                pending = match pending {
                    Some((a, _)) => Some((a, off + seg_len)),
                    None => Some((off, off + seg_len)),
                };
            }
            off += seg_len;
        }
        if let Some((a, b)) = pending {
            self.write(self.pos + a as u64, &data[a..b])?;
        }
        self.pos = end;
        Ok(())
    }

    /// Take bytes that go at `at` (a qcow2 cluster; they arrive in file order, not disk
    /// order). Those in the first MiB are held back like a stream's.
    pub fn place(&mut self, at: u64, data: &[u8]) -> Result<()> {
        let end = self.fits(at, data.len() as u64)?;
        let held = SEGMENT.saturating_sub(at).min(data.len() as u64) as usize;
        if held > 0 {
            let (s, e) = (at as usize, at as usize + held);
            if self.held.len() < e {
                // Fresh buffers are zeroed: bytes skipped so far read as zeros.
                self.held.set_len(e);
            }
            self.held[s..e].copy_from_slice(&data[..held]);
        }
        if held < data.len() {
            self.write(at + held as u64, &data[held..])?;
        }
        self.pos = self.pos.max(end);
        Ok(())
    }

    /// The bytes `[at, at + len)` read as zeros: BLKZEROOUT, except in the held-back first MiB
    /// (already zero there).
    pub fn zeros(&mut self, at: u64, len: u64) -> Result<()> {
        let end = self.fits(at, len)?;
        let held_end = end.min(SEGMENT) as usize;
        if self.held.len() < held_end {
            self.held.set_len(held_end);
        }
        let from = at.max(SEGMENT);
        if end > from {
            self.zero(from, end - from)?;
        }
        self.pos = self.pos.max(end);
        Ok(())
    }

    fn fits(&self, at: u64, len: u64) -> Result<u64> {
        match at.checked_add(len) {
            Some(end) if end <= self.target.len => Ok(end),
            _ => bail!(
                "the image is larger than {} ({} bytes): {len} bytes at byte {at} do not fit",
                self.target.describe(),
                self.target.len
            ),
        }
    }

    /// The stream ended: issue the last zero run.
    pub fn finish(mut self) -> Result<Written> {
        if let Some((s, l)) = self.zero_run.take() {
            self.zero(s, l)?;
        }
        Ok(Written { head: self.held, bytes_written: self.bytes_written, bytes_zeroed: self.bytes_zeroed })
    }

    fn write(&mut self, at: u64, data: &[u8]) -> Result<()> {
        self.target.write_at(at, data)?;
        self.bytes_written += data.len() as u64;
        Ok(())
    }

    fn zero(&mut self, at: u64, len: u64) -> Result<()> {
        self.bytes_zeroed += len;
        self.target.zero(at, len)
    }
}

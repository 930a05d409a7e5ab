//! Page-aligned byte buffers, so the same buffer can be handed to an `O_DIRECT` write.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment good for `O_DIRECT` on every logical sector size we meet (512, 4096).
pub const ALIGN: usize = 4096;

/// A fixed-capacity, 4 KiB-aligned buffer with a fill length (`len ≤ capacity`).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `cap` bytes (rounded up to [`ALIGN`]), empty (`len == 0`).
    pub fn new(cap: usize) -> AlignedBuf {
        let cap = cap.max(ALIGN).div_ceil(ALIGN) * ALIGN;
        let layout = Layout::from_size_align(cap, ALIGN).expect("valid layout: cap > 0, ALIGN a power of two");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, cap, len: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Set the fill length, e.g. after writing into [`AlignedBuf::spare`].
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "AlignedBuf::set_len {len} beyond capacity {}", self.cap);
        self.len = len;
    }

    /// The whole allocation, filled or not.
    pub fn full_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for cap bytes, initialised (zeroed at allocation).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }

    /// The unfilled rest.
    pub fn spare(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.full_mut()[len..]
    }

    /// Append as much of `data` as fits; returns how much was taken.
    pub fn extend_from(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap - self.len);
        let len = self.len;
        self.full_mut()[len..len + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for cap ≥ len initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.full_mut()[..len]
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.cap, ALIGN).expect("layout was valid at allocation");
        // SAFETY: allocated in `new` with this very layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// True when every byte is zero. Word-at-a-time, so scanning a 4 MiB buffer costs little next
/// to writing it.
pub fn is_zero(data: &[u8]) -> bool {
    // SAFETY: u64 has no invalid bit patterns; align_to only reinterprets the aligned middle.
    let (head, mid, tail) = unsafe { data.align_to::<u64>() };
    head.iter().all(|&b| b == 0)
        && tail.iter().all(|&b| b == 0)
        && mid.chunks(8).all(|c| c.iter().fold(0u64, |acc, &w| acc | w) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_fills() {
        let mut b = AlignedBuf::new(5000);
        assert_eq!(b.capacity(), 8192);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert_eq!(b.extend_from(&[1; 6000]), 6000);
        assert_eq!(b.extend_from(&[2; 6000]), 2192);
        assert_eq!(b.len(), 8192);
        assert_eq!(b[5999], 1);
        assert_eq!(b[6000], 2);
    }

    #[test]
    fn zero_scan() {
        let mut v = vec![0u8; 1 << 20];
        assert!(is_zero(&v));
        assert!(is_zero(&v[3..1001]));
        for i in [0, 1, 7, 8, 63, 64, 4095, (1 << 20) - 1] {
            v[i] = 1;
            assert!(!is_zero(&v), "byte {i} missed");
            v[i] = 0;
        }
    }
}

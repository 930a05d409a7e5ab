//! Page-aligned byte buffers, so the same buffer can be handed to an `O_DIRECT` write.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment good for `O_DIRECT` on every logical sector size we meet (512, 4096).
pub const ALIGN: usize = 4096;
/// Buffers this large (download chunks, whole frames) are mapped straight from the kernel
/// (see [`AlignedBuf::new`]).
const MAPPED: usize = 1 << 20;

/// A fixed-capacity, 4 KiB-aligned buffer with a fill length (`len ≤ capacity`).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
    /// From `mmap` (freed with `munmap`), not the allocator.
    mapped: bool,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `cap` bytes (rounded up to [`ALIGN`]), empty (`len == 0`).
    ///
    /// Large ones (download chunks, whole zstd frames) are anonymous mappings: zero without
    /// being written, so memory is only used as far as the buffer is filled (musl's calloc
    /// would write every byte of it), and backed by huge pages where the kernel allows:
    /// 512× fewer page faults when first filled, fewer TLB misses on every pass.
    pub fn new(cap: usize) -> AlignedBuf {
        let cap = cap.max(ALIGN).div_ceil(ALIGN) * ALIGN;
        if cap >= MAPPED {
            // SAFETY: a fresh private anonymous mapping; checked for failure below.
            let raw = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    cap,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if raw != libc::MAP_FAILED {
                // Advice only: where the kernel has no huge pages to give, nothing changes.
                // SAFETY: the range is exactly this mapping.
                unsafe { libc::madvise(raw, cap, libc::MADV_HUGEPAGE) };
                if let Some(ptr) = NonNull::new(raw.cast::<u8>()) {
                    return AlignedBuf { ptr, cap, len: 0, mapped: true };
                }
            }
        }
        let layout = Layout::from_size_align(cap, ALIGN).expect("valid layout: cap > 0, ALIGN a power of two");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, cap, len: 0, mapped: false }
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
        if self.mapped {
            // SAFETY: mapped in `new` with exactly this length.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.cap) };
            return;
        }
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
    fn large_buffers_are_zero_and_use_memory_only_where_filled() {
        let rss = || -> u64 {
            let s = std::fs::read_to_string("/proc/self/statm").unwrap();
            s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
        };
        let before = rss();
        let mut b = AlignedBuf::new(256 << 20);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert!(b.full_mut()[(128 << 20)..(128 << 20) + 4096].iter().all(|&x| x == 0));
        b.extend_from(&[7u8; 1 << 20]);
        assert_eq!((b.len(), b[0], b[(1 << 20) - 1]), (1 << 20, 7, 7));
        // Other tests run beside this one in the process: allow them some.
        let grew = rss().saturating_sub(before);
        assert!(grew < 64 << 20, "a 256 MiB buffer with 1 MiB in it costs {} MiB", grew >> 20);
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

//! Random bytes from the kernel (run ids, GPT GUIDs). The installer needs nothing stronger
//! or faster than getrandom(2), so no RNG crate.

/// `N` random bytes. Blocks only before the kernel's pool is initialised, which on any
/// machine with a hardware RNG or RDRAND is before userspace starts.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let mut done = 0;
    while done < N {
        // SAFETY: the pointer and length describe the unfilled rest of `b`.
        let n = unsafe { libc::getrandom(b[done..].as_mut_ptr().cast(), N - done, 0) };
        if n > 0 {
            done += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // getrandom(2) cannot fail on a kernel that has it (3.17+) with these arguments.
            panic!("getrandom failed: {}", std::io::Error::last_os_error());
        }
    }
    b
}

/// A random version-4 GUID in GPT's mixed-endian byte order is just 16 random bytes with the
/// version and variant bits set in the right places.
pub fn guid() -> [u8; 16] {
    let mut g = bytes::<16>();
    g[7] = (g[7] & 0x0f) | 0x40; // version 4 (the high byte of the little-endian third field)
    g[8] = (g[8] & 0x3f) | 0x80; // RFC 4122 variant
    g
}

#[cfg(test)]
mod tests {
    #[test]
    fn differs() {
        assert_ne!(super::bytes::<16>(), super::bytes::<16>());
        let g = super::guid();
        assert_eq!(g[7] >> 4, 4);
        assert_eq!(g[8] >> 6, 2);
    }
}

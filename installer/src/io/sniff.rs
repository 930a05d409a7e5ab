//! Tell an image's format from its first bytes (`format: auto`).

use osie_api::ImageFormat;

const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const GZIP: &[u8] = &[0x1f, 0x8b];
const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// The format whose magic `head` starts with; anything else is raw (a disk image starts
/// with boot code or zeros, never with these).
pub fn sniff(head: &[u8]) -> ImageFormat {
    if head.starts_with(ZSTD) {
        ImageFormat::Zstd
    } else if head.starts_with(XZ) {
        ImageFormat::Xz
    } else if osie_api::qcow2::is_qcow2(head) {
        ImageFormat::Qcow2
    } else if head.starts_with(GZIP) {
        ImageFormat::Gzip
    } else {
        ImageFormat::Raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics() {
        assert_eq!(sniff(&zstd::encode_all(&b"x"[..], 1).unwrap()), ImageFormat::Zstd);
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), ImageFormat::Gzip);
        assert_eq!(sniff(b"\xfd7zXZ\x00\x00"), ImageFormat::Xz);
        assert_eq!(sniff(b"QFI\xfb\x00\x00\x00\x03"), ImageFormat::Qcow2);
        assert_eq!(sniff(&[0xeb, 0x63, 0x90]), ImageFormat::Raw);
        assert_eq!(sniff(&[0x28, 0xb5]), ImageFormat::Raw, "too short to be zstd");
        assert_eq!(sniff(&[]), ImageFormat::Raw);
    }
}

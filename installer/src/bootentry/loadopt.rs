//! UEFI boot options as the firmware stores them (UEFI 2.10, 3.1.3 `EFI_LOAD_OPTION`, and
//! 10.3 device paths): the one the installer writes for the installed OS (a hard drive
//! media node naming the ESP by its partition GUID, then the loader's file path), and what
//! it needs to read from the others (their description, and whether they boot from the
//! network). Pure: bytes in, bytes out.

use anyhow::{bail, ensure, Result};

/// `LOAD_OPTION_ACTIVE`: the boot manager tries this option.
pub const ACTIVE: u32 = 0x1;

const MEDIA: u8 = 0x04;
const MEDIA_HARD_DRIVE: u8 = 0x01;
const MEDIA_FILE_PATH: u8 = 0x04;
const MESSAGING: u8 = 0x03;
const MESSAGING_MAC: u8 = 0x0b;
const MESSAGING_IPV4: u8 = 0x0c;
const MESSAGING_IPV6: u8 = 0x0d;
const MESSAGING_URI: u8 = 0x18;
const END: u8 = 0x7f;
const END_ENTIRE: u8 = 0xff;
/// Hard drive node: partition format 2 = GPT, signature type 2 = GUID.
const HD_FORMAT_GPT: u8 = 0x02;
const HD_SIGNATURE_GUID: u8 = 0x02;
const HD_NODE_LEN: u16 = 42;

/// Where the installed OS's loader is: its ESP (number, place and GUID on the disk) and the
/// file in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLoader {
    pub partition_number: u32,
    /// In logical blocks of the disk.
    pub start_lba: u64,
    pub size_lba: u64,
    /// The partition's unique GUID as GPT stores it (the first three fields little-endian):
    /// the device path carries it in the same byte order.
    pub partition_guid: [u8; 16],
    /// `\EFI\debian\shimx64.efi`: backslashes, from the ESP's root.
    pub path: String,
}

/// The `EFI_LOAD_OPTION` for `loader`, active, described as `description`.
pub fn encode(description: &str, loader: &DiskLoader) -> Result<Vec<u8>> {
    ensure!(loader.path.starts_with('\\'), "loader path {:?} does not start at the ESP's root (\\)", loader.path);
    let mut path = Vec::new();
    // Hard drive media node.
    path.extend_from_slice(&[MEDIA, MEDIA_HARD_DRIVE]);
    path.extend_from_slice(&HD_NODE_LEN.to_le_bytes());
    path.extend_from_slice(&loader.partition_number.to_le_bytes());
    path.extend_from_slice(&loader.start_lba.to_le_bytes());
    path.extend_from_slice(&loader.size_lba.to_le_bytes());
    path.extend_from_slice(&loader.partition_guid);
    path.extend_from_slice(&[HD_FORMAT_GPT, HD_SIGNATURE_GUID]);
    // File path node: UCS-2, NUL-terminated.
    let file = ucs2_nul(&loader.path)?;
    let len = u16::try_from(4 + file.len()).map_err(|_| anyhow::anyhow!("loader path {:?} too long", loader.path))?;
    path.extend_from_slice(&[MEDIA, MEDIA_FILE_PATH]);
    path.extend_from_slice(&len.to_le_bytes());
    path.extend_from_slice(&file);
    path.extend_from_slice(&[END, END_ENTIRE, 4, 0]);

    let mut out = Vec::new();
    out.extend_from_slice(&ACTIVE.to_le_bytes());
    let path_len = u16::try_from(path.len()).map_err(|_| anyhow::anyhow!("device path too long"))?;
    out.extend_from_slice(&path_len.to_le_bytes());
    out.extend_from_slice(&ucs2_nul(description)?);
    out.extend_from_slice(&path);
    Ok(out)
}

fn ucs2_nul(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(2 * s.len() + 2);
    for c in s.chars() {
        let Ok(u) = u16::try_from(u32::from(c)) else { bail!("{s:?}: {c:?} is outside UCS-2") };
        ensure!(u != 0, "{s:?} contains NUL");
        out.extend_from_slice(&u.to_le_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    Ok(out)
}

/// What the installer reads from an existing boot option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub attributes: u32,
    pub description: String,
    /// The device path's node types (type, subtype), in order, up to the end node.
    pub nodes: Vec<(u8, u8)>,
    /// The device path's bytes (to compare an option with one about to be written).
    pub path: Vec<u8>,
}

impl Parsed {
    /// A network boot option: its path goes through a MAC address, IP or URI node (PXE,
    /// HTTP boot, iPXE's own), as the firmware's boot manager builds them for a NIC.
    pub fn is_network(&self) -> bool {
        self.nodes.iter().any(|&(t, s)| {
            t == MESSAGING && matches!(s, MESSAGING_MAC | MESSAGING_IPV4 | MESSAGING_IPV6 | MESSAGING_URI)
        })
    }
}

/// Read an `EFI_LOAD_OPTION` (the firmware's, or anyone's: every length is checked).
pub fn parse(b: &[u8]) -> Result<Parsed> {
    ensure!(b.len() >= 6, "load option of {} bytes: shorter than its header", b.len());
    let attributes = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let path_len = usize::from(u16::from_le_bytes([b[4], b[5]]));
    let rest = &b[6..];
    let mut units = Vec::new();
    let mut i = 0;
    loop {
        ensure!(i + 1 < rest.len(), "load option description not terminated");
        let u = u16::from_le_bytes([rest[i], rest[i + 1]]);
        i += 2;
        if u == 0 {
            break;
        }
        units.push(u);
    }
    let description = String::from_utf16_lossy(&units);
    ensure!(rest.len() - i >= path_len, "device path of {path_len} bytes runs past the load option");
    let path = rest[i..i + path_len].to_vec();
    let mut nodes = Vec::new();
    let mut p = &path[..];
    while p.len() >= 4 {
        let (t, s, len) = (p[0], p[1], usize::from(u16::from_le_bytes([p[2], p[3]])));
        ensure!(len >= 4 && len <= p.len(), "device path node of length {len} with {} bytes left", p.len());
        if t == END {
            break;
        }
        nodes.push((t, s));
        p = &p[len..];
    }
    Ok(Parsed { attributes, description, nodes, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loader() -> DiskLoader {
        DiskLoader {
            partition_number: 15,
            start_lba: 2048,
            size_lba: 260_096,
            partition_guid: [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 9, 10, 11, 12, 13, 14, 15, 16],
            path: "\\EFI\\debian\\shimx64.efi".into(),
        }
    }

    #[test]
    fn the_written_option_has_the_firmware_layout() {
        let b = encode("debian", &loader()).unwrap();
        // Attributes, then the path length, then "debian" in UCS-2 with its NUL.
        assert_eq!(&b[..4], &[1, 0, 0, 0]);
        let desc: Vec<u8> = "debian\0".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(&b[6..6 + desc.len()], &desc[..]);
        let path = &b[6 + desc.len()..];
        assert_eq!(usize::from(u16::from_le_bytes([b[4], b[5]])), path.len());
        // Hard drive node: 42 bytes, partition 15 at LBA 2048, GPT, GUID signature.
        assert_eq!(&path[..4], &[4, 1, 42, 0]);
        assert_eq!(u32::from_le_bytes(path[4..8].try_into().unwrap()), 15);
        assert_eq!(u64::from_le_bytes(path[8..16].try_into().unwrap()), 2048);
        assert_eq!(u64::from_le_bytes(path[16..24].try_into().unwrap()), 260_096);
        assert_eq!(&path[24..40], &loader().partition_guid);
        assert_eq!(&path[40..42], &[2, 2]);
        // File path node, then the end node.
        let file: Vec<u8> = "\\EFI\\debian\\shimx64.efi\0".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(&path[42..44], &[4, 4]);
        assert_eq!(usize::from(u16::from_le_bytes([path[44], path[45]])), 4 + file.len());
        assert_eq!(&path[46..46 + file.len()], &file[..]);
        assert_eq!(&path[46 + file.len()..], &[0x7f, 0xff, 4, 0]);

        let p = parse(&b).unwrap();
        assert_eq!((p.attributes, p.description.as_str()), (ACTIVE, "debian"));
        assert_eq!(p.nodes, [(4, 1), (4, 4)]);
        assert!(!p.is_network());
    }

    #[test]
    fn network_options_are_recognised() {
        // As OVMF builds "UEFI PXEv4": PciRoot/Pci/MAC/IPv4/End.
        let mut path = vec![2, 1, 12, 0, 0xd0, 0x41, 3, 0x0a, 0, 0, 0, 0];
        path.extend_from_slice(&[1, 1, 6, 0, 0, 3]);
        path.extend_from_slice(&[3, 11, 37, 0]);
        path.extend_from_slice(&[0; 33]);
        path.extend_from_slice(&[3, 12, 27, 0]);
        path.extend_from_slice(&[0; 23]);
        path.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        let mut b = vec![1, 0, 0, 0];
        b.extend_from_slice(&u16::try_from(path.len()).unwrap().to_le_bytes());
        b.extend("UEFI PXEv4\0".encode_utf16().flat_map(u16::to_le_bytes));
        b.extend_from_slice(&path);
        let p = parse(&b).unwrap();
        assert_eq!(p.description, "UEFI PXEv4");
        assert!(p.is_network());
    }

    #[test]
    fn malformed_options_are_refused() {
        let good = encode("debian", &loader()).unwrap();
        assert!(parse(&good[..5]).is_err());
        // Description never terminated.
        assert!(parse(&[1, 0, 0, 0, 0, 0, b'a', 0]).is_err());
        // Path length past the end.
        let mut long = good.clone();
        long[4] = 0xff;
        assert!(parse(&long).is_err());
        // A node claiming 2 bytes.
        let mut bad = good;
        let desc_end = 6 + "debian\0".len() * 2;
        bad[desc_end + 2] = 2;
        assert!(parse(&bad).is_err());
        assert!(encode("debian", &DiskLoader { path: "EFI\\x.efi".into(), ..loader() }).is_err());
        assert!(encode("deb\u{1F600}", &loader()).is_err());
    }
}

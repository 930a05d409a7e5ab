//! Who is asking: the client's firmware class and architecture, and the boot file that
//! class gets (the table in `bootsvc/docs/dhcp.md`, RFC 4578, the PXE and UEFI
//! specifications).
//!
//! | option 93 | class | boot file |
//! |---|---|---|
//! | 0 | BIOS PXE | `undionly.kpxe` via TFTP |
//! | 6, 7, 9 | UEFI PXE x86/x64 | `ipxe.efi` via TFTP (chain `shim-grub`, arch 7 and 9: `shimx64.efi`) |
//! | 11 | UEFI PXE ARM64 | `grubaa64.efi` via TFTP (Debian's signed network GRUB: `docs/arm64.md`) |
//! | 15, 16 | UEFI HTTP boot x86/x64 | `{public_url}/ipxe/ipxe.efi` (chain `shim-grub`, arch 16: `…/ipxe/shimx64.efi`), option 60 `HTTPClient` |
//! | 19 | UEFI HTTP boot ARM64 | `{public_url}/ipxe/grubaa64-http.efi` (an unsigned GRUB with `http`, built by `scripts/setup`: `docs/arm64.md`), option 60 `HTTPClient` |
//! | any x86 or 11, 19, with option 77 `iPXE` or option 175 | iPXE | `{public_url}/boot/<mac>.ipxe`; arm64 (11, 19): `{public_url}/boot/arm64/<mac>.ipxe` |
//! | others (10: 32-bit ARM, Itanium, RISC-V, U-Boot…) | unsupported | none: osie has no program for them |
//!
//! The chain (`boot.uefi_chain`, a record's `netboot.uefi_chain`) changes the x64 UEFI
//! rows only: `docs/secure-boot.md`.
//!
//! Option 93 missing or unreadable: the decimal arch in option 60
//! (`PXEClient:Arch:00007:UNDI:003016`). Neither: the machine's record decides the
//! architecture (its `arch`; x86_64 for a MAC no record names), then an `HTTPClient` is
//! taken as HTTP boot, anything else as PXE: BIOS for x86_64, which is what pre-RFC 4578 PXE
//! ROMs are, UEFI for aarch64 (no ARM64 machine has a BIOS).
//!
//! The class fixes the architecture whose files the machine gets ([`Class::arch`]): its boot
//! program here, then the kernel and initramfs its iPXE script or GRUB configuration names
//! (`docs/arm64.md`). So a client that names its architecture gets that architecture's files
//! whatever its record says, and an ARM64 firmware never gets an x86 program or the reverse.

use std::fmt;

use osie_api::MacAddr;

use super::request::{code, Options};
use crate::arch::Arch;
use crate::config::UefiChain;
use crate::grub::{GRUB_ARM64_EFI, GRUB_ARM64_HTTP_EFI, SHIM_EFI};

/// What option 60 says the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// `PXEClient…`: a PXE ROM, UEFI PXE, or iPXE.
    Pxe,
    /// `HTTPClient…`: UEFI HTTP boot.
    Http,
    /// Something else (an OS DHCP client, …) or no option 60.
    Other,
}

/// Where the architecture came from, for the decision log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchSource {
    Option93,
    Option60,
    /// Neither option: the class was inferred (vendor class or machine hint).
    Inferred,
}

/// What classification reads from a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub mac: MacAddr,
    pub arch: Option<u16>,
    pub arch_source: ArchSource,
    pub vendor: Vendor,
    /// iPXE is already running (user class `iPXE` or option 175 present).
    pub ipxe: bool,
}

/// The firmware class, which decides the boot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    BiosPxe,
    UefiPxe,
    UefiPxeArm,
    UefiHttp,
    UefiHttpArm,
    /// iPXE already running, built for this architecture.
    Ipxe(Arch),
    /// An architecture osie has no boot program for (32-bit ARM, Itanium, RISC-V, U-Boot…).
    Unsupported(u16),
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Class::BiosPxe => f.write_str("bios-pxe"),
            Class::UefiPxe => f.write_str("uefi-pxe"),
            Class::UefiPxeArm => f.write_str("uefi-pxe-arm"),
            Class::UefiHttp => f.write_str("uefi-http"),
            Class::UefiHttpArm => f.write_str("uefi-http-arm"),
            Class::Ipxe(Arch::X86_64) => f.write_str("ipxe"),
            Class::Ipxe(Arch::Aarch64) => f.write_str("ipxe-arm64"),
            Class::Unsupported(a) => write!(f, "unsupported-arch-{a}"),
        }
    }
}

/// A boot file and how the client fetches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFile {
    /// A file in the TFTP root, fetched from `siaddr`.
    Tftp(&'static str),
    /// A URL (UEFI HTTP boot, or iPXE's script).
    Url(String),
}

impl BootFile {
    pub fn as_str(&self) -> &str {
        match self {
            BootFile::Tftp(f) => f,
            BootFile::Url(u) => u,
        }
    }
}

impl fmt::Display for BootFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Boot file names in the TFTP root (and under `{public_url}/ipxe/`).
pub const UNDIONLY: &str = "undionly.kpxe";
pub const IPXE_EFI: &str = "ipxe.efi";

/// The boot file UEFI firmware gets when its machine must not netboot. No such file is
/// served (TFTP answers "file not found", HTTP 404 at once), so the firmware's network boot
/// option fails there and then, and it goes on to the next one: without it, OVMF waits out
/// its DHCP retries (4 + 8 + 16 s) per network option. A reserved name: keep it out of the
/// TFTP root.
pub const NO_NETBOOT: &str = "osie-no-netboot.efi";

/// Read the client's identity from its options.
pub fn client(mac: MacAddr, opts: &Options) -> Client {
    let class_id = opts.get(code::CLASS_ID).unwrap_or_default();
    let vendor = vendor(class_id);
    let (arch, arch_source) = match opts.get(code::CLIENT_ARCH) {
        // RFC 4578 allows a list, most preferred first; the first is what the firmware runs.
        Some(&[hi, lo, ..]) => (Some(u16::from_be_bytes([hi, lo])), ArchSource::Option93),
        _ => match arch_from_class_id(class_id) {
            Some(a) => (Some(a), ArchSource::Option60),
            None => (None, ArchSource::Inferred),
        },
    };
    let ipxe = opts.contains(code::IPXE_ENCAP) || opts.get(code::USER_CLASS).is_some_and(user_class_is_ipxe);
    Client { mac, arch, arch_source, vendor, ipxe }
}

/// What a vendor class (DHCPv4 option 60, DHCPv6 option 16's class data) says the client is.
pub fn vendor(class_id: &[u8]) -> Vendor {
    if class_id.starts_with(b"PXEClient") {
        Vendor::Pxe
    } else if class_id.starts_with(b"HTTPClient") {
        Vendor::Http
    } else {
        Vendor::Other
    }
}

/// `PXEClient:Arch:00011:UNDI:003000` → 11. The number is decimal (PXE spec).
pub fn arch_from_class_id(class_id: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(class_id).ok()?;
    let mut parts = s.split(':');
    parts.find(|p| *p == "Arch")?;
    let n = parts.next()?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// iPXE sends option 77 as the bare string `iPXE`; RFC 3004 clients send length-prefixed
/// class names. Accept both.
fn user_class_is_ipxe(v: &[u8]) -> bool {
    if v == b"iPXE" {
        return true;
    }
    let mut rest = v;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || tail.len() < len {
            return false;
        }
        if &tail[..len] == b"iPXE" {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

impl Client {
    /// The firmware class. `hint` is the inventory's arch for this machine (`None`: no
    /// record names it), used only when the request names no architecture.
    pub fn class(&self, hint: Option<Arch>) -> Class {
        let Some(arch) = boot_arch(self.arch, hint) else {
            // boot_arch is None only for an architecture the request names.
            return Class::Unsupported(self.arch.unwrap_or_default());
        };
        if self.ipxe {
            return Class::Ipxe(arch);
        }
        match (self.arch, self.vendor, arch) {
            (Some(0), _, _) => Class::BiosPxe,
            (Some(6 | 7 | 9), _, _) => Class::UefiPxe,
            (Some(11), _, _) => Class::UefiPxeArm,
            (Some(15 | 16), _, _) => Class::UefiHttp,
            (Some(19), _, _) => Class::UefiHttpArm,
            (Some(a), _, _) => Class::Unsupported(a),
            (None, Vendor::Http, Arch::Aarch64) => Class::UefiHttpArm,
            (None, Vendor::Http, Arch::X86_64) => Class::UefiHttp,
            (None, _, Arch::Aarch64) => Class::UefiPxeArm,
            (None, _, Arch::X86_64) => Class::BiosPxe,
        }
    }
}

/// The architecture whose boot program, kernel and initramfs a netbooting client gets: the
/// one its request names (option 93, else option 60), else its record's `arch` (`record`;
/// `None`: no record names the MAC, taken as x86_64). `None`: the request names an
/// architecture osie has no files for.
pub fn boot_arch(named: Option<u16>, record: Option<Arch>) -> Option<Arch> {
    match named {
        // BIOS, x86 and x64 UEFI, x86 and x64 UEFI HTTP boot: the x86_64 files (Debian's
        // iPXE for IA32 UEFI is the x64 build, as before).
        Some(0 | 6 | 7 | 9 | 15 | 16) => Some(Arch::X86_64),
        // ARM64 UEFI, PXE and HTTP boot.
        Some(11 | 19) => Some(Arch::Aarch64),
        Some(_) => None,
        None => Some(record.unwrap_or_default()),
    }
}

impl Class {
    /// The architecture of the files this class gets (`None`: unsupported).
    pub fn arch(self) -> Option<Arch> {
        match self {
            Class::BiosPxe | Class::UefiPxe | Class::UefiHttp => Some(Arch::X86_64),
            Class::UefiPxeArm | Class::UefiHttpArm => Some(Arch::Aarch64),
            Class::Ipxe(a) => Some(a),
            Class::Unsupported(_) => None,
        }
    }

    /// The boot file for this class. `public_url` is `http.public_url` without a trailing
    /// slash; `arch` the client's option 93 (shim is x64 only: arch 7, 9 and 16). `None` for
    /// unsupported architectures.
    pub fn boot_file(self, mac: &MacAddr, public_url: &str, arch: Option<u16>, chain: UefiChain) -> Option<BootFile> {
        let shim = chain == UefiChain::ShimGrub && matches!(arch, Some(7 | 9 | 16) | None);
        Some(match self {
            Class::BiosPxe => BootFile::Tftp(UNDIONLY),
            Class::UefiPxe if shim => BootFile::Tftp(SHIM_EFI),
            Class::UefiHttp if shim => BootFile::Url(format!("{public_url}/ipxe/{SHIM_EFI}")),
            Class::UefiPxe => BootFile::Tftp(IPXE_EFI),
            Class::UefiPxeArm => BootFile::Tftp(GRUB_ARM64_EFI),
            Class::UefiHttp => BootFile::Url(format!("{public_url}/ipxe/{IPXE_EFI}")),
            // Debian's signed GRUB has no `http`: this one reads everything over HTTP.
            Class::UefiHttpArm => BootFile::Url(format!("{public_url}/ipxe/{GRUB_ARM64_HTTP_EFI}")),
            Class::Ipxe(arch) => BootFile::Url(format!("{public_url}/{}", crate::ipxe::script_path(*mac, arch))),
            Class::Unsupported(_) => return None,
        })
    }

    /// The boot file that sends this class on to its disk at once when its machine must not
    /// netboot. UEFI PXE and HTTP boot get [`NO_NETBOOT`], which fails there and then, so the
    /// firmware moves to its next boot option. iPXE gets its script, which is then the local
    /// boot script: with no boot file iPXE would give up, wait 2 s at its "Press Ctrl-B"
    /// prompt and return to the BIOS, which then boots the disk; the script boots the disk
    /// itself (`ipxe::local_boot`). BIOS PXE ROMs are left as they are.
    pub fn decline_file(self, mac: &MacAddr, public_url: &str) -> Option<BootFile> {
        match self {
            Class::UefiPxe | Class::UefiPxeArm => Some(BootFile::Tftp(NO_NETBOOT)),
            Class::UefiHttp | Class::UefiHttpArm => Some(BootFile::Url(format!("{public_url}/ipxe/{NO_NETBOOT}"))),
            Class::Ipxe(arch) => Some(BootFile::Url(format!("{public_url}/{}", crate::ipxe::script_path(*mac, arch)))),
            _ => None,
        }
    }

    /// UEFI HTTP boot only accepts offers that carry option 60 `HTTPClient`.
    pub fn is_http_boot(self) -> bool {
        matches!(self, Class::UefiHttp | Class::UefiHttpArm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[(u8, &[u8])]) -> Options {
        let mut b = Vec::new();
        for (c, v) in list {
            b.push(*c);
            b.push(v.len() as u8);
            b.extend_from_slice(v);
        }
        b.push(255);
        Options::parse(&b).unwrap()
    }

    const MAC: MacAddr = MacAddr::new([0x52, 0x54, 0, 0xab, 0xcd, 0xef]);
    const URL: &str = "http://192.0.2.1:8080";

    fn class_of(list: &[(u8, &[u8])]) -> Class {
        client(MAC, &opts(list)).class(None)
    }

    #[test]
    fn option_93_decides_each_row() {
        for (arch, want) in [
            (0u16, Class::BiosPxe),
            (6, Class::UefiPxe),
            (7, Class::UefiPxe),
            (9, Class::UefiPxe),
            (10, Class::Unsupported(10)),
            (11, Class::UefiPxeArm),
            (15, Class::UefiHttp),
            (16, Class::UefiHttp),
            (19, Class::UefiHttpArm),
            (2, Class::Unsupported(2)),
            (27, Class::Unsupported(27)),
        ] {
            assert_eq!(class_of(&[(93, &arch.to_be_bytes())]), want, "arch {arch}");
        }
    }

    #[test]
    fn boot_files_follow_the_table() {
        let f = |c: Class| c.boot_file(&MAC, URL, None, UefiChain::Ipxe).map(|b| b.to_string());
        assert_eq!(f(Class::BiosPxe).as_deref(), Some("undionly.kpxe"));
        assert_eq!(f(Class::UefiPxe).as_deref(), Some("ipxe.efi"));
        assert_eq!(f(Class::UefiPxeArm).as_deref(), Some("grubaa64.efi"));
        assert_eq!(f(Class::UefiHttp).as_deref(), Some("http://192.0.2.1:8080/ipxe/ipxe.efi"));
        assert_eq!(f(Class::UefiHttpArm).as_deref(), Some("http://192.0.2.1:8080/ipxe/grubaa64-http.efi"));
        assert_eq!(f(Class::Ipxe(Arch::X86_64)).as_deref(), Some("http://192.0.2.1:8080/boot/52:54:00:ab:cd:ef.ipxe"));
        assert_eq!(
            f(Class::Ipxe(Arch::Aarch64)).as_deref(),
            Some("http://192.0.2.1:8080/boot/arm64/52:54:00:ab:cd:ef.ipxe")
        );
        assert_eq!(f(Class::Unsupported(2)), None);
    }

    #[test]
    fn the_shim_grub_chain_changes_x64_uefi_only() {
        let f = |c: Class, arch: Option<u16>| c.boot_file(&MAC, URL, arch, UefiChain::ShimGrub).map(|b| b.to_string());
        assert_eq!(f(Class::UefiPxe, Some(7)).as_deref(), Some("shimx64.efi"));
        assert_eq!(f(Class::UefiPxe, Some(9)).as_deref(), Some("shimx64.efi"));
        assert_eq!(f(Class::UefiHttp, Some(16)).as_deref(), Some("http://192.0.2.1:8080/ipxe/shimx64.efi"));
        // Inferred from the vendor class alone (no arch): x64, the only UEFI build here.
        assert_eq!(f(Class::UefiHttp, None).as_deref(), Some("http://192.0.2.1:8080/ipxe/shimx64.efi"));
        // IA32 UEFI has no x64 shim to run: iPXE, as before.
        assert_eq!(f(Class::UefiPxe, Some(6)).as_deref(), Some("ipxe.efi"));
        assert_eq!(f(Class::UefiHttp, Some(15)).as_deref(), Some("http://192.0.2.1:8080/ipxe/ipxe.efi"));
        assert_eq!(f(Class::BiosPxe, Some(0)).as_deref(), Some("undionly.kpxe"));
        assert_eq!(f(Class::UefiPxeArm, Some(11)).as_deref(), Some("grubaa64.efi"));
        assert_eq!(f(Class::UefiHttpArm, Some(19)).as_deref(), Some("http://192.0.2.1:8080/ipxe/grubaa64-http.efi"));
        assert_eq!(
            f(Class::Ipxe(Arch::X86_64), Some(7)).as_deref(),
            Some("http://192.0.2.1:8080/boot/52:54:00:ab:cd:ef.ipxe")
        );
        // The decline file does not depend on the chain; iPXE's is its own (local boot) script.
        assert_eq!(Class::UefiPxe.decline_file(&MAC, URL), Some(BootFile::Tftp(NO_NETBOOT)));
        assert_eq!(
            Class::UefiHttp.decline_file(&MAC, URL),
            Some(BootFile::Url("http://192.0.2.1:8080/ipxe/osie-no-netboot.efi".into()))
        );
        assert_eq!(
            Class::Ipxe(Arch::X86_64).decline_file(&MAC, URL),
            Some(BootFile::Url("http://192.0.2.1:8080/boot/52:54:00:ab:cd:ef.ipxe".into()))
        );
        assert_eq!(Class::BiosPxe.decline_file(&MAC, URL), None);
    }

    #[test]
    fn ipxe_wins_over_any_arch() {
        let ipxe = Class::Ipxe(Arch::X86_64);
        assert_eq!(class_of(&[(93, &[0, 0]), (77, b"iPXE")]), ipxe);
        assert_eq!(class_of(&[(93, &[0, 7]), (175, &[177, 5, 1, 0x10, 0xec, 0x81, 0x39])]), ipxe);
        // RFC 3004 encoding of the same user class.
        assert_eq!(class_of(&[(93, &[0, 7]), (77, b"\x04iPXE")]), ipxe);
        assert_eq!(class_of(&[(93, &[0, 7]), (77, b"\x03foo\x04iPXE")]), ipxe);
        // An arm64 iPXE (firmware with iPXE built in) gets the arm64 script.
        assert_eq!(class_of(&[(93, &[0, 11]), (77, b"iPXE")]), Class::Ipxe(Arch::Aarch64));
        // An iPXE of an architecture osie has no files for gets nothing.
        assert_eq!(class_of(&[(93, &[0, 10]), (77, b"iPXE")]), Class::Unsupported(10));
        assert_eq!(class_of(&[(93, &[0, 7]), (77, b"iPXE-not")]), Class::UefiPxe);
    }

    #[test]
    fn option_60_is_the_decimal_fallback() {
        assert_eq!(arch_from_class_id(b"PXEClient:Arch:00011:UNDI:003000"), Some(11));
        assert_eq!(arch_from_class_id(b"HTTPClient:Arch:00016:UNDI:003001"), Some(16));
        assert_eq!(arch_from_class_id(b"PXEClient:Arch:0001a:UNDI:003000"), None);
        assert_eq!(arch_from_class_id(b"PXEClient"), None);
        assert_eq!(arch_from_class_id(b"\xff\xfe"), None);
        // Missing option 93: decimal 00011 is ARM64, not 0x11.
        let c = client(MAC, &opts(&[(60, b"PXEClient:Arch:00011:UNDI:003000")]));
        assert_eq!((c.arch, c.arch_source), (Some(11), ArchSource::Option60));
        assert_eq!(c.class(None), Class::UefiPxeArm);
        // Odd option 93 (one byte): fall back to option 60.
        assert_eq!(class_of(&[(93, &[7]), (60, b"PXEClient:Arch:00007:UNDI:003016")]), Class::UefiPxe);
    }

    #[test]
    fn no_arch_at_all_uses_vendor_then_hint() {
        assert_eq!(class_of(&[]), Class::BiosPxe);
        assert_eq!(class_of(&[(60, b"HTTPClient")]), Class::UefiHttp);
        let c = client(MAC, &opts(&[(60, b"udhcp 1.35.0")]));
        assert_eq!(c.vendor, Vendor::Other);
        assert_eq!(c.class(Some(Arch::Aarch64)), Class::UefiPxeArm);
        assert_eq!(c.class(Some(Arch::X86_64)), Class::BiosPxe);
    }

    /// Every (option 93, record arch) pair, for firmware and for iPXE: the architecture of the
    /// files is the one the request names, else the record's, else x86_64; the boot file
    /// is that architecture's and never the other's.
    #[test]
    fn architecture_for_every_option_93_and_record_pair() {
        use Arch::{Aarch64 as A, X86_64 as X};
        let named: [(Option<u16>, Option<Arch>); 12] = [
            (Some(0), Some(X)),
            (Some(6), Some(X)),
            (Some(7), Some(X)),
            (Some(9), Some(X)),
            (Some(10), None),
            (Some(11), Some(A)),
            (Some(15), Some(X)),
            (Some(16), Some(X)),
            (Some(19), Some(A)),
            (Some(2), None),
            (Some(25), None),
            (None, None), // decided by the record below
        ];
        // Boot files of one architecture only (TFTP names and URL paths).
        let x86_files = ["undionly.kpxe", "ipxe.efi", "shimx64.efi", "/boot/52:54:00:ab:cd:ef.ipxe"];
        let arm_files = ["grubaa64.efi", "grubaa64-http.efi", "/boot/arm64/52:54:00:ab:cd:ef.ipxe"];
        for (opt93, want) in named {
            for record in [None, Some(X), Some(A)] {
                let want = if opt93.is_none() { Some(record.unwrap_or(X)) } else { want };
                assert_eq!(boot_arch(opt93, record), want, "option 93 {opt93:?}, record {record:?}");
                for ipxe in [false, true] {
                    for vendor in [&b"PXEClient"[..], b"HTTPClient"] {
                        let mut o: Vec<(u8, &[u8])> = vec![(60, vendor)];
                        let code = opt93.map(u16::to_be_bytes);
                        if let Some(c) = &code {
                            o.push((93, c));
                        }
                        if ipxe {
                            o.push((77, b"iPXE"));
                        }
                        let class = client(MAC, &opts(&o)).class(record);
                        let what = format!("option 93 {opt93:?}, record {record:?}, iPXE {ipxe}, {class}");
                        assert_eq!(class.arch(), want, "{what}");
                        if ipxe && want.is_some() {
                            assert!(matches!(class, Class::Ipxe(_)), "{what}");
                        }
                        for chain in [UefiChain::Ipxe, UefiChain::ShimGrub] {
                            let file = class.boot_file(&MAC, URL, opt93, chain).map(|b| b.to_string());
                            let Some(file) = file else {
                                assert_eq!(want, None, "{what}: no boot file");
                                continue;
                            };
                            let (own, other) = match want {
                                Some(X) => (&x86_files[..], &arm_files[..]),
                                Some(A) => (&arm_files[..], &x86_files[..]),
                                None => panic!("{what}: boot file {file} for an unsupported architecture"),
                            };
                            assert!(own.iter().any(|f| file.ends_with(f)), "{what}: {file}");
                            assert!(!other.iter().any(|f| file.ends_with(f)), "{what}: {file}");
                        }
                    }
                }
            }
        }
    }
}

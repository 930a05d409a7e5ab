//! Request in, reply out: what bootsvc answers to one DHCPv6 message, and why. Pure: no
//! sockets, no clock; every call returns a [`Decision`] the server logs as one line.
//!
//! Who is asking ([`client_mac`]): the MAC in the client's DUID (DUID-LL or DUID-LLT) and
//! the MAC its link-local source address was formed from (EUI-64) must agree when both are
//! there; either alone is taken; neither, nothing is answered. What that trusts and what a
//! neighbour can still do: `bootsvc/docs/security.md`, "DHCPv6".
//!
//! Inventory machines only. Solicit → Advertise (preference 255, so the client does not wait
//! for other servers' offers; a Reply at once with Rapid Commit), Request, Renew, Rebind →
//! Reply with the record's `ip6` address; Information-request → Reply with the boot file
//! only; Release → Reply (a reserved address has no lease to end). A machine without `ip6`
//! gets its boot file and `NoAddrsAvail` (it forms its address by SLAAC). Confirm and
//! Decline are not answered (a client that hears nothing to a Confirm keeps its address,
//! RFC 8415 18.2.3).
//!
//! The boot file follows the DHCPv4 table (`dhcp::classify`) with URLs: option 59 is
//! `tftp://[addr]/ipxe.efi` for UEFI PXE (arch 7, 9; no vendor class, see [`answer`]),
//! `http://[addr]:port/ipxe/ipxe.efi` with vendor class `HTTPClient` for UEFI HTTP boot
//! (arch 16), and iPXE (user class
//! `iPXE`) gets its script URL, `http://[addr]:port/boot/<mac>.ipxe`.

use std::net::Ipv6Addr;

use osie_api::MacAddr;

use super::packet::{self, kind, opt, status, Request, Writer};
use crate::config::UefiChain;
use crate::dhcp::classify::{self, ArchSource, BootFile, Class, Client, Vendor};
use crate::inventory::{Backend, Machine};

/// Why a known netboot client gets no boot file when its record does not allow netboot.
pub const NOT_ALLOWED: &str = "netboot not allowed";
/// The enterprise number in bootsvc's Vendor Class option (Intel's, as EDK2 sends it; EDK2's
/// HTTP boot compares only the class text).
const ENTERPRISE: u32 = 343;

pub const CLIENT_PORT: u16 = 546;
pub const SERVER_PORT: u16 = 547;

/// What deciding needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// bootsvc's DUID (DUID-LL of `listen.interface`).
    pub server_duid: Vec<u8>,
    /// bootsvc's IPv6 address (`dhcp6.address`): the host of TFTP boot file URLs.
    pub address: Ipv6Addr,
    /// `http://[address]:port`, no trailing slash.
    pub public_url: String,
    pub lease_secs: u32,
    /// `boot.uefi_chain`: the site's chain for UEFI machines whose record names none.
    pub uefi_chain: UefiChain,
}

/// The outcome of one message, with everything its log line says.
#[derive(Debug)]
pub struct Decision {
    pub msg_type: u8,
    pub mac: Option<MacAddr>,
    pub class: Option<Class>,
    pub hostname: Option<String>,
    pub address: Option<Ipv6Addr>,
    pub boot_file: Option<String>,
    /// Why there is no boot file, when there is none.
    pub no_boot: Option<&'static str>,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub enum Outcome {
    /// `kind` is the metrics label: `dhcp6-advertise`, `dhcp6-reply`, `dhcp6-rapid-reply`,
    /// `dhcp6-info-reply`, `dhcp6-release-reply`.
    Reply { kind: &'static str, bytes: Vec<u8> },
    /// Nothing sent. `reason` is the metrics label, `why` the log text.
    Ignore { reason: &'static str, why: String },
}

fn ignore(reason: &'static str, why: impl Into<String>) -> Outcome {
    Outcome::Ignore { reason, why: why.into() }
}

/// The MAC the message comes from: its DUID's and its link-local source's must agree when
/// both name one.
pub fn client_mac(req: &Request<'_>, src: Ipv6Addr) -> Result<MacAddr, Outcome> {
    let from_duid = req.client_id.and_then(packet::duid_mac);
    let from_source = packet::eui64_mac(src);
    match (from_duid, from_source) {
        (Some(d), Some(s)) if d != s => {
            Err(ignore("dhcp6-mac-mismatch", format!("DUID names {d}, the source address {src} was formed from {s}")))
        }
        (Some(m), _) | (None, Some(m)) => Ok(m),
        (None, None) => Err(ignore(
            "dhcp6-no-mac",
            format!("neither the DUID nor the source address {src} names a MAC (not an EUI-64 link-local)"),
        )),
    }
}

/// The client's firmware, read the way DHCPv4's options are (`dhcp::classify`).
fn client(mac: MacAddr, req: &Request<'_>) -> Client {
    let class = req.vendor_class.unwrap_or_default();
    let vendor = classify::vendor(class);
    let (arch, arch_source) = match (req.arch, classify::arch_from_class_id(class)) {
        // Option 61 is DHCPv6's option 93.
        (Some(a), _) => (Some(a), ArchSource::Option93),
        (None, Some(a)) => (Some(a), ArchSource::Option60),
        (None, None) => (None, ArchSource::Inferred),
    };
    let ipxe = req.user_classes.iter().any(|c| *c == b"iPXE");
    Client { mac, arch, arch_source, vendor, ipxe }
}

/// Decide what to answer to `req`, received from `src` (its IPv6 source address).
pub fn respond(req: &Request<'_>, src: Ipv6Addr, settings: &Settings, backend: &dyn Backend) -> Decision {
    let mut d = Decision {
        msg_type: req.msg_type,
        mac: None,
        class: None,
        hostname: None,
        address: None,
        boot_file: None,
        no_boot: None,
        outcome: ignore("dhcp6-unknown-mac", ""),
    };
    // Addressed to another server: theirs (RFC 8415 16.3 ff.).
    if req.server_id.is_some_and(|s| s != settings.server_duid.as_slice()) {
        d.outcome = ignore("dhcp6-other-server", "the client chose another server");
        return d;
    }
    let mac = match client_mac(req, src) {
        Ok(m) => m,
        Err(o) => {
            d.outcome = o;
            return d;
        }
    };
    d.mac = Some(mac);
    let Some(machine) = backend.by_mac(&mac) else {
        d.outcome = ignore("dhcp6-unknown-mac", "MAC not in the inventory");
        return d;
    };
    let c = client(mac, req);
    let class = c.class(Some(machine.arch));
    d.class = Some(class);
    d.hostname = Some(machine.hostname.clone());
    let netboot_client = c.ipxe || c.vendor != Vendor::Other || c.arch.is_some();
    let file = if !netboot_client {
        Err("not a netboot client (no PXE or HTTP vendor class, no option 61, not iPXE)")
    } else if !backend.netboot_allowed(&mac) {
        d.no_boot = Some(NOT_ALLOWED);
        // UEFI gets a file that fails at once, so it moves on to its next boot option
        // (`Class::decline_file`).
        class.decline_file(&mac, &settings.public_url).ok_or(NOT_ALLOWED)
    } else {
        // The chain as over IPv4: Debian's signed GRUB reads the DHCPv6 reply UEFI PXE
        // cached and its files over TFTP on IPv6 (`bootsvc/docs/secure-boot.md`).
        let chain = machine.uefi_chain(settings.uefi_chain);
        class.boot_file(&mac, &settings.public_url, c.arch, chain).ok_or("no boot file for this architecture")
    };
    match file {
        Ok(f) => d.boot_file = Some(url(&f, settings.address)),
        Err(why) => d.no_boot = Some(why),
    }
    d.outcome = answer(req, &machine, class, &mut d, settings);
    d
}

/// A boot file as option 59 carries it: always a URL.
fn url(f: &BootFile, server: Ipv6Addr) -> String {
    match f {
        BootFile::Tftp(name) => format!("tftp://[{server}]/{name}"),
        BootFile::Url(u) => u.clone(),
    }
}

fn answer(req: &Request<'_>, machine: &Machine, class: Class, d: &mut Decision, s: &Settings) -> Outcome {
    let (reply_type, label, with_address) = match req.msg_type {
        kind::SOLICIT if req.rapid_commit => (kind::REPLY, "dhcp6-rapid-reply", true),
        kind::SOLICIT => (kind::ADVERTISE, "dhcp6-advertise", true),
        kind::REQUEST | kind::RENEW | kind::REBIND => (kind::REPLY, "dhcp6-reply", true),
        kind::INFORMATION_REQUEST => (kind::REPLY, "dhcp6-info-reply", false),
        kind::RELEASE => {
            let mut w = header(req, kind::REPLY, s);
            w.opt(opt::STATUS_CODE, &packet::status_body(status::SUCCESS, "released"));
            return Outcome::Reply { kind: "dhcp6-release-reply", bytes: w.into_bytes() };
        }
        t => return ignore("dhcp6-unexpected-type", format!("message type {t} is not answered")),
    };
    let mut w = header(req, reply_type, s);
    if with_address {
        addresses(&mut w, req, machine, d, s);
    }
    if reply_type == kind::ADVERTISE {
        // The highest preference: the client takes this offer at once (RFC 8415 18.2.1).
        w.opt(opt::PREFERENCE, &[255]);
    }
    if req.rapid_commit && req.msg_type == kind::SOLICIT {
        w.opt(opt::RAPID_COMMIT, &[]);
    }
    if let Some(f) = &d.boot_file {
        w.opt(opt::BOOTFILE_URL, f.as_bytes());
        // UEFI HTTP boot takes an offer as an HTTP boot offer by this class (EDK2 reads it 6
        // bytes into the option). UEFI PXE gets none: EDK2's PXE over IPv6 takes an offer
        // with `PXEClient` as a BINL offer and, before booting, asks a boot server on UDP
        // 4011 for the boot file (`PxeBcRetryDhcp6Binl`); nothing answers there, and it
        // gives up with PXE-E16. Without the class the offer is "DHCP only", and its option
        // 59 is the boot file.
        let vc: Option<&[u8]> = match class {
            Class::UefiHttp | Class::UefiHttpArm => Some(b"HTTPClient"),
            _ => None,
        };
        if let Some(vc) = vc {
            w.opt(opt::VENDOR_CLASS, &packet::vendor_class_body(ENTERPRISE, vc));
        }
    }
    Outcome::Reply { kind: label, bytes: w.into_bytes() }
}

fn header(req: &Request<'_>, reply_type: u8, s: &Settings) -> Writer {
    let mut w = Writer::new(reply_type, req.xid);
    w.opt(opt::SERVER_ID, &s.server_duid);
    if let Some(c) = req.client_id {
        w.opt(opt::CLIENT_ID, c);
    }
    w
}

/// One IA_NA per IA_NA asked for: the record's address (any other address the client names
/// with lifetimes 0, so it drops it), or why there is none.
fn addresses(w: &mut Writer, req: &Request<'_>, machine: &Machine, d: &mut Decision, s: &Settings) {
    let lease = s.lease_secs;
    let Some(ip6) = &machine.ip6 else {
        let (code, text) = if matches!(req.msg_type, kind::RENEW | kind::REBIND) {
            (status::NO_BINDING, "no IPv6 address in this machine's record")
        } else {
            (status::NO_ADDRS_AVAIL, "no IPv6 address in this machine's record")
        };
        if req.ia_na.is_empty() || req.msg_type == kind::SOLICIT {
            w.opt(opt::STATUS_CODE, &packet::status_body(status::NO_ADDRS_AVAIL, text));
        }
        if req.msg_type != kind::SOLICIT {
            for ia in &req.ia_na {
                let st = packet::status_body(code, text);
                let mut inner = Vec::new();
                inner.extend_from_slice(&opt::STATUS_CODE.to_be_bytes());
                inner.extend_from_slice(&u16::try_from(st.len()).unwrap_or(0).to_be_bytes());
                inner.extend_from_slice(&st);
                w.opt(opt::IA_NA, &packet::ia_na_body(ia.iaid, 0, 0, &inner));
            }
        }
        return;
    };
    d.address = Some(ip6.address);
    for ia in &req.ia_na {
        let mut inner = packet::iaaddr(ip6.address, lease, lease);
        for old in ia.addresses.iter().filter(|a| **a != ip6.address) {
            inner.extend_from_slice(&packet::iaaddr(*old, 0, 0));
        }
        w.opt(opt::IA_NA, &packet::ia_na_body(ia.iaid, lease / 2, lease / 5 * 4, &inner));
    }
}

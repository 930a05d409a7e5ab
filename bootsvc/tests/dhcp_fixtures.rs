//! Every captured client packet (tests/fixtures/dhcp, see its README) through parsing,
//! classification and reply building, in reservation and proxy mode; the classification
//! table of `bootsvc/docs/dhcp.md` row by row. Rows no client here can produce (BIOS PXE
//! without iPXE, ARM, x86 UEFI, arch 9, option 93 missing) use a captured packet with only
//! the deciding options rewritten. Each row's decisions and replies are also kept as text
//! in `tests/fixtures/dhcp/golden/` (see the end of this file). No sockets.

mod net;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use bootsvc::config::{DhcpMode, UefiChain};
use bootsvc::dhcp::classify::{self, Class};
use bootsvc::dhcp::reply::{self, Ctx, Decision, Outcome, Settings, Via};
use bootsvc::dhcp::request::{self, code, Options, HEADER_LEN};
use bootsvc::inventory::model::Arch;
use bootsvc::storage::LeaseStore;
use dhcproto::v4::{Message, MessageType};
use dhcproto::{Decodable, Decoder};
use net::{machine, MapBackend, PUBLIC_URL};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dhcp").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Rewrite a packet's options: `f` gets them in wire order and may change them.
fn rewrite(pkt: &[u8], f: impl FnOnce(&mut Vec<(u8, Vec<u8>)>)) -> Vec<u8> {
    let mut list = wire_options(pkt);
    f(&mut list);
    let mut out = pkt[..HEADER_LEN].to_vec();
    for (c, v) in list {
        out.push(c);
        out.push(v.len() as u8);
        out.extend_from_slice(&v);
    }
    out.push(255);
    out
}

fn set(list: &mut Vec<(u8, Vec<u8>)>, code: u8, value: Option<&[u8]>) {
    list.retain(|(c, _)| *c != code);
    if let Some(v) = value {
        list.push((code, v.to_vec()));
    }
}

/// A UEFI PXE packet (captured from OVMF) turned into arch `arch`.
fn with_arch(arch: u16) -> Vec<u8> {
    rewrite(&fixture("ovmf-pxe-discover.bin"), |o| {
        set(o, code::CLIENT_ARCH, Some(&arch.to_be_bytes()));
        set(o, code::CLASS_ID, Some(format!("PXEClient:Arch:{arch:05}:UNDI:003000").as_bytes()));
    })
}

/// The BIOS PXE ROM row: the captured iPXE BIOS ROM request without its iPXE markers.
fn bios_pxe_rom() -> Vec<u8> {
    rewrite(&fixture("seabios-ipxe-rom-discover.bin"), |o| {
        set(o, code::USER_CLASS, None);
        set(o, code::IPXE_ENCAP, None);
    })
}

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn settings(mode: DhcpMode) -> Settings {
    Settings {
        server_ip: SERVER,
        mode,
        lease_secs: 600,
        public_url: PUBLIC_URL.into(),
        pool: None,
        uefi_chain: UefiChain::Ipxe,
    }
}

/// Run one packet through parse + respond against a backend that knows its MAC with
/// `fixed_ip` and netboot `allow`.
fn decide(pkt: &[u8], mode: DhcpMode, fixed_ip: &str, allow: bool, via: Via) -> Decision {
    let req = request::parse(pkt).unwrap();
    let backend = MapBackend::new(vec![machine("node1", &req.mac.to_string(), Some(fixed_ip), allow)]);
    let leases = LeaseStore::in_memory(None).unwrap();
    let s = settings(mode);
    reply::respond(&req, via, &Ctx { settings: &s, backend: &backend, leases: &leases, now: 1 })
}

struct Wire {
    msg: Message,
    opts: Options,
    len: usize,
    dest: SocketAddrV4,
    kind: &'static str,
}

fn wire(d: &Decision) -> Wire {
    let Outcome::Reply(r) = &d.outcome else { panic!("no reply: {d:?}") };
    let bytes = r.encode().unwrap();
    let msg = Message::decode(&mut Decoder::new(&bytes)).unwrap();
    let opts = Options::parse(&bytes[HEADER_LEN..]).unwrap();
    Wire { msg, opts, len: bytes.len(), dest: r.dest, kind: r.kind }
}

/// Option 67 and the `file` field both carry `want`, NUL-terminated; the reply is padded.
fn assert_boot_file(w: &Wire, want: &str) {
    let mut nul = want.as_bytes().to_vec();
    nul.push(0);
    assert_eq!(w.opts.get(code::BOOTFILE), Some(&nul[..]), "option 67");
    assert_eq!(w.msg.fname(), Some(&nul[..]), "BOOTP file field");
    assert_eq!(w.msg.siaddr(), SERVER, "siaddr");
    assert!(w.len >= reply::MIN_REPLY_LEN, "reply is {} bytes", w.len);
}

/// Each table row: (packet, class, boot file).
fn rows() -> Vec<(&'static str, Vec<u8>, Class, String)> {
    let mac_url = |pkt: &[u8]| {
        let m = request::parse(pkt).unwrap().mac;
        format!("{PUBLIC_URL}/boot/{m}.ipxe")
    };
    let mut v = vec![
        ("BIOS PXE ROM (derived)", bios_pxe_rom(), Class::BiosPxe, "undionly.kpxe".to_string()),
        ("OVMF UEFI PXE", fixture("ovmf-pxe-discover.bin"), Class::UefiPxe, "ipxe.efi".into()),
        ("OVMF UEFI PXE request", fixture("ovmf-pxe-request.bin"), Class::UefiPxe, "ipxe.efi".into()),
        ("arch 6 (derived)", with_arch(6), Class::UefiPxe, "ipxe.efi".into()),
        ("arch 9 (derived)", with_arch(9), Class::UefiPxe, "ipxe.efi".into()),
        ("arch 11 (derived)", with_arch(11), Class::UefiPxeArm, "grubaa64.efi".into()),
        (
            "OVMF HTTP boot",
            fixture("ovmf-httpboot-discover.bin"),
            Class::UefiHttp,
            format!("{PUBLIC_URL}/ipxe/ipxe.efi"),
        ),
        (
            "OVMF HTTP boot request",
            fixture("ovmf-httpboot-request.bin"),
            Class::UefiHttp,
            format!("{PUBLIC_URL}/ipxe/ipxe.efi"),
        ),
        ("arch 15 (derived)", with_arch(15), Class::UefiHttp, format!("{PUBLIC_URL}/ipxe/ipxe.efi")),
        ("arch 19 (derived)", with_arch(19), Class::UefiHttpArm, format!("{PUBLIC_URL}/ipxe/grubaa64-http.efi")),
    ];
    for f in [
        "seabios-ipxe-rom-discover.bin",
        "seabios-ipxe-rom-request.bin",
        "ipxe-lkrn-discover.bin",
        "ipxe-lkrn-request.bin",
        "ovmf-ipxe-rom-discover.bin",
        "ovmf-ipxe-rom-request.bin",
        "ovmf-pxe-chain-ipxe-efi-discover.bin",
        "ovmf-pxe-chain-ipxe-efi-request.bin",
    ] {
        let p = fixture(f);
        let url = mac_url(&p);
        v.push((f, p, Class::Ipxe(Arch::X86_64), url));
    }
    v
}

#[test]
fn every_fixture_parses_and_classifies_as_captured() {
    for (name, pkt, class, _) in rows() {
        let req = request::parse(&pkt).unwrap_or_else(|e| panic!("{name}: {e}"));
        let c = bootsvc::dhcp::classify::client(req.mac, &req.options);
        assert_eq!(c.class(None), class, "{name}");
    }
    // What the captures themselves say (see the README): arch 0 + iPXE from the BIOS
    // builds, arch 7 from OVMF and iPXE EFI, arch 16 from OVMF HTTP boot.
    let arch = |f: &str| request::parse(&fixture(f)).unwrap().options.get(code::CLIENT_ARCH).map(|a| a.to_vec());
    assert_eq!(arch("seabios-ipxe-rom-discover.bin"), Some(vec![0, 0]));
    assert_eq!(arch("ipxe-lkrn-discover.bin"), Some(vec![0, 0]));
    assert_eq!(arch("ovmf-pxe-discover.bin"), Some(vec![0, 7]));
    assert_eq!(arch("ovmf-ipxe-rom-discover.bin"), Some(vec![0, 7]));
    assert_eq!(arch("ovmf-httpboot-discover.bin"), Some(vec![0, 16]));
}

#[test]
fn reservation_mode_serves_each_row_its_boot_file() {
    for (name, pkt, class, boot) in rows() {
        let req = request::parse(&pkt).unwrap();
        // A REQUEST names the address dnsmasq gave it in the capture: reserve that one.
        let ip = req.requested_ip.unwrap_or(Ipv4Addr::new(192, 0, 2, 10));
        let d = decide(&pkt, DhcpMode::Reservation, &format!("{ip}/24"), true, Via::Dhcp);
        assert_eq!(d.class, class, "{name}");
        let w = wire(&d);
        let want_kind = if req.msg_type == MessageType::Discover { "offer" } else { "ack" };
        assert_eq!(w.kind, want_kind, "{name}");
        assert_eq!(w.msg.yiaddr(), ip, "{name}");
        assert_eq!(w.msg.xid(), req.header.xid(), "{name}");
        assert_eq!(w.msg.chaddr()[..6], req.mac.octets(), "{name}");
        assert_boot_file(&w, &boot);
        assert_eq!(w.opts.get(code::SUBNET_MASK), Some(&[255, 255, 255, 0][..]), "{name}");
        assert_eq!(w.opts.get(code::ROUTER), Some(&[192, 0, 2, 254][..]), "{name}");
        assert_eq!(w.opts.get(code::DNS), Some(&[192, 0, 2, 53, 198, 51, 100, 53][..]), "{name}");
        assert_eq!(w.opts.get(code::HOSTNAME), Some(&b"node1"[..]), "{name}");
        assert_eq!(w.opts.get(code::SERVER_ID), Some(&[192, 0, 2, 1][..]), "{name}");
        assert_eq!(w.opts.get(code::LEASE_TIME), Some(&600u32.to_be_bytes()[..]), "{name}");
        // HTTP boot firmware only takes offers that say HTTPClient; PXE needs no option 60
        // from a full DHCP server.
        let want60: Option<&[u8]> = if class.is_http_boot() { Some(b"HTTPClient") } else { None };
        assert_eq!(w.opts.get(code::CLASS_ID), want60, "{name}");
        assert_eq!(w.opts.get(code::VENDOR_SPECIFIC), None, "{name}: no option 43 outside proxy mode");
        // Option 97 (client UUID) echoed, as the PXE spec asks.
        assert_eq!(w.opts.get(code::CLIENT_UUID), req.options.get(code::CLIENT_UUID), "{name}");
        assert_eq!(w.dest, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68), "{name}");
    }
}

#[test]
fn proxy_mode_offers_boot_information_only() {
    for (name, pkt, class, boot) in rows() {
        let req = request::parse(&pkt).unwrap();
        let d = decide(&pkt, DhcpMode::Proxy, "192.0.2.10/24", true, Via::Dhcp);
        if req.msg_type != MessageType::Discover {
            // The REQUEST on 67 belongs to the site server.
            assert!(matches!(d.outcome, Outcome::Ignore { reason: "dhcp-proxy-not-discover", .. }), "{name}");
            continue;
        }
        let w = wire(&d);
        assert_eq!(w.kind, "proxy-offer", "{name}");
        assert_eq!(w.msg.yiaddr(), Ipv4Addr::UNSPECIFIED, "{name}");
        assert_boot_file(&w, &boot);
        let want60: &[u8] = if class.is_http_boot() { b"HTTPClient" } else { b"PXEClient" };
        assert_eq!(w.opts.get(code::CLASS_ID), Some(want60), "{name}");
        let want43: Option<&[u8]> = (class == Class::BiosPxe).then_some(&reply::PXE_DISCOVERY_CONTROL[..]);
        assert_eq!(w.opts.get(code::VENDOR_SPECIFIC), want43, "{name}");
        for absent in [code::SUBNET_MASK, code::ROUTER, code::LEASE_TIME] {
            assert_eq!(w.opts.get(absent), None, "{name}: option {absent} in a proxy offer");
        }
    }
}

#[test]
fn port_4011_requests_get_a_proxy_ack_back_to_the_sender() {
    // UEFI PXE (and iPXE) after a proxy offer: a REQUEST to 4011 from its leased address.
    let pkt = rewrite(&fixture("ovmf-pxe-request.bin"), |o| {
        set(o, code::REQUESTED_IP, None);
        set(o, code::SERVER_ID, None);
    });
    let mut pkt = pkt;
    pkt[12..16].copy_from_slice(&[192, 0, 2, 77]); // ciaddr
    let src = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 77), 68);
    for mode in [DhcpMode::Proxy, DhcpMode::Reservation] {
        let d = decide(&pkt, mode, "192.0.2.10/24", true, Via::Pxe(src));
        let w = wire(&d);
        assert_eq!(w.kind, "proxy-ack");
        assert_eq!(w.dest, src, "answered where it came from");
        assert_eq!(w.msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(w.msg.ciaddr(), Ipv4Addr::new(192, 0, 2, 77));
        assert_boot_file(&w, "ipxe.efi");
        assert_eq!(w.opts.get(code::CLASS_ID), Some(&b"PXEClient"[..]));
    }
}

#[test]
fn option_60_decimal_arch_when_93_is_missing() {
    let no93 = |class_id: &str| {
        rewrite(&fixture("ovmf-pxe-discover.bin"), |o| {
            set(o, code::CLIENT_ARCH, None);
            set(o, code::CLASS_ID, Some(class_id.as_bytes()));
        })
    };
    let d = decide(&no93("PXEClient:Arch:00007:UNDI:003000"), DhcpMode::Reservation, "192.0.2.10/24", true, Via::Dhcp);
    assert_eq!(d.class, Class::UefiPxe);
    assert_boot_file(&wire(&d), "ipxe.efi");
    // 00011 is decimal eleven (ARM64), not 0x11.
    let d = decide(&no93("PXEClient:Arch:00011:UNDI:003000"), DhcpMode::Reservation, "192.0.2.10/24", true, Via::Dhcp);
    assert_eq!(d.class, Class::UefiPxeArm);
    assert_boot_file(&wire(&d), "grubaa64.efi");
}

#[test]
fn disallowed_and_unknown_machines_get_no_boot_file() {
    // Known, netboot not allowed, iPXE: the address, and as boot file its own script, which is
    // then the local boot script (with no boot file iPXE would wait 2 s at its shell prompt
    // before giving up); no-pxedhcp so it does not wait for a ProxyDHCP offer either.
    let pkt = fixture("seabios-ipxe-rom-discover.bin");
    let script = format!("{PUBLIC_URL}/boot/{}.ipxe", request::parse(&pkt).unwrap().mac);
    let d = decide(&pkt, DhcpMode::Reservation, "192.0.2.10/24", false, Via::Dhcp);
    assert_eq!((d.no_boot, d.boot_file.as_ref()), (Some("netboot not allowed"), None));
    assert_eq!(d.decline.as_ref().map(|f| f.to_string()), Some(script.clone()));
    let w = wire(&d);
    assert_eq!(w.msg.yiaddr(), Ipv4Addr::new(192, 0, 2, 10));
    assert_boot_file(&w, &script);
    assert_eq!(w.opts.get(code::IPXE_ENCAP), Some(&reply::IPXE_NO_PXEDHCP[..]));
    // Proxy mode: the same script in the ProxyDHCP offer, which also ends iPXE's wait for one.
    let d = decide(&pkt, DhcpMode::Proxy, "192.0.2.10/24", false, Via::Dhcp);
    let w = wire(&d);
    assert_eq!((w.kind, w.msg.yiaddr()), ("proxy-offer", Ipv4Addr::UNSPECIFIED));
    assert_boot_file(&w, &script);
    // A BIOS PXE ROM (not iPXE) is left as it is: no boot file.
    let d = decide(&bios_pxe_rom(), DhcpMode::Reservation, "192.0.2.10/24", false, Via::Dhcp);
    assert_eq!((d.class, d.decline.as_ref()), (Class::BiosPxe, None));
    assert_eq!(wire(&d).opts.get(code::BOOTFILE), None);
    // Unknown MAC: nothing, in either mode.
    let pkt = fixture("ovmf-pxe-discover.bin");
    let req = request::parse(&pkt).unwrap();
    let backend = MapBackend::new(vec![machine("other", "02:00:00:00:00:99", Some("192.0.2.10/24"), true)]);
    let leases = LeaseStore::in_memory(None).unwrap();
    for mode in [DhcpMode::Reservation, DhcpMode::Proxy] {
        let s = settings(mode);
        let d = reply::respond(&req, Via::Dhcp, &Ctx { settings: &s, backend: &backend, leases: &leases, now: 1 });
        assert!(matches!(d.outcome, Outcome::Ignore { reason: "dhcp-unknown-mac", .. }), "{d:?}");
    }
    // An architecture osie has no boot program for: an address, no boot file. 32-bit ARM
    // UEFI (10) is one: the arm64 GRUB would not run there.
    for arch in [2, 10] {
        let d = decide(&with_arch(arch), DhcpMode::Reservation, "192.0.2.10/24", true, Via::Dhcp);
        assert_eq!(d.class, Class::Unsupported(arch));
        assert_eq!(wire(&d).opts.get(code::BOOTFILE), None);
        assert_eq!(d.decline, None);
    }
}

/// UEFI PXE and HTTP boot, netboot not allowed: a boot file bootsvc does not have, so the
/// firmware's network option fails at once instead of retrying DHCP for 28 s; in reservation
/// mode beside the address, in proxy mode as a ProxyDHCP offer and on port 4011.
#[test]
fn uefi_that_must_not_netboot_is_declined_at_once() {
    let pxe = fixture("ovmf-pxe-discover.bin");
    let d = decide(&pxe, DhcpMode::Reservation, "192.0.2.10/24", false, Via::Dhcp);
    assert_eq!((d.boot_file.as_ref(), d.no_boot), (None, Some("netboot not allowed")));
    let w = wire(&d);
    assert_eq!((w.kind, w.msg.yiaddr()), ("offer", Ipv4Addr::new(192, 0, 2, 10)));
    assert_boot_file(&w, classify::NO_NETBOOT);
    assert_eq!(w.opts.get(code::CLASS_ID), None, "no PXEClient: OVMF would ask port 4011 first");
    let d = decide(&pxe, DhcpMode::Proxy, "192.0.2.10/24", false, Via::Dhcp);
    let w = wire(&d);
    assert_eq!((w.kind, w.msg.yiaddr()), ("proxy-offer", Ipv4Addr::UNSPECIFIED));
    assert_boot_file(&w, classify::NO_NETBOOT);
    assert_eq!(w.opts.get(code::CLASS_ID), Some(&b"PXEClient"[..]));
    let from = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 150), 68);
    let d = decide(&fixture("ovmf-pxe-request.bin"), DhcpMode::Proxy, "192.0.2.10/24", false, Via::Pxe(from));
    let w = wire(&d);
    assert_eq!((w.kind, w.dest), ("proxy-ack", from));
    assert_boot_file(&w, classify::NO_NETBOOT);

    let http = fixture("ovmf-httpboot-discover.bin");
    let url = format!("{PUBLIC_URL}/ipxe/{}", classify::NO_NETBOOT);
    for mode in [DhcpMode::Reservation, DhcpMode::Proxy] {
        let d = decide(&http, mode, "192.0.2.10/24", false, Via::Dhcp);
        assert_eq!(d.decline.as_ref().map(|f| f.to_string()), Some(url.clone()));
        let w = wire(&d);
        assert_boot_file(&w, &url);
        assert_eq!(w.opts.get(code::CLASS_ID), Some(&b"HTTPClient"[..]), "{mode:?}");
    }
    // Allowed again (a reinstall): the real boot file, nothing declined.
    let d = decide(&pxe, DhcpMode::Reservation, "192.0.2.10/24", true, Via::Dhcp);
    assert_eq!(d.decline, None);
    assert_boot_file(&wire(&d), "ipxe.efi");
}

/// The shim/GRUB chain (`docs/secure-boot.md`): set for the site, or for one machine over
/// the site's default; either way only x64 UEFI firmware gets shim, in both modes, and
/// iPXE (already running) and BIOS get what they always get.
#[test]
fn uefi_chain_by_site_and_by_machine() {
    let run = |pkt: &[u8], mode: DhcpMode, site: UefiChain, own: Option<UefiChain>| {
        let req = request::parse(pkt).unwrap();
        let mut m = machine("node1", &req.mac.to_string(), Some("192.0.2.10/24"), true);
        m.netboot.uefi_chain = own;
        let backend = MapBackend::new(vec![m]);
        let leases = LeaseStore::in_memory(None).unwrap();
        let s = Settings { uefi_chain: site, ..settings(mode) };
        let d = reply::respond(&req, Via::Dhcp, &Ctx { settings: &s, backend: &backend, leases: &leases, now: 1 });
        d.boot_file.map(|b| b.to_string())
    };
    let shim_url = format!("{PUBLIC_URL}/ipxe/shimx64.efi");
    let pxe = fixture("ovmf-pxe-discover.bin");
    let http = fixture("ovmf-httpboot-discover.bin");
    let ipxe = fixture("ovmf-pxe-chain-ipxe-efi-discover.bin");
    for mode in [DhcpMode::Reservation, DhcpMode::Proxy] {
        use UefiChain::{Ipxe, ShimGrub};
        assert_eq!(run(&pxe, mode, ShimGrub, None).as_deref(), Some("shimx64.efi"), "{mode:?}");
        assert_eq!(run(&pxe, mode, Ipxe, Some(ShimGrub)).as_deref(), Some("shimx64.efi"), "{mode:?}");
        assert_eq!(run(&pxe, mode, ShimGrub, Some(Ipxe)).as_deref(), Some("ipxe.efi"), "{mode:?}");
        assert_eq!(run(&pxe, mode, Ipxe, None).as_deref(), Some("ipxe.efi"), "{mode:?}");
        assert_eq!(run(&http, mode, ShimGrub, None), Some(shim_url.clone()), "{mode:?}");
        assert_eq!(run(&http, mode, ShimGrub, Some(Ipxe)), Some(format!("{PUBLIC_URL}/ipxe/ipxe.efi")), "{mode:?}");
        assert_eq!(run(&with_arch(9), mode, ShimGrub, None).as_deref(), Some("shimx64.efi"), "{mode:?}");
        assert_eq!(run(&with_arch(6), mode, ShimGrub, None).as_deref(), Some("ipxe.efi"), "IA32: {mode:?}");
        assert_eq!(run(&bios_pxe_rom(), mode, ShimGrub, None).as_deref(), Some("undionly.kpxe"), "{mode:?}");
        let script = run(&ipxe, mode, ShimGrub, None).unwrap();
        assert!(script.ends_with(".ipxe"), "iPXE already running keeps its script: {script}");
    }
}

/// Reservation mode tells iPXE there is no ProxyDHCP offer to wait for; proxy mode (where
/// bootsvc's offer is the ProxyDHCP offer) and other firmware get no option 175.
#[test]
fn ipxe_is_told_not_to_wait_for_proxydhcp() {
    for f in ["seabios-ipxe-rom-discover.bin", "ovmf-pxe-chain-ipxe-efi-discover.bin", "ipxe-lkrn-discover.bin"] {
        let d = decide(&fixture(f), DhcpMode::Reservation, "192.0.2.10/24", true, Via::Dhcp);
        assert_eq!(wire(&d).opts.get(code::IPXE_ENCAP), Some(&[176u8, 1, 1][..]), "{f}");
        let d = decide(&fixture(f), DhcpMode::Proxy, "192.0.2.10/24", true, Via::Dhcp);
        if let Outcome::Reply(_) = d.outcome {
            assert_eq!(wire(&d).opts.get(code::IPXE_ENCAP), None, "{f} in proxy mode");
        }
    }
    for f in ["ovmf-pxe-discover.bin", "ovmf-httpboot-discover.bin"] {
        let d = decide(&fixture(f), DhcpMode::Reservation, "192.0.2.10/24", true, Via::Dhcp);
        assert_eq!(wire(&d).opts.get(code::IPXE_ENCAP), None, "{f}");
    }
}

#[test]
fn wrong_requested_address_is_naked() {
    let pkt = fixture("seabios-ipxe-rom-request.bin");
    let d = decide(&pkt, DhcpMode::Reservation, "192.0.2.10/24", true, Via::Dhcp);
    let w = wire(&d);
    assert_eq!(w.kind, "nak");
    assert_eq!(w.msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(w.opts.get(code::BOOTFILE), None);
    assert_eq!(w.opts.get(code::MESSAGE_TYPE), Some(&[6u8][..]));
    assert_eq!(w.dest, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
}

#[test]
fn relayed_requests_go_back_to_the_relay_with_option_82() {
    let agent = [1u8, 4, b'p', b'o', b'r', b't', 2, 3, 0xaa, 0xbb, 0xcc];
    let mut pkt = rewrite(&fixture("ovmf-pxe-discover.bin"), |o| set(o, code::RELAY_AGENT, Some(&agent)));
    pkt[24..28].copy_from_slice(&[198, 51, 100, 1]); // giaddr
    pkt[3] = 1; // hops
    let d = decide(&pkt, DhcpMode::Reservation, "198.51.100.20/24", true, Via::Dhcp);
    let w = wire(&d);
    assert_eq!(w.dest, SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 67));
    assert_eq!(w.msg.giaddr(), Ipv4Addr::new(198, 51, 100, 1));
    assert_eq!(w.opts.get(code::RELAY_AGENT), Some(&agent[..]));
    assert_boot_file(&w, "ipxe.efi");
}

/// A relay address no relay agent can have: dropped with a reason, in both modes and on
/// both ports, before anything is looked up; the reply would have gone to that address.
#[test]
fn impossible_relay_addresses_are_dropped() {
    for giaddr in ["127.0.0.1", "224.0.0.1", "255.255.255.255", "169.254.0.9", "192.0.2.1", "0.0.0.0"] {
        let mut pkt = fixture("ovmf-pxe-discover.bin");
        pkt[24..28].copy_from_slice(&giaddr.parse::<Ipv4Addr>().unwrap().octets());
        pkt[3] = 1; // hops: relayed
        for mode in [DhcpMode::Reservation, DhcpMode::Proxy] {
            for via in [Via::Dhcp, Via::Pxe(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 4011))] {
                let d = decide(&pkt, mode, "192.0.2.10/24", true, via);
                let Outcome::Ignore { reason, why } = &d.outcome else { panic!("{giaddr}: {d:?}") };
                assert_eq!(*reason, "dhcp-bad-giaddr", "{giaddr}");
                assert!(why.contains(&format!("giaddr {giaddr}")) || why.contains("hops is 1"), "{why}");
            }
        }
    }
}

/// A captured packet with its options moved into the `file` field under option 52 (RFC
/// 2131 §4.1) gets the same answer as the original.
#[test]
fn an_option_overloaded_request_gets_the_same_answer() {
    let orig = fixture("ovmf-pxe-discover.bin");
    let mut list = Vec::new();
    rewrite(&orig, |o| list = o.clone());
    // Message type and arch stay; vendor class and client arch go to `file`.
    let moved: Vec<(u8, Vec<u8>)> = list.iter().filter(|(c, _)| [60, 93].contains(c)).cloned().collect();
    assert_eq!(moved.len(), 2);
    let mut pkt = rewrite(&orig, |o| {
        o.retain(|(c, _)| ![60, 93].contains(c));
        o.push((52, vec![1]));
    });
    let mut file: Vec<u8> = moved.iter().flat_map(|(c, v)| [vec![*c, v.len() as u8], v.clone()].concat()).collect();
    file.push(255);
    assert!(file.len() <= 128, "fits the file field");
    pkt[108..108 + file.len()].copy_from_slice(&file);
    let a = decide(&orig, DhcpMode::Reservation, "192.0.2.10/24", true, Via::Dhcp);
    let b = decide(&pkt, DhcpMode::Reservation, "192.0.2.10/24", true, Via::Dhcp);
    assert_eq!((b.class, b.client.arch), (a.class, a.client.arch));
    assert_eq!(b.class, Class::UefiPxe);
    assert_boot_file(&wire(&b), "ipxe.efi");
}

#[test]
fn long_urls_go_in_option_67_only() {
    let req = request::parse(&fixture("ovmf-ipxe-rom-discover.bin")).unwrap();
    let backend = MapBackend::new(vec![machine("n", &req.mac.to_string(), Some("192.0.2.10/24"), true)]);
    let leases = LeaseStore::in_memory(None).unwrap();
    let mut s = settings(DhcpMode::Reservation);
    s.public_url = format!("http://{}.example:8080", "x".repeat(100));
    let d = reply::respond(&req, Via::Dhcp, &Ctx { settings: &s, backend: &backend, leases: &leases, now: 1 });
    let w = wire(&d);
    assert!(w.opts.get(code::BOOTFILE).unwrap().len() > 128);
    assert_eq!(w.msg.fname(), None, "does not fit the 128-byte file field");
}

#[test]
fn proxy_mode_sets_aside_other_traffic_before_the_inventory() {
    // An OS client and the site server's REQUESTs are neither refused nor logged as unknown
    // machines: they are simply not bootsvc's business in proxy mode.
    let os_client = rewrite(&fixture("ovmf-pxe-discover.bin"), |o| {
        set(o, code::CLASS_ID, Some(b"udhcp 1.35.0"));
        set(o, code::CLIENT_ARCH, None);
    });
    let backend = MapBackend::new(vec![]);
    let leases = LeaseStore::in_memory(None).unwrap();
    let s = settings(DhcpMode::Proxy);
    let ctx = Ctx { settings: &s, backend: &backend, leases: &leases, now: 1 };
    let d = reply::respond(&request::parse(&os_client).unwrap(), Via::Dhcp, &ctx);
    assert!(matches!(d.outcome, Outcome::Ignore { reason: "dhcp-not-pxe", .. }), "{d:?}");
    let d = reply::respond(&request::parse(&fixture("ovmf-pxe-request.bin")).unwrap(), Via::Dhcp, &ctx);
    assert!(matches!(d.outcome, Outcome::Ignore { reason: "dhcp-proxy-not-discover", .. }), "{d:?}");
    let d = reply::respond(&request::parse(&fixture("ovmf-pxe-discover.bin")).unwrap(), Via::Dhcp, &ctx);
    assert!(matches!(d.outcome, Outcome::Ignore { reason: "dhcp-unknown-mac", .. }), "{d:?}");
}

// ---- Golden decoded replies -------------------------------------------------------------
//
// Every row of the table above, in three situations (reservation mode with netboot allowed,
// reservation mode with netboot not allowed, proxy mode), rendered as readable text: what
// the request said, what bootsvc decided and why, and the reply it would send, field by
// field and option by option in wire order. The texts live beside the captures in
// `tests/fixtures/dhcp/golden/`, one file per row, and the test compares them: a change in
// behaviour shows up in review as a diff of those files. After a deliberate change,
// regenerate them with
//
//     UPDATE_TESTDATA=1 cargo nextest run -p bootsvc --test dhcp_fixtures golden
//
// and read the diff before committing it.

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dhcp/golden")
}

/// A row's name as a file name: `OVMF UEFI PXE request` → `ovmf-uefi-pxe-request`.
fn golden_name(row: &str) -> String {
    let stem = row.strip_suffix(".bin").unwrap_or(row).to_lowercase();
    let mut out = String::new();
    for c in stem.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    format!("{}.txt", out.trim_matches('-'))
}

fn option_name(code: u8) -> &'static str {
    match code {
        1 => "subnet mask",
        3 => "router",
        6 => "dns",
        12 => "hostname",
        43 => "vendor specific",
        50 => "requested address",
        51 => "lease time",
        53 => "message type",
        54 => "server id",
        55 => "parameter request list",
        57 => "max message size",
        58 => "renewal time",
        59 => "rebinding time",
        60 => "vendor class",
        61 => "client id",
        67 => "boot file",
        77 => "user class",
        82 => "relay agent",
        93 => "client arch",
        94 => "client NDI",
        97 => "client UUID",
        175 => "iPXE",
        _ => "",
    }
}

/// An option's value as a reader wants it: addresses, numbers, text, or hex.
fn option_value(code: u8, v: &[u8]) -> String {
    let ips = |v: &[u8]| {
        let ip = |c: &[u8]| if c.len() == 4 { Ipv4Addr::new(c[0], c[1], c[2], c[3]).to_string() } else { hexs(c) };
        v.chunks(4).map(ip).collect::<Vec<_>>().join(", ")
    };
    let printable = |v: &[u8]| {
        let s = v.strip_suffix(&[0]).unwrap_or(v);
        (!s.is_empty() && s.iter().all(|b| b.is_ascii_graphic() || *b == b' '))
            .then(|| format!("{:?}{}", String::from_utf8_lossy(s), if s.len() < v.len() { " + NUL" } else { "" }))
    };
    match code {
        1 | 3 | 6 | 50 | 54 if v.len().is_multiple_of(4) => ips(v),
        51 | 58 | 59 if v.len() == 4 => format!("{} s", u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
        53 if v.len() == 1 => format!("{:?}", MessageType::from(v[0])).to_uppercase(),
        57 | 93 if v.len() == 2 => u16::from_be_bytes([v[0], v[1]]).to_string(),
        55 => v.iter().map(u8::to_string).collect::<Vec<_>>().join(" "),
        _ => printable(v).unwrap_or_else(|| hexs(v)),
    }
}

fn hexs(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// The options of a packet in wire order (the packet is well formed: it parsed or we built it).
fn wire_options(pkt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut b = &pkt[HEADER_LEN..];
    while let Some((&c, rest)) = b.split_first() {
        match c {
            255 => break,
            0 => b = rest,
            _ => {
                let len = rest[0] as usize;
                out.push((c, rest[1..1 + len].to_vec()));
                b = &rest[1 + len..];
            }
        }
    }
    out
}

fn render_options(out: &mut String, pkt: &[u8]) {
    use std::fmt::Write;
    for (c, v) in wire_options(pkt) {
        let _ = writeln!(out, "    {c:>3} {:<22} {}", option_name(c), option_value(c, &v));
    }
}

fn render_header(out: &mut String, m: &Message) {
    use std::fmt::Write;
    let field = |v: Option<&[u8]>| v.map(|v| option_value(0, v)).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "    op {:?} xid {:#010x} secs {} flags {:#06x} hops {}",
        m.opcode(),
        m.xid(),
        m.secs(),
        u16::from(m.flags()),
        m.hops()
    );
    let _ =
        writeln!(out, "    ciaddr {} yiaddr {} siaddr {} giaddr {}", m.ciaddr(), m.yiaddr(), m.siaddr(), m.giaddr());
    let _ = writeln!(
        out,
        "    chaddr {} sname {} file {}",
        hexs(&m.chaddr()[..6]).replace(' ', ":"),
        field(m.sname()),
        field(m.fname())
    );
}

/// One situation of one row: the decision and the reply, as text.
fn render_decision(out: &mut String, title: &str, d: &Decision) {
    use std::fmt::Write;
    let _ = writeln!(out, "\n## {title}");
    let boot = d.boot_file.as_ref().map(|b| b.to_string()).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "decision: class {}, boot file {boot}{}{}",
        d.class,
        d.no_boot.map(|w| format!(" (none: {w})")).unwrap_or_default(),
        d.decline.as_ref().map(|f| format!(", declined with {f}")).unwrap_or_default()
    );
    match &d.outcome {
        Outcome::Reply(r) => {
            let bytes = r.encode().unwrap();
            let msg = Message::decode(&mut Decoder::new(&bytes)).unwrap();
            let _ = writeln!(out, "reply: {} to {}, {} bytes", r.kind, r.dest, bytes.len());
            render_header(out, &msg);
            render_options(out, &bytes);
        }
        Outcome::Ignore { reason, why } => {
            let _ = writeln!(out, "no reply: {reason}: {why}");
        }
        Outcome::Done(what) => {
            let _ = writeln!(out, "handled, no reply: {what}");
        }
    }
}

fn render_row(name: &str, pkt: &[u8]) -> String {
    use std::fmt::Write;
    let req = request::parse(pkt).unwrap();
    let c = bootsvc::dhcp::classify::client(req.mac, &req.options);
    let mut out = String::new();
    let _ = writeln!(out, "# {name}");
    let _ = writeln!(out, "\nrequest: {:?} from {}, {} bytes", req.msg_type, req.mac, pkt.len());
    let arch = c.arch.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "client: arch {arch} ({:?}), vendor {:?}, iPXE running: {}", c.arch_source, c.vendor, c.ipxe);
    render_header(&mut out, &req.header);
    render_options(&mut out, pkt);
    // A REQUEST names the address it was offered in the capture: reserve that one.
    let ip = req.requested_ip.unwrap_or(Ipv4Addr::new(192, 0, 2, 10));
    let fixed = format!("{ip}/24");
    for (title, mode, allow) in [
        ("reservation mode, netboot allowed", DhcpMode::Reservation, true),
        ("reservation mode, netboot not allowed", DhcpMode::Reservation, false),
        ("proxy mode, netboot allowed", DhcpMode::Proxy, true),
    ] {
        render_decision(&mut out, title, &decide(pkt, mode, &fixed, allow, Via::Dhcp));
    }
    out
}

#[test]
fn golden_decoded_replies_match_the_files_beside_the_captures() {
    let dir = golden_dir();
    let update = std::env::var_os("UPDATE_TESTDATA").is_some_and(|v| v == "1");
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut differ = Vec::new();
    let mut names = Vec::new();
    for (name, pkt, _, _) in rows() {
        let file = dir.join(golden_name(name));
        names.push(golden_name(name));
        let got = render_row(name, &pkt);
        if update {
            std::fs::write(&file, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!("{}: {e} (generate it with UPDATE_TESTDATA=1, see the comment above this test)", file.display())
        });
        if got != want {
            let first = got.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(0);
            differ.push(format!(
                "{}: differs from line {}:\n  now:  {}\n  file: {}",
                file.display(),
                first + 1,
                got.lines().nth(first).unwrap_or("(end)"),
                want.lines().nth(first).unwrap_or("(end)")
            ));
        }
    }
    // No stale files: every golden file belongs to a row.
    for e in std::fs::read_dir(&dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(names.contains(&n), "{n} in {} belongs to no row (remove it)", dir.display());
    }
    assert!(
        differ.is_empty(),
        "decoded replies changed (if on purpose: UPDATE_TESTDATA=1, then review the diff):\n{}",
        differ.join("\n")
    );
}

/// The firmware's own architecture wins over its record's: captured x86 firmware and iPXE
/// packets get x86 boot files (and the x86 script) when the record says aarch64, and an
/// ARM64 request gets the arm64 GRUB when the record says x86_64. No option 93 or 60 arch:
/// the record decides.
#[test]
fn the_request_architecture_wins_over_the_record() {
    let decide_as = |pkt: &[u8], arch: Arch| {
        let req = request::parse(pkt).unwrap();
        let mut m = machine("node1", &req.mac.to_string(), Some("192.0.2.10/24"), true);
        m.arch = arch;
        let backend = MapBackend::new(vec![m]);
        let leases = LeaseStore::in_memory(None).unwrap();
        let s = settings(DhcpMode::Reservation);
        let d = reply::respond(&req, Via::Dhcp, &Ctx { settings: &s, backend: &backend, leases: &leases, now: 1 });
        let file = d.boot_file.as_ref().map(|b| b.to_string()).unwrap_or_default();
        (d.class, file)
    };
    for (f, class, file) in [
        ("ovmf-pxe-discover.bin", Class::UefiPxe, "ipxe.efi".to_string()),
        ("ovmf-httpboot-discover.bin", Class::UefiHttp, format!("{PUBLIC_URL}/ipxe/ipxe.efi")),
        ("seabios-ipxe-rom-discover.bin", Class::Ipxe(Arch::X86_64), String::new()),
        ("ovmf-pxe-chain-ipxe-efi-discover.bin", Class::Ipxe(Arch::X86_64), String::new()),
    ] {
        let pkt = fixture(f);
        let (c, got) = decide_as(&pkt, Arch::Aarch64);
        assert_eq!(c, class, "{f}");
        if file.is_empty() {
            let mac = request::parse(&pkt).unwrap().mac;
            assert_eq!(got, format!("{PUBLIC_URL}/boot/{mac}.ipxe"), "{f}");
        } else {
            assert_eq!(got, file, "{f}");
        }
    }
    assert_eq!(decide_as(&with_arch(11), Arch::X86_64), (Class::UefiPxeArm, "grubaa64.efi".into()));
    assert_eq!(
        decide_as(&with_arch(19), Arch::X86_64),
        (Class::UefiHttpArm, format!("{PUBLIC_URL}/ipxe/grubaa64-http.efi"))
    );
    // Neither option 93 nor an arch in option 60: the record's arch.
    let no_arch = rewrite(&fixture("ovmf-pxe-discover.bin"), |o| {
        set(o, code::CLIENT_ARCH, None);
        set(o, code::CLASS_ID, Some(b"PXEClient"));
    });
    assert_eq!(decide_as(&no_arch, Arch::Aarch64), (Class::UefiPxeArm, "grubaa64.efi".into()));
    assert_eq!(decide_as(&no_arch, Arch::X86_64), (Class::BiosPxe, "undionly.kpxe".into()));
}

//! DHCPv6 decisions without sockets: each message type, each firmware class's boot file
//! URL and vendor class, machines without `ip6`, netboot not allowed, another server's
//! messages, and who is asking (DUID against the link-local source).

mod net;

use std::net::Ipv6Addr;

use bootsvc::config::UefiChain;
use bootsvc::dhcp6::packet::{self, kind, opt, status, Writer};
use bootsvc::dhcp6::reply::{self, Decision, Outcome, Settings};
use bootsvc::inventory::model::Ip6Config;
use net::{machine, MapBackend};

const A: &str = "52:54:00:12:34:56";
/// A's link-local address (EUI-64 of its MAC).
const A_LL: &str = "fe80::5054:ff:fe12:3456";
const B: &str = "52:54:00:ab:cd:ef";
const B_LL: &str = "fe80::5054:ff:feab:cdef";
const NO_IP6: &str = "52:54:00:00:00:07";
const DENIED: &str = "52:54:00:00:00:08";
const ME: &str = "2001:db8::1";
const SERVER_DUID: &[u8] = &[0, 3, 0, 1, 2, 0, 0, 0, 0, 1];

fn duid(mac: &str) -> Vec<u8> {
    packet::duid_ll(&mac.parse().unwrap())
}

fn settings() -> Settings {
    Settings {
        server_duid: SERVER_DUID.to_vec(),
        address: ME.parse().unwrap(),
        public_url: format!("http://[{ME}]:8080"),
        lease_secs: 600,
        uefi_chain: UefiChain::Ipxe,
    }
}

fn backend() -> MapBackend {
    backend_with(None)
}

/// The machines, A's record naming `a_chain`.
fn backend_with(a_chain: Option<UefiChain>) -> MapBackend {
    let with6 = |host, mac, last: u16| {
        let mut m = machine(host, mac, None, true);
        m.ip6 = Some(Ip6Config { address: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last), prefix: 64 });
        m
    };
    let mut denied = with6("denied", DENIED, 0x18);
    denied.netboot.allow = false;
    let mut a = with6("a", A, 0x10);
    a.netboot.uefi_chain = a_chain;
    MapBackend::new(vec![a, with6("b", B, 0x11), machine("no6", NO_IP6, None, true), denied])
}

fn msg(t: u8, opts: &[(u16, &[u8])]) -> Vec<u8> {
    let mut w = Writer::new(t, [7, 8, 9]);
    for (c, b) in opts {
        w.opt(*c, b);
    }
    w.into_bytes()
}

fn ia(addr: Option<&str>) -> Vec<u8> {
    let inner = addr.map(|a| packet::iaaddr(a.parse().unwrap(), 0, 0)).unwrap_or_default();
    packet::ia_na_body([0, 0, 0, 1], 0, 0, &inner)
}

fn decide(bytes: &[u8], src: &str) -> Decision {
    let req = packet::parse(bytes).unwrap();
    reply::respond(&req, src.parse().unwrap(), &settings(), &backend())
}

type Options = Vec<(u16, Vec<u8>)>;

/// A reply: its type, xid and options (code, body).
fn reply_of(d: &Decision) -> (u8, [u8; 3], Options) {
    let Outcome::Reply { bytes, .. } = &d.outcome else { panic!("no reply: {d:?}") };
    let opts = packet::options(&bytes[4..]).unwrap().into_iter().map(|(c, b)| (c, b.to_vec())).collect();
    (bytes[0], [bytes[1], bytes[2], bytes[3]], opts)
}

fn get(opts: &[(u16, Vec<u8>)], code: u16) -> Option<&[u8]> {
    opts.iter().find(|(c, _)| *c == code).map(|(_, b)| b.as_slice())
}

/// The addresses (with valid lifetimes) in an IA_NA body.
fn ia_addresses(body: &[u8]) -> Vec<(Ipv6Addr, u32)> {
    packet::options(&body[12..])
        .unwrap()
        .into_iter()
        .filter(|(c, _)| *c == opt::IAADDR)
        .map(|(_, a)| {
            (Ipv6Addr::from(<[u8; 16]>::try_from(&a[..16]).unwrap()), u32::from_be_bytes(a[20..24].try_into().unwrap()))
        })
        .collect()
}

fn ignored(d: &Decision) -> &'static str {
    match &d.outcome {
        Outcome::Ignore { reason, .. } => reason,
        Outcome::Reply { kind, .. } => panic!("answered ({kind}): {d:?}"),
    }
}

#[test]
fn uefi_http_boot_solicit_gets_address_url_and_httpclient() {
    let vc = packet::vendor_class_body(343, b"HTTPClient:Arch:00016:UNDI:003001");
    let d = decide(
        &msg(
            kind::SOLICIT,
            &[
                (opt::CLIENT_ID, &duid(A)),
                (opt::IA_NA, &ia(None)),
                (opt::CLIENT_ARCH, &[0, 16]),
                (opt::VENDOR_CLASS, &vc),
            ],
        ),
        A_LL,
    );
    let (t, xid, o) = reply_of(&d);
    assert_eq!((t, xid), (kind::ADVERTISE, [7, 8, 9]));
    assert_eq!(get(&o, opt::SERVER_ID), Some(SERVER_DUID));
    assert_eq!(get(&o, opt::CLIENT_ID), Some(&duid(A)[..]));
    assert_eq!(get(&o, opt::PREFERENCE), Some(&[255][..]));
    let iana = get(&o, opt::IA_NA).unwrap();
    assert_eq!(&iana[..4], &[0, 0, 0, 1], "the client's IAID");
    assert_eq!(u32::from_be_bytes(iana[4..8].try_into().unwrap()), 300, "T1");
    assert_eq!(ia_addresses(iana), vec![("2001:db8::10".parse().unwrap(), 600)]);
    assert_eq!(get(&o, opt::BOOTFILE_URL), Some(&b"http://[2001:db8::1]:8080/ipxe/ipxe.efi"[..]));
    assert_eq!(get(&o, opt::VENDOR_CLASS), Some(&packet::vendor_class_body(343, b"HTTPClient")[..]));
}

/// How EDK2's PXE over IPv6 sorts an Advertise (`PxeBcParseDhcp6Packet` in
/// NetworkPkg/UefiPxeBcDxe/PxeBcDhcp6.c): an IA_NA without a failing status makes it a DHCP
/// offer (else a proxy offer); a Vendor Class with enterprise 343 and `PXEClient` 6 bytes in
/// makes it a BINL offer, which EDK2 follows with a request to a boot server on UDP 4011
/// before it boots.
#[derive(Debug, PartialEq, Eq)]
enum Edk2Offer {
    DhcpOnly,
    DhcpBinl,
    ProxyBinl,
}

fn edk2_offer(o: &[(u16, Vec<u8>)]) -> Edk2Offer {
    let proxy = match get(o, opt::IA_NA) {
        None => true,
        Some(ia) => {
            packet::options(&ia[12..]).unwrap().iter().any(|(c, b)| *c == opt::STATUS_CODE && b.first() != Some(&0))
        }
    };
    let pxe = get(o, opt::VENDOR_CLASS)
        .is_some_and(|v| v.len() >= 13 && v[..4] == 343u32.to_be_bytes() && &v[6..15] == b"PXEClient");
    match (pxe, proxy) {
        (false, _) => Edk2Offer::DhcpOnly,
        (true, false) => Edk2Offer::DhcpBinl,
        (true, true) => Edk2Offer::ProxyBinl,
    }
}

#[test]
fn the_edk2_offer_model_tells_binl_offers() {
    let with = |vc: &[u8]| vec![(opt::IA_NA, ia(None)), (opt::VENDOR_CLASS, packet::vendor_class_body(343, vc))];
    assert_eq!(edk2_offer(&with(b"PXEClient")), Edk2Offer::DhcpBinl);
    assert_eq!(edk2_offer(&with(b"HTTPClient")), Edk2Offer::DhcpOnly);
    assert_eq!(edk2_offer(&with(b"PXEClient")[1..]), Edk2Offer::ProxyBinl);
    assert_eq!(edk2_offer(&with(b"PXEClient")[..1]), Edk2Offer::DhcpOnly);
}

/// OVMF's PXE over IPv6 refused bootsvc's offer with `PXE-E16: No valid offer received`: the
/// offer carried Vendor Class `PXEClient`, so EDK2 took it as a BINL offer and asked a boot
/// server on UDP 4011 for the boot file; nothing answers there. The offer is now "DHCP
/// only": an address and option 59, which EDK2 boots from.
#[test]
fn uefi_pxe_gets_a_tftp_url_in_a_dhcp_only_offer() {
    for arch in [7u16, 9] {
        for t in [kind::SOLICIT, kind::REQUEST] {
            let (client, iana, arch_be) = (duid(A), ia(None), arch.to_be_bytes());
            let mut opts: Vec<(u16, &[u8])> =
                vec![(opt::CLIENT_ID, &client), (opt::IA_NA, &iana), (opt::CLIENT_ARCH, &arch_be)];
            if t == kind::REQUEST {
                opts.push((opt::SERVER_ID, SERVER_DUID));
            }
            let d = decide(&msg(t, &opts), A_LL);
            let (_, _, o) = reply_of(&d);
            assert_eq!(get(&o, opt::BOOTFILE_URL), Some(&b"tftp://[2001:db8::1]/ipxe.efi"[..]), "arch {arch}");
            assert_eq!(get(&o, opt::VENDOR_CLASS), None, "arch {arch}, type {t}");
            assert_eq!(edk2_offer(&o), Edk2Offer::DhcpOnly, "arch {arch}, type {t}");
            assert_eq!(ia_addresses(get(&o, opt::IA_NA).unwrap())[0].0, "2001:db8::10".parse::<Ipv6Addr>().unwrap());
        }
    }
}

/// The shim/GRUB chain over IPv6, as over IPv4: the record's `netboot.uefi_chain`, else the
/// site's; UEFI PXE gets shim over TFTP, HTTP boot shim's URL; iPXE keeps its script.
#[test]
fn the_shim_grub_chain_by_record_and_by_site() {
    let solicit = |arch: u16| {
        msg(
            kind::SOLICIT,
            &[(opt::CLIENT_ID, &duid(A)), (opt::IA_NA, &ia(None)), (opt::CLIENT_ARCH, &arch.to_be_bytes())],
        )
    };
    let boot = |b: &MapBackend, s: &Settings, arch: u16| {
        let req = solicit(arch);
        let d = reply::respond(&packet::parse(&req).unwrap(), A_LL.parse().unwrap(), s, b);
        String::from_utf8(get(&reply_of(&d).2, opt::BOOTFILE_URL).unwrap().to_vec()).unwrap()
    };
    let site_shim = Settings { uefi_chain: UefiChain::ShimGrub, ..settings() };
    assert_eq!(boot(&backend(), &site_shim, 7), "tftp://[2001:db8::1]/shimx64.efi");
    assert_eq!(boot(&backend(), &site_shim, 16), "http://[2001:db8::1]:8080/ipxe/shimx64.efi");
    assert_eq!(boot(&backend(), &site_shim, 11), "tftp://[2001:db8::1]/grubaa64.efi", "arm64 has one chain");
    assert_eq!(boot(&backend_with(Some(UefiChain::ShimGrub)), &settings(), 7), "tftp://[2001:db8::1]/shimx64.efi");
    assert_eq!(
        boot(&backend_with(Some(UefiChain::Ipxe)), &site_shim, 7),
        "tftp://[2001:db8::1]/ipxe.efi",
        "the record wins"
    );
}

#[test]
fn ipxe_gets_its_script_url_without_a_vendor_class() {
    let d = decide(
        &msg(
            kind::INFORMATION_REQUEST,
            &[(opt::CLIENT_ID, &duid(A)), (opt::USER_CLASS, b"\x00\x04iPXE"), (opt::CLIENT_ARCH, &[0, 7])],
        ),
        A_LL,
    );
    let (t, _, o) = reply_of(&d);
    assert_eq!(t, kind::REPLY);
    assert_eq!(get(&o, opt::BOOTFILE_URL), Some(&b"http://[2001:db8::1]:8080/boot/52:54:00:12:34:56.ipxe"[..]));
    assert_eq!(get(&o, opt::VENDOR_CLASS), None);
    assert_eq!(get(&o, opt::IA_NA), None, "an Information-request gets no address");
    // Without a Client Identifier: the source's EUI-64 names the machine.
    let d = decide(&msg(kind::INFORMATION_REQUEST, &[(opt::USER_CLASS, b"\x00\x04iPXE")]), A_LL);
    assert_eq!(d.mac.map(|m| m.to_string()).as_deref(), Some(A));
}

#[test]
fn request_renew_rebind_reply_with_the_record_address() {
    let sid = SERVER_DUID;
    for (t, extra) in [(kind::REQUEST, true), (kind::RENEW, true), (kind::REBIND, false)] {
        let (client, iana) = (duid(A), ia(Some("2001:db8::99")));
        let mut opts: Vec<(u16, &[u8])> = vec![(opt::CLIENT_ID, &client), (opt::IA_NA, &iana)];
        if extra {
            opts.push((opt::SERVER_ID, sid));
        }
        let d = decide(&msg(t, &opts), A_LL);
        let (rt, _, o) = reply_of(&d);
        assert_eq!(rt, kind::REPLY, "type {t}");
        // The record's address; the one the client named, which is not its, with lifetime 0.
        assert_eq!(
            ia_addresses(get(&o, opt::IA_NA).unwrap()),
            vec![("2001:db8::10".parse().unwrap(), 600), ("2001:db8::99".parse().unwrap(), 0)],
            "type {t}"
        );
        assert_eq!(get(&o, opt::BOOTFILE_URL), None, "an OS client (no arch, no class) gets no boot file");
        assert_eq!(get(&o, opt::PREFERENCE), None);
    }
}

#[test]
fn rapid_commit_and_release() {
    let d = decide(
        &msg(kind::SOLICIT, &[(opt::CLIENT_ID, &duid(A)), (opt::IA_NA, &ia(None)), (opt::RAPID_COMMIT, b"")]),
        A_LL,
    );
    let (t, _, o) = reply_of(&d);
    assert_eq!(t, kind::REPLY);
    assert_eq!(get(&o, opt::RAPID_COMMIT), Some(&b""[..]));
    let d = decide(
        &msg(
            kind::RELEASE,
            &[(opt::CLIENT_ID, &duid(A)), (opt::SERVER_ID, SERVER_DUID), (opt::IA_NA, &ia(Some("2001:db8::10")))],
        ),
        A_LL,
    );
    let (t, _, o) = reply_of(&d);
    assert_eq!(t, kind::REPLY);
    assert_eq!(&get(&o, opt::STATUS_CODE).unwrap()[..2], &status::SUCCESS.to_be_bytes());
    assert_eq!(ignored(&decide(&msg(kind::CONFIRM, &[(opt::CLIENT_ID, &duid(A))]), A_LL)), "dhcp6-unexpected-type");
}

#[test]
fn a_machine_without_ip6_gets_no_address_but_its_boot_file() {
    let ll = "fe80::5054:ff:fe00:7";
    let d = decide(
        &msg(kind::SOLICIT, &[(opt::CLIENT_ID, &duid(NO_IP6)), (opt::IA_NA, &ia(None)), (opt::CLIENT_ARCH, &[0, 16])]),
        ll,
    );
    let (_, _, o) = reply_of(&d);
    assert_eq!(&get(&o, opt::STATUS_CODE).unwrap()[..2], &status::NO_ADDRS_AVAIL.to_be_bytes());
    assert_eq!(get(&o, opt::IA_NA), None);
    assert!(get(&o, opt::BOOTFILE_URL).is_some());
    let d = decide(
        &msg(kind::RENEW, &[(opt::CLIENT_ID, &duid(NO_IP6)), (opt::SERVER_ID, SERVER_DUID), (opt::IA_NA, &ia(None))]),
        ll,
    );
    let (_, _, o) = reply_of(&d);
    let iana = get(&o, opt::IA_NA).unwrap();
    let st = packet::options(&iana[12..]).unwrap();
    assert_eq!(st[0].0, opt::STATUS_CODE);
    assert_eq!(&st[0].1[..2], &status::NO_BINDING.to_be_bytes());
}

#[test]
fn netboot_not_allowed_uefi_gets_the_file_that_fails_at_once() {
    let ll = "fe80::5054:ff:fe00:8";
    let d = decide(
        &msg(kind::SOLICIT, &[(opt::CLIENT_ID, &duid(DENIED)), (opt::IA_NA, &ia(None)), (opt::CLIENT_ARCH, &[0, 16])]),
        ll,
    );
    let (_, _, o) = reply_of(&d);
    assert_eq!(get(&o, opt::BOOTFILE_URL), Some(&b"http://[2001:db8::1]:8080/ipxe/osie-no-netboot.efi"[..]));
    assert_eq!(d.no_boot, Some(reply::NOT_ALLOWED));
    assert!(get(&o, opt::IA_NA).is_some(), "the address still");
    // iPXE gets its own script, which is then the local boot script (as over IPv4).
    let d = decide(
        &msg(kind::INFORMATION_REQUEST, &[(opt::CLIENT_ID, &duid(DENIED)), (opt::USER_CLASS, b"\x00\x04iPXE")]),
        ll,
    );
    let want = format!("http://[2001:db8::1]:8080/boot/{DENIED}.ipxe");
    assert_eq!(get(&reply_of(&d).2, opt::BOOTFILE_URL), Some(want.as_bytes()));
    assert_eq!(d.no_boot, Some(reply::NOT_ALLOWED));
}

#[test]
fn who_is_asking() {
    // A neighbour (B) asking with A's DUID from its own link-local: nothing.
    let d = decide(&msg(kind::SOLICIT, &[(opt::CLIENT_ID, &duid(A)), (opt::IA_NA, &ia(None))]), B_LL);
    assert_eq!(ignored(&d), "dhcp6-mac-mismatch");
    // A DUID-UUID (OVMF's) from an EUI-64 link-local: the source names the machine.
    let uuid = [0u8, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18];
    let d = decide(&msg(kind::SOLICIT, &[(opt::CLIENT_ID, &uuid), (opt::IA_NA, &ia(None))]), B_LL);
    assert_eq!(
        ia_addresses(get(&reply_of(&d).2, opt::IA_NA).unwrap())[0].0,
        "2001:db8::11".parse::<Ipv6Addr>().unwrap()
    );
    // A DUID-LL from a stable-privacy link-local: the DUID alone.
    let d = decide(
        &msg(kind::SOLICIT, &[(opt::CLIENT_ID, &duid(B)), (opt::IA_NA, &ia(None))]),
        "fe80::1c2b:3a4f:9d8e:7f61",
    );
    assert_eq!(d.mac.map(|m| m.to_string()).as_deref(), Some(B));
    // Neither names a MAC.
    let d = decide(&msg(kind::SOLICIT, &[(opt::CLIENT_ID, &uuid)]), "fe80::1c2b:3a4f:9d8e:7f61");
    assert_eq!(ignored(&d), "dhcp6-no-mac");
    // Unknown machine; another server's Request.
    assert_eq!(
        ignored(&decide(&msg(kind::SOLICIT, &[(opt::CLIENT_ID, &duid("02:00:00:00:00:01"))]), "fe80::1")),
        "dhcp6-unknown-mac"
    );
    let other = [0u8, 3, 0, 1, 9, 9, 9, 9, 9, 9];
    let d = decide(
        &msg(kind::REQUEST, &[(opt::CLIENT_ID, &duid(A)), (opt::SERVER_ID, &other), (opt::IA_NA, &ia(None))]),
        A_LL,
    );
    assert_eq!(ignored(&d), "dhcp6-other-server");
}

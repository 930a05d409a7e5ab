//! DHCPv6: parse and answer one client message from a source address, as the socket loop
//! would (`bootsvc::dhcp6`).
//!
//! Input: byte 0 picks the source (bit 0 set: the EUI-64 link-local address of the MAC in
//! bytes 1–6; clear: a stable-privacy link-local that names no MAC), then the message.
//!
//! Properties, beyond "never panics":
//! - a reply is an Advertise (to a Solicit without Rapid Commit, with preference 255) or a
//!   Reply, with the request's xid; its options walk cleanly to the end; it carries this
//!   server's DUID once and the client's Client Identifier byte for byte;
//! - the machine answered is the one the DUID and the source name, and they agree; it is in
//!   the inventory; requests naming another server are not answered;
//! - every address handed out with a lifetime is the machine's record `ip6`; a machine
//!   without one, or an Information-request, gets none;
//! - a boot file URL is bootsvc's (`http://[2001:db8::1]:8080/…` or `tftp://[2001:db8::1]/…`),
//!   and a machine that may not netboot gets at most the file that declines;
//! - no reply carries the Vendor Class `PXEClient` (EDK2's PXE over IPv6 would take it as a
//!   BINL offer and give up, `bootsvc/docs/dhcp.md`, "IPv6"); an HTTP boot URL comes with
//!   `HTTPClient`.
use std::net::Ipv6Addr;

use bootsvc::dhcp6::packet::{self, kind, opt};
use bootsvc::dhcp6::reply::{self, Outcome, Settings};
use osie_api::MacAddr;

use crate::FuzzBackend;

const SERVER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const PRIVACY_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x1c2b, 0x3a4f, 0x9d8e, 0x7f61);

fn settings() -> Settings {
    Settings {
        server_duid: packet::duid_ll(&MacAddr::new([2, 0, 0, 0, 1, 1])),
        address: SERVER,
        public_url: format!("http://[{SERVER}]:8080"),
        lease_secs: 600,
        uefi_chain: bootsvc::config::UefiChain::Ipxe,
    }
}

/// The EUI-64 link-local address of `mac`.
fn eui64(mac: [u8; 6]) -> Ipv6Addr {
    let b = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]];
    Ipv6Addr::from(b)
}

pub fn run(data: &[u8]) {
    let [src_kind, m0, m1, m2, m3, m4, m5, msg @ ..] = data else { return };
    let src = if src_kind & 1 == 1 { eui64([*m0, *m1, *m2, *m3, *m4, *m5]) } else { PRIVACY_LL };
    let Ok(req) = packet::parse(msg) else { return };
    let s = settings();
    let d = reply::respond(&req, src, &s, &FuzzBackend);
    let Outcome::Reply { kind: label, bytes } = &d.outcome else { return };

    // Who was answered.
    let by_duid = req.client_id.and_then(packet::duid_mac);
    let by_src = packet::eui64_mac(src);
    if let (Some(a), Some(b)) = (by_duid, by_src) {
        assert_eq!(a, b, "answered although the DUID and the source disagree");
    }
    let mac = d.mac.expect("a reply names its MAC");
    assert_eq!(Some(mac), by_duid.or(by_src), "answered a MAC neither the DUID nor the source names");
    let machine = FuzzBackend::machine(&mac).expect("answered a MAC not in the inventory");
    assert!(req.server_id.is_none_or(|sid| sid == s.server_duid.as_slice()), "answered another server's message");

    // The reply's frame.
    let want_type = if req.msg_type == kind::SOLICIT && !req.rapid_commit { kind::ADVERTISE } else { kind::REPLY };
    assert_eq!(bytes[0], want_type, "{label}");
    assert_eq!(&bytes[1..4], &req.xid);
    let opts = packet::options(&bytes[4..]).expect("the reply's options walk cleanly");
    let all = |code: u16| opts.iter().filter(move |(c, _)| *c == code).map(|(_, b)| *b);
    assert_eq!(all(opt::SERVER_ID).collect::<Vec<_>>(), vec![s.server_duid.as_slice()]);
    assert_eq!(all(opt::CLIENT_ID).next(), req.client_id);
    let pref: Vec<_> = all(opt::PREFERENCE).collect();
    assert_eq!(pref.len(), usize::from(want_type == kind::ADVERTISE));

    // Addresses: only the record's.
    for ia in all(opt::IA_NA) {
        assert!(req.msg_type != kind::INFORMATION_REQUEST, "an Information-request got an IA_NA");
        let inner = packet::options(&ia[12..]).expect("IA_NA options walk cleanly");
        for (_, a) in inner.iter().filter(|(c, _)| *c == opt::IAADDR) {
            let addr = Ipv6Addr::from(<[u8; 16]>::try_from(&a[..16]).expect("IAADDR holds an address"));
            let valid = u32::from_be_bytes(a[20..24].try_into().expect("IAADDR holds lifetimes"));
            if valid > 0 {
                assert_eq!(
                    Some(addr),
                    machine.ip6.as_ref().map(|i| i.address),
                    "handed out an address not the record's"
                );
            }
        }
    }

    // The boot file.
    for url in all(opt::BOOTFILE_URL) {
        let url = std::str::from_utf8(url).expect("the URL is text");
        assert!(
            url.starts_with("http://[2001:db8::1]:8080/") || url.starts_with("tftp://[2001:db8::1]/"),
            "boot file URL {url}"
        );
        if !machine.netboot.allow {
            assert!(url.ends_with("/osie-no-netboot.efi"), "a machine that may not netboot got {url}");
        }
    }
    for vc in all(opt::VENDOR_CLASS) {
        assert!(vc.get(6..) == Some(b"HTTPClient"), "vendor class {vc:?}: only HTTP boot gets one");
        let url = all(opt::BOOTFILE_URL).next().expect("a vendor class comes with a boot file");
        assert!(url.starts_with(b"http://"), "HTTPClient with {url:?}");
    }
}

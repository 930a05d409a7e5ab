//! Router Solicitations and Advertisements (`bootsvc::ra::packet`): arbitrary bytes read as
//! a received ICMPv6 message, and bootsvc's own advertisement for an offer made of the same
//! bytes.
//!
//! Input (missing bytes are zero):
//! - byte 0: bits 0–1 the source (unspecified, a link-local EUI-64, `2001:db8::1`, or
//!   `febf::1`, the top of `fe80::/10`); bits 2–3 the message type (as given, forced to a
//!   solicitation, forced to an advertisement); bit 4 the offer's `managed`, bit 5 its
//!   prefix (the message's first 16 bytes, length byte 1 % 129);
//! - byte 1: the hop limit: 0 → 255, 1 → none known, any other → itself;
//! - then the message.
//!
//! Properties, beyond "never panics":
//! - `packet::parse` agrees with a reading of RFC 4861 6.1.1/6.1.2 written apart from it:
//!   the checks in order (type, hop limit 255, code 0, fixed length, options each of a
//!   non-zero length ending inside the message, no source link-layer option from the
//!   unspecified address, advertisements only from `fe80::/10`), and for an advertisement the
//!   lifetime, M and O flags and option types (the link-layer option left out) as they are
//!   in the bytes; whether it `configures` a host is the RFC's list (a lifetime, M, O, a
//!   prefix, route, RDNSS or DNSSL option);
//! - what bootsvc answers an accepted solicitation with (`advertisement(Offer::default())`)
//!   reads back, from a link-local source, as an advertisement that configures nothing: no
//!   lifetime, no flags, no options, 16 bytes;
//! - bootsvc's advertisement for any offer reads back to that offer: lifetime 0, M and O as
//!   `managed`, one prefix option exactly when a prefix is offered, with its length, the
//!   on-link and autonomous flags and the prefix's bytes.
use std::net::Ipv6Addr;

use bootsvc::ra::packet::{
    self, Advert, Offer, Received, Refused, HOP_LIMIT, ROUTER_ADVERTISEMENT, ROUTER_SOLICITATION,
};

const LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);
const SLLA: u8 = 1;

/// The reading of RFC 4861 that `packet::parse` must agree with.
fn expected(msg: &[u8], src: Ipv6Addr, hops: Option<u8>) -> Result<Received, Refused> {
    let Some(&kind) = msg.first() else { return Err(Refused::TooShort(0)) };
    let fixed = match kind {
        ROUTER_SOLICITATION => 8,
        ROUTER_ADVERTISEMENT => 16,
        t => return Err(Refused::OtherType(t)),
    };
    if hops != Some(255) {
        return Err(Refused::HopLimit(hops));
    }
    match msg.get(1) {
        Some(&c) if c != 0 => return Err(Refused::Code(c)),
        _ => {}
    }
    if msg.len() < fixed {
        return Err(Refused::TooShort(msg.len()));
    }
    let mut types = Vec::new();
    let mut at = fixed;
    while at < msg.len() {
        let len = msg.get(at + 1).map_or(0, |&u| usize::from(u) * 8);
        if len == 0 || at + len > msg.len() {
            return Err(Refused::BadOption);
        }
        types.push(msg[at]);
        at += len;
    }
    if kind == ROUTER_SOLICITATION {
        if src == Ipv6Addr::UNSPECIFIED && types.contains(&SLLA) {
            return Err(Refused::UnspecifiedWithLinkAddr);
        }
        return Ok(Received::Solicitation);
    }
    if src.segments()[0] & 0xffc0 != 0xfe80 {
        return Err(Refused::NotLinkLocal);
    }
    Ok(Received::Advertisement(Advert {
        router_lifetime: u16::from(msg[6]) << 8 | u16::from(msg[7]),
        managed: msg[5] & 0x80 != 0,
        other: msg[5] & 0x40 != 0,
        options: types.into_iter().filter(|&t| t != SLLA).collect(),
    }))
}

fn configures(a: &Advert) -> bool {
    a.router_lifetime != 0 || a.managed || a.other || a.options.iter().any(|t| [3, 24, 25, 31].contains(t))
}

pub fn run(data: &[u8]) {
    let [sel, hop, rest @ ..] = data else { return };
    let src = match sel & 3 {
        0 => Ipv6Addr::UNSPECIFIED,
        1 => LL,
        2 => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        _ => Ipv6Addr::new(0xfebf, 0, 0, 0, 0, 0, 0, 1),
    };
    let hops = match hop {
        0 => Some(HOP_LIMIT),
        1 => None,
        h => Some(*h),
    };
    let mut msg = rest.to_vec();
    match (sel >> 2 & 3, msg.first_mut()) {
        (1, Some(t)) => *t = ROUTER_SOLICITATION,
        (2, Some(t)) => *t = ROUTER_ADVERTISEMENT,
        _ => {}
    }

    let got = packet::parse(&msg, src, hops);
    assert_eq!(got, expected(&msg, src, hops), "{msg:?} from {src}, hop limit {hops:?}");
    if let Err(e) = &got {
        // Every refusal is counted under a reason and explained.
        assert!(e.reason().starts_with("ra-"), "{e:?}");
        assert!(!e.to_string().is_empty());
    }
    match &got {
        Ok(Received::Advertisement(a)) => assert_eq!(a.configures(), configures(a), "{a:?}"),
        Ok(Received::Solicitation) => {
            // What bootsvc answers a solicitation with unless configured otherwise.
            let answer = packet::advertisement(Offer::default());
            assert_eq!(answer.len(), 16);
            let back = packet::parse(&answer, LL, Some(HOP_LIMIT));
            let want = Advert { router_lifetime: 0, managed: false, other: false, options: vec![] };
            assert_eq!(back, Ok(Received::Advertisement(want.clone())), "{answer:?}");
            assert!(!want.configures());
        }
        Err(_) => {}
    }

    // bootsvc's own advertisement for an offer made of the same bytes reads back to it.
    let prefix = (sel & 0x20 != 0).then(|| {
        let mut b = [0u8; 16];
        for (d, s) in b.iter_mut().zip(&msg) {
            *d = *s;
        }
        (Ipv6Addr::from(b), hop % 129)
    });
    let offer = Offer { managed: sel & 0x10 != 0, prefix };
    let ra = packet::advertisement(offer);
    let Ok(Received::Advertisement(a)) = packet::parse(&ra, LL, Some(HOP_LIMIT)) else {
        panic!("bootsvc's own advertisement for {offer:?} is refused: {ra:?}")
    };
    let options = if prefix.is_some() { vec![3] } else { vec![] };
    assert_eq!(a, Advert { router_lifetime: 0, managed: offer.managed, other: offer.managed, options }, "{offer:?}");
    assert_eq!(a.configures(), offer.managed || prefix.is_some(), "{offer:?}");
    if let Some((p, len)) = prefix {
        let opt = &ra[16..];
        assert_eq!(opt.len(), 32, "{ra:?}");
        assert_eq!(&opt[..4], &[3, 4, len, 0xc0], "{ra:?}");
        assert_eq!(u32::from_be_bytes([opt[4], opt[5], opt[6], opt[7]]), packet::PREFIX_VALID_SECS);
        assert_eq!(u32::from_be_bytes([opt[8], opt[9], opt[10], opt[11]]), packet::PREFIX_PREFERRED_SECS);
        assert_eq!(&opt[16..], &p.octets(), "{ra:?}");
    }
}

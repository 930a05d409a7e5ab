//! Router Solicitations and Router Advertisements (RFC 4861 4.1, 4.2, 6.1): the checks a
//! received one must pass, and the one advertisement bootsvc sends. Pure: bytes and the
//! facts the socket gives (source address, hop limit) in, a verdict out.
//!
//! The messages are ICMPv6 bodies as a raw ICMPv6 socket reads them (no IPv6 header; the
//! kernel has checked the checksum and fills it in on sending).

use std::fmt;
use std::net::Ipv6Addr;

pub const ROUTER_SOLICITATION: u8 = 133;
pub const ROUTER_ADVERTISEMENT: u8 = 134;
/// Neighbour discovery packets are sent with hop limit 255 and accepted only with it: a
/// packet that crossed a router (a hostile one off the link) arrives with less.
pub const HOP_LIMIT: u8 = 255;

/// Option types that make an advertisement configure something in a host.
const OPT_SOURCE_LINK_ADDR: u8 = 1;
const OPT_PREFIX_INFO: u8 = 3;
const OPT_ROUTE_INFO: u8 = 24;
const OPT_RDNSS: u8 = 25;
const OPT_DNSSL: u8 = 31;

const RS_LEN: usize = 8;
const RA_LEN: usize = 16;
const RA_MANAGED: u8 = 0x80;
const RA_OTHER: u8 = 0x40;

/// Why a received message was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a solicitation or advertisement (the socket's filter should not let it through).
    OtherType(u8),
    HopLimit(Option<u8>),
    Code(u8),
    TooShort(usize),
    /// Longer than any solicitation worth reading.
    TooLong(usize),
    /// An option of length 0 or running past the end.
    BadOption,
    /// A solicitation from the unspecified address carrying a source link-layer address.
    UnspecifiedWithLinkAddr,
    /// An advertisement not from a link-local address.
    NotLinkLocal,
}

impl Refused {
    /// The metrics label (`osie_dropped_packets_total{reason=…}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::OtherType(_) => "ra-other-type",
            Refused::HopLimit(_) => "ra-hop-limit",
            _ => "ra-malformed",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::OtherType(t) => write!(f, "ICMPv6 type {t} is not a router solicitation or advertisement"),
            Refused::HopLimit(Some(h)) => write!(f, "hop limit {h}, not {HOP_LIMIT}: not from this link"),
            Refused::HopLimit(None) => write!(f, "no hop limit known: not taken"),
            Refused::Code(c) => write!(f, "ICMPv6 code {c}, not 0"),
            Refused::TooShort(n) => write!(f, "{n} bytes, shorter than the message's fixed part"),
            Refused::TooLong(n) => write!(f, "{n} bytes, longer than bootsvc reads"),
            Refused::BadOption => f.write_str("an option of length 0 or past the end of the message"),
            Refused::UnspecifiedWithLinkAddr => {
                f.write_str("solicitation from the unspecified address with a source link-layer address")
            }
            Refused::NotLinkLocal => f.write_str("advertisement not from a link-local address"),
        }
    }
}

/// A message that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Solicitation,
    Advertisement(Advert),
}

/// What another router's advertisement says, as far as deciding to stay quiet goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Seconds it is a default router for; 0: none.
    pub router_lifetime: u16,
    pub managed: bool,
    pub other: bool,
    /// Option types other than the source link-layer address, in order.
    pub options: Vec<u8>,
}

impl Advert {
    /// Whether hosts take any configuration from it: a default router, DHCPv6 flags, prefixes,
    /// routes or DNS. One that configures nothing (what bootsvc sends, e.g. another bootsvc
    /// on the link) is no router serving the segment.
    pub fn configures(&self) -> bool {
        self.router_lifetime > 0
            || self.managed
            || self.other
            || self.options.iter().any(|o| matches!(*o, OPT_PREFIX_INFO | OPT_ROUTE_INFO | OPT_RDNSS | OPT_DNSSL))
    }
}

/// Check a received ICMPv6 message (RFC 4861 6.1.1 for solicitations, 6.1.2 for
/// advertisements). `hop_limit` is the IPv6 header's, from the socket's control message.
pub fn parse(msg: &[u8], source: Ipv6Addr, hop_limit: Option<u8>) -> Result<Received, Refused> {
    let (&kind, rest) = msg.split_first().ok_or(Refused::TooShort(0))?;
    let fixed = match kind {
        ROUTER_SOLICITATION => RS_LEN,
        ROUTER_ADVERTISEMENT => RA_LEN,
        other => return Err(Refused::OtherType(other)),
    };
    if hop_limit != Some(HOP_LIMIT) {
        return Err(Refused::HopLimit(hop_limit));
    }
    let code = rest.first().copied().unwrap_or(0);
    if code != 0 {
        return Err(Refused::Code(code));
    }
    if msg.len() < fixed {
        return Err(Refused::TooShort(msg.len()));
    }
    let options = option_types(&msg[fixed..])?;
    if kind == ROUTER_SOLICITATION {
        if source.is_unspecified() && options.contains(&OPT_SOURCE_LINK_ADDR) {
            return Err(Refused::UnspecifiedWithLinkAddr);
        }
        return Ok(Received::Solicitation);
    }
    if !source.is_unicast_link_local() {
        return Err(Refused::NotLinkLocal);
    }
    Ok(Received::Advertisement(Advert {
        router_lifetime: u16::from_be_bytes([msg[6], msg[7]]),
        managed: msg[5] & RA_MANAGED != 0,
        other: msg[5] & RA_OTHER != 0,
        options: options.into_iter().filter(|&t| t != OPT_SOURCE_LINK_ADDR).collect(),
    }))
}

/// The types of the options in `opts`, each checked to have a length and to end inside.
fn option_types(mut opts: &[u8]) -> Result<Vec<u8>, Refused> {
    let mut types = Vec::new();
    while !opts.is_empty() {
        let &[kind, units, ..] = opts else { return Err(Refused::BadOption) };
        // Lengths are in units of 8 bytes.
        let len = usize::from(units) * 8;
        if len == 0 || len > opts.len() {
            return Err(Refused::BadOption);
        }
        types.push(kind);
        opts = &opts[len..];
    }
    Ok(types)
}

/// Seconds a prefix bootsvc advertises stays valid, and preferred, in hosts (RFC 4861 4.6.2).
pub const PREFIX_VALID_SECS: u32 = 86_400;
pub const PREFIX_PREFERRED_SECS: u32 = 14_400;
const PREFIX_ON_LINK: u8 = 0x80;
const PREFIX_AUTONOMOUS: u8 = 0x40;

/// What bootsvc's advertisement tells hosts (`router_advertisements.managed` and `.prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offer {
    /// M and O: addresses and other configuration from DHCPv6.
    pub managed: bool,
    /// An on-link /64 for SLAAC (on-link and autonomous flags set).
    pub prefix: Option<(Ipv6Addr, u8)>,
}

/// The advertisement bootsvc answers with. Router lifetime 0 always: bootsvc is not a
/// default router, and a host that asked for routers learns there is none to wait for. By
/// default it configures nothing else either (no prefix, M = 0, O = 0; hop limit, reachable
/// time and retransmission timer unspecified), so a host (iPXE, the installer's kernel) just
/// stops waiting. With `managed` hosts go to DHCPv6 for their address and boot file; with a
/// prefix they form their address from it (SLAAC). Checksum 0: the kernel fills it in.
pub fn advertisement(offer: Offer) -> Vec<u8> {
    let mut ra = vec![0u8; RA_LEN];
    ra[0] = ROUTER_ADVERTISEMENT;
    if offer.managed {
        ra[5] = RA_MANAGED | RA_OTHER;
    }
    if let Some((prefix, len)) = offer.prefix {
        ra.extend_from_slice(&[OPT_PREFIX_INFO, 4, len, PREFIX_ON_LINK | PREFIX_AUTONOMOUS]);
        ra.extend_from_slice(&PREFIX_VALID_SECS.to_be_bytes());
        ra.extend_from_slice(&PREFIX_PREFERRED_SECS.to_be_bytes());
        ra.extend_from_slice(&[0; 4]);
        ra.extend_from_slice(&prefix.octets());
    }
    ra
}

#[cfg(test)]
mod tests {
    use super::*;

    const LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);
    const HL: Option<u8> = Some(HOP_LIMIT);

    fn rs(options: &[u8]) -> Vec<u8> {
        let mut m = vec![ROUTER_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(options);
        m
    }

    const SLLA: [u8; 8] = [1, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56];

    #[test]
    fn a_solicitation_as_ipxe_and_linux_send_it() {
        assert_eq!(parse(&rs(&SLLA), LL, HL), Ok(Received::Solicitation));
        // Before it has an address: no link-layer option.
        assert_eq!(parse(&rs(&[]), Ipv6Addr::UNSPECIFIED, HL), Ok(Received::Solicitation));
    }

    #[test]
    fn malformed_solicitations_are_refused() {
        for (msg, src, hl, want) in [
            (rs(&SLLA), LL, Some(64), Refused::HopLimit(Some(64))),
            (rs(&SLLA), LL, None, Refused::HopLimit(None)),
            (vec![ROUTER_SOLICITATION, 0, 0, 0], LL, HL, Refused::TooShort(4)),
            (vec![ROUTER_SOLICITATION], LL, HL, Refused::TooShort(1)),
            (
                {
                    let mut m = rs(&SLLA);
                    m[1] = 1;
                    m
                },
                LL,
                HL,
                Refused::Code(1),
            ),
            (rs(&[1, 0, 0, 0, 0, 0, 0, 0]), LL, HL, Refused::BadOption),
            (rs(&[1, 2, 0, 0, 0, 0, 0, 0]), LL, HL, Refused::BadOption),
            (rs(&[1]), LL, HL, Refused::BadOption),
            (rs(&SLLA), Ipv6Addr::UNSPECIFIED, HL, Refused::UnspecifiedWithLinkAddr),
            (vec![135, 0, 0, 0, 0, 0, 0, 0], LL, HL, Refused::OtherType(135)),
        ] {
            assert_eq!(parse(&msg, src, hl), Err(want), "{msg:?}");
        }
        assert_eq!(parse(&[], LL, HL), Err(Refused::TooShort(0)));
        assert_eq!(Refused::BadOption.reason(), "ra-malformed");
        assert_eq!(Refused::HopLimit(Some(1)).reason(), "ra-hop-limit");
    }

    #[test]
    fn what_bootsvc_sends_configures_nothing() {
        let ra = advertisement(Offer::default());
        assert_eq!(ra.len(), 16);
        assert_eq!(ra[0], ROUTER_ADVERTISEMENT);
        assert!(ra[1..].iter().all(|&b| b == 0), "code, checksum, flags, lifetime, timers all 0: {ra:?}");
        let Ok(Received::Advertisement(a)) = parse(&ra, LL, HL) else { panic!("own advertisement not valid") };
        assert!(!a.configures(), "{a:?}");
    }

    #[test]
    fn managed_and_prefix_advertisements() {
        let prefix: Ipv6Addr = "2001:db8:1::".parse().unwrap();
        let ra = advertisement(Offer { managed: true, prefix: Some((prefix, 64)) });
        assert_eq!(ra.len(), RA_LEN + 32);
        assert_eq!(&ra[6..8], &[0, 0], "router lifetime 0: bootsvc is no default router");
        let Ok(Received::Advertisement(a)) = parse(&ra, LL, HL) else { panic!("own advertisement not valid: {ra:?}") };
        assert_eq!(a, Advert { router_lifetime: 0, managed: true, other: true, options: vec![OPT_PREFIX_INFO] });
        // The prefix option as RFC 4861 4.6.2 lays it out.
        let p = &ra[RA_LEN..];
        assert_eq!(&p[..4], &[3, 4, 64, 0xc0]);
        assert_eq!(u32::from_be_bytes(p[4..8].try_into().unwrap()), PREFIX_VALID_SECS);
        assert_eq!(u32::from_be_bytes(p[8..12].try_into().unwrap()), PREFIX_PREFERRED_SECS);
        assert_eq!(&p[16..], &prefix.octets());
        let only_m = advertisement(Offer { managed: true, prefix: None });
        assert_eq!((only_m.len(), only_m[5]), (RA_LEN, 0xc0));
    }

    #[test]
    fn malformed_advertisements_are_refused() {
        let good = advertisement(Offer { managed: false, prefix: Some(("2001:db8:1::".parse().unwrap(), 64)) });
        // The prefix option cut short, zero-length, or claiming more than is there.
        for (cut, want) in [(RA_LEN + 31, Refused::BadOption), (RA_LEN + 1, Refused::BadOption)] {
            assert_eq!(parse(&good[..cut], LL, HL), Err(want), "cut at {cut}");
        }
        let mut zero = good.clone();
        zero[RA_LEN + 1] = 0;
        assert_eq!(parse(&zero, LL, HL), Err(Refused::BadOption));
        let mut long = good.clone();
        long[RA_LEN + 1] = 5;
        assert_eq!(parse(&long, LL, HL), Err(Refused::BadOption));
        let mut code = good.clone();
        code[1] = 9;
        assert_eq!(parse(&code, LL, HL), Err(Refused::Code(9)));
        assert_eq!(parse(&good, LL, Some(254)), Err(Refused::HopLimit(Some(254))));
        assert_eq!(parse(&good, Ipv6Addr::UNSPECIFIED, HL), Err(Refused::NotLinkLocal));
    }

    #[test]
    fn another_routers_advertisement_is_read() {
        // A router: lifetime 1800 s, O set, a prefix (type 3, 4 units) and its link address.
        let mut ra = vec![ROUTER_ADVERTISEMENT, 0, 0, 0, 64, RA_OTHER, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
        ra.extend_from_slice(&SLLA);
        ra.extend_from_slice(&[3, 4]);
        ra.extend_from_slice(&[0; 30]);
        let Ok(Received::Advertisement(a)) = parse(&ra, LL, HL) else { panic!() };
        assert_eq!(a, Advert { router_lifetime: 1800, managed: false, other: true, options: vec![3] });
        assert!(a.configures());
        // Each of these alone configures a host.
        let only = |lifetime, flags, options: Vec<u8>| Advert {
            router_lifetime: lifetime,
            managed: flags & 1 != 0,
            other: flags & 2 != 0,
            options,
        };
        assert!(only(1, 0, vec![]).configures());
        assert!(only(0, 1, vec![]).configures());
        assert!(only(0, 2, vec![]).configures());
        assert!(only(0, 0, vec![25]).configures());
        assert!(!only(0, 0, vec![5]).configures(), "an MTU option alone configures nothing worth waiting for");
        // Not from a link-local address: refused.
        assert_eq!(parse(&ra, "2001:db8::1".parse().unwrap(), HL), Err(Refused::NotLinkLocal));
        assert_eq!(parse(&ra[..15], LL, HL), Err(Refused::TooShort(15)));
    }
}

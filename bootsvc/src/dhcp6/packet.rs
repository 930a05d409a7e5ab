//! DHCPv6 messages on the wire (RFC 8415 8, 21): the checks a received client message must
//! pass, its options, the client's DUID, and the writing of a reply. Pure: bytes in, a
//! verdict out; no sockets.
//!
//! Only what a netboot server needs is read; unknown options are kept as bytes and ignored.

use std::fmt;
use std::net::Ipv6Addr;

use osie_api::MacAddr;

/// Message types (RFC 8415 7.3).
pub mod kind {
    pub const SOLICIT: u8 = 1;
    pub const ADVERTISE: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const CONFIRM: u8 = 4;
    pub const RENEW: u8 = 5;
    pub const REBIND: u8 = 6;
    pub const REPLY: u8 = 7;
    pub const RELEASE: u8 = 8;
    pub const DECLINE: u8 = 9;
    pub const INFORMATION_REQUEST: u8 = 11;
    pub const RELAY_FORW: u8 = 12;
}

/// Option codes (RFC 8415 21, RFC 5970, RFC 6939).
pub mod opt {
    pub const CLIENT_ID: u16 = 1;
    pub const SERVER_ID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IAADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const PREFERENCE: u16 = 7;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    pub const USER_CLASS: u16 = 15;
    pub const VENDOR_CLASS: u16 = 16;
    pub const BOOTFILE_URL: u16 = 59;
    pub const CLIENT_ARCH: u16 = 61;
}

/// Status codes (RFC 8415 21.13).
pub mod status {
    pub const SUCCESS: u16 = 0;
    pub const NO_ADDRS_AVAIL: u16 = 2;
    pub const NO_BINDING: u16 = 3;
}

/// Larger datagrams are refused: client messages are a few hundred bytes.
pub const MAX_PACKET: usize = 1500;
/// More options than any client sends: refused, so a packet cannot make the server walk
/// thousands of them.
const MAX_OPTIONS: usize = 64;
/// RFC 8415 11.1: a DUID is at most 128 bytes (plus its 2-byte type).
const MAX_DUID: usize = 130;

/// Why a received datagram was not taken. `reason` is the metrics label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    TooShort(usize),
    TooLong(usize),
    /// An option running past the end of the message.
    Truncated,
    TooManyOptions,
    /// A server's or relay's message, or a type this server does not serve.
    NotClientMessage(u8),
    /// Relay-forward: relayed DHCPv6 is not served (`bootsvc/docs/dhcp.md`, "IPv6").
    Relayed,
    NoClientId,
    BadDuid,
    /// Solicit, Rebind and Confirm must not carry a Server Identifier (RFC 8415 16).
    UnexpectedServerId,
    /// Request, Renew and Release must carry one.
    MissingServerId,
}

impl Refused {
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::NotClientMessage(_) => "dhcp6-not-client-message",
            Refused::Relayed => "dhcp6-relayed",
            _ => "dhcp6-malformed",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::TooShort(n) => write!(f, "{n} bytes, shorter than a DHCPv6 header"),
            Refused::TooLong(n) => write!(f, "{n} bytes, longer than {MAX_PACKET}"),
            Refused::Truncated => f.write_str("an option runs past the end of the message"),
            Refused::TooManyOptions => write!(f, "more than {MAX_OPTIONS} options"),
            Refused::NotClientMessage(t) => write!(f, "message type {t} is not a client message served here"),
            Refused::Relayed => f.write_str("a relayed message (Relay-forward): relays are not served"),
            Refused::NoClientId => f.write_str("no Client Identifier"),
            Refused::BadDuid => f.write_str("a Client Identifier that is not a DUID (empty, or longer than 130 bytes)"),
            Refused::UnexpectedServerId => f.write_str("a Server Identifier in a message that must not have one"),
            Refused::MissingServerId => f.write_str("no Server Identifier in a message that needs one"),
        }
    }
}

/// One option: its code and its body.
pub type Opt<'a> = (u16, &'a [u8]);

/// The options of a message or of an encapsulating option, each checked to end inside.
pub fn options(mut b: &[u8]) -> Result<Vec<Opt<'_>>, Refused> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let &[c0, c1, l0, l1, ref rest @ ..] = b else { return Err(Refused::Truncated) };
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        if rest.len() < len {
            return Err(Refused::Truncated);
        }
        if out.len() == MAX_OPTIONS {
            return Err(Refused::TooManyOptions);
        }
        out.push((u16::from_be_bytes([c0, c1]), &rest[..len]));
        b = &rest[len..];
    }
    Ok(out)
}

/// A client's IA_NA: its IAID and the addresses it names (hints, or what it holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaNa {
    pub iaid: [u8; 4],
    pub addresses: Vec<Ipv6Addr>,
}

/// A checked client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub msg_type: u8,
    pub xid: [u8; 3],
    /// The Client Identifier (a DUID); `None` only in an Information-request.
    pub client_id: Option<&'a [u8]>,
    pub server_id: Option<&'a [u8]>,
    pub ia_na: Vec<IaNa>,
    pub rapid_commit: bool,
    /// Option 61's first (preferred) architecture.
    pub arch: Option<u16>,
    /// Option 16's first class data, after the enterprise number.
    pub vendor_class: Option<&'a [u8]>,
    /// Option 15's class data items.
    pub user_classes: Vec<&'a [u8]>,
}

/// Check a datagram received on UDP 547 (RFC 8415 16: what each message type must and must
/// not carry).
pub fn parse(b: &[u8]) -> Result<Request<'_>, Refused> {
    if b.len() > MAX_PACKET {
        return Err(Refused::TooLong(b.len()));
    }
    let &[msg_type, x0, x1, x2, ref rest @ ..] = b else { return Err(Refused::TooShort(b.len())) };
    use kind::*;
    match msg_type {
        SOLICIT | REQUEST | CONFIRM | RENEW | REBIND | RELEASE | DECLINE | INFORMATION_REQUEST => {}
        RELAY_FORW => return Err(Refused::Relayed),
        t => return Err(Refused::NotClientMessage(t)),
    }
    let mut r = Request {
        msg_type,
        xid: [x0, x1, x2],
        client_id: None,
        server_id: None,
        ia_na: Vec::new(),
        rapid_commit: false,
        arch: None,
        vendor_class: None,
        user_classes: Vec::new(),
    };
    for (code, body) in options(rest)? {
        match code {
            // The first of a repeated option counts (RFC 8415 allows one of each).
            opt::CLIENT_ID if r.client_id.is_none() => {
                if body.len() < 2 || body.len() > MAX_DUID {
                    return Err(Refused::BadDuid);
                }
                r.client_id = Some(body);
            }
            opt::SERVER_ID if r.server_id.is_none() => r.server_id = Some(body),
            opt::IA_NA => {
                // IAID, T1, T2, then options; a short or garbled IA_NA is skipped, not fatal.
                if let (Some(iaid), Some(inner)) = (body.get(..4), body.get(12..)) {
                    let addresses = options(inner)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(c, _)| *c == opt::IAADDR)
                        .filter_map(|(_, a)| <[u8; 16]>::try_from(a.get(..16)?).ok().map(Ipv6Addr::from))
                        .collect();
                    r.ia_na.push(IaNa { iaid: [iaid[0], iaid[1], iaid[2], iaid[3]], addresses });
                }
            }
            opt::RAPID_COMMIT => r.rapid_commit = true,
            opt::CLIENT_ARCH if r.arch.is_none() => {
                if let &[hi, lo, ..] = body {
                    r.arch = Some(u16::from_be_bytes([hi, lo]));
                }
            }
            opt::VENDOR_CLASS if r.vendor_class.is_none() => {
                r.vendor_class = body.get(4..).and_then(|d| class_items(d).into_iter().next());
            }
            opt::USER_CLASS if r.user_classes.is_empty() => r.user_classes = class_items(body),
            _ => {}
        }
    }
    let needs_server_id = matches!(msg_type, REQUEST | RENEW | RELEASE | DECLINE);
    let forbids_server_id = matches!(msg_type, SOLICIT | REBIND | CONFIRM);
    if r.client_id.is_none() && msg_type != INFORMATION_REQUEST {
        return Err(Refused::NoClientId);
    }
    if needs_server_id && r.server_id.is_none() {
        return Err(Refused::MissingServerId);
    }
    if forbids_server_id && r.server_id.is_some() {
        return Err(Refused::UnexpectedServerId);
    }
    Ok(r)
}

/// User and vendor class data: items, each a 2-byte length and its bytes (RFC 8415 21.15).
/// A garbled tail ends the list.
fn class_items(mut b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let &[l0, l1, ref rest @ ..] = b {
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let Some(item) = rest.get(..len) else { break };
        out.push(item);
        b = &rest[len..];
    }
    out
}

/// The MAC a DUID names: DUID-LLT (type 1) and DUID-LL (type 3) with hardware type 1
/// (Ethernet) carry it. DUID-EN and DUID-UUID (what OVMF sends by default) do not.
pub fn duid_mac(duid: &[u8]) -> Option<MacAddr> {
    let &[t0, t1, h0, h1, ref rest @ ..] = duid else { return None };
    let ll = match (u16::from_be_bytes([t0, t1]), u16::from_be_bytes([h0, h1])) {
        (1, 1) => rest.get(4..)?,
        (3, 1) => rest,
        _ => return None,
    };
    <[u8; 6]>::try_from(ll).ok().map(MacAddr::new)
}

/// The MAC a link-local address was formed from (modified EUI-64, RFC 4291 2.5.1):
/// `fe80::` + MAC with `ff:fe` in the middle and the universal/local bit flipped. Other
/// addresses (stable-privacy, RFC 7217) name no MAC.
pub fn eui64_mac(a: Ipv6Addr) -> Option<MacAddr> {
    if !a.is_unicast_link_local() {
        return None;
    }
    crate::netaddr::eui64(a)
}

/// A DUID-LL for a server with this MAC.
pub fn duid_ll(mac: &MacAddr) -> Vec<u8> {
    let mut d = vec![0, 3, 0, 1];
    d.extend_from_slice(&mac.octets());
    d
}

/// A reply being written: header, then options in the order added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(msg_type: u8, xid: [u8; 3]) -> Writer {
        let mut buf = Vec::with_capacity(256);
        buf.push(msg_type);
        buf.extend_from_slice(&xid);
        Writer { buf }
    }

    /// Add one option. Bodies here are built by the server and are far below 64 KiB.
    pub fn opt(&mut self, code: u16, body: &[u8]) -> &mut Writer {
        let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&code.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(&body[..usize::from(len)]);
        self
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// A Status Code option's body.
pub fn status_body(code: u16, msg: &str) -> Vec<u8> {
    let mut b = code.to_be_bytes().to_vec();
    b.extend_from_slice(msg.as_bytes());
    b
}

/// An IA_NA option's body: IAID, T1, T2, then the given options (already encoded).
pub fn ia_na_body(iaid: [u8; 4], t1: u32, t2: u32, inner: &[u8]) -> Vec<u8> {
    let mut b = iaid.to_vec();
    b.extend_from_slice(&t1.to_be_bytes());
    b.extend_from_slice(&t2.to_be_bytes());
    b.extend_from_slice(inner);
    b
}

/// An IA Address option, encoded whole (code, length, body).
pub fn iaaddr(addr: Ipv6Addr, preferred: u32, valid: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(&opt::IAADDR.to_be_bytes());
    b.extend_from_slice(&24u16.to_be_bytes());
    b.extend_from_slice(&addr.octets());
    b.extend_from_slice(&preferred.to_be_bytes());
    b.extend_from_slice(&valid.to_be_bytes());
    b
}

/// A Vendor Class option's body: enterprise number, then one class item. UEFI firmware
/// (EDK2's PXE and HTTP boot) reads the item 6 bytes in and compares it with `PXEClient` or
/// `HTTPClient`.
pub fn vendor_class_body(enterprise: u32, class: &[u8]) -> Vec<u8> {
    let mut b = enterprise.to_be_bytes().to_vec();
    b.extend_from_slice(&u16::try_from(class.len()).unwrap_or(0).to_be_bytes());
    b.extend_from_slice(class);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: u8, opts: &[(u16, &[u8])]) -> Vec<u8> {
        let mut w = Writer::new(t, [1, 2, 3]);
        for (c, b) in opts {
            w.opt(*c, b);
        }
        w.into_bytes()
    }

    const DUID: &[u8] = &[0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56];

    #[test]
    fn a_solicit_is_read() {
        let ia = ia_na_body([0, 0, 0, 9], 0, 0, &iaaddr("2001:db8::5".parse().unwrap(), 0, 0));
        let b = msg(
            kind::SOLICIT,
            &[
                (opt::CLIENT_ID, DUID),
                (opt::IA_NA, &ia),
                (opt::CLIENT_ARCH, &[0, 16]),
                (opt::VENDOR_CLASS, &vendor_class_body(343, b"HTTPClient:Arch:00016")),
                (opt::USER_CLASS, b"\x00\x04iPXE"),
                (opt::RAPID_COMMIT, b""),
            ],
        );
        let r = parse(&b).unwrap();
        assert_eq!((r.msg_type, r.xid), (kind::SOLICIT, [1, 2, 3]));
        assert_eq!(r.client_id, Some(DUID));
        assert_eq!(r.ia_na, vec![IaNa { iaid: [0, 0, 0, 9], addresses: vec!["2001:db8::5".parse().unwrap()] }]);
        assert_eq!(r.arch, Some(16));
        assert_eq!(r.vendor_class, Some(&b"HTTPClient:Arch:00016"[..]));
        assert_eq!(r.user_classes, vec![&b"iPXE"[..]]);
        assert!(r.rapid_commit);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let sid: &[u8] = &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6];
        for (b, want) in [
            (vec![1, 2, 3], Refused::TooShort(3)),
            (vec![0; MAX_PACKET + 1], Refused::TooLong(MAX_PACKET + 1)),
            (vec![1, 0, 0, 0, 0, 1, 0, 9, 1], Refused::Truncated),
            (vec![1, 0, 0, 0, 0, 1, 0], Refused::Truncated),
            (msg(kind::ADVERTISE, &[(opt::CLIENT_ID, DUID)]), Refused::NotClientMessage(2)),
            (msg(kind::REPLY, &[]), Refused::NotClientMessage(7)),
            (msg(kind::RELAY_FORW, &[]), Refused::Relayed),
            (msg(kind::SOLICIT, &[]), Refused::NoClientId),
            (msg(kind::SOLICIT, &[(opt::CLIENT_ID, &[0])]), Refused::BadDuid),
            (msg(kind::SOLICIT, &[(opt::CLIENT_ID, &[0; 131])]), Refused::BadDuid),
            (msg(kind::SOLICIT, &[(opt::CLIENT_ID, DUID), (opt::SERVER_ID, sid)]), Refused::UnexpectedServerId),
            (msg(kind::REQUEST, &[(opt::CLIENT_ID, DUID)]), Refused::MissingServerId),
            (msg(kind::RENEW, &[(opt::CLIENT_ID, DUID)]), Refused::MissingServerId),
        ] {
            assert_eq!(parse(&b), Err(want.clone()), "{b:?}");
            assert!(!want.to_string().is_empty());
        }
        let many: Vec<(u16, &[u8])> = (0..65).map(|_| (99u16, &b""[..])).collect();
        assert_eq!(parse(&msg(kind::INFORMATION_REQUEST, &many)), Err(Refused::TooManyOptions));
        // An Information-request needs no Client Identifier; garbled IA_NA and classes are
        // skipped, not fatal.
        let b = msg(
            kind::INFORMATION_REQUEST,
            &[(opt::IA_NA, &[1, 2]), (opt::USER_CLASS, b"\x00\x09iPXE"), (opt::VENDOR_CLASS, &[0, 0])],
        );
        let r = parse(&b).unwrap();
        assert!(r.ia_na.is_empty() && r.user_classes.is_empty() && r.vendor_class.is_none());
    }

    #[test]
    fn macs_from_duids_and_link_locals() {
        let mac = MacAddr::new([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(duid_mac(DUID), Some(mac));
        // DUID-LLT: type 1, hardware 1, time, MAC.
        assert_eq!(duid_mac(&[0, 1, 0, 1, 9, 9, 9, 9, 0x52, 0x54, 0, 0x12, 0x34, 0x56]), Some(mac));
        assert_eq!(duid_mac(&[0, 3, 0, 6, 0x52, 0x54, 0, 0x12, 0x34, 0x56]), None, "not Ethernet");
        assert_eq!(duid_mac(&[0, 4, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]), None, "DUID-UUID");
        assert_eq!(duid_mac(&[0, 3, 0, 1, 0x52]), None);
        assert_eq!(duid_mac(&duid_ll(&mac)), Some(mac));
        assert_eq!(eui64_mac("fe80::5054:ff:fe12:3456".parse().unwrap()), Some(mac));
        assert_eq!(eui64_mac("fe80::1c2b:3a4f:9d8e:7f61".parse().unwrap()), None, "stable-privacy");
        assert_eq!(eui64_mac("2001:db8::5054:ff:fe12:3456".parse().unwrap()), None, "not link-local");
    }
}

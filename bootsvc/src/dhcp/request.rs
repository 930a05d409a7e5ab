//! Parsing and validating one received DHCP packet.
//!
//! The fixed BOOTP header is decoded with dhcproto; the options are walked here, byte by
//! byte, because a request must be rejected as a whole when its options are cut short or
//! inconsistent (dhcproto stops silently at the first bad option, which would turn a
//! truncated REQUEST into a different request, and some of its option decoders assert on
//! lengths). Options repeated in one packet are concatenated (RFC 3396).
//!
//! Deliberate limits: a packet is read whole up to [`MAX_PACKET`] bytes and refused beyond
//! (`dhcp-too-long`), never cut; option overload (option 52) is honoured as RFC 2131 §4.1
//! says: the `file` field, then `sname`, are read as more options. A relay address that
//! no relay agent can have is named by [`relay_problem`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder};
use osie_api::MacAddr;

/// Length of the BOOTP header up to and including the magic cookie.
pub const HEADER_LEN: usize = 240;
/// Largest packet read. A request needs a few hundred bytes (a relay's option 82 adds at
/// most 257); more than an Ethernet frame holds is not a client's. The sockets read one byte
/// more, so a longer datagram shows as too long instead of being cut to fit.
pub const MAX_PACKET: usize = 4096;
/// Where `sname` and `file` sit in the header (read as options under option 52).
const SNAME: std::ops::Range<usize> = 44..108;
const FILE: std::ops::Range<usize> = 108..236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Option codes bootsvc reads or writes.
pub mod code {
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const VENDOR_SPECIFIC: u8 = 43;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const CLASS_ID: u8 = 60;
    pub const BOOTFILE: u8 = 67;
    pub const USER_CLASS: u8 = 77;
    pub const RELAY_AGENT: u8 = 82;
    pub const CLIENT_ARCH: u8 = 93;
    pub const CLIENT_UUID: u8 = 97;
    pub const IPXE_ENCAP: u8 = 175;
    pub const PAD: u8 = 0;
    pub const END: u8 = 255;
}

/// Why a packet was dropped. [`ParseError::reason`] is the metrics label.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("packet of {0} bytes is shorter than the 240-byte BOOTP header")]
    Short(usize),
    #[error("packet of more than {MAX_PACKET} bytes")]
    TooLong,
    #[error("option overload (52): {0}")]
    Overload(String),
    #[error("options are cut short: {0}")]
    Truncated(String),
    #[error("not a BOOTREQUEST (op {0})")]
    NotRequest(u8),
    #[error("bad magic cookie {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("hardware address type {htype} length {hlen}: only Ethernet (1, 6) is served")]
    NotEthernet { htype: u8, hlen: u8 },
    #[error("option {code} has length {len}, expected {want}")]
    BadOptionLength { code: u8, len: usize, want: &'static str },
    #[error("no DHCP message type (option 53): plain BOOTP is not served")]
    NoMessageType,
    #[error("header does not decode: {0}")]
    Header(String),
}

impl ParseError {
    /// Short, stable label for `osie_dropped_packets_total{reason=…}`.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Short(_) | ParseError::Truncated(_) => "dhcp-truncated",
            ParseError::TooLong => "dhcp-too-long",
            ParseError::NotRequest(_) => "dhcp-not-request",
            ParseError::NotEthernet { .. } => "dhcp-not-ethernet",
            ParseError::NoMessageType => "dhcp-bootp",
            ParseError::BadMagic(_)
            | ParseError::BadOptionLength { .. }
            | ParseError::Overload(_)
            | ParseError::Header(_) => "dhcp-malformed",
        }
    }
}

/// The options of one packet, by code, with repeated options concatenated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options(BTreeMap<u8, Vec<u8>>);

impl Options {
    /// Walk the options area: `code len value…` until END. PAD is skipped.
    pub fn parse(b: &[u8]) -> Result<Options, ParseError> {
        let mut o = Options::default();
        o.walk(b, None)?;
        Ok(o)
    }

    /// Add the options in `b`, concatenating repeated ones. `field` names an overloaded
    /// header field (`file`, `sname`): it may end at its fixed size without END, and may not
    /// overload again.
    fn walk(&mut self, mut b: &[u8], field: Option<&str>) -> Result<(), ParseError> {
        let place = field.map(|f| format!(" in the {f} field")).unwrap_or_default();
        loop {
            let Some((&c, rest)) = b.split_first() else {
                return match field {
                    Some(_) => Ok(()),
                    None => Err(ParseError::Truncated("no END option".into())),
                };
            };
            match c {
                code::END => return Ok(()),
                code::PAD => b = rest,
                _ => {
                    let Some((&len, rest)) = rest.split_first() else {
                        return Err(ParseError::Truncated(format!("option {c}{place} has no length byte")));
                    };
                    let len = usize::from(len);
                    if rest.len() < len {
                        return Err(ParseError::Truncated(format!(
                            "option {c}{place} says {len} bytes, {} remain",
                            rest.len()
                        )));
                    }
                    if c == code::OVERLOAD && field.is_some() {
                        return Err(ParseError::Overload(format!(
                            "option 52 may only be in the options field, not{place}"
                        )));
                    }
                    self.0.entry(c).or_default().extend_from_slice(&rest[..len]);
                    b = &rest[len..];
                }
            }
        }
    }

    /// Option 52 honoured (RFC 2131 §4.1): the `file` field (value 1 or 3), then `sname`
    /// (2 or 3), read as more options after the options field.
    fn overloaded(mut self, header: &[u8]) -> Result<Options, ParseError> {
        let fields = match self.get(code::OVERLOAD) {
            None => return Ok(self),
            Some(&[v @ 1..=3]) => v,
            Some(&[v]) => return Err(ParseError::Overload(format!("value {v}; 1 (file), 2 (sname) or 3 (both)"))),
            Some(v) => return Err(ParseError::BadOptionLength { code: code::OVERLOAD, len: v.len(), want: "1" }),
        };
        if fields & 1 != 0 {
            self.walk(&header[FILE], Some("file"))?;
        }
        if fields & 2 != 0 {
            self.walk(&header[SNAME], Some("sname"))?;
        }
        Ok(self)
    }

    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.0.get(&code).map(Vec::as_slice)
    }

    pub fn contains(&self, code: u8) -> bool {
        self.0.contains_key(&code)
    }

    pub fn codes(&self) -> impl Iterator<Item = u8> + '_ {
        self.0.keys().copied()
    }

    /// An IPv4 address option; must be exactly 4 bytes when present.
    pub fn ipv4(&self, code: u8) -> Result<Option<Ipv4Addr>, ParseError> {
        match self.get(code) {
            None => Ok(None),
            Some(&[a, b, c, d]) => Ok(Some(Ipv4Addr::new(a, b, c, d))),
            Some(v) => Err(ParseError::BadOptionLength { code, len: v.len(), want: "4" }),
        }
    }
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The BOOTP header as dhcproto decoded it (options empty: see [`Request::options`]).
    pub header: Message,
    pub options: Options,
    pub msg_type: MessageType,
    pub mac: MacAddr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
}

impl Request {
    pub fn ciaddr(&self) -> Ipv4Addr {
        self.header.ciaddr()
    }

    pub fn giaddr(&self) -> Ipv4Addr {
        self.header.giaddr()
    }

    /// Why this request's relay address cannot be used, if it cannot ([`relay_problem`]).
    pub fn relay_problem(&self, me: Ipv4Addr) -> Option<String> {
        relay_problem(self.giaddr(), self.header.hops(), me)
    }
}

/// Why `giaddr` cannot be the address of a relay agent on the way to server `me`, if it
/// cannot: the reply would go there (to this host, a multicast group, every host…). A
/// packet that says it was relayed (`hops` > 0) must name its relay: RFC 2131 §4.1 has the
/// first relay agent fill in `giaddr`. A zero `giaddr` with `hops` 0 is a client on this
/// segment (option 82 from a snooping switch alone is fine).
pub fn relay_problem(giaddr: Ipv4Addr, hops: u8, me: Ipv4Addr) -> Option<String> {
    let g = giaddr;
    let what = if g.is_unspecified() {
        if hops == 0 {
            return None;
        }
        return Some(format!("hops is {hops} (relayed) but giaddr is 0.0.0.0: a relay agent puts its address there"));
    } else if g == me {
        "this server's own address"
    } else if g.is_loopback() {
        "a loopback address"
    } else if g.is_broadcast() {
        "the broadcast address"
    } else if g.is_multicast() {
        "a multicast address"
    } else if g.is_link_local() {
        "a link-local address"
    } else if g.octets()[0] == 0 {
        "in 0.0.0.0/8, \"this network\""
    } else if g.octets()[0] >= 240 {
        "in the reserved 240.0.0.0/4"
    } else {
        return None;
    };
    Some(format!("giaddr {g} is {what}: no relay agent has it, and the reply would go there"))
}

/// Parse and validate one UDP payload received on port 67 or 4011.
pub fn parse(bytes: &[u8]) -> Result<Request, ParseError> {
    if bytes.len() < HEADER_LEN {
        return Err(ParseError::Short(bytes.len()));
    }
    if bytes.len() > MAX_PACKET {
        return Err(ParseError::TooLong);
    }
    let (op, htype, hlen) = (bytes[0], bytes[1], bytes[2]);
    if op != 1 {
        return Err(ParseError::NotRequest(op));
    }
    if htype != 1 || hlen != 6 {
        return Err(ParseError::NotEthernet { htype, hlen });
    }
    let magic: [u8; 4] = [bytes[236], bytes[237], bytes[238], bytes[239]];
    if magic != MAGIC {
        return Err(ParseError::BadMagic(magic));
    }
    let options = Options::parse(&bytes[HEADER_LEN..])?.overloaded(&bytes[..HEADER_LEN])?;

    // Only the fixed header goes through dhcproto (followed by a bare END), so its option
    // decoders never see client bytes.
    let mut head = bytes[..HEADER_LEN].to_vec();
    head.push(code::END);
    let header = Message::decode(&mut Decoder::new(&head)).map_err(|e| ParseError::Header(e.to_string()))?;
    if header.opcode() != Opcode::BootRequest {
        return Err(ParseError::NotRequest(op));
    }
    let mac = MacAddr::from_slice(header.chaddr()).ok_or(ParseError::NotEthernet { htype, hlen })?;

    let msg_type = match options.get(code::MESSAGE_TYPE) {
        None => return Err(ParseError::NoMessageType),
        Some(&[t]) => MessageType::from(t),
        Some(v) => return Err(ParseError::BadOptionLength { code: code::MESSAGE_TYPE, len: v.len(), want: "1" }),
    };
    let requested_ip = options.ipv4(code::REQUESTED_IP)?;
    let server_id = options.ipv4(code::SERVER_ID)?;
    Ok(Request { header, options, msg_type, mac, requested_ip, server_id })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal DISCOVER from `mac` with extra raw options (code, value).
    pub(crate) fn discover(mac: [u8; 6], extra: &[(u8, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        b[28..34].copy_from_slice(&mac);
        b[236..240].copy_from_slice(&MAGIC);
        b.extend_from_slice(&[53, 1, 1]);
        for (c, v) in extra {
            b.push(*c);
            b.push(v.len() as u8);
            b.extend_from_slice(v);
        }
        b.push(255);
        b
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0, 1, 2, 3];

    #[test]
    fn parses_a_minimal_discover() {
        let r = parse(&discover(MAC, &[(93, &[0, 7])])).unwrap();
        assert_eq!(r.msg_type, MessageType::Discover);
        assert_eq!(r.mac.to_string(), "52:54:00:01:02:03");
        assert_eq!(r.options.get(93), Some(&[0u8, 7][..]));
        assert_eq!(r.header.xid(), 0x1234_5678);
    }

    #[test]
    fn concatenates_split_options() {
        let r = parse(&discover(MAC, &[(60, b"PXECl"), (60, b"ient")])).unwrap();
        assert_eq!(r.options.get(60), Some(&b"PXEClient"[..]));
    }

    #[test]
    fn rejects_every_truncation() {
        let full = discover(MAC, &[(60, b"PXEClient:Arch:00007:UNDI:003016"), (93, &[0, 7])]);
        for len in 0..full.len() {
            let err = parse(&full[..len]).unwrap_err();
            assert_eq!(err.reason(), "dhcp-truncated", "cut at {len}: {err}");
        }
    }

    #[test]
    fn rejects_bad_headers_and_lengths() {
        let mut b = discover(MAC, &[]);
        b[236] = 0;
        assert!(matches!(parse(&b), Err(ParseError::BadMagic(_))));
        let mut b = discover(MAC, &[]);
        b[0] = 2;
        assert_eq!(parse(&b).unwrap_err().reason(), "dhcp-not-request");
        let mut b = discover(MAC, &[]);
        b[2] = 16;
        assert_eq!(parse(&b).unwrap_err().reason(), "dhcp-not-ethernet");
        let b = discover(MAC, &[(50, &[192, 0, 2])]);
        assert_eq!(parse(&b).unwrap_err().reason(), "dhcp-malformed");
        let mut b = discover(MAC, &[]);
        // Drop option 53: BOOTP.
        b.drain(HEADER_LEN..HEADER_LEN + 3);
        assert_eq!(parse(&b).unwrap_err(), ParseError::NoMessageType);
    }

    /// A DISCOVER whose options continue in `file` (and `sname`) under option 52.
    fn overloaded(fields: u8, in_file: &[u8], in_sname: &[u8]) -> Vec<u8> {
        let mut b = discover(MAC, &[(52, &[fields])]);
        b[FILE][..in_file.len()].copy_from_slice(in_file);
        b[SNAME][..in_sname.len()].copy_from_slice(in_sname);
        b
    }

    #[test]
    fn overloaded_file_and_sname_are_read_as_options() {
        // Option 60 split between the options field, `file` and `sname`, in that order
        // (RFC 3396), and option 93 only in `file`.
        let mut b = overloaded(3, &[60, 5, b':', b'A', b'r', b'c', b'h', 93, 2, 0, 7, 255], &[60, 3, b':', b'0', b'7']);
        let end = b.len() - 1;
        b.splice(end..end, [60, 9, b'P', b'X', b'E', b'C', b'l', b'i', b'e', b'n', b't']);
        let r = parse(&b).unwrap();
        assert_eq!(r.options.get(60), Some(&b"PXEClient:Arch:07"[..]));
        assert_eq!(r.options.get(93), Some(&[0u8, 7][..]));
        // Only the fields option 52 names.
        let r = parse(&overloaded(1, &[93, 2, 0, 7], &[60, 3, b'x', b'y', b'z'])).unwrap();
        assert_eq!((r.options.get(93).is_some(), r.options.get(60)), (true, None), "file only, without END");
        let r = parse(&overloaded(2, &[93, 2, 0, 7], &[60, 3, b'x', b'y', b'z', 255])).unwrap();
        assert_eq!((r.options.get(93), r.options.get(60)), (None, Some(&b"xyz"[..])));
        // Without option 52 the fields are names, not options.
        let mut plain = discover(MAC, &[]);
        plain[FILE][..4].copy_from_slice(&[93, 2, 0, 7]);
        assert_eq!(parse(&plain).unwrap().options.get(93), None);
        // The message type itself may be in `file`.
        let mut b = overloaded(1, &[53, 1, 3, 255], &[]);
        b.drain(HEADER_LEN..HEADER_LEN + 3); // option 53 out of the options field
        assert_eq!(parse(&b).unwrap().msg_type, MessageType::Request);
    }

    #[test]
    fn bad_overloads_are_refused() {
        let reason = |b: &[u8]| parse(b).unwrap_err().reason();
        assert_eq!(reason(&overloaded(4, &[], &[])), "dhcp-malformed");
        assert_eq!(reason(&overloaded(0, &[], &[])), "dhcp-malformed");
        assert_eq!(reason(&discover(MAC, &[(52, &[1, 1])])), "dhcp-malformed");
        assert!(matches!(parse(&overloaded(1, &[52, 1, 2], &[])), Err(ParseError::Overload(_))), "no second overload");
        // An option running past the end of its field is cut short, not read from the next one.
        let mut cut = overloaded(1, &[], &[]);
        cut[FILE.end - 3..FILE.end].copy_from_slice(&[60, 9, b'P']);
        let e = parse(&cut).unwrap_err();
        assert_eq!(e.reason(), "dhcp-truncated");
        assert!(e.to_string().contains("option 60 in the file field says 9 bytes, 1 remain"), "{e}");
    }

    #[test]
    fn packets_are_read_whole_up_to_the_limit() {
        // Options past 1500 bytes (what the socket buffer used to cut at) are read.
        let filler = [0xffu8 - 1; 250];
        let mut extra: Vec<(u8, &[u8])> = (224..230).map(|c| (c, &filler[..])).collect();
        extra.push((93, &[0, 7]));
        let long = discover(MAC, &extra);
        assert!(long.len() > 1700);
        assert_eq!(parse(&long).unwrap().options.get(93), Some(&[0u8, 7][..]));
        let mut max = discover(MAC, &[]);
        max.resize(MAX_PACKET, 0); // PAD after END
        parse(&max).unwrap();
        max.push(0);
        assert_eq!(parse(&max).unwrap_err(), ParseError::TooLong);
        assert_eq!(ParseError::TooLong.reason(), "dhcp-too-long");
    }

    #[test]
    fn relay_addresses_no_relay_can_have() {
        let me = Ipv4Addr::new(192, 0, 2, 1);
        let bad = |g: [u8; 4], hops: u8| relay_problem(Ipv4Addr::from(g), hops, me);
        for (g, what) in [
            ([127, 0, 0, 1], "loopback"),
            ([224, 0, 0, 1], "multicast"),
            ([239, 255, 255, 250], "multicast"),
            ([255, 255, 255, 255], "broadcast"),
            ([169, 254, 1, 1], "link-local"),
            ([192, 0, 2, 1], "this server's own address"),
            ([0, 1, 2, 3], "this network"),
            ([240, 0, 0, 1], "reserved"),
        ] {
            let why = bad(g, 1).unwrap_or_else(|| panic!("{g:?} accepted"));
            assert!(why.contains(what) && why.contains(&Ipv4Addr::from(g).to_string()), "{why}");
        }
        assert!(bad([0, 0, 0, 0], 1).unwrap().contains("hops is 1"));
        assert_eq!(bad([0, 0, 0, 0], 0), None, "a client on this segment");
        assert_eq!(bad([198, 51, 100, 1], 1), None);
        assert_eq!(bad([192, 0, 2, 2], 3), None, "a relay on the server's own network");
    }

    #[test]
    fn option_bytes_that_would_trip_dhcproto_are_fine() {
        // Option 81 (client FQDN) with length 0 and 80 (rapid commit) with length 2 make
        // dhcproto's own decoder assert; we never hand it options.
        let r = parse(&discover(MAC, &[(81, &[]), (80, &[1, 2])])).unwrap();
        assert_eq!(r.options.get(81), Some(&[][..]));
    }
}

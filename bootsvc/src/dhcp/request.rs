//! Parsing and validating one received DHCP packet.
//!
//! The fixed BOOTP header is decoded with dhcproto; the options are walked here, byte by
//! byte, because a request must be rejected as a whole when its options are cut short or
//! inconsistent (dhcproto stops silently at the first bad option, which would turn a
//! truncated REQUEST into a different request, and some of its option decoders assert on
//! lengths). Options repeated in one packet are concatenated (RFC 3396).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder};
use osie_api::MacAddr;

/// Length of the BOOTP header up to and including the magic cookie.
pub const HEADER_LEN: usize = 240;
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
            ParseError::NotRequest(_) => "dhcp-not-request",
            ParseError::NotEthernet { .. } => "dhcp-not-ethernet",
            ParseError::NoMessageType => "dhcp-bootp",
            ParseError::BadMagic(_) | ParseError::BadOptionLength { .. } | ParseError::Header(_) => "dhcp-malformed",
        }
    }
}

/// The options of one packet, by code, with repeated options concatenated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options(BTreeMap<u8, Vec<u8>>);

impl Options {
    /// Walk the options area: `code len value…` until END. PAD is skipped.
    pub fn parse(mut b: &[u8]) -> Result<Options, ParseError> {
        let mut map: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        loop {
            let Some((&c, rest)) = b.split_first() else {
                return Err(ParseError::Truncated("no END option".into()));
            };
            match c {
                code::END => return Ok(Options(map)),
                code::PAD => b = rest,
                _ => {
                    let Some((&len, rest)) = rest.split_first() else {
                        return Err(ParseError::Truncated(format!("option {c} has no length byte")));
                    };
                    let len = usize::from(len);
                    if rest.len() < len {
                        return Err(ParseError::Truncated(format!(
                            "option {c} says {len} bytes, {} remain",
                            rest.len()
                        )));
                    }
                    map.entry(c).or_default().extend_from_slice(&rest[..len]);
                    b = &rest[len..];
                }
            }
        }
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
}

/// Parse and validate one UDP payload received on port 67 or 4011.
pub fn parse(bytes: &[u8]) -> Result<Request, ParseError> {
    if bytes.len() < HEADER_LEN {
        return Err(ParseError::Short(bytes.len()));
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
    let options = Options::parse(&bytes[HEADER_LEN..])?;

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

    #[test]
    fn option_bytes_that_would_trip_dhcproto_are_fine() {
        // Option 81 (client FQDN) with length 0 and 80 (rapid commit) with length 2 make
        // dhcproto's own decoder assert; we never hand it options.
        let r = parse(&discover(MAC, &[(81, &[]), (80, &[1, 2])])).unwrap();
        assert_eq!(r.options.get(81), Some(&[][..]));
    }
}

//! TFTP packets and option negotiation, as pure functions: RFC 1350 (the protocol),
//! RFC 2347 (options, OACK), RFC 2348 (blksize), RFC 2349 (tsize), RFC 7440 (windowsize).

use thiserror::Error;

pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// Block size without options (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348's valid range.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;

/// A client's request on port 69.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub write: bool,
    pub filename: String,
    /// Lower-cased: `octet` or `netascii` (anything else is refused at parse time).
    pub mode: String,
    /// Options in the order sent, names lower-cased; the first of a repeated name counts.
    pub options: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    #[error("shorter than a request")]
    Truncated,
    #[error("opcode {0} is not a read or write request")]
    NotARequest(u16),
    #[error("file name or mode not NUL-terminated")]
    Unterminated,
    #[error("transfer mode {0:?} is not supported (octet or netascii)")]
    Mode(String),
}

impl RequestError {
    /// The metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::Mode(_) => "tftp-bad-mode",
            _ => "tftp-malformed",
        }
    }
}

/// Parse an RRQ or WRQ.
pub fn parse_request(pkt: &[u8]) -> Result<Request, RequestError> {
    if pkt.len() < 4 {
        return Err(RequestError::Truncated);
    }
    let op = u16::from_be_bytes([pkt[0], pkt[1]]);
    if op != RRQ && op != WRQ {
        return Err(RequestError::NotARequest(op));
    }
    let body = &pkt[2..];
    // Every field ends with a NUL; a trailing remainder without one is ignored only after
    // the mandatory two (some clients pad).
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some(end) = rest.iter().position(|&b| b == 0) {
        fields.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        rest = &rest[end + 1..];
    }
    if fields.len() < 2 {
        return Err(RequestError::Unterminated);
    }
    let mode = fields[1].to_ascii_lowercase();
    if mode != "octet" && mode != "netascii" {
        return Err(RequestError::Mode(fields[1].clone()));
    }
    let mut options: Vec<(String, String)> = Vec::new();
    for pair in fields[2..].chunks(2) {
        if let [k, v] = pair {
            let k = k.to_ascii_lowercase();
            if !k.is_empty() && !options.iter().any(|(n, _)| *n == k) {
                options.push((k, v.clone()));
            }
        }
    }
    Ok(Request { write: op == WRQ, filename: fields[0].clone(), mode, options })
}

/// What the server grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub blksize: u16,
    pub windowsize: u16,
    /// Answer the client's `tsize` with the file size.
    pub tsize: Option<u64>,
    /// Whether any option was accepted, i.e. the transfer starts with an OACK (RFC 2347)
    /// rather than with DATA 1.
    pub oack: bool,
}

/// Negotiate the request's options against the server's limits. Options the server does
/// not know, or with values out of their RFC range, are left out of the OACK (the client
/// then uses the defaults). `timeout` is not honoured: the server keeps its own, so an
/// abandoned transfer ends on the server's schedule.
pub fn negotiate(options: &[(String, String)], file_size: u64, blksize_limit: u16, window_limit: u16) -> Granted {
    let mut g = Granted { blksize: DEFAULT_BLKSIZE, windowsize: 1, tsize: None, oack: false };
    for (k, v) in options {
        match k.as_str() {
            "blksize" => {
                if let Ok(b) = v.trim().parse::<u32>() {
                    if (u32::from(MIN_BLKSIZE)..=u32::from(MAX_BLKSIZE)).contains(&b) {
                        g.blksize = (b as u16).min(blksize_limit.max(MIN_BLKSIZE));
                        g.oack = true;
                    }
                }
            }
            "windowsize" => {
                if let Ok(w) = v.trim().parse::<u32>() {
                    if (1..=65535).contains(&w) {
                        g.windowsize = (w as u16).min(window_limit.max(1));
                        g.oack = true;
                    }
                }
            }
            "tsize" => {
                g.tsize = Some(file_size);
                g.oack = true;
            }
            _ => {}
        }
    }
    g
}

/// The OACK for what was granted, options in the order the client sent them.
pub fn oack(options: &[(String, String)], g: &Granted) -> Vec<u8> {
    let mut p = OACK.to_be_bytes().to_vec();
    let mut put = |k: &str, v: String| {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    };
    for (k, v) in options {
        match k.as_str() {
            "blksize" if parses_in(v, u32::from(MIN_BLKSIZE), u32::from(MAX_BLKSIZE)) => put(k, g.blksize.to_string()),
            "windowsize" if parses_in(v, 1, 65535) => put(k, g.windowsize.to_string()),
            "tsize" => put(k, g.tsize.unwrap_or(0).to_string()),
            _ => {}
        }
    }
    p
}

fn parses_in(v: &str, lo: u32, hi: u32) -> bool {
    v.trim().parse::<u32>().is_ok_and(|n| (lo..=hi).contains(&n))
}

/// RFC 1350 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
}

/// An ERROR packet.
pub fn error(code: ErrorCode, msg: &str) -> Vec<u8> {
    let mut p = ERROR.to_be_bytes().to_vec();
    p.extend_from_slice(&(code as u16).to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

/// The 4-byte DATA header of block `n`.
pub fn data_header(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, DATA as u8, b[0], b[1]]
}

/// What a client sends during a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromClient {
    Ack(u16),
    Error(u16, String),
    /// Anything else (duplicated requests, garbage): ignored.
    Other,
}

pub fn parse_from_client(pkt: &[u8]) -> FromClient {
    if pkt.len() < 4 {
        return FromClient::Other;
    }
    let n = u16::from_be_bytes([pkt[2], pkt[3]]);
    match u16::from_be_bytes([pkt[0], pkt[1]]) {
        ACK => FromClient::Ack(n),
        ERROR => {
            let msg = &pkt[4..];
            let end = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
            FromClient::Error(n, String::from_utf8_lossy(&msg[..end]).into_owned())
        }
        _ => FromClient::Other,
    }
}

/// Blocks in a file of `size` bytes: the last one is shorter than `blksize`, so a file of
/// an exact multiple ends with an empty block.
pub fn block_count(size: u64, blksize: u16) -> u64 {
    size / u64::from(blksize) + 1
}

/// The absolute index of an ACKed block number (block numbers wrap from 65535 to 0; index 0
/// is the OACK's ACK), if it lies in `[lowest, highest]` (a window spans far fewer than
/// 65536 blocks, so at most one index matches); `None` for anything else, an old duplicate.
pub fn ack_index(ack: u16, lowest: u64, highest: u64) -> Option<u64> {
    let delta = u64::from(ack.wrapping_sub(lowest as u16));
    (lowest + delta <= highest).then_some(lowest + delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(parts: &[&str]) -> Vec<u8> {
        let mut p = RRQ.to_be_bytes().to_vec();
        for s in parts {
            p.extend_from_slice(s.as_bytes());
            p.push(0);
        }
        p
    }

    fn opts(r: &Request) -> Vec<(&str, &str)> {
        r.options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn requests_parse_with_options() {
        let r = parse_request(&req(&["ipxe.efi", "OCTET", "BlkSize", "1468", "tsize", "0", "blksize", "9"])).unwrap();
        assert!(!r.write);
        assert_eq!((r.filename.as_str(), r.mode.as_str()), ("ipxe.efi", "octet"));
        assert_eq!(opts(&r), [("blksize", "1468"), ("tsize", "0")]);
        let mut w = req(&["f", "netascii"]);
        w[1] = 2;
        assert!(parse_request(&w).unwrap().write);
    }

    #[test]
    fn bad_requests_are_named() {
        assert_eq!(parse_request(&[0, 1, b'a']), Err(RequestError::Truncated));
        assert_eq!(parse_request(&req(&["f"])), Err(RequestError::Unterminated));
        assert_eq!(parse_request(&[0, 1, b'f', 0, b'o', b'c']), Err(RequestError::Unterminated));
        assert_eq!(parse_request(&req(&["f", "mail"])), Err(RequestError::Mode("mail".into())));
        let mut ack = req(&["f", "octet"]);
        ack[1] = 4;
        assert_eq!(parse_request(&ack), Err(RequestError::NotARequest(4)));
        assert_eq!(RequestError::Mode("x".into()).reason(), "tftp-bad-mode");
    }

    #[test]
    fn negotiation_clamps_to_limits_and_skips_bad_values() {
        let o = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let g = negotiate(&o(&[("blksize", "65464"), ("windowsize", "100"), ("tsize", "0")]), 1234, 1468, 64);
        assert_eq!(g, Granted { blksize: 1468, windowsize: 64, tsize: Some(1234), oack: true });
        let g = negotiate(&o(&[("blksize", "7"), ("windowsize", "0"), ("timeout", "5"), ("x", "y")]), 1, 1468, 64);
        assert_eq!(g, Granted { blksize: 512, windowsize: 1, tsize: None, oack: false });
        let g = negotiate(&o(&[("blksize", "1024")]), 1, 1468, 64);
        assert_eq!((g.blksize, g.oack), (1024, true));
    }

    #[test]
    fn oack_echoes_what_was_granted_in_order() {
        let o: Vec<(String, String)> = [("tsize", "0"), ("blksize", "9000"), ("timeout", "3"), ("windowsize", "16")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let g = negotiate(&o, 70_000, 1468, 64);
        assert_eq!(oack(&o, &g), b"\x00\x06tsize\x0070000\x00blksize\x001468\x00windowsize\x0016\x00");
    }

    #[test]
    fn client_packets() {
        assert_eq!(parse_from_client(&[0, 4, 1, 2]), FromClient::Ack(0x0102));
        assert_eq!(parse_from_client(b"\x00\x05\x00\x00abort\x00"), FromClient::Error(0, "abort".into()));
        assert_eq!(parse_from_client(b"\x00\x05\x00\x08"), FromClient::Error(8, String::new()));
        assert_eq!(parse_from_client(&[0, 3, 0, 1, 9]), FromClient::Other);
        assert_eq!(parse_from_client(&[0, 4]), FromClient::Other);
        assert_eq!(error(ErrorCode::FileNotFound, "File not found"), b"\x00\x05\x00\x01File not found\x00");
        assert_eq!(data_header(0x1234), [0, 3, 0x12, 0x34]);
    }

    #[test]
    fn blocks_and_acks_across_the_wrap() {
        assert_eq!(block_count(0, 512), 1);
        assert_eq!(block_count(1024, 512), 3);
        assert_eq!(block_count(1025, 512), 3);
        // Window 101..=116 after block 100 was acked: ACK 100..=116 count, others do not.
        assert_eq!(ack_index(100, 100, 116), Some(100));
        assert_eq!(ack_index(116, 100, 116), Some(116));
        assert_eq!(ack_index(117, 100, 116), None);
        assert_eq!(ack_index(99, 100, 116), None);
        assert_eq!(ack_index(100, 101, 116), None, "lock-step: a repeated ACK is no answer");
        // Block numbers wrap: absolute 65536 is block 0.
        assert_eq!(ack_index(0, 65530, 65545), Some(65536));
        assert_eq!(ack_index(65535, 65530, 65545), Some(65535));
        assert_eq!(ack_index(0, 0, 0), Some(0)); // the OACK's ACK 0
        assert_eq!(ack_index(1, 0, 0), None);
    }
}

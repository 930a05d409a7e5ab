//! HTTP/1.1 on the wire (RFC 9112) for bootsvc's own connection loop ([`super::conn`]), as
//! pure functions: reading a request head ([`parse_head`]: limits, framing of the body,
//! keep-alive, `Expect`), decoding a chunked request body ([`ChunkedDecoder`]), and writing a
//! response head ([`response_head`]) with the framing its body needs ([`response_framing`]).
//!
//! Strict where a lenient reading could be used to smuggle a second request past the first
//! (RFC 9112 6.3, 11.2): both `Content-Length` and `Transfer-Encoding`, differing lengths, a
//! transfer coding other than `chunked`, a bare LF in chunk framing, a missing or repeated
//! `Host` in HTTP/1.1 — all 400 and the connection closes.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri, Version};
use bytes::{Buf, BytesMut};

/// Most header lines a request may carry (more: 431, like a head over the byte limit).
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// A request head, parsed and checked.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// Bytes of the buffer the head took (empty lines before it included).
    pub len: usize,
    pub body: BodyFraming,
    /// What the client asked for: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` from an HTTP/1.1 client: it waits for `100 Continue` (or the
    /// final answer) before it sends the body.
    pub expect_continue: bool,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Why a head is refused; each maps to the status answered before the connection closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request head larger than the limit or with more than {MAX_HEADERS} headers")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("transfer coding not implemented: {0}")]
    Unsupported(&'static str),
    #[error("unsupported Expect header")]
    Expectation,
}

impl HeadError {
    pub fn status(&self) -> StatusCode {
        match self {
            HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
            HeadError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            HeadError::Expectation => StatusCode::EXPECTATION_FAILED,
        }
    }
}

/// Where the head ends in `buf` (the byte after its empty line), if it is all there. Cheap
/// enough to run on every read, so a head is parsed once.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let start = leading_empty_lines(buf);
    let b = &buf[start..];
    let mut i = 0;
    while let Some(p) = b[i..].iter().position(|&c| c == b'\n') {
        let nl = i + p;
        match b.get(nl + 1) {
            Some(b'\n') => return Some(start + nl + 2),
            Some(b'\r') if b.get(nl + 2) == Some(&b'\n') => return Some(start + nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// RFC 9112 2.2: a server SHOULD ignore empty lines received before the request line (some
/// clients send a CRLF after a POST body).
fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match (buf.get(i), buf.get(i + 1)) {
            (Some(b'\r'), Some(b'\n')) => i += 2,
            (Some(b'\n'), _) => i += 1,
            _ => return i,
        }
    }
}

/// Parse the head at the start of `buf`. `Ok(None)`: not complete yet (read more), as long
/// as `buf` is under `max_head` bytes.
pub fn parse_head(buf: &[u8], max_head: usize) -> Result<Option<RequestHead>, HeadError> {
    let Some(end) = head_end(buf) else {
        return if buf.len() >= max_head { Err(HeadError::TooLarge) } else { Ok(None) };
    };
    if end > max_head {
        return Err(HeadError::TooLarge);
    }
    let skip = leading_empty_lines(buf);
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let n = match req.parse(&buf[skip..end]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Malformed("not HTTP/1.0 or HTTP/1.1")),
        Err(_) => return Err(HeadError::Malformed("unparsable request line or header")),
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("bad method"))?;
    let target = req.path.unwrap_or_default();
    let uri = request_target(&method, target)?;
    let version = if req.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::Malformed("bad header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| HeadError::Malformed("bad header value"))?;
        headers.append(name, value);
    }
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (version == Version::HTTP_11 && hosts == 0) {
        return Err(HeadError::Malformed("HTTP/1.1 needs exactly one Host header"));
    }
    let body = body_framing(&headers, version)?;
    let keep_alive = match version {
        Version::HTTP_10 => has_token(&headers, header::CONNECTION, "keep-alive"),
        _ => !has_token(&headers, header::CONNECTION, "close"),
    };
    let mut expect_continue = false;
    if let Some(e) = headers.get(header::EXPECT) {
        if !e.as_bytes().eq_ignore_ascii_case(b"100-continue") {
            return Err(HeadError::Expectation);
        }
        // RFC 9110 10.1.1: an HTTP/1.0 client cannot mean it.
        expect_continue = version == Version::HTTP_11 && body != BodyFraming::None;
    }
    debug_assert_eq!(skip + n, end);
    Ok(Some(RequestHead { method, uri, version, headers, len: end, body, keep_alive, expect_continue }))
}

/// The request target: origin form (`/path?q`), absolute form (`http://host/path`), or `*`
/// for OPTIONS. Authority form (CONNECT's) is not served.
fn request_target(method: &Method, target: &str) -> Result<Uri, HeadError> {
    let bad = HeadError::Malformed("bad request target");
    let absolute = target.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        || target.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if !(target.starts_with('/') || absolute || (target == "*" && method == Method::OPTIONS)) {
        return Err(bad);
    }
    target.parse::<Uri>().map_err(|_| bad)
}

/// RFC 9112 6.3, without the lenient readings.
fn body_framing(h: &HeaderMap, version: Version) -> Result<BodyFraming, HeadError> {
    let te: Vec<&[u8]> = h.get_all(header::TRANSFER_ENCODING).iter().map(HeaderValue::as_bytes).collect();
    let cl: Vec<&[u8]> = h.get_all(header::CONTENT_LENGTH).iter().map(HeaderValue::as_bytes).collect();
    if !te.is_empty() {
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if !cl.is_empty() {
            return Err(HeadError::Malformed("both Transfer-Encoding and Content-Length"));
        }
        let codings: Vec<String> = te
            .iter()
            .flat_map(|v| v.split(|&c| c == b','))
            .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        return match codings.as_slice() {
            [only] if only == "chunked" => Ok(BodyFraming::Chunked),
            [.., last] if last == "chunked" => Err(HeadError::Unsupported("only chunked is accepted")),
            _ => Err(HeadError::Malformed("the last transfer coding is not chunked")),
        };
    }
    let mut len = None;
    for v in cl.iter().flat_map(|v| v.split(|&c| c == b',')) {
        let v = v.trim_ascii();
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::Malformed("bad Content-Length"));
        }
        let n: u64 = std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(HeadError::Malformed("bad Content-Length"))?;
        if len.is_some_and(|l| l != n) {
            return Err(HeadError::Malformed("differing Content-Length values"));
        }
        len = Some(n);
    }
    Ok(match len {
        None | Some(0) => BodyFraming::None,
        Some(n) => BodyFraming::Length(n),
    })
}

/// Whether a comma-separated header (`Connection`) lists `token`, ignoring case.
pub fn has_token(h: &HeaderMap, name: HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .any(|v| v.as_bytes().split(|&c| c == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes())))
}

/// A chunked body being decoded (RFC 9112 7.1), fed from the connection's buffer.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailer_bytes: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// What one [`ChunkedDecoder::decode`] step reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Everything in the input was used; read more.
    NeedMore,
    /// The last chunk and the trailers are consumed.
    Done,
    /// The decoded body went over the limit (the output holds `limit + 1` bytes).
    OverLimit,
}

impl ChunkedDecoder {
    /// Move what `input` holds of the body into `out` (consuming it from `input`), stopping
    /// at the end of the body (bytes after it stay in `input`: the next request) or as soon
    /// as `out` exceeds `limit`. Trailers are read and dropped, at most `max_trailers` bytes.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        limit: usize,
        max_trailers: usize,
    ) -> Result<Decoded, HeadError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Decoded::Done),
                ChunkState::Size => {
                    let Some(line) = take_line(input, MAX_CHUNK_LINE)? else { return Ok(Decoded::NeedMore) };
                    let hex = line[..].split(|&c| c == b';').next().unwrap_or_default().trim_ascii();
                    if hex.is_empty() || hex.len() > 15 || !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err(HeadError::Malformed("bad chunk size"));
                    }
                    let size = u64::from_str_radix(std::str::from_utf8(hex).unwrap_or("x"), 16)
                        .map_err(|_| HeadError::Malformed("bad chunk size"))?;
                    self.state = if size == 0 { ChunkState::Trailers } else { ChunkState::Data(size) };
                }
                ChunkState::Data(left) => {
                    if input.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let room = (limit + 1).saturating_sub(out.len());
                    let n = (input.len() as u64).min(left).min(room as u64) as usize;
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    if out.len() > limit {
                        return Ok(Decoded::OverLimit);
                    }
                    self.state = if left == n as u64 { ChunkState::DataEnd } else { ChunkState::Data(left - n as u64) };
                }
                ChunkState::DataEnd => {
                    if input.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &input[..2] != b"\r\n" {
                        return Err(HeadError::Malformed("chunk data not followed by CRLF"));
                    }
                    input.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(line) = take_line(input, max_trailers.saturating_sub(self.trailer_bytes))? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.trailer_bytes += line.len() + 2;
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

/// One CRLF-terminated line from the front of `input` (without the CRLF), if it is there.
fn take_line(input: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, HeadError> {
    match input.iter().position(|&c| c == b'\n') {
        Some(nl) if nl > 0 && input[nl - 1] == b'\r' => {
            let mut line = input.split_to(nl + 1);
            line.truncate(nl - 1);
            Ok(Some(line))
        }
        Some(_) => Err(HeadError::Malformed("bare LF in chunked framing")),
        None if input.len() > max => Err(HeadError::Malformed("chunk line or trailers too long")),
        None => Ok(None),
    }
}

/// How a response's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body bytes: 1xx, 204, 304, or an answer to HEAD (its `Content-Length`, if the
    /// handler gave one, stays: it is what GET would send).
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0 client, length unknown).
    UntilClose,
}

/// The framing for a response of `status` to `method` whose body is `exact` bytes long when
/// that is known.
pub fn response_framing(method: &Method, status: StatusCode, exact: Option<u64>, version: Version) -> ResponseFraming {
    if method == Method::HEAD || status.is_informational() || matches!(status.as_u16(), 204 | 304) {
        return ResponseFraming::Empty;
    }
    match (exact, version) {
        (Some(n), _) => ResponseFraming::Length(n),
        (None, Version::HTTP_10) => ResponseFraming::UntilClose,
        (None, _) => ResponseFraming::Chunked,
    }
}

/// Write the response head into `out`. The handler's hop-by-hop headers are replaced by
/// what this connection does: `Connection: close` when it closes after this response
/// (`keep-alive` to an HTTP/1.0 client that keeps it), and the framing's `Content-Length` or
/// `Transfer-Encoding`. `Date` is added when the handler gave none.
///
/// The headers written here are spelt as RFC 9110 spells them, not in the lower case of the
/// handler's map: GRUB 2.06's `http` module (the arm64 GRUB of UEFI HTTP boot,
/// `docs/arm64.md`) matches `Content-Length: ` and `Transfer-Encoding: chunked` byte for
/// byte. Given `content-length`, it does not know the file's size and waits for the
/// connection to close (the keep-alive timeout), then reads nothing.
pub fn response_head(
    status: StatusCode,
    headers: &HeaderMap,
    framing: ResponseFraming,
    close: bool,
    version: Version,
    date: &str,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    let no_length = status.is_informational() || status == StatusCode::NO_CONTENT;
    for (name, value) in headers {
        let keep = match *name {
            header::CONNECTION | header::TRANSFER_ENCODING => false,
            ref n if n.as_str() == "keep-alive" => false,
            // HEAD keeps the handler's length (what GET would send); a 304 and a 204 have none.
            header::CONTENT_LENGTH => {
                framing == ResponseFraming::Empty && !no_length && status != StatusCode::NOT_MODIFIED
            }
            _ => true,
        };
        if keep {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        ResponseFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        ResponseFraming::Empty | ResponseFraming::UntilClose => {}
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A short answer written by the connection loop itself (a refused head, a refused
/// connection): status, `Connection: close`, a one-line text body.
pub fn plain_response(status: StatusCode, text: &str, extra: &[(&str, &str)], date: &str) -> Vec<u8> {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    for (k, v) in extra {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            h.insert(k, v);
        }
    }
    let mut out = Vec::with_capacity(160 + text.len());
    response_head(status, &h, ResponseFraming::Length(text.len() as u64), true, Version::HTTP_11, date, &mut out);
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_head(s.as_bytes(), 8192)
    }

    #[test]
    fn heads_and_their_framing() {
        let h = head("GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\nNEXT").unwrap().unwrap();
        assert_eq!((h.method.as_str(), h.uri.path(), h.uri.query()), ("GET", "/a", Some("b=1")));
        assert_eq!(
            (h.version, h.body, h.keep_alive, h.expect_continue),
            (Version::HTTP_11, BodyFraming::None, true, false)
        );
        assert_eq!(h.len, "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n".len(), "the pipelined rest stays");

        let h = head("\r\n\r\nPOST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-Continue\r\nConnection: Keep-Alive, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.body, h.keep_alive, h.expect_continue), (BodyFraming::Length(5), false, true));
        let h = head("POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.body, BodyFraming::Chunked);
        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive, "HTTP/1.0 closes by default, and needs no Host");
        let h = head("GET / HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive && !h.expect_continue);
        let h = head("GET http://192.0.2.1:8080/healthz HTTP/1.1\r\nHost: y\r\nContent-Length: 0, 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.uri.path(), h.body), ("/healthz", BodyFraming::None));
        let h = head("OPTIONS * HTTP/1.1\r\nHost: y\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.method, Method::OPTIONS);
        // A bare-LF head is still a head (clients written by hand send them).
        assert!(head("GET / HTTP/1.1\nHost: y\n\n").unwrap().is_some());
    }

    #[test]
    fn partial_and_refused_heads() {
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert!(head("").unwrap().is_none());
        assert_eq!(parse_head(&[b'a'; 100], 100).unwrap_err(), HeadError::TooLarge);
        let long = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(200));
        assert_eq!(parse_head(long.as_bytes(), 100).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(head(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")).unwrap_err(), HeadError::TooLarge);
        for (bad, why) in [
            ("GARBAGE \x01\x02 HTTP/9.9\r\n\r\n", "garbage"),
            ("GET / HTTP/9.9\r\nHost: x\r\n\r\n", "version"),
            ("GET / HTTP/1.1\r\n\r\n", "no Host"),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "two Hosts"),
            ("GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n", "authority form"),
            ("GET * HTTP/1.1\r\nHost: x\r\n\r\n", "asterisk for GET"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "CL + TE"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "two lengths"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "negative"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", "sign"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "chunked not last"),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "TE in 1.0"),
            ("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", "obsolete line folding"),
        ] {
            assert!(matches!(head(bad), Err(HeadError::Malformed(_))), "{why}: {:?}", head(bad));
        }
        let gz = head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap_err();
        assert_eq!(gz.status(), StatusCode::NOT_IMPLEMENTED);
        let ex = head("POST / HTTP/1.1\r\nHost: x\r\nExpect: something\r\nContent-Length: 1\r\n\r\n").unwrap_err();
        assert_eq!(ex.status(), StatusCode::EXPECTATION_FAILED);
    }

    fn dechunk(wire: &[u8], limit: usize) -> (Result<Decoded, HeadError>, Vec<u8>, Vec<u8>) {
        // Fed one byte at a time: every state must survive a split anywhere.
        let mut d = ChunkedDecoder::default();
        let (mut input, mut out) = (BytesMut::new(), BytesMut::new());
        let mut r = Ok(Decoded::NeedMore);
        for &b in wire {
            input.extend_from_slice(&[b]);
            r = d.decode(&mut input, &mut out, limit, 1024);
            if !matches!(r, Ok(Decoded::NeedMore)) {
                break;
            }
        }
        (r, out.to_vec(), input.to_vec())
    }

    #[test]
    fn chunked_bodies() {
        let (r, out, rest) = dechunk(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET", 100);
        assert_eq!((r, out.as_slice(), rest.as_slice()), (Ok(Decoded::Done), &b"hello world"[..], &b""[..]));
        let mut d = ChunkedDecoder::default();
        let (mut input, mut out) = (BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1"[..]), BytesMut::new());
        assert_eq!(d.decode(&mut input, &mut out, 100, 1024), Ok(Decoded::Done));
        assert_eq!(&input[..], b"GET / HTTP/1.1", "the next request stays in the buffer");
        let (r, out, _) = dechunk(b"a\r\n0123456789\r\n0\r\n\r\n", 4);
        assert_eq!((r, out.len()), (Ok(Decoded::OverLimit), 5));
        for bad in [&b"zz\r\n"[..], b"5\nhello", b"5\r\nhelloXX", b"1234567890abcdef0\r\n", b"\r\n"] {
            assert!(matches!(dechunk(bad, 100).0, Err(HeadError::Malformed(_))), "{:?}", String::from_utf8_lossy(bad));
        }
        let long_trailers = [&b"0\r\n"[..], &b"X: ".repeat(600), b"\r\n\r\n"].concat();
        assert!(dechunk(&long_trailers, 100).0.is_err());
    }

    #[test]
    fn response_heads() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let text = |status, framing, close, version| {
            let mut out = Vec::new();
            response_head(status, &h, framing, close, version, date, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            text(StatusCode::OK, ResponseFraming::Length(3), false, Version::HTTP_11),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 3\r\n\r\n"
        );
        let head = text(StatusCode::OK, ResponseFraming::Empty, false, Version::HTTP_10);
        assert!(head.contains("content-length: 99\r\n") && head.ends_with("Connection: keep-alive\r\n\r\n"), "{head}");
        let nm = text(StatusCode::NOT_MODIFIED, ResponseFraming::Empty, true, Version::HTTP_11);
        assert!(
            !nm.to_ascii_lowercase().contains("content-length") && nm.ends_with("Connection: close\r\n\r\n"),
            "{nm}"
        );
        let ch = text(StatusCode::OK, ResponseFraming::Chunked, false, Version::HTTP_11);
        assert!(
            ch.contains("Transfer-Encoding: chunked\r\n") && !ch.to_ascii_lowercase().contains("content-length"),
            "{ch}"
        );
        // What GRUB 2.06's http module matches byte for byte (net/http.c): the framing
        // headers in their RFC spelling, at the start of a line.
        let grub = text(StatusCode::OK, ResponseFraming::Length(259), false, Version::HTTP_11);
        assert!(grub.starts_with("HTTP/1.1 200 ") && grub.contains("\r\nContent-Length: 259\r\n"), "{grub}");

        use ResponseFraming::*;
        let (get, head_m) = (Method::GET, Method::HEAD);
        assert_eq!(response_framing(&get, StatusCode::OK, Some(5), Version::HTTP_11), Length(5));
        assert_eq!(response_framing(&head_m, StatusCode::OK, Some(5), Version::HTTP_11), Empty);
        assert_eq!(response_framing(&get, StatusCode::NOT_MODIFIED, Some(0), Version::HTTP_11), Empty);
        assert_eq!(response_framing(&get, StatusCode::NO_CONTENT, None, Version::HTTP_11), Empty);
        assert_eq!(response_framing(&get, StatusCode::OK, None, Version::HTTP_11), Chunked);
        assert_eq!(response_framing(&get, StatusCode::OK, None, Version::HTTP_10), UntilClose);
    }
}

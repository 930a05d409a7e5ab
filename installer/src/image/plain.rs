//! A direct HTTP/1.1 GET for `http://` image downloads.
//!
//! reqwest's blocking client reads on a thread of its own and hands each piece over through a
//! channel, in freshly allocated buffers that the download then copies again. For an image
//! of gigabytes that cost as much CPU as the sha256 (measured in `benches/notes/image.md`).
//! Here the body is read from the socket straight into the pipeline's own buffers: one copy,
//! by the kernel, and no thread in between.
//!
//! Only the plain case is handled: `http://`, no credentials in the URL, an answer with a
//! `Content-Length` and no transfer coding. Anything else — `https://`, a redirect, a chunked
//! body — returns `None` and the caller asks again through reqwest, which handles it all.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use reqwest::{StatusCode, Url};

use crate::http::Timeouts;

/// The response head must fit in this much.
const HEAD_MAX: usize = 64 << 10;

pub struct Response {
    stream: TcpStream,
    /// Body bytes that arrived with the head.
    early: Vec<u8>,
    early_pos: usize,
    /// Body bytes still to come (from `Content-Length`).
    remaining: u64,
    pub status: StatusCode,
    pub headers: HeaderMap,
}

impl Response {
    pub fn content_length(&self) -> Option<u64> {
        self.headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
    }
}

/// True when [`get`] would try `url` at all.
pub fn handles(url: &str) -> bool {
    Url::parse(url).is_ok_and(|u| plain_url(&u))
}

fn plain_url(u: &Url) -> bool {
    u.scheme() == "http" && u.username().is_empty() && u.password().is_none()
}

/// GET `url` with `extra` request headers. `Ok(None)`: an answer this reader leaves to
/// reqwest (the caller asks again there).
pub fn get(url: &str, extra: &[(HeaderName, String)], t: Timeouts) -> io::Result<Option<Response>> {
    let u = Url::parse(url).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {e}")))?;
    let (Some(host), Some(port)) = (u.host_str(), u.port_or_known_default()) else {
        return Ok(None);
    };
    if !plain_url(&u) {
        return Ok(None);
    }
    let mut stream = connect(&u, port, t.connect)?;
    stream.set_read_timeout(Some(t.read))?;
    stream.set_write_timeout(Some(t.read))?;
    stream.set_nodelay(true)?;
    let mut target = u.path().to_string();
    if let Some(q) = u.query() {
        target.push('?');
        target.push_str(q);
    }
    let host_header = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: osie-installer/{}\r\n\
         Accept-Encoding: identity\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;

    let mut head = vec![0u8; HEAD_MAX];
    let mut got = 0;
    let (status, headers, head_len) = loop {
        let n = stream.read(&mut head[got..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection before answering",
            ));
        }
        got += n;
        if let Some(parsed) = parse_head(&head[..got])? {
            break parsed;
        }
        if got == HEAD_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the response head is larger than 64 KiB"));
        }
    };
    let length = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let body_expected = status.is_success();
    if status.is_redirection()
        || status.is_informational()
        || headers.contains_key(TRANSFER_ENCODING)
        || (body_expected && length.is_none())
    {
        return Ok(None);
    }
    let early = head[head_len..got].to_vec();
    let remaining = length.unwrap_or(0).saturating_sub(early.len() as u64);
    Ok(Some(Response { stream, early, early_pos: 0, remaining, status, headers }))
}

/// The addresses of `u`'s host: an IP literal as it is (`host_str` of an IPv6 one is
/// bracketed, `[2001:db8::1]`, which is no name to resolve), a name through the resolver.
fn addresses(u: &Url, port: u16) -> io::Result<Vec<std::net::SocketAddr>> {
    let Some(host) = u.host_str() else { return Ok(Vec::new()) };
    if let Some(a) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let a: std::net::Ipv6Addr = a
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host} is not an IPv6 address: {e}")))?;
        return Ok(vec![(a, port).into()]);
    }
    Ok((host, port).to_socket_addrs()?.collect())
}

fn connect(u: &Url, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in addresses(u, port)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(io::Error::new(e.kind(), format!("connecting to {addr}: {e}"))),
        }
    }
    let host = u.host_str().unwrap_or("-");
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))))
}

/// Status, headers and the head's length, once `b` holds the whole head.
fn parse_head(b: &[u8]) -> io::Result<Option<(StatusCode, HeaderMap, usize)>> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("malformed response head: {why}"));
    let mut raw = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut raw);
    let len = match r.parse(b).map_err(|e| bad(e.to_string()))? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(n) => n,
    };
    let status = StatusCode::from_u16(r.code.unwrap_or(0)).map_err(|e| bad(e.to_string()))?;
    let mut headers = HeaderMap::new();
    for h in r.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|e| bad(e.to_string()))?;
        headers.append(name, value);
    }
    Ok(Some((status, headers, len)))
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.early_pos < self.early.len() {
            let n = buf.len().min(self.early.len() - self.early_pos);
            buf[..n].copy_from_slice(&self.early[self.early_pos..self.early_pos + n]);
            self.early_pos += n;
            return Ok(n);
        }
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.stream.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serve one connection: record the request head, answer with `answer`.
    fn serve_once(answer: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
        serve_once_on(TcpListener::bind("127.0.0.1:0").unwrap(), answer)
    }

    fn serve_once_on(l: TcpListener, answer: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
        let url = format!("http://{}/img.zst?x=1", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                req.extend_from_slice(&b[..n]);
            }
            s.write_all(&answer).unwrap();
            String::from_utf8(req).unwrap()
        });
        (url, h)
    }

    #[test]
    fn ipv6_literals_are_connected_to_not_resolved() {
        let u = Url::parse("http://[2001:db8::1]:8080/images/x").unwrap();
        assert_eq!(addresses(&u, 8080).unwrap(), ["[2001:db8::1]:8080".parse().unwrap()]);
        let u = Url::parse("http://192.0.2.1:8080/x").unwrap();
        assert_eq!(addresses(&u, 8080).unwrap(), ["192.0.2.1:8080".parse().unwrap()]);
    }

    /// A whole GET over IPv6 loopback, from a bracketed URL, with the Host header bracketed.
    #[test]
    fn gets_over_ipv6() {
        let Ok(l) = TcpListener::bind("[::1]:0") else {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        };
        let (url, h) = serve_once_on(l, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec());
        let t = Timeouts { connect: Duration::from_secs(5), read: Duration::from_secs(5) };
        let mut r = get(&url, &[], t).unwrap().expect("answered here, not left to reqwest");
        let mut body = String::new();
        r.read_to_string(&mut body).unwrap();
        assert_eq!(body, "ok");
        let req = h.join().unwrap();
        let port = url.rsplit(':').next().unwrap().trim_end_matches("/img.zst?x=1");
        assert!(req.contains(&format!("\r\nHost: [::1]:{port}\r\n")), "{req}");
    }

    #[test]
    fn reads_exactly_the_content_length_and_sends_the_range() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut answer =
            format!("HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nETag: \"v1\"\r\n\r\n", body.len())
                .into_bytes();
        answer.extend_from_slice(&body);
        answer.extend_from_slice(b"junk after the body is not read");
        let (url, h) = serve_once(answer);
        let extra = [(reqwest::header::RANGE, "bytes=5-".to_string())];
        let mut r = get(&url, &extra, Timeouts::default()).unwrap().unwrap();
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.content_length(), Some(body.len() as u64));
        assert_eq!(r.headers.get("etag").unwrap(), "\"v1\"");
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert!(got == body);
        let req = h.join().unwrap();
        assert!(req.starts_with("GET /img.zst?x=1 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nrange: bytes=5-\r\n") && req.contains("\r\nHost: 127.0.0.1:"), "{req}");
    }

    #[test]
    fn leaves_what_it_does_not_handle_to_reqwest() {
        for answer in [
            "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
        ] {
            let (url, h) = serve_once(answer.as_bytes().to_vec());
            assert!(get(&url, &[], Timeouts::default()).unwrap().is_none(), "{answer}");
            h.join().unwrap();
        }
        assert!(!handles("https://example.test/i.zst"));
        assert!(!handles("http://user:pw@192.0.2.1/i.zst"));
        assert!(handles("http://192.0.2.1:8080/i.zst"));
        // An error status is an answer: the caller reports it.
        let (url, h) = serve_once(b"HTTP/1.1 404 Not Found\r\n\r\n".to_vec());
        assert_eq!(get(&url, &[], Timeouts::default()).unwrap().unwrap().status, StatusCode::NOT_FOUND);
        h.join().unwrap();
    }

    #[test]
    fn garbage_and_silence_are_errors() {
        let (url, h) = serve_once(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec());
        assert_eq!(get(&url, &[], Timeouts::default()).err().unwrap().kind(), io::ErrorKind::InvalidData);
        h.join().unwrap();
        let (url, h) = serve_once(Vec::new());
        let t = Timeouts { connect: Duration::from_secs(5), read: Duration::from_millis(200) };
        assert!(get(&url, &[], t).is_err(), "a server that never answers");
        h.join().unwrap();
    }
}

//! Minimal HTTP/1.1 clients, one connection per request (as iPXE and the installer open
//! them), from a chosen source address (a machine's own), for tests that send many requests
//! at once (a curl process per request would dominate the time):
//!
//! - [`get`] (async, for load): the body counted and dropped, or kept for a check; status,
//!   `Content-Length` or read-to-close bodies.
//! - [`request`] and [`post_json`] (blocking): any method, status and whole body; [`connect`]
//!   for tests that write their own bytes (a small receive buffer: a client that reads
//!   slowly).
//!
//! Run them inside the namespace that holds the source address (`Netns::spawn`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Got {
    pub status: u16,
    pub bytes: u64,
    /// Request sent → first byte of the answer.
    pub first_byte_secs: f64,
    pub seconds: f64,
}

/// `GET path` from `server`, optionally from a given local address (the machine's lease)
/// and with extra headers (`X-Osie-Mac`…). A status other than 2xx is an error.
pub async fn get(
    server: SocketAddrV4,
    path: &str,
    local: Option<Ipv4Addr>,
    headers: &[(&str, &str)],
    timeout: Duration,
    mut keep: Option<&mut Vec<u8>>,
) -> Result<Got> {
    tokio::time::timeout(timeout, async {
        let start = Instant::now();
        let mut conn = connect_async(server, local).await?;
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\nUser-Agent: osie-bench\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        conn.write_all(req.as_bytes()).await.with_context(|| format!("sending GET {path} to {server}"))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut head = Vec::new();
        let mut first_byte = None;
        let (status, length, mut body) = loop {
            let n = conn.read(&mut buf).await.with_context(|| format!("reading {path} from {server}"))?;
            first_byte.get_or_insert_with(|| start.elapsed());
            if n == 0 {
                bail!("{server} closed the connection before the end of the answer's head to GET {path}");
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let (status, length) = parse_head(&head[..end])?;
                break (status, length, head.split_off(end + 4));
            }
            if head.len() > 64 * 1024 {
                bail!("answer head over 64 KiB from {server} for {path}");
            }
        };
        if !(200..300).contains(&status) {
            bail!("GET {path} from {server}: status {status}");
        }
        let mut bytes = body.len() as u64;
        if let Some(k) = keep.as_deref_mut() {
            k.append(&mut body);
        }
        loop {
            if length.is_some_and(|l| bytes >= l) {
                break;
            }
            let n = conn.read(&mut buf).await.with_context(|| format!("reading {path} from {server}"))?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            if let Some(k) = keep.as_deref_mut() {
                k.extend_from_slice(&buf[..n]);
            }
        }
        if let Some(l) = length.filter(|l| *l != bytes) {
            bail!("GET {path} from {server}: {bytes} bytes, Content-Length said {l}");
        }
        Ok(Got {
            status,
            bytes,
            first_byte_secs: first_byte.unwrap_or_default().as_secs_f64(),
            seconds: start.elapsed().as_secs_f64(),
        })
    })
    .await
    .with_context(|| format!("GET {path} from {server}: no answer within {timeout:?}"))?
}

async fn connect_async(server: SocketAddrV4, local: Option<Ipv4Addr>) -> Result<TcpStream> {
    let s = TcpSocket::new_v4().context("TCP socket")?;
    if let Some(l) = local {
        s.bind(SocketAddrV4::new(l, 0).into()).with_context(|| format!("binding {l}"))?;
    }
    s.connect(server.into()).await.with_context(|| format!("connecting to {server}"))
}

/// Status code and `Content-Length` (if any) of an answer head.
fn parse_head(head: &[u8]) -> Result<(u16, Option<u64>)> {
    let text = std::str::from_utf8(head).context("answer head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = Some(v.trim().parse().with_context(|| format!("bad Content-Length {v:?}"))?);
            }
            if k.trim().eq_ignore_ascii_case("transfer-encoding") && !v.trim().eq_ignore_ascii_case("identity") {
                bail!("Transfer-Encoding {} is not supported by this client", v.trim());
            }
        }
    }
    Ok((status, length))
}

/// Status and body of one request (`Connection: close`, so the body is what comes until EOF;
/// a chunked body is decoded).
pub fn request(
    from: Ipv4Addr,
    to: SocketAddrV4,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = connect(from, to, None)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&out[..head_end]);
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    let mut body = out[head_end + 4..].to_vec();
    if chunked {
        body = dechunk(&body).ok_or_else(bad)?;
    }
    Ok((status, body))
}

/// POST JSON, as the installer does.
pub fn post_json(from: Ipv4Addr, to: SocketAddrV4, path: &str, json: &str) -> std::io::Result<(u16, Vec<u8>)> {
    request(from, to, "POST", path, &[("Content-Type", "application/json")], json.as_bytes(), Duration::from_secs(10))
}

/// A TCP connection from `from` to `to`; with `rcvbuf`, the receive buffer is set that small
/// before connecting (so the window it offers stays small: a client that reads slowly).
pub fn connect(from: Ipv4Addr, to: SocketAddrV4, rcvbuf: Option<usize>) -> std::io::Result<std::net::TcpStream> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket::socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    if let Some(n) = rcvbuf {
        socket::setsockopt(&fd, socket::sockopt::RcvBuf, &n)?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(from, 0)))?;
    socket::connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(std::net::TcpStream::from(fd))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX: y").unwrap(), (200, Some(12)));
        assert_eq!(parse_head(b"HTTP/1.0 404 Not Found").unwrap(), (404, None));
        assert!(parse_head(b"garbage").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").is_err());
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").as_deref(), Some(&b"abcde"[..]));
        assert_eq!(dechunk(b"5\r\nab"), None);
    }

    #[tokio::test]
    async fn fetches_from_a_real_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = match l.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let body = vec![7u8; 300_000];
        let b2 = body.clone();
        tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut req = vec![0u8; 4096];
            let n = c.read(&mut req).await.unwrap();
            assert!(std::str::from_utf8(&req[..n]).unwrap().contains("X-Osie-Mac: 02:00:00:00:00:01\r\n"));
            c.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b2.len()).as_bytes()).await.unwrap();
            c.write_all(&b2).await.unwrap();
        });
        let mut kept = Vec::new();
        let got =
            get(addr, "/x", None, &[("X-Osie-Mac", "02:00:00:00:00:01")], Duration::from_secs(5), Some(&mut kept))
                .await
                .unwrap();
        assert_eq!((got.status, got.bytes), (200, 300_000));
        assert_eq!(kept, body);
    }
}

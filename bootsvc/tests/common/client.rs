//! A minimal HTTP/1.1 client over one TCP connection bound to a chosen source address, for
//! tests that send many requests at once from machines' addresses (a curl process per
//! request would dominate the time). Must run inside the site's namespace (`Netns::spawn`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};

/// Status and body of one request (`Connection: close`, so the body is what comes until EOF).
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

/// A TCP connection from `from` to `to`; with `rcvbuf`, the receive buffer is set that small
/// before connecting (so the window it offers stays small: a client that reads slowly).
pub fn connect(from: Ipv4Addr, to: SocketAddrV4, rcvbuf: Option<usize>) -> std::io::Result<TcpStream> {
    let fd = socket::socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    if let Some(n) = rcvbuf {
        socket::setsockopt(&fd, socket::sockopt::RcvBuf, &n)?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(from, 0)))?;
    socket::connect(fd.as_raw_fd(), &SockaddrIn::from(to))?;
    Ok(TcpStream::from(fd))
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

/// POST JSON, as the installer does.
pub fn post_json(from: Ipv4Addr, to: SocketAddrV4, path: &str, json: &str) -> std::io::Result<(u16, Vec<u8>)> {
    request(from, to, "POST", path, &[("Content-Type", "application/json")], json.as_bytes(), Duration::from_secs(10))
}

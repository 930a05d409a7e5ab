//! A minimal HTTP/1.1 GET client for load: one connection per request (as iPXE and the
//! installer open them), the body counted and dropped (or kept for a check). Only what a
//! booting machine needs: status, `Content-Length` or read-to-close bodies.

use std::net::{Ipv4Addr, SocketAddrV4};
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
        let mut conn = connect(server, local).await?;
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

async fn connect(server: SocketAddrV4, local: Option<Ipv4Addr>) -> Result<TcpStream> {
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

//! A TFTP read client (RFC 1350, options RFC 2347, blksize RFC 2348, tsize RFC 2349,
//! windowsize RFC 7440), as firmware fetches its boot file: its own socket per transfer
//! (the transfer ID), octet mode, one ACK per window. Cheap enough per packet to drive a
//! server with many transfers from one thread.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;

const RRQ: u16 = 1;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Ask for this block size (`None`: the RFC 1350 default of 512).
    pub blksize: Option<u16>,
    /// Ask for this window (`None` or 1: lock-step).
    pub windowsize: Option<u16>,
    /// Ask for `tsize` and check the received length against it.
    pub tsize: bool,
    /// Wait this long for data before ACKing again…
    pub timeout: Duration,
    /// …at most this many times in a row.
    pub retries: u32,
    /// Send from this address (a booted machine's own lease), else the routing default.
    pub local: Option<Ipv4Addr>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            blksize: Some(1468),
            windowsize: None,
            tsize: true,
            timeout: Duration::from_secs(1),
            retries: 5,
            local: None,
        }
    }
}

/// One finished transfer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Fetched {
    pub bytes: u64,
    pub seconds: f64,
    /// What the server granted (its OACK), or the defaults it fell back to.
    pub blksize: u16,
    pub windowsize: u16,
    /// ACKs sent again after a timeout or a gap.
    pub reacks: u32,
}

/// Fetch `file` from `server` (port 69); the content goes to `sink` if given.
pub async fn fetch(
    server: SocketAddrV4,
    file: &str,
    opts: &FetchOptions,
    mut sink: Option<&mut Vec<u8>>,
) -> Result<Fetched> {
    let local = SocketAddrV4::new(opts.local.unwrap_or(Ipv4Addr::UNSPECIFIED), 0);
    let std = crate::sock::udp(local, None, 4 << 20).context("TFTP client socket")?;
    let sock = UdpSocket::from_std(std).context("registering the TFTP socket with tokio")?;
    let start = Instant::now();
    let rrq = read_request(file, opts);
    sock.send_to(&rrq, server).await.with_context(|| format!("sending RRQ {file} to {server}"))?;

    let mut buf = vec![0u8; 65536 + 4];
    let mut peer: Option<SocketAddr> = None;
    let mut blksize = 512usize;
    let mut window = 1u16;
    let mut tsize = None;
    let mut last = 0u16; // last block received in order
    let mut since_ack = 0u16;
    let mut gap_acked: Option<u16> = None;
    let mut bytes = 0u64;
    let mut reacks = 0u32;
    let mut misses = 0u32;
    let mut started = false;
    loop {
        let (n, from) = match tokio::time::timeout(opts.timeout, sock.recv_from(&mut buf)).await {
            Ok(r) => r.context("TFTP receive")?,
            Err(_) => {
                misses += 1;
                if misses > opts.retries {
                    bail!("TFTP {file} from {server}: no data for {} tries after block {last}", opts.retries + 1);
                }
                match peer {
                    // Nothing at all yet: the RRQ (or the server's answer) was lost.
                    None => sock.send_to(&rrq, server).await?,
                    // RFC 7440: re-ACK the last block received in order.
                    Some(p) => {
                        reacks += 1;
                        sock.send_to(&ack(last), p).await?
                    }
                };
                continue;
            }
        };
        let pkt = &buf[..n];
        if n < 4 {
            continue;
        }
        // The first answer fixes the server's transfer ID; anything else is not ours.
        match peer {
            Some(p) if p != from => continue,
            None if from.ip() != std::net::IpAddr::V4(*server.ip()) => continue,
            _ => peer = Some(from),
        }
        let op = u16::from_be_bytes([pkt[0], pkt[1]]);
        match op {
            ERROR => bail!(
                "TFTP {file} from {server}: error {}: {}",
                u16::from_be_bytes([pkt[2], pkt[3]]),
                String::from_utf8_lossy(&pkt[4..]).trim_end_matches('\0')
            ),
            OACK if !started => {
                for (k, v) in parse_options(&pkt[2..]) {
                    match k.to_ascii_lowercase().as_str() {
                        "blksize" => blksize = v.parse().context("OACK blksize")?,
                        "windowsize" => window = v.parse().context("OACK windowsize")?,
                        "tsize" => tsize = Some(v.parse::<u64>().context("OACK tsize")?),
                        _ => {}
                    }
                }
                started = true;
                misses = 0;
                sock.send_to(&ack(0), from).await?;
            }
            DATA => {
                started = true;
                let block = u16::from_be_bytes([pkt[2], pkt[3]]);
                let data = &pkt[4..];
                if block != last.wrapping_add(1) {
                    // A block ahead of the next one means some were lost: ACK the last one
                    // received in order (once) so the server resends from there. Old
                    // duplicates are dropped.
                    let ahead = block.wrapping_sub(last) < 0x8000 && block != last;
                    if ahead && gap_acked != Some(last) {
                        gap_acked = Some(last);
                        reacks += 1;
                        since_ack = 0;
                        sock.send_to(&ack(last), from).await?;
                    }
                    continue;
                }
                misses = 0;
                last = block;
                bytes += data.len() as u64;
                if let Some(s) = sink.as_deref_mut() {
                    s.extend_from_slice(data);
                }
                since_ack += 1;
                let end = data.len() < blksize;
                if end || since_ack >= window {
                    since_ack = 0;
                    sock.send_to(&ack(block), from).await?;
                }
                if end {
                    if let Some(t) = tsize.filter(|t| *t != bytes) {
                        bail!("TFTP {file} from {server}: got {bytes} bytes, tsize said {t}");
                    }
                    return Ok(Fetched {
                        bytes,
                        seconds: start.elapsed().as_secs_f64(),
                        blksize: blksize as u16,
                        windowsize: window,
                        reacks,
                    });
                }
            }
            _ => {}
        }
    }
}

fn read_request(file: &str, opts: &FetchOptions) -> Vec<u8> {
    let mut p = RRQ.to_be_bytes().to_vec();
    for s in [file, "octet"] {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    }
    let mut opt = |k: &str, v: String| {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    };
    if let Some(b) = opts.blksize {
        opt("blksize", b.to_string());
    }
    if opts.tsize {
        opt("tsize", "0".into());
    }
    if let Some(w) = opts.windowsize.filter(|w| *w > 1) {
        opt("windowsize", w.to_string());
    }
    p
}

fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, ACK as u8, b[0], b[1]]
}

/// `name\0value\0…` pairs of a request or OACK.
fn parse_options(b: &[u8]) -> Vec<(String, String)> {
    let parts: Vec<String> = b.split(|&c| c == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    parts.chunks(2).filter(|c| c.len() == 2 && !c[0].is_empty()).map(|c| (c[0].clone(), c[1].clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_the_options() {
        let o = FetchOptions { windowsize: Some(16), ..FetchOptions::default() };
        let r = read_request("undionly.kpxe", &o);
        assert_eq!(&r[..2], &[0, 1]);
        assert_eq!(
            parse_options(&r[2..]),
            [("undionly.kpxe", "octet"), ("blksize", "1468"), ("tsize", "0"), ("windowsize", "16")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let plain = FetchOptions { blksize: None, tsize: false, windowsize: Some(1), ..FetchOptions::default() };
        assert_eq!(read_request("f", &plain), b"\0\x01f\0octet\0");
    }

    #[test]
    fn acks_name_the_block() {
        assert_eq!(ack(0x1234), [0, 4, 0x12, 0x34]);
    }
}

//! One read transfer: its own UDP socket connected to the client (the transfer ID), the
//! OACK and its ACK 0 when options were granted, then windows of DATA blocks, each window
//! sent with one `sendmmsg` straight from a read-ahead buffer filled by `pread`, and one
//! ACK awaited per window (RFC 7440; a window of 1 is RFC 1350's lock-step).
//!
//! Retransmission: a window not acknowledged within `timeout` is sent again, at most
//! `max_send_retries` times, then the transfer is dropped. An ACK for a block inside the
//! window moves the window to the block after it (the client saw a gap). A repeated ACK of
//! the block before the window is ignored in lock-step (RFC 1123's fix for the Sorcerer's
//! Apprentice) and answered at most once per window otherwise. A client ERROR ends the
//! transfer at once (UEFI firmware does this after reading `tsize` from the OACK).

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::info;

use super::packet::{self, FromClient, Granted};
use crate::metrics::Metrics;
use crate::trace::{Outcome, Step, TftpStep, TraceStep};
use crate::tracer::Tracer;

/// Read-ahead per transfer (at least one whole window).
const READ_AHEAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_send_retries: u32,
}

/// How a transfer ended.
#[derive(Debug)]
pub enum End {
    /// The last block was acknowledged.
    Complete,
    /// The client sent an ERROR.
    ClientError(u16, String),
    /// No acknowledgement after every retry.
    NoAck,
    Io(io::Error),
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> End {
        End::Io(e)
    }
}

/// Counts and logs one transfer; dropping it (whichever way the transfer ended, also when
/// the server stops) takes it out of the in-flight gauge and counts its outcome.
pub struct Session {
    pub client: SocketAddr,
    pub name: String,
    pub size: u64,
    /// Payload bytes the client acknowledged.
    pub acked: u64,
    started: Instant,
    end: Option<End>,
    metrics: Arc<Metrics>,
    trace: Option<Traced>,
}

/// What the boot trace needs of a transfer beyond the session's counts.
pub struct Traced {
    pub tracer: Arc<Tracer>,
    /// The options as asked (`name=value`).
    pub options: Vec<String>,
    pub blksize: u16,
}

impl Session {
    pub fn new(client: SocketAddr, name: String, size: u64, metrics: Arc<Metrics>) -> Session {
        metrics.tftp_in_flight.inc();
        Session { client, name, size, acked: 0, started: Instant::now(), end: None, metrics, trace: None }
    }

    /// Record the transfer in the boot trace of the machine holding the client's address.
    pub fn traced(mut self, t: Traced) -> Session {
        self.trace = Some(t);
        self
    }

    fn ack_bytes(&mut self, n: u64) {
        self.acked += n;
        self.metrics.tftp_bytes.inc_by(n);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.metrics.tftp_in_flight.dec();
        let outcome = if matches!(self.end, Some(End::Complete)) { "complete" } else { "aborted" };
        self.metrics.tftp_transfer(outcome);
        let why = match &self.end {
            Some(End::Complete) => String::new(),
            Some(End::ClientError(code, msg)) => format!(" (client error {code}: {msg})"),
            Some(End::NoAck) => " (no acknowledgement, retries used up)".into(),
            Some(End::Io(e)) => format!(" ({e})"),
            None => " (server stopping)".into(),
        };
        if let Some(t) = self.trace.take() {
            let complete = matches!(self.end, Some(End::Complete));
            let step = TftpStep {
                file: crate::trace::clean(&self.name, crate::trace::MAX_TEXT),
                options: t.options,
                bytes: self.acked,
                size: Some(self.size),
                block: self.acked / u64::from(t.blksize.max(1)),
                outcome: if complete { Outcome::Complete } else { Outcome::Abandoned },
                reason: why.trim().trim_start_matches('(').trim_end_matches(')').to_string(),
            };
            let at_ms = crate::trace::now_ms();
            let ip = self.client.ip();
            t.tracer.record_ip(ip, |mac| TraceStep {
                at_ms,
                mac,
                source: Some(ip),
                run_id: None,
                step: Step::Tftp(step),
            });
        }
        let secs = self.started.elapsed().as_secs_f64();
        info!(
            client = %self.client, file = %self.name, bytes = self.acked, size = self.size, secs, outcome,
            "TFTP transfer {outcome}: {} bytes of {} in {secs:.2} s{why}", self.acked, self.size
        );
    }
}

/// Send `file` over `sock` (connected to the client) as granted; `oack` is the OACK to
/// open with, if any options were granted.
pub async fn run(sock: UdpSocket, file: File, g: Granted, oack: Option<Vec<u8>>, limits: Limits, s: &mut Session) {
    let end = match send(&sock, &file, g, oack, limits, s).await {
        Ok(()) => End::Complete,
        Err(e) => e,
    };
    s.end = Some(end);
}

async fn send(
    sock: &UdpSocket,
    file: &File,
    g: Granted,
    oack: Option<Vec<u8>>,
    limits: Limits,
    s: &mut Session,
) -> Result<(), End> {
    let mut rx = [0u8; 516];
    if let Some(o) = oack {
        let mut tries = 0;
        loop {
            sock.send(&o).await?;
            match wait_ack(sock, &mut rx, 0, 0, limits.timeout).await? {
                Some(0) => break,
                _ => {
                    tries += 1;
                    if tries > limits.max_send_retries {
                        return Err(End::NoAck);
                    }
                }
            }
        }
    }
    let bs = u64::from(g.blksize);
    let window = u64::from(g.windowsize.max(1));
    let blocks = packet::block_count(s.size, g.blksize);
    let mut data = ReadAhead::new(file, s.size, (g.blksize as usize * window as usize).max(READ_AHEAD));
    let mut base = 1u64; // first block not yet acknowledged
    let mut tries = 0u32;
    let mut fast_resent = false;
    loop {
        let last = (base + window - 1).min(blocks);
        let (from, to) = ((base - 1) * bs, (last * bs).min(s.size));
        let bytes = data.get(from, to)?;
        send_blocks(sock, base, bytes, g.blksize as usize, last - base + 1).await?;
        // In lock-step, or once a window was resent for it, an ACK of the block before the
        // window is a duplicate: not an answer.
        let lowest = if window > 1 && !fast_resent { base - 1 } else { base };
        match wait_ack(sock, &mut rx, lowest, last, limits.timeout).await? {
            Some(i) if i >= base => {
                s.ack_bytes((i * bs).min(s.size) - (base - 1) * bs);
                if i == blocks {
                    return Ok(());
                }
                base = i + 1;
                tries = 0;
                fast_resent = false;
            }
            // The client re-acknowledged the block before this window: it saw a gap at the
            // window's start. Answered once (sent again right away).
            Some(_) => fast_resent = true,
            None => {
                tries += 1;
                if tries > limits.max_send_retries {
                    return Err(End::NoAck);
                }
            }
        }
    }
}

/// Wait for an ACK naming a block in `[lowest, highest]` (absolute indexes; block 0 is the
/// OACK's): its index, or `None` on timeout. Other ACKs (old duplicates) are ignored.
async fn wait_ack(
    sock: &UdpSocket,
    rx: &mut [u8],
    lowest: u64,
    highest: u64,
    timeout: Duration,
) -> Result<Option<u64>, End> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(rx)).await {
            Err(_) => return Ok(None),
            Ok(Ok(n)) => n,
            // Includes ICMP port unreachable: the client is gone.
            Ok(Err(e)) => return Err(End::Io(e)),
        };
        match packet::parse_from_client(&rx[..n]) {
            FromClient::Ack(b) => match packet::ack_index(b, lowest, highest) {
                Some(i) => return Ok(Some(i)),
                None => continue,
            },
            FromClient::Error(code, msg) => return Err(End::ClientError(code, msg)),
            FromClient::Other => continue,
        }
    }
}

/// Send blocks `first…first+count-1` whose payload is `bytes` (consecutive), one
/// `sendmmsg` for all of them (repeated if the socket buffer takes only part).
async fn send_blocks(sock: &UdpSocket, first: u64, bytes: &[u8], blksize: usize, count: u64) -> io::Result<()> {
    let count = count as usize;
    let headers: Vec<[u8; 4]> = (0..count).map(|i| packet::data_header((first + i as u64) as u16)).collect();
    let mut iov: Vec<[libc::iovec; 2]> = Vec::with_capacity(count);
    for (i, h) in headers.iter().enumerate() {
        let start = (i * blksize).min(bytes.len());
        let end = ((i + 1) * blksize).min(bytes.len());
        iov.push([
            libc::iovec { iov_base: h.as_ptr() as *mut libc::c_void, iov_len: 4 },
            libc::iovec { iov_base: bytes[start..].as_ptr() as *mut libc::c_void, iov_len: end - start },
        ]);
    }
    // SAFETY: an all-zero mmsghdr is valid (no name, no control data).
    let mut msgs: Vec<libc::mmsghdr> = (0..count).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v.as_mut_ptr();
        m.msg_hdr.msg_iovlen = 2;
    }
    let mut done = 0usize;
    while done < count {
        let r = sock.try_io(Interest::WRITABLE, || {
            // SAFETY: msgs[done..] point at iovecs and buffers that outlive the call; the
            // socket is connected, so no destination is needed.
            let n = unsafe {
                libc::sendmmsg(sock.as_raw_fd(), msgs[done..].as_mut_ptr(), (count - done) as libc::c_uint, 0)
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match r {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A window of the file in memory, refilled with one `pread` when the next window is not
/// in it (a lock-step transfer reads 64 KiB at a time, not a block at a time).
struct ReadAhead<'f> {
    file: &'f File,
    size: u64,
    buf: Vec<u8>,
    start: u64,
    len: usize,
}

impl<'f> ReadAhead<'f> {
    fn new(file: &'f File, size: u64, cap: usize) -> ReadAhead<'f> {
        ReadAhead { file, size, buf: vec![0; cap], start: 0, len: 0 }
    }

    /// Bytes `[from, to)` of the file.
    fn get(&mut self, from: u64, to: u64) -> io::Result<&[u8]> {
        let end = self.start + self.len as u64;
        if from < self.start || to > end {
            self.start = from;
            self.len = 0;
            let want = (self.size - from).min(self.buf.len() as u64) as usize;
            while self.len < want {
                match self.file.read_at(&mut self.buf[self.len..want], from + self.len as u64) {
                    Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent")),
                    Ok(n) => self.len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let off = (from - self.start) as usize;
        Ok(&self.buf[off..off + (to - from) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_serves_windows_from_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &content).unwrap();
        let f = File::open(&p).unwrap();
        let mut r = ReadAhead::new(&f, content.len() as u64, 65536);
        assert_eq!(r.get(0, 1468).unwrap(), &content[..1468]);
        assert_eq!((r.start, r.len), (0, 65536));
        assert_eq!(r.get(1468, 2936).unwrap(), &content[1468..2936]);
        assert_eq!(r.start, 0, "served from the same read");
        assert_eq!(r.get(65000, 66468).unwrap(), &content[65000..66468]);
        assert_eq!(r.start, 65000);
        // The tail, shorter than the buffer.
        assert_eq!(r.get(199_000, 200_000).unwrap(), &content[199_000..]);
        assert_eq!(r.get(200_000, 200_000).unwrap(), b"");
    }
}

//! A fault-injecting HTTP proxy between one machine's installer and bootsvc.
//!
//! It runs in the machine's namespace, listening on the address the installer was told is
//! bootsvc (`192.0.2.1:8080`), and opens each upstream connection from the machine's own
//! address, so bootsvc still sees the machine (it identifies callers by source address).
//! One request per connection (`Connection: close` upstream), so every answer ends at the
//! upstream's end of stream and the fault plan can act on any byte of it:
//!
//! - **reset**: after a random number of body bytes, the client connection is reset (RST);
//! - **stall**: at a random offset, nothing more is forwarded for longer than the
//!   installer's read timeout;
//! - **corrupt**: one byte of a large body flipped, silently (the checksum must catch it);
//! - **latency**: the answer's head is held back a little;
//! - events (`POST /events`): the acknowledgement is **lost** (bootsvc stored the event, the
//!   installer sees a reset and sends it again), the event is **duplicated** right away, or
//!   kept and **replayed later**, after newer events (out of order); each duplicate must be
//!   answered `duplicate: true`;
//! - bootsvc down: the upstream connection fails and the client's is reset.
//!
//! Every event bootsvc acknowledged is recorded: at the end each must be in bootsvc's store.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::rng::Rng;

/// What this machine's proxy does to its traffic.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Chance that a response with a body is reset partway.
    pub reset: f64,
    /// Chance that a response with a body stalls partway, for `stall_secs`.
    pub stall: f64,
    pub stall_secs: f64,
    /// Chance that a large response (over 1 MiB) has one byte flipped on the way, silently:
    /// the installer's checksum must catch it.
    pub corrupt: f64,
    /// Extra delay before each answer, milliseconds (0..=this).
    pub latency_ms: u64,
    /// Chances per event: the acknowledgement is lost, the event is sent twice, the event is
    /// kept and replayed after a later one.
    pub lose_ack: f64,
    pub duplicate: f64,
    pub replay: f64,
}

impl Plan {
    /// No faults at all.
    pub fn clean() -> Plan {
        Plan {
            reset: 0.0,
            stall: 0.0,
            stall_secs: 0.0,
            corrupt: 0.0,
            latency_ms: 0,
            lose_ack: 0.0,
            duplicate: 0.0,
            replay: 0.0,
        }
    }
}

/// One event as it went through the proxy.
#[derive(Debug, Clone, Serialize)]
pub struct SeenEvent {
    pub run_id: String,
    pub seq: u64,
    pub phase: String,
}

/// What the proxy saw and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Log {
    pub requests: u64,
    pub resets: u64,
    pub stalls: u64,
    pub bytes_flipped: u64,
    pub upstream_refused: u64,
    pub acks_lost: u64,
    pub duplicates_sent: u64,
    pub replays_sent: u64,
    /// Events bootsvc answered `stored: true` (first time or not): each must be stored.
    pub acked: Vec<SeenEvent>,
    /// Anything bootsvc answered that it should not have (a duplicate taken as new…).
    pub anomalies: Vec<String>,
}

pub struct Proxy {
    pub listen: SocketAddrV4,
    pub upstream: SocketAddrV4,
    /// The machine's address: upstream connections come from here.
    pub source: Ipv4Addr,
    pub plan: Plan,
}

struct Shared {
    p: Proxy,
    rng: Mutex<Rng>,
    log: Arc<Mutex<Log>>,
    /// Events kept for a later replay.
    kept: Mutex<Vec<Vec<u8>>>,
}

impl Proxy {
    /// Serve until `stop` is set. Call on a thread inside the machine's namespace.
    pub fn run(self, rng: Rng, log: Arc<Mutex<Log>>, stop: Arc<AtomicBool>) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let listener = TcpListener::bind(self.listen).await.with_context(|| format!("proxy on {}", self.listen))?;
            let shared = Arc::new(Shared { p: self, rng: Mutex::new(rng), log, kept: Mutex::new(Vec::new()) });
            while !stop.load(Ordering::Relaxed) {
                let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
                let Ok(Ok((client, _))) = accepted else { continue };
                let s = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Err(e) = s.handle(client).await {
                        tracing::debug!("proxy connection: {e:#}");
                    }
                });
            }
            // Replay what is still kept, so every planned duplicate reaches bootsvc.
            let kept = std::mem::take(&mut *shared.kept.lock().unwrap_or_else(|e| e.into_inner()));
            for req in kept {
                shared.replay(&req).await;
            }
            Ok(())
        })
    }
}

/// Read an HTTP request (head and `Content-Length` body).
async fn read_request(c: &mut TcpStream) -> Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let len = header(&buf[..end], "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = c.read(&mut chunk).await?;
                if n == 0 {
                    bail!("client closed in the middle of a request body");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.truncate(end + 4 + len);
            return Ok(Some(buf));
        }
        let n = c.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            bail!("request head over 1 MiB");
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The request with `Connection: close` (so the answer ends at the end of stream).
fn close_after(req: &[u8]) -> Vec<u8> {
    let end = find(req, b"\r\n\r\n").unwrap_or(req.len());
    let head = String::from_utf8_lossy(&req[..end]);
    let mut out: String =
        head.lines().filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect::<Vec<_>>().join("\r\n");
    out.push_str("\r\nConnection: close\r\n\r\n");
    let mut v = out.into_bytes();
    v.extend_from_slice(req.get(end + 4..).unwrap_or_default());
    v
}

/// Reset instead of closing: SO_LINGER 0 then drop.
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

impl Shared {
    fn rng<T>(&self, f: impl FnOnce(&mut Rng) -> T) -> T {
        f(&mut self.rng.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn log(&self, f: impl FnOnce(&mut Log)) {
        f(&mut self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let s = TcpSocket::new_v4()?;
        s.bind(SocketAddrV4::new(self.p.source, 0).into())?;
        tokio::time::timeout(Duration::from_secs(5), s.connect(self.p.upstream.into()))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting upstream"))?
    }

    /// Send a request upstream and read the whole answer.
    async fn exchange(&self, req: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut up = self.connect().await?;
        up.write_all(&close_after(req)).await?;
        let mut resp = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), up.read_to_end(&mut resp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "reading upstream"))??;
        Ok(resp)
    }

    async fn handle(&self, mut client: TcpStream) -> Result<()> {
        let Some(req) = read_request(&mut client).await? else { return Ok(()) };
        self.log(|l| l.requests += 1);
        let line = String::from_utf8_lossy(&req[..req.iter().position(|b| *b == b'\r').unwrap_or(0)]).to_string();
        if line.starts_with("POST /events ") {
            return self.event(client, &req).await;
        }
        let mut up = match self.connect().await {
            Ok(u) => u,
            Err(_) => {
                self.log(|l| l.upstream_refused += 1);
                reset(client);
                return Ok(());
            }
        };
        up.write_all(&close_after(&req)).await?;
        let latency = self.rng(|r| r.below(self.p.plan.latency_ms + 1));
        tokio::time::sleep(Duration::from_millis(latency)).await;

        // The answer's head, then its body with the planned fault.
        let mut buf = vec![0u8; 256 << 10];
        let mut head = Vec::new();
        let body_start = loop {
            let n = up.read(&mut buf).await?;
            if n == 0 {
                client.write_all(&head).await?;
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(e) = find(&head, b"\r\n\r\n") {
                break e + 4;
            }
        };
        let len = header(&head[..body_start], "content-length").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let is_head = line.starts_with("HEAD ");
        let (reset_at, stall_at, flip_at) = self.rng(|r| {
            let pick = |r: &mut Rng, p: f64| (len > 0 && !is_head && r.chance(p)).then(|| r.below(len));
            let flip = if len > 1 << 20 { pick(r, self.p.plan.corrupt) } else { None };
            (pick(r, self.p.plan.reset), pick(r, self.p.plan.stall), flip)
        });
        client.write_all(&head[..body_start]).await?;
        let mut pending = head[body_start..].to_vec();
        let mut sent: u64 = 0; // body bytes forwarded
        let mut stalled = false;
        loop {
            let mut rest: &[u8] = &pending;
            while !rest.is_empty() {
                let next_fault =
                    [reset_at, stall_at.filter(|_| !stalled)].into_iter().flatten().filter(|o| *o >= sent).min();
                let n = next_fault.map_or(rest.len(), |o| ((o - sent) as usize).min(rest.len()));
                match flip_at.filter(|f| (sent..sent + n as u64).contains(f)) {
                    Some(f) => {
                        let mut chunk = rest[..n].to_vec();
                        chunk[(f - sent) as usize] ^= 0xff;
                        self.log(|l| l.bytes_flipped += 1);
                        client.write_all(&chunk).await?;
                    }
                    None => client.write_all(&rest[..n]).await?,
                }
                rest = &rest[n..];
                sent += n as u64;
                if reset_at == Some(sent) {
                    self.log(|l| l.resets += 1);
                    reset(client);
                    return Ok(());
                }
                if !stalled && stall_at == Some(sent) {
                    stalled = true;
                    self.log(|l| l.stalls += 1);
                    tokio::time::sleep(Duration::from_secs_f64(self.p.plan.stall_secs)).await;
                }
            }
            let n = up.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            pending = buf[..n].to_vec();
        }
        client.shutdown().await.ok();
        Ok(())
    }

    /// `POST /events`: forward, record the acknowledgement, and apply the event faults.
    async fn event(&self, client: TcpStream, req: &[u8]) -> Result<()> {
        // An event kept earlier arrives now, after newer ones: out of order.
        let replay = self.rng(|r| r.chance(0.5));
        if replay {
            let old = {
                let mut k = self.kept.lock().unwrap_or_else(|e| e.into_inner());
                (!k.is_empty()).then(|| k.remove(0))
            };
            if let Some(old) = old {
                self.replay(&old).await;
            }
        }
        let resp = match self.exchange(req).await {
            Ok(r) => r,
            Err(_) => {
                self.log(|l| l.upstream_refused += 1);
                reset(client);
                return Ok(());
            }
        };
        let acked = self.record(req, &resp, false);
        let (lose, dup, keep) = self
            .rng(|r| (r.chance(self.p.plan.lose_ack), r.chance(self.p.plan.duplicate), r.chance(self.p.plan.replay)));
        if acked && dup {
            self.log(|l| l.duplicates_sent += 1);
            if let Ok(again) = self.exchange(req).await {
                self.record(req, &again, true);
            }
        }
        if acked && keep {
            self.kept.lock().unwrap_or_else(|e| e.into_inner()).push(req.to_vec());
        }
        if acked && lose {
            // Stored, but the installer never hears it: it must send again, and bootsvc must
            // recognise the second copy.
            self.log(|l| l.acks_lost += 1);
            reset(client);
            return Ok(());
        }
        let mut client = client;
        client.write_all(&resp).await?;
        client.shutdown().await.ok();
        Ok(())
    }

    async fn replay(&self, req: &[u8]) {
        self.log(|l| l.replays_sent += 1);
        if let Ok(resp) = self.exchange(req).await {
            self.record(req, &resp, true);
        }
    }

    /// Note an acknowledged event; a copy (`must_be_duplicate`) must be answered as one.
    fn record(&self, req: &[u8], resp: &[u8], must_be_duplicate: bool) -> bool {
        let status = String::from_utf8_lossy(&resp[..resp.len().min(16)]).split_whitespace().nth(1).map(String::from);
        if status.as_deref() != Some("200") {
            return false;
        }
        let body_at = find(req, b"\r\n\r\n").map_or(req.len(), |e| e + 4);
        let ev: serde_json::Value = serde_json::from_slice(&req[body_at..]).unwrap_or_default();
        let ack_at = find(resp, b"\r\n\r\n").map_or(resp.len(), |e| e + 4);
        let ack: serde_json::Value = serde_json::from_slice(&resp[ack_at..]).unwrap_or_default();
        let seen = SeenEvent {
            run_id: ev["run_id"].as_str().unwrap_or_default().to_string(),
            seq: ev["seq"].as_u64().unwrap_or(u64::MAX),
            phase: ev["phase"].as_str().unwrap_or_default().to_string(),
        };
        self.log(|l| {
            if ack["stored"] != true {
                l.anomalies.push(format!("event {}/{} answered 200 without stored: {ack}", seen.run_id, seen.seq));
            }
            if must_be_duplicate && ack["duplicate"] != true {
                l.anomalies.push(format!("a copy of event {}/{} was stored again: {ack}", seen.run_id, seen.seq));
            }
            l.acked.push(seen);
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_closed_after_one_answer() {
        let r =
            close_after(b"POST /events HTTP/1.1\r\nHost: x\r\nconnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
        assert_eq!(header(b"HTTP/1.1 200 OK\r\nContent-Length: 12", "content-length").as_deref(), Some("12"));
    }
}

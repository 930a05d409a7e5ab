//! Many DHCP clients on one socket: each [`DhcpClient::exchange`] is one machine's
//! DISCOVER → OFFER → REQUEST → ACK, and any number of them run at once. A receive task
//! hands every answer to the exchange waiting for its transaction id, so the cost per
//! packet is one `recvfrom`, a header read and a channel send.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::packet::{self, Identity, Path, Reply};

/// Where and how the clients talk.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Broadcast from port 68 (as machines do), or as a relay agent from `giaddr`:67.
    pub path: Path,
    /// The server to unicast to in relay mode (ignored for broadcast).
    pub server: Ipv4Addr,
    /// Interface to send and listen on (`SO_BINDTODEVICE`); required for broadcast.
    pub interface: Option<String>,
    /// Wait for each answer this long before sending the message again…
    pub timeout: Duration,
    /// …at most this many times; then the exchange fails.
    pub retries: u32,
}

impl ClientConfig {
    pub fn broadcast(interface: &str) -> ClientConfig {
        ClientConfig {
            path: Path::Broadcast,
            server: Ipv4Addr::BROADCAST,
            interface: Some(interface.to_string()),
            timeout: Duration::from_secs(1),
            retries: 3,
        }
    }

    pub fn relay(giaddr: Ipv4Addr, server: Ipv4Addr) -> ClientConfig {
        ClientConfig {
            path: Path::Relay { giaddr },
            server,
            interface: None,
            timeout: Duration::from_secs(1),
            retries: 3,
        }
    }
}

/// What one machine got.
#[derive(Debug, Clone)]
pub struct Lease {
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub server_id: Ipv4Addr,
    /// The next server (`siaddr`), where the boot file is fetched by TFTP.
    pub next_server: Ipv4Addr,
    pub boot_file: Option<String>,
    /// DISCOVER sent → OFFER received.
    pub offer_latency: Duration,
    /// DISCOVER sent → ACK received: the whole exchange.
    pub latency: Duration,
    /// Messages sent again after a timeout.
    pub retransmits: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("no {0} after {1} tries")]
    Timeout(&'static str, u32),
    #[error("NAK from {0:?}")]
    Nak(Option<Ipv4Addr>),
    #[error("offer without a server identifier (option 54)")]
    NoServerId,
    #[error("sending: {0}")]
    Send(#[from] std::io::Error),
}

impl ExchangeError {
    /// Short name for counting failures by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ExchangeError::Timeout("OFFER", _) => "no-offer",
            ExchangeError::Timeout(..) => "no-ack",
            ExchangeError::Nak(_) => "nak",
            ExchangeError::NoServerId => "no-server-id",
            ExchangeError::Send(_) => "send-error",
        }
    }
}

type Waiters = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Reply>>>>;

/// The shared socket and the exchanges waiting on it. Create it inside a tokio runtime;
/// dropping it stops its receive task.
pub struct DhcpClient {
    sock: Arc<UdpSocket>,
    dest: SocketAddrV4,
    cfg: ClientConfig,
    waiters: Waiters,
    next_xid: AtomicU32,
    receiver: tokio::task::JoinHandle<()>,
    /// Answers that matched no waiting exchange (late duplicates, other clients').
    pub strays: Arc<AtomicU32>,
}

impl DhcpClient {
    pub fn bind(cfg: ClientConfig) -> Result<DhcpClient> {
        let (local, dest) = match cfg.path {
            Path::Broadcast => {
                (SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68), SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
            }
            // Answers to a relay come to giaddr:67.
            Path::Relay { giaddr } => (SocketAddrV4::new(giaddr, 67), SocketAddrV4::new(cfg.server, 67)),
        };
        let std = crate::sock::udp(local, cfg.interface.as_deref(), 8 << 20)
            .with_context(|| format!("DHCP load generator socket on {local}"))?;
        let sock = Arc::new(UdpSocket::from_std(std).context("registering the DHCP socket with tokio")?);
        let waiters: Waiters = Arc::default();
        let strays = Arc::new(AtomicU32::new(0));
        let receiver = tokio::spawn(receive(sock.clone(), waiters.clone(), strays.clone()));
        // Different runs must not reuse transaction ids a server may still remember.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.subsec_nanos());
        Ok(DhcpClient { sock, dest, cfg, waiters, next_xid: AtomicU32::new(seed), receiver, strays })
    }

    /// A fresh transaction id, and the channel its answers come on while the guard lives.
    fn transaction(&self) -> (u32, mpsc::UnboundedReceiver<Reply>, Unregister<'_>) {
        let xid = self.next_xid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).insert(xid, tx);
        (xid, rx, Unregister(&self.waiters, xid))
    }

    /// A DISCOVER and the OFFER it gets, nothing more (what a server would offer this
    /// machine now, without taking the address).
    pub async fn offer(&self, id: &Identity) -> Result<Reply, ExchangeError> {
        let (xid, mut rx, _unregister) = self.transaction();
        let mut buf = Vec::with_capacity(400);
        packet::client_message(&mut buf, id, xid, self.cfg.path, None);
        self.await_reply(&buf, id.mac, &mut rx, &[packet::OFFER], "OFFER", &mut 0).await
    }

    /// One machine's full exchange. Safe to run concurrently for different MACs.
    pub async fn exchange(&self, id: &Identity) -> Result<Lease, ExchangeError> {
        let (xid, mut rx, _unregister) = self.transaction();
        let mut buf = Vec::with_capacity(400);
        let start = Instant::now();
        let mut retransmits = 0;

        packet::client_message(&mut buf, id, xid, self.cfg.path, None);
        let offer = self.await_reply(&buf, id.mac, &mut rx, &[packet::OFFER], "OFFER", &mut retransmits).await?;
        let offer_latency = start.elapsed();
        let server_id = offer.server_id.ok_or(ExchangeError::NoServerId)?;

        packet::client_message(&mut buf, id, xid, self.cfg.path, Some((offer.yiaddr, server_id)));
        let ack = self.await_reply(&buf, id.mac, &mut rx, &[packet::ACK, packet::NAK], "ACK", &mut retransmits).await?;
        if ack.msg_type == packet::NAK {
            return Err(ExchangeError::Nak(ack.server_id));
        }
        Ok(Lease {
            mac: id.mac,
            address: ack.yiaddr,
            server_id,
            next_server: ack.siaddr,
            boot_file: ack.boot_file.or(offer.boot_file),
            offer_latency,
            latency: start.elapsed(),
            retransmits,
        })
    }

    /// Send `msg` and wait for an answer of one of `kinds`, sending again on each timeout.
    async fn await_reply(
        &self,
        msg: &[u8],
        mac: [u8; 6],
        rx: &mut mpsc::UnboundedReceiver<Reply>,
        kinds: &[u8],
        what: &'static str,
        retransmits: &mut u32,
    ) -> Result<Reply, ExchangeError> {
        for attempt in 0..=self.cfg.retries {
            if attempt > 0 {
                *retransmits += 1;
            }
            self.sock.send_to(msg, self.dest).await?;
            let deadline = tokio::time::Instant::now() + self.cfg.timeout;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) if kinds.contains(&r.msg_type) && r.mac == mac => return Ok(r),
                    // A duplicate OFFER while waiting for the ACK: keep waiting.
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
        Err(ExchangeError::Timeout(what, self.cfg.retries + 1))
    }
}

impl Drop for DhcpClient {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

struct Unregister<'a>(&'a Waiters, u32);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

async fn receive(sock: Arc<UdpSocket>, waiters: Waiters, strays: Arc<AtomicU32>) {
    let mut buf = vec![0u8; 1500];
    loop {
        let n = match sock.recv_from(&mut buf).await {
            Ok((n, _)) => n,
            // ICMP errors surface here (port unreachable while a server starts): go on.
            Err(_) => continue,
        };
        let Some(reply) = packet::parse_reply(&buf[..n]) else { continue };
        let delivered = match waiters.lock().unwrap_or_else(|e| e.into_inner()).get(&reply.xid) {
            Some(tx) => tx.send(reply).is_ok(),
            None => false,
        };
        if !delivered {
            strays.fetch_add(1, Ordering::Relaxed);
        }
    }
}

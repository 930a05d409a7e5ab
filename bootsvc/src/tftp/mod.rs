//! TFTP: read-only, octet (netascii sent unchanged), jailed to `tftp.root`; blksize, tsize
//! and windowsize (RFC 1350, 2347, 2348, 2349, 7440).
//!
//! - [`packet`]: requests, option negotiation, packets (pure functions).
//! - [`crate::jail`]: which names may be opened (no `..`, no hidden name, no absolute
//!   escape, no symlink escape), shared with the HTTP file routes; [`refusal`] turns its
//!   answers into TFTP's metrics labels and ERROR packets.
//! - [`admission`]: which requests get a transfer (caps per source address and in all).
//! - [`generated`]: the shim/GRUB chain's names (GRUB configurations made per request, the
//!   installer's kernel and initramfs), asked before the root.
//! - [`transfer`]: one transfer on its own socket; counted and logged when it ends.
//!
//! The server runs on threads of its own, each with a single-threaded tokio runtime: the
//! request loop (`tftp`) reads port 69, and each accepted request gets a socket of its own
//! connected to the client and becomes a task on one of the workers (`tftp-N`, one per
//! core up to 4, round robin). Everything a transfer does per window is a `sendmmsg`, a
//! `recv` and now and then a `pread` of 64 KiB, with no hand-off between threads: a core
//! drives hundreds of transfers, and a burst of them never queues behind DHCP and HTTP on
//! the main runtime's threads. Dropping [`TftpServer::run`]'s future stops the threads and
//! every transfer in them.
//!
//! Refused and malformed requests are counted in the metrics and logged through
//! [`DropLog`]: the first few of each reason per interval, then a summary line.
//!
//! Abandoned transfers: a client that sends ERROR (UEFI does this after reading `tsize`
//! from the OACK) ends its transfer at once; one that simply goes away is dropped after
//! `max_send_retries` retransmissions `timeout_secs` apart, i.e. within
//! `(max_send_retries + 1) × timeout_secs` (4 s with the defaults). The client's own
//! `timeout` option is ignored for that reason.
//!
//! Operator notes: `bootsvc/docs/tftp.md`.
//!
//! Interface used by the service wiring (`serve`): bind first, then run.

pub mod admission;
pub mod generated;
pub mod packet;
pub mod refusal;
pub mod transfer;

use std::cell::Cell;
use std::fs::File;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{Config, Tftp};
use crate::droplog::DropLog;
use crate::jail::Jail;
use crate::metrics::Metrics;
use crate::trace::{Outcome, Step, TftpStep, TraceStep};
use crate::tracer::{MaybeTracer, Tracer};
use admission::{Admit, Caps};
use packet::{ErrorCode, Granted};
use transfer::{Limits, Session, Traced};

pub const TFTP_PORT: u16 = 69;
/// Largest block size any client gets (RFC 2348's maximum).
pub const MAX_BLKSIZE: u16 = packet::MAX_BLKSIZE;
/// Largest window (RFC 7440) granted: bounds the memory one transfer holds.
pub const MAX_WINDOW: u16 = 64;
/// IPv4 header + UDP header + TFTP DATA header.
const OVERHEAD: u32 = 20 + 8 + 4;

/// The bound sockets: `listen.address:69`, and `[dhcp6.address]:69` when there is one (the
/// host of DHCPv6's `tftp://` boot file URLs).
pub struct Sockets {
    pub v4: std::net::UdpSocket,
    pub v6: Option<std::net::UdpSocket>,
}

/// Bind `listen.address:69` on `listen.interface` when TFTP is enabled, and
/// `[dhcp6.address]:69` beside it when `dhcp6.address` is set. Needs root (or
/// `CAP_NET_BIND_SERVICE`), not an async runtime.
pub fn bind_socket(cfg: &Config) -> Result<Option<Sockets>> {
    if !cfg.tftp.enabled {
        return Ok(None);
    }
    let iface = cfg.listen.interface.as_str();
    let v4 = crate::udp::bind(SocketAddrV4::new(cfg.listen.address, TFTP_PORT), Some(iface), "TFTP")?;
    let v6 = match cfg.dhcp6.address {
        Some(a) => {
            Some(crate::udp::bind6(SocketAddrV6::new(a, TFTP_PORT, 0, 0), Some(iface), "TFTP over IPv6", |_| Ok(()))?)
        }
        None => None,
    };
    Ok(Some(Sockets { v4, v6 }))
}

/// The bound TFTP service (UDP 69).
pub struct TftpServer {
    /// Nothing when TFTP is disabled.
    bound: Option<(Sockets, Arc<Jail>)>,
    limits: Limits,
    caps: Caps,
    blksize_limit: u16,
    metrics: Arc<Metrics>,
    tracer: MaybeTracer,
    generated: Option<Arc<generated::Generated>>,
}

impl TftpServer {
    /// Open the root and bind `listen.address:69` on `listen.interface`. With
    /// `tftp.enabled = false` nothing is bound and [`TftpServer::run`] waits forever.
    pub fn bind(cfg: Arc<Config>, metrics: Arc<Metrics>) -> Result<TftpServer> {
        let socket = bind_socket(&cfg)?;
        TftpServer::new(cfg, metrics, socket)
    }

    /// Serve on a socket bound earlier ([`bind_socket`]); opens the root.
    pub fn new(cfg: Arc<Config>, metrics: Arc<Metrics>, socket: Option<Sockets>) -> Result<TftpServer> {
        let iface = cfg.listen.interface.as_str();
        let bound = match socket {
            Some(socket) => Some((socket, Arc::new(Jail::new(&cfg.tftp.root)?))),
            None => None,
        };
        Ok(TftpServer {
            bound,
            limits: Limits {
                timeout: Duration::from_secs(cfg.tftp.timeout_secs.max(1)),
                max_send_retries: cfg.tftp.max_send_retries,
            },
            caps: Caps { total: Tftp::MAX_TRANSFERS, per_client: cfg.tftp.max_transfers_per_client.max(1) },
            blksize_limit: blksize_limit(link_mtu(iface)),
            metrics,
            tracer: None,
            generated: None,
        })
    }

    /// Record each transfer to an inventory machine in its boot trace.
    pub fn with_tracer(mut self, t: Arc<Tracer>) -> TftpServer {
        self.tracer = Some(t);
        self
    }

    /// Also answer the shim/GRUB chain's names ([`generated`]).
    pub fn with_generated(mut self, g: generated::Generated) -> TftpServer {
        self.generated = Some(Arc::new(g));
        self
    }

    /// Serve until the task is dropped.
    pub async fn run(self) -> Result<()> {
        let Some((sockets, jail)) = self.bound else {
            info!("TFTP disabled (tftp.enabled = false)");
            return std::future::pending().await;
        };
        let addr = sockets.v4.local_addr().context("TFTP: socket address")?;
        let addr6 = sockets.v6.as_ref().and_then(|s| s.local_addr().ok());
        info!(
            addr = %addr, addr6 = %addr6.map_or_else(|| "-".to_string(), |a| a.to_string()), root = %jail.root().display(), blksize_limit = self.blksize_limit,
            timeout_secs = self.limits.timeout.as_secs(), max_send_retries = self.limits.max_send_retries,
            max_transfers = self.caps.total, max_transfers_per_client = self.caps.per_client,
            "TFTP serving"
        );
        let (limits, caps, blksize_limit, metrics, tracer, generated) =
            (self.limits, self.caps, self.blksize_limit, self.metrics, self.tracer, self.generated);
        let active: Active = Arc::default();
        let workers =
            (0..worker_count()).map(|n| spawn_worker(n, limits, Arc::clone(&active))).collect::<Result<Vec<_>>>()?;

        // Dropping `_stop` (when this future is dropped) ends the request loop; its workers'
        // queues close with it and they stop too, dropping their transfers.
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel::<Result<()>>();
        std::thread::Builder::new()
            .name("tftp".into())
            .spawn(move || {
                let r = (|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("TFTP: starting its runtime")?;
                    rt.block_on(async move {
                        let server = Server {
                            jail,
                            generated,
                            caps,
                            blksize_limit,
                            metrics,
                            tracer,
                            active,
                            drops: DropLog::new("TFTP"),
                            workers,
                            next: Cell::new(0),
                        };
                        let v4 = UdpSocket::from_std(sockets.v4).context("TFTP: registering the socket")?;
                        let v6 = match sockets.v6 {
                            Some(s) => Some(UdpSocket::from_std(s).context("TFTP: registering the IPv6 socket")?),
                            None => None,
                        };
                        let serve6 = async {
                            match v6 {
                                Some(s) => server.serve(s).await,
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            r = server.serve(v4) => r,
                            r = serve6 => r,
                            _ = server.drops.summarize() => Ok(()),
                            _ = stopped => Ok(()),
                        }
                    })
                })();
                let _ = done_tx.send(r);
            })
            .context("TFTP: starting its thread")?;
        done.await.context("TFTP: its thread ended without a result")?
    }
}

/// Clients with a transfer running (the request loop adds, the workers remove).
type Active = Arc<Mutex<admission::Active>>;

/// Threads running transfers: one per core, at most 4 (a transfer costs a few µs of CPU per
/// window; more threads would only contend with DHCP and HTTP).
fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4)
}

/// An accepted request, handed to a worker.
struct Job {
    socket: std::net::UdpSocket,
    file: File,
    granted: Granted,
    oack: Option<Vec<u8>>,
    session: Session,
}

/// A thread with a single-threaded runtime running the transfers it is sent, each a task;
/// it ends when the request loop drops the sending side.
fn spawn_worker(n: usize, limits: Limits, active: Active) -> Result<mpsc::UnboundedSender<Job>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("TFTP: starting a runtime")?;
    std::thread::Builder::new()
        .name(format!("tftp-{n}"))
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                while let Some(job) = rx.recv().await {
                    let active = Arc::clone(&active);
                    tokio::task::spawn_local(async move {
                        let Job { socket, file, granted, oack, mut session } = job;
                        let peer = session.client;
                        match UdpSocket::from_std(socket) {
                            Ok(sock) => transfer::run(sock, file, granted, oack, limits, &mut session).await,
                            Err(e) => warn!(client = %peer, "TFTP: registering a transfer socket failed: {e}"),
                        }
                        drop(session);
                        active.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
                    });
                }
            });
        })
        .context("TFTP: starting a worker thread")?;
    Ok(tx)
}

/// The request loop's state, on the `tftp` thread.
struct Server {
    jail: Arc<Jail>,
    generated: Option<Arc<generated::Generated>>,
    caps: Caps,
    blksize_limit: u16,
    metrics: Arc<Metrics>,
    tracer: MaybeTracer,
    active: Active,
    drops: DropLog,
    workers: Vec<mpsc::UnboundedSender<Job>>,
    /// Round robin over the workers.
    next: Cell<usize>,
}

impl Server {
    /// Count a dropped request; `true` when it gets a log line of its own ([`DropLog`]).
    fn dropped(&self, reason: &'static str, peer: Option<SocketAddr>) -> bool {
        self.metrics.drop_reason(reason);
        self.drops.note(reason, peer.map(|p| p.ip()))
    }

    async fn serve(&self, socket: UdpSocket) -> Result<()> {
        let local = socket.local_addr().context("TFTP: socket address")?.ip();
        let mut buf = vec![0u8; 1500];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, peer)) => self.request(&socket, local, &buf[..n], peer).await,
                // A failed receive loses a packet, not the service.
                Err(e) => {
                    if self.dropped("tftp-receive-error", None) {
                        warn!("TFTP: receiving failed, continuing: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// One request that came to `local` (the socket's address: the transfer's is the same).
    async fn request(&self, socket: &UdpSocket, local: IpAddr, pkt: &[u8], peer: SocketAddr) {
        let req = match packet::parse_request(pkt) {
            Ok(r) => r,
            Err(e) => {
                if self.dropped(e.reason(), Some(peer)) {
                    info!(client = %peer, reason = e.reason(), "TFTP packet dropped: {e}");
                }
                if matches!(e, packet::RequestError::Mode(_)) {
                    let _ = socket.send_to(&packet::error(ErrorCode::IllegalOperation, &e.to_string()), peer).await;
                }
                return;
            }
        };
        let name = req.filename.clone();
        if req.write {
            self.metrics.tftp_transfer("refused");
            if self.dropped("tftp-write", Some(peer)) {
                warn!(client = %peer, file = %name, reason = "tftp-write", "TFTP write request refused: read-only server");
            }
            let _ = socket.send_to(&packet::error(ErrorCode::IllegalOperation, "Read-only server"), peer).await;
            return;
        }
        // Only this loop adds transfers, so the answer still holds when the transfer starts.
        let admit = self.active.lock().unwrap_or_else(|e| e.into_inner()).admit(peer, self.caps);
        match admit {
            Admit::Yes => {}
            Admit::Repeat => {
                debug!(client = %peer, file = %name, "TFTP: repeated request of a running transfer ignored");
                return;
            }
            Admit::ClientBusy | Admit::Busy => {
                let (reason, cap, what, told) = if admit == Admit::Busy {
                    ("tftp-busy", self.caps.total, "transfers running", "Server busy, try again")
                } else {
                    (
                        "tftp-busy-client",
                        self.caps.per_client,
                        "transfers from this address running",
                        "Too many transfers from your address, try again",
                    )
                };
                if self.dropped(reason, Some(peer)) {
                    warn!(client = %peer, file = %name, reason, "TFTP read request refused: {cap} {what}");
                }
                let _ = socket.send_to(&packet::error(ErrorCode::NotDefined, told), peer).await;
                return;
            }
        }
        let opened = match self.generated.as_ref().and_then(|g| g.open(&name, peer)) {
            Some(r) => r,
            None => self.jail.open(Path::new(crate::grub::tftp_root_name(&name))),
        };
        let (file, size) = match opened {
            Ok(f) => f,
            Err(r) => {
                let reason = refusal::reason(&r);
                self.metrics.tftp_transfer("refused");
                if let Some(t) = &self.tracer {
                    let step = TftpStep {
                        file: crate::trace::clean(&name, crate::trace::MAX_TEXT),
                        options: options(&req.options),
                        bytes: 0,
                        size: None,
                        block: 0,
                        outcome: Outcome::Refused,
                        reason: r.to_string(),
                    };
                    let at_ms = crate::trace::now_ms();
                    t.record_ip(peer.ip(), |mac| TraceStep {
                        at_ms,
                        mac,
                        source: Some(peer.ip()),
                        run_id: None,
                        step: Step::Tftp(step),
                    });
                }
                if self.dropped(reason, Some(peer)) {
                    warn!(client = %peer, file = %name, reason, "TFTP read request refused: {r}");
                }
                let _ = socket.send_to(&refusal::packet(&r), peer).await;
                return;
            }
        };
        let sock = match transfer_socket(local, peer) {
            Ok(s) => s,
            Err(e) => {
                if self.dropped("tftp-socket", Some(peer)) {
                    warn!(client = %peer, file = %name, "TFTP read request not served: {e:#}");
                }
                return;
            }
        };
        // An IPv6 header is 20 bytes longer: blocks stay within the MTU.
        let blksize_limit =
            if local.is_ipv6() { self.blksize_limit.saturating_sub(20).max(512) } else { self.blksize_limit };
        let granted = packet::negotiate(&req.options, size, blksize_limit, MAX_WINDOW);
        let oack = granted.oack.then(|| packet::oack(&req.options, &granted));
        info!(
            client = %peer, file = %name, size, blksize = granted.blksize, windowsize = granted.windowsize,
            "TFTP read request: sending"
        );
        let mut session = Session::new(peer, name, size, Arc::clone(&self.metrics));
        if let Some(t) = &self.tracer {
            let tracer = Arc::clone(t);
            session = session.traced(Traced { tracer, options: options(&req.options), blksize: granted.blksize });
        }
        self.active.lock().unwrap_or_else(|e| e.into_inner()).insert(peer);
        let n = self.next.get();
        self.next.set((n + 1) % self.workers.len());
        if let Err(e) = self.workers[n].send(Job { socket: sock, file, granted, oack, session }) {
            // Only while stopping: the worker is gone; the job (and its session) is dropped.
            drop(e);
            self.active.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
        }
    }
}

/// The options as asked, for the boot trace (`name=value`, a few, cleaned).
fn options(o: &[(String, String)]) -> Vec<String> {
    o.iter().take(8).map(|(k, v)| crate::trace::clean(&format!("{k}={v}"), 64)).collect()
}

/// The transfer's own socket: a fresh port on the server's address (the transfer ID),
/// connected to the client so the kernel drops datagrams from anyone else.
fn transfer_socket(address: IpAddr, peer: SocketAddr) -> Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(SocketAddr::new(address, 0)).context("binding a transfer socket")?;
    s.connect(peer).with_context(|| format!("connecting the transfer socket to {peer}"))?;
    s.set_nonblocking(true).context("making the transfer socket non-blocking")?;
    Ok(s)
}

/// The block size limit for a link: MTU − 32 (no IP fragmentation), within RFC 2348.
pub fn blksize_limit(mtu: Option<u32>) -> u16 {
    let mtu = mtu.unwrap_or(1500);
    let b = mtu.saturating_sub(OVERHEAD).clamp(512, u32::from(MAX_BLKSIZE));
    b as u16
}

fn link_mtu(iface: &str) -> Option<u32> {
    if iface.is_empty() || iface.contains('/') {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu")).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blksize_follows_the_mtu() {
        assert_eq!(blksize_limit(Some(1500)), 1468);
        assert_eq!(blksize_limit(Some(9000)), 8968);
        assert_eq!(blksize_limit(Some(65536)), MAX_BLKSIZE);
        assert_eq!(blksize_limit(Some(100)), 512);
        assert_eq!(blksize_limit(None), 1468);
    }
}

//! The DHCP socket loops: UDP 67 (and 4011), bound to `listen.interface`.
//!
//! Each packet is parsed, answered by [`reply::respond`], logged as one line and counted;
//! drops are logged through [`DropLog`] (the first few of each reason per interval, then a
//! summary), so a flood of bad packets cannot flood the log. A request of an inventory
//! machine is also a step of its boot trace (`crate::tracer`: queued, never waited for).
//! Packets are handled one at a time, in arrival order: the work per packet is a lookup in
//! memory (plus a small fsync'd write when a pool lease changes), so replies go out within
//! microseconds, well inside the 2 s iPXE waits for ProxyDHCP offers. A pool kept in a
//! database ([`crate::storage::LeasePool::blocks`]) costs a round trip or a few per offer and
//! ACK: the decision then runs inside `block_in_place`, so the runtime's other work moves to
//! another thread while this one waits.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use super::reply::{self, Ctx, Decision, Outcome, Reply, Settings, Via};
use super::request;
use super::seen::Observer;
use crate::config::Config;
use crate::droplog::DropLog;
use crate::metrics::Metrics;
use crate::storage::{leases, Lookups, Storage};
use crate::trace::{DhcpStep, Step, TraceStep};
use crate::tracer::{MaybeTracer, Tracer};

pub const PXE_PORT: u16 = 4011;

/// UDP 67, and 4011 when configured.
pub type Sockets = (std::net::UdpSocket, Option<std::net::UdpSocket>);

/// Bind UDP 67 (and 4011) on `listen.interface` when DHCP is enabled. Needs root (or
/// `CAP_NET_BIND_SERVICE`), not an async runtime.
pub fn bind_sockets(cfg: &Config) -> Result<Option<Sockets>> {
    if !cfg.dhcp.enabled {
        return Ok(None);
    }
    let iface = Some(cfg.listen.interface.as_str());
    let s67 = crate::udp::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, reply::SERVER_PORT), iface, "DHCP")?;
    let s4011 = if cfg.dhcp.port_4011 {
        Some(crate::udp::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PXE_PORT), iface, "DHCP (PXE port)")?)
    } else {
        None
    };
    Ok(Some((s67, s4011)))
}

/// The bound DHCP service (UDP 67, and 4011 when configured).
pub struct DhcpServer {
    sockets: Option<Sockets>,
    settings: Settings,
    /// Machines, their state, the pool's leases, the requests seen (proxy mode).
    storage: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    tracer: MaybeTracer,
}

impl DhcpServer {
    /// Bind the sockets. With `dhcp.enabled = false` nothing is bound and
    /// [`DhcpServer::run`] waits forever.
    pub fn bind(cfg: Arc<Config>, storage: Arc<dyn Storage>, metrics: Arc<Metrics>) -> Result<DhcpServer> {
        let sockets = bind_sockets(&cfg)?;
        Ok(DhcpServer::new(&cfg, storage, metrics, sockets))
    }

    /// Serve on sockets bound earlier ([`bind_sockets`]).
    pub fn new(cfg: &Config, storage: Arc<dyn Storage>, metrics: Arc<Metrics>, sockets: Option<Sockets>) -> DhcpServer {
        DhcpServer { sockets, settings: Settings::from_config(cfg), storage, metrics, tracer: None }
    }

    /// Record each request of an inventory machine in its boot trace.
    pub fn with_tracer(mut self, t: Arc<Tracer>) -> DhcpServer {
        self.tracer = Some(t);
        self
    }

    /// Serve until the task is dropped.
    pub async fn run(self) -> Result<()> {
        let Some((s67, s4011)) = self.sockets else {
            info!("DHCP disabled (dhcp.enabled = false)");
            return std::future::pending().await;
        };
        let s67 = UdpSocket::from_std(s67).context("DHCP: registering the socket with tokio")?;
        let s4011 = match s4011 {
            Some(s) => Some(UdpSocket::from_std(s).context("DHCP: registering the PXE port socket with tokio")?),
            None => None,
        };
        let h = Handler {
            settings: self.settings,
            storage: self.storage,
            metrics: self.metrics,
            tracer: self.tracer,
            drops: DropLog::new("DHCP"),
            seen: Observer::default(),
        };
        info!(
            mode = ?h.settings.mode,
            server = %h.settings.server_ip,
            port_4011 = s4011.is_some(),
            pool = h.storage.leases().has_pool(),
            "DHCP serving"
        );
        // One byte more than is read: a longer datagram is refused, not silently cut.
        let mut b67 = vec![0u8; request::MAX_PACKET + 1];
        let mut b4011 = vec![0u8; request::MAX_PACKET + 1];
        // One future for the whole loop: re-created per packet, its timer would never fire.
        let summaries = h.drops.summarize();
        tokio::pin!(summaries);
        loop {
            tokio::select! {
                _ = &mut summaries => {}
                r = s67.recv_from(&mut b67) => match r {
                    Ok((n, from)) => h.handle(&s67, &b67[..n], from, Via::Dhcp).await,
                    Err(e) => h.recv_error(67, e).await,
                },
                r = recv_opt(s4011.as_ref(), &mut b4011) => match (r, &s4011) {
                    (Ok((n, from @ SocketAddr::V4(a))), Some(s)) => h.handle(s, &b4011[..n], from, Via::Pxe(a)).await,
                    (Ok(_), _) => {}
                    (Err(e), _) => h.recv_error(PXE_PORT, e).await,
                },
            }
        }
    }
}

async fn recv_opt(s: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

struct Handler {
    settings: Settings,
    storage: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    tracer: MaybeTracer,
    drops: DropLog,
    seen: Observer,
}

impl Handler {
    /// A failed receive (an ICMP error surfacing, a full buffer) loses one packet, not the
    /// service: count it, pause briefly so a persistent error cannot spin, go on.
    async fn recv_error(&self, port: u16, e: std::io::Error) {
        self.metrics.drop_reason("dhcp-receive-error");
        if self.drops.note("dhcp-receive-error", None) {
            warn!(port, "DHCP: receiving failed, continuing: {e}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    async fn handle(&self, sock: &UdpSocket, bytes: &[u8], from: SocketAddr, via: Via) {
        let req = match request::parse(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.drop_reason(e.reason());
                if self.drops.note(e.reason(), Some(from.ip())) {
                    info!(from = %from, len = bytes.len(), reason = e.reason(), "DHCP packet dropped: {e}");
                }
                return;
            }
        };
        let st = &*self.storage;
        let lookups = Lookups(st);
        let now = leases::now();
        self.seen.observe(st.dhcp_requests(), &req, via, &lookups, now);
        let ctx = Ctx { settings: &self.settings, backend: &lookups, leases: st.leases(), now };
        let mut d = if st.leases().blocks() && may_block_in_place() {
            // The pool waits for a database: decide where blocking is allowed. This packet is
            // still finished before the next is read, so packets keep their order.
            tokio::task::block_in_place(|| reply::respond(&req, via, &ctx))
        } else {
            reply::respond(&req, via, &ctx)
        };
        if matches!(d.outcome, Outcome::Ignore { reason: "dhcp-unknown-mac", .. }) {
            if let Some(site) = st.other_site(&req.mac) {
                d.outcome = Outcome::Ignore {
                    reason: "dhcp-other-site",
                    why: format!("a machine of site {site}: that site's instances serve it"),
                };
            }
        }
        let port = match via {
            Via::Dhcp => reply::SERVER_PORT,
            Via::Pxe(_) => PXE_PORT,
        };
        let sent = match &d.outcome {
            Outcome::Reply(r) => match send(sock, r).await {
                Ok(()) => {
                    self.metrics.dhcp_reply(r.kind);
                    log_decision(&d, port, &from, &self.drops);
                    true
                }
                Err(e) => {
                    self.metrics.drop_reason("dhcp-send-failed");
                    if self.drops.note("dhcp-send-failed", Some(from.ip())) {
                        warn!(mac = %d.mac, dest = %r.dest, kind = r.kind, "DHCP reply not sent: {e:#}");
                    }
                    false
                }
            },
            Outcome::Ignore { reason, .. } => {
                self.metrics.drop_reason(reason);
                log_decision(&d, port, &from, &self.drops);
                false
            }
            Outcome::Done(_) => {
                log_decision(&d, port, &from, &self.drops);
                false
            }
        };
        if let Some(t) = &self.tracer {
            t.record(&d.mac, || trace_step(&d, &req, via, from, sent));
        }
    }
}

/// `block_in_place` is allowed on a multi-threaded runtime only (tests may run the server on
/// a single thread, where blocking it is all there is to do).
fn may_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// The reply's bytes, sent to its destination.
async fn send(sock: &UdpSocket, r: &Reply) -> Result<()> {
    let buf = r.encode()?;
    sock.send_to(&buf, SocketAddr::V4(r.dest)).await?;
    Ok(())
}

/// The boot trace's record of a decision (`bootsvc/docs/trace.md`).
fn trace_step(d: &Decision, req: &request::Request, via: Via, from: SocketAddr, sent: bool) -> TraceStep {
    let (answer, address) = match &d.outcome {
        Outcome::Reply(r) if sent => (Some(r.kind.to_string()), Some(r.msg.yiaddr()).filter(|a| !a.is_unspecified())),
        _ => (None, None),
    };
    let reason = match &d.outcome {
        Outcome::Reply(_) if !sent => "the reply could not be sent".to_string(),
        Outcome::Reply(_) => d.no_boot.map(|r| format!("no boot file: {r}")).unwrap_or_default(),
        Outcome::Ignore { why, .. } => why.clone(),
        Outcome::Done(what) => what.clone(),
    };
    let vendor_class =
        req.options.get(request::code::CLASS_ID).map(|v| crate::trace::clean(&String::from_utf8_lossy(v), 64));
    TraceStep {
        at_ms: crate::trace::now_ms(),
        mac: d.mac,
        source: Some(from.ip()).filter(|ip| !ip.is_unspecified()),
        run_id: None,
        step: Step::Dhcp(DhcpStep {
            message: format!("{:?}", d.msg_type).to_lowercase(),
            via: match via {
                Via::Dhcp => "dhcp",
                Via::Pxe(_) => "pxe",
            }
            .into(),
            arch: d.client.arch,
            class: d.class.to_string(),
            vendor_class,
            answer,
            address,
            boot_file: d.offered_boot_file().map(|b| crate::trace::clean(b.as_str(), crate::trace::MAX_TEXT)),
            reason: crate::trace::clean(&reason, crate::trace::MAX_TEXT),
        }),
    }
}

/// The one line per decision: who asked, what they are, what they got and why (for ignored
/// requests, as [`DropLog`] allows).
fn log_decision(d: &Decision, port: u16, from: &SocketAddr, drops: &DropLog) {
    let msg = format!("{:?}", d.msg_type).to_lowercase();
    let arch = d.client.arch.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    let class = d.class.to_string();
    let host = d.hostname.as_deref().unwrap_or("-");
    let boot =
        d.boot_file.as_ref().map(|b| b.to_string()).unwrap_or_else(|| format!("none ({})", d.no_boot.unwrap_or("-")));
    let decline = d.decline.as_ref().map_or_else(String::new, |f| format!(", declined with {f}"));
    match &d.outcome {
        Outcome::Reply(r) => info!(
            mac = %d.mac, msg, port, from = %from, class, arch, arch_from = ?d.client.arch_source, host,
            reply = r.kind, yiaddr = %r.msg.yiaddr(), dest = %r.dest, boot_file = %boot,
            declined_with = %d.decline.as_ref().map_or("-", |f| f.as_str()),
            "DHCP {msg} from {}: {} {} ({class}), boot file {boot}{decline}", d.mac, r.kind, r.msg.yiaddr()
        ),
        Outcome::Ignore { reason, why } => {
            // Noise on a shared segment: other clients' traffic for the site server.
            if matches!(*reason, "dhcp-not-pxe" | "dhcp-other-server" | "dhcp-proxy-not-discover") {
                debug!(mac = %d.mac, msg, port, class, arch, host, reason, "DHCP {msg} from {} ignored: {why}", d.mac);
            } else if drops.note(reason, Some(from.ip())) {
                info!(mac = %d.mac, msg, port, from = %from, class, arch, host, reason, "DHCP {msg} from {} ignored: {why}", d.mac);
            }
        }
        Outcome::Done(what) => info!(mac = %d.mac, msg, port, host, "DHCP {msg} from {}: {what}", d.mac),
    }
}

//! Router Advertisements on the provisioning interface: bootsvc answers an IPv6 Router
//! Solicitation with an advertisement that configures nothing ([`packet::advertisement`])
//! unless `router_advertisements.managed` (addresses from DHCPv6) or `.prefix` (SLAAC) say
//! otherwise,
//! so a host that waits for routers before it goes on stops waiting. iPXE waits 13 s for
//! its IPv6 autoconfiguration after DHCP on a link without routers before it runs its boot
//! file, on every boot (`bootsvc/docs/dhcp.md`, "No idle waits"); with the answer it goes on
//! at once.
//!
//! `router_advertisements.mode`: `auto` (default; where bootsvc serves DHCP) answers until another router's
//! advertisement that configures something is heard, then stays quiet for an hour
//! ([`limit::Quiet`]): where a real router serves the segment, its advertisements are the
//! ones hosts should act on. `on` always answers, `off` opens no socket. Answers go to the
//! soliciting host's link-local address (to all nodes when it has none yet), rate limited
//! per source and in all ([`crate::ratelimit::Limiter`], [`limit::RATES`]); malformed packets and packets that crossed a
//! router (hop limit below 255) are dropped and counted.
//!
//! The raw ICMPv6 socket is opened as root in [`bind_socket`], before privileges are
//! dropped; the kernel passes it only solicitations and advertisements (`ICMPV6_FILTER`).

mod limit;
pub mod packet;

use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn6};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::{info, warn};

use crate::config::{Config, RaMode};
use crate::droplog::DropLog;
use crate::metrics::Metrics;
use crate::ratelimit::Limiter;
use crate::udp::set_raw;
use limit::Quiet;
use packet::{Received, HOP_LIMIT, ROUTER_ADVERTISEMENT, ROUTER_SOLICITATION};

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// Larger messages are not solicitations worth reading (the read is cut, then refused).
const MAX_MESSAGE: usize = 1500;
/// `ICMPV6_FILTER` (linux/icmpv6.h), at level `IPPROTO_ICMPV6`: a bitmap of the types the
/// kernel keeps from this socket (a set bit blocks).
const ICMPV6_FILTER: libc::c_int = 1;

/// The socket, bound as root, and the interface it is on.
pub struct RaSocket {
    fd: OwnedFd,
    ifindex: u32,
    interface: String,
}

/// Open the socket for `listen.interface`; `None` when `mode = "off"`, or `auto` without DHCP
/// (`dhcp.enabled = false`: bootsvc is then not known to be on the machines' segment). In
/// `auto` mode a host without IPv6 (or an interface without it) is not an error: a warning,
/// and no answers.
pub fn bind_socket(cfg: &Config) -> Result<Option<RaSocket>> {
    let mode = cfg.router_advertisements.mode;
    if mode == RaMode::Off || (mode == RaMode::Auto && !cfg.dhcp.enabled && !cfg.dhcp6.enabled) {
        return Ok(None);
    }
    match open(&cfg.listen.interface) {
        Ok(s) => Ok(Some(s)),
        Err(e) if mode == RaMode::Auto => {
            warn!("router advertisements off (router_advertisements.mode = \"auto\"): {e:#}");
            Ok(None)
        }
        Err(e) => Err(e.context("router_advertisements.mode = \"on\"")),
    }
}

fn open(interface: &str) -> Result<RaSocket> {
    let what = format!("router advertisements on {interface}");
    let ifindex =
        nix::net::if_::if_nametoindex(interface).with_context(|| format!("{what}: no interface {interface}"))?;
    // SAFETY: socket(2) with constant arguments; the descriptor is owned at once below.
    let raw = unsafe {
        libc::socket(libc::AF_INET6, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, libc::IPPROTO_ICMPV6)
    };
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        bail!("{what}: opening a raw ICMPv6 socket: {e}");
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    socket::setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(interface))
        .with_context(|| format!("{what}: binding to the interface (SO_BINDTODEVICE)"))?;
    let mut blocked = [u32::MAX; 8];
    for t in [ROUTER_SOLICITATION, ROUTER_ADVERTISEMENT] {
        blocked[usize::from(t >> 5)] &= !(1u32 << (t & 31));
    }
    set_raw(&fd, libc::IPPROTO_ICMPV6, ICMPV6_FILTER, &blocked).with_context(|| format!("{what}: ICMPV6_FILTER"))?;
    socket::setsockopt(&fd, sockopt::Ipv6RecvHopLimit, &true).with_context(|| format!("{what}: IPV6_RECVHOPLIMIT"))?;
    let hops: libc::c_int = HOP_LIMIT.into();
    set_raw(&fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &hops).with_context(|| format!("{what}: hop limit"))?;
    set_raw(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &hops)
        .with_context(|| format!("{what}: multicast hop limit"))?;
    // Not our own advertisements back: they would read as another router's.
    set_raw(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &(0 as libc::c_int))
        .with_context(|| format!("{what}: IPV6_MULTICAST_LOOP"))?;
    let index = libc::c_int::try_from(ifindex).context("interface index out of range")?;
    set_raw(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &index)
        .with_context(|| format!("{what}: IPV6_MULTICAST_IF"))?;
    // Solicitations go to all routers: join that group on the interface.
    let group = libc::ipv6_mreq {
        ipv6mr_multiaddr: libc::in6_addr { s6_addr: ALL_ROUTERS.octets() },
        ipv6mr_interface: ifindex,
    };
    set_raw(&fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &group)
        .with_context(|| format!("{what}: joining ff02::2 (IPv6 off on {interface}?)"))?;
    Ok(RaSocket { fd, ifindex, interface: interface.to_string() })
}

pub struct RaServer {
    socket: Option<RaSocket>,
    mode: RaMode,
    offer: packet::Offer,
    metrics: std::sync::Arc<Metrics>,
}

impl RaServer {
    pub fn new(cfg: &Config, metrics: std::sync::Arc<Metrics>, socket: Option<RaSocket>) -> RaServer {
        let ra = &cfg.router_advertisements;
        // `validate` refuses a bad prefix before `serve` gets here.
        let prefix = ra.prefix().and_then(Result::ok);
        RaServer { socket, mode: ra.mode, offer: packet::Offer { managed: ra.managed, prefix }, metrics }
    }

    /// Serve until the task is dropped.
    pub async fn run(self) -> Result<()> {
        let Some(sock) = self.socket else { return std::future::pending().await };
        let (ifindex, interface) = (sock.ifindex, sock.interface.clone());
        // SAFETY: the `OwnedFd` is the descriptor's only owner and moves into the `AsyncFd`,
        // so it stays open and the same for the `AsyncFd`'s whole life.
        let fd = unsafe { AsyncFd::register_with_interest(sock.fd, Interest::READABLE) }
            .map_err(|e| anyhow!("router advertisements: registering the socket with tokio: {e}"))?;
        info!(
            interface = %interface, mode = ?self.mode, managed = self.offer.managed,
            prefix = ?self.offer.prefix, "answering IPv6 router solicitations"
        );
        let drops = DropLog::new("RA");
        let mut h = Handler {
            mode: self.mode,
            advertisement: packet::advertisement(self.offer),
            metrics: &self.metrics,
            drops: &drops,
            limiter: Limiter::new(limit::RATES, Instant::now()),
            quiet: Quiet::default(),
            ifindex,
        };
        let mut buf = vec![0u8; MAX_MESSAGE + 1];
        let summaries = drops.summarize();
        tokio::pin!(summaries);
        loop {
            tokio::select! {
                _ = &mut summaries => {}
                r = fd.readable() => {
                    let mut guard = r.context("router advertisements: waiting on the socket")?;
                    match guard.try_io(|inner| receive(inner.get_ref(), &mut buf)) {
                        Ok(Ok((n, src, hops))) => h.handle(fd.get_ref(), &buf[..n.min(buf.len())], n, src, hops),
                        Ok(Err(e)) => {
                            if h.drop("ra-receive-error", None) {
                                warn!("router advertisements: receiving failed, continuing: {e}");
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                        Err(_would_block) => {}
                    }
                }
            }
        }
    }
}

/// One message: its length (before any cut), its source, and the hop limit it came with.
fn receive(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<(usize, Ipv6Addr, Option<u8>)> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(libc::c_int);
    let msg = socket::recvmsg::<SockaddrIn6>(fd.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_TRUNC)
        .map_err(std::io::Error::from)?;
    let mut hops = None;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::Ipv6HopLimit(h) = c {
            hops = u8::try_from(h).ok();
        }
    }
    let src = msg.address.map_or(Ipv6Addr::UNSPECIFIED, |a| a.ip());
    Ok((msg.bytes, src, hops))
}

struct Handler<'a> {
    mode: RaMode,
    advertisement: Vec<u8>,
    metrics: &'a Metrics,
    drops: &'a DropLog,
    limiter: Limiter,
    quiet: Quiet,
    ifindex: u32,
}

impl Handler<'_> {
    /// Count a drop; `true` when it deserves a log line of its own.
    fn drop(&self, reason: &'static str, src: Option<Ipv6Addr>) -> bool {
        self.metrics.drop_reason(reason);
        self.drops.note(reason, src.map(Into::into))
    }

    fn handle(&mut self, fd: &OwnedFd, msg: &[u8], len: usize, src: Ipv6Addr, hops: Option<u8>) {
        let parsed = if len > MAX_MESSAGE { Err(packet::Refused::TooLong(len)) } else { packet::parse(msg, src, hops) };
        let now = Instant::now();
        match parsed {
            Err(e) => {
                if self.drop(e.reason(), Some(src)) {
                    info!(from = %src, len, reason = e.reason(), "router advertisements: packet dropped: {e}");
                }
            }
            Ok(Received::Advertisement(a)) => {
                if a.configures() && self.mode == RaMode::Auto && self.quiet.heard(now) {
                    info!(
                        router = %src, lifetime = a.router_lifetime, managed = a.managed, other = a.other,
                        "router advertisements: another router serves this link; not answering solicitations for \
                         the next hour (router_advertisements.mode = \"auto\")"
                    );
                }
            }
            Ok(Received::Solicitation) => self.answer(fd, src, now),
        }
    }

    fn answer(&mut self, fd: &OwnedFd, src: Ipv6Addr, now: Instant) {
        if self.mode == RaMode::Auto && self.quiet.is_quiet(now) {
            return;
        }
        if let Err(l) = self.limiter.allow(src, now) {
            let reason = self.limiter.reason(l);
            if self.drop(reason, Some(src)) {
                info!(from = %src, reason, "router solicitation not answered: rate limited");
            }
            return;
        }
        // To the host that asked; to all nodes when it has no address yet (RFC 4861 6.2.6).
        let dest = if src.is_unspecified() { ALL_NODES } else { src };
        let to = SockaddrIn6::from(SocketAddrV6::new(dest, 0, 0, self.ifindex));
        match socket::sendto(fd.as_raw_fd(), &self.advertisement, &to, MsgFlags::empty()) {
            Ok(_) => info!(from = %src, dest = %dest, "router solicitation answered: no default router"),
            Err(e) => {
                if self.drop("ra-send-failed", Some(src)) {
                    warn!(dest = %dest, "router advertisement not sent: {e}");
                }
            }
        }
    }
}

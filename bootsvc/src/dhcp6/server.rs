//! The DHCPv6 socket loop: UDP 547 on `listen.interface`, joined to All_DHCP_Relay_Agents_and_Servers
//! (ff02::1:2). Each message is parsed, answered by [`reply::respond`], logged as one line
//! and counted; drops go through [`DropLog`]. Answers are rate limited per source address
//! and in all ([`RATES`]): a neighbour sending in a loop, or a flood from made-up link-local
//! addresses, gets a bounded number of replies. Replies go back to the client's link-local
//! address and port, on the interface the message came in on.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use osie_api::MacAddr;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use super::packet;
use super::reply::{self, Decision, Outcome, Settings};
use crate::config::Config;
use crate::droplog::DropLog;
use crate::metrics::Metrics;
use crate::ratelimit::{Limiter, Rates};
use crate::storage::{Lookups, Storage};

/// Answers per source: a UEFI client and then iPXE each send a Solicit and a Request (and
/// retransmit them), an installed OS renews; more than 8 at once and one a second after
/// that is a loop or a flood.
pub const RATES: Rates = Rates {
    burst: 8,
    refill: Duration::from_secs(1),
    total_per_refill: 200,
    max_sources: 4096,
    labels: ["dhcp6-rate-source", "dhcp6-rate-total"],
};

const ALL_DHCP_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// The socket, bound as root, and the settings read with it (the server DUID comes from the
/// interface's MAC).
pub struct Bound {
    sock: std::net::UdpSocket,
    settings: Settings,
}

/// Bind UDP 547 on `listen.interface` when `dhcp6.enabled`. Needs root (port below 1024).
pub fn bind_socket(cfg: &Config) -> Result<Option<Bound>> {
    let d = &cfg.dhcp6;
    if !d.enabled {
        return Ok(None);
    }
    let iface = cfg.listen.interface.as_str();
    let what = format!("DHCPv6 on {iface}");
    let (Some(address), Some(public_url)) = (d.address, cfg.public_url6()) else {
        return Err(anyhow!("{what}: dhcp6.address is not set"));
    };
    let ifindex = nix::net::if_::if_nametoindex(iface).with_context(|| format!("{what}: no interface {iface}"))?;
    let mac_text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .with_context(|| format!("{what}: reading the interface's MAC for the server DUID"))?;
    let mac: MacAddr =
        mac_text.trim().parse().map_err(|e| anyhow!("{what}: the interface's address {mac_text:?}: {e}"))?;
    let group = libc::ipv6_mreq {
        ipv6mr_multiaddr: libc::in6_addr { s6_addr: ALL_DHCP_SERVERS.octets() },
        ipv6mr_interface: ifindex,
    };
    let addr = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, reply::SERVER_PORT, 0, 0);
    let sock = crate::udp::bind6(addr, Some(iface), &what, |fd| {
        crate::udp::set_raw(fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &group)
            .with_context(|| format!("{what}: joining ff02::1:2 (IPv6 off on {iface}?)"))
    })?;
    let settings = Settings {
        server_duid: packet::duid_ll(&mac),
        address,
        public_url,
        lease_secs: d.lease_secs,
        uefi_chain: cfg.boot.uefi_chain,
    };
    Ok(Some(Bound { sock, settings }))
}

/// The bound DHCPv6 service.
pub struct Dhcp6Server {
    bound: Bound,
    storage: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

impl Dhcp6Server {
    pub fn new(bound: Bound, storage: Arc<dyn Storage>, metrics: Arc<Metrics>) -> Dhcp6Server {
        Dhcp6Server { bound, storage, metrics }
    }

    /// Serve until the task is dropped.
    pub async fn run(self) -> Result<()> {
        let sock = UdpSocket::from_std(self.bound.sock).context("DHCPv6: registering the socket with tokio")?;
        let settings = self.bound.settings;
        info!(address = %settings.address, boot_base = %settings.public_url, "DHCPv6 serving");
        let drops = DropLog::new("DHCPv6");
        let mut limiter = Limiter::new(RATES, Instant::now());
        let summaries = drops.summarize();
        tokio::pin!(summaries);
        // One byte more than is read: a longer datagram is refused, not silently cut.
        let mut buf = vec![0u8; packet::MAX_PACKET + 1];
        loop {
            tokio::select! {
                _ = &mut summaries => {}
                r = sock.recv_from(&mut buf) => match r {
                    Ok((n, SocketAddr::V6(from))) => {
                        if let Err(l) = limiter.allow(*from.ip(), Instant::now()) {
                            let reason = limiter.reason(l);
                            self.metrics.drop_reason(reason);
                            if drops.note(reason, Some((*from.ip()).into())) {
                                info!(from = %from, reason, "DHCPv6 message not answered: rate limited");
                            }
                            continue;
                        }
                        handle(&sock, &buf[..n], from, &settings, &*self.storage, &self.metrics, &drops).await
                    }
                    Ok((_, SocketAddr::V4(_))) => {}
                    Err(e) => {
                        self.metrics.drop_reason("dhcp6-receive-error");
                        if drops.note("dhcp6-receive-error", None) {
                            warn!("DHCPv6: receiving failed, continuing: {e}");
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
            }
        }
    }
}

async fn handle(
    sock: &UdpSocket,
    bytes: &[u8],
    from: SocketAddrV6,
    settings: &Settings,
    storage: &dyn Storage,
    metrics: &Metrics,
    drops: &DropLog,
) {
    let req = match packet::parse(bytes) {
        Ok(r) => r,
        Err(e) => {
            metrics.drop_reason(e.reason());
            if drops.note(e.reason(), Some((*from.ip()).into())) {
                info!(from = %from, len = bytes.len(), reason = e.reason(), "DHCPv6 message dropped: {e}");
            }
            return;
        }
    };
    let d = reply::respond(&req, *from.ip(), settings, &Lookups(storage));
    match &d.outcome {
        Outcome::Reply { kind, bytes } => match sock.send_to(bytes, SocketAddr::V6(from)).await {
            Ok(_) => {
                metrics.dhcp_reply(kind);
                log_decision(&d, &from, drops);
            }
            Err(e) => {
                metrics.drop_reason("dhcp6-send-failed");
                if drops.note("dhcp6-send-failed", Some((*from.ip()).into())) {
                    warn!(dest = %from, kind, "DHCPv6 reply not sent: {e}");
                }
            }
        },
        Outcome::Ignore { reason, .. } => {
            metrics.drop_reason(reason);
            log_decision(&d, &from, drops);
        }
    }
}

/// The one line per decision: who asked, what they are, what they got and why.
fn log_decision(d: &Decision, from: &SocketAddrV6, drops: &DropLog) {
    let mac = d.mac.map_or_else(|| "-".to_string(), |m| m.to_string());
    let class = d.class.map_or_else(|| "-".to_string(), |c| c.to_string());
    let host = d.hostname.as_deref().unwrap_or("-");
    let addr = d.address.map_or_else(|| "none".to_string(), |a| a.to_string());
    let boot = d.boot_file.clone().unwrap_or_else(|| format!("none ({})", d.no_boot.unwrap_or("-")));
    let msg = d.msg_type;
    match &d.outcome {
        Outcome::Reply { kind, .. } => info!(
            mac, msg, from = %from, class, host, reply = kind, address = %addr, boot_file = %boot,
            "DHCPv6 message {msg} from {mac}: {kind} {addr} ({class}), boot file {boot}"
        ),
        Outcome::Ignore { reason, why } => {
            if *reason == "dhcp6-other-server" {
                debug!(mac, msg, from = %from, reason, "DHCPv6 message {msg} from {mac} ignored: {why}");
            } else if drops.note(reason, Some((*from.ip()).into())) {
                info!(mac, msg, from = %from, class, host, reason, "DHCPv6 message {msg} from {mac} ignored: {why}");
            }
        }
    }
}

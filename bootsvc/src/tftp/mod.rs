//! TFTP: read-only, octet, jailed to `tftp.root`; blksize, tsize and windowsize.
//!
//! - [`crate::jail`]: which names may be opened (no `..`, no absolute escape, no symlink
//!   escape), shared with the HTTP file routes.
//! - [`handler`]: async-tftp's `Handler`: refusals and transfers counted and logged.
//!
//! async-tftp runs on the smol family of crates (async-io, async-executor), not tokio: the
//! server gets its own thread with its own executor, so a burst of transfers never competes
//! with DHCP and HTTP on tokio's threads, and dropping [`TftpServer::run`]'s future stops
//! the thread (and every transfer in it).
//!
//! Abandoned transfers: a client that sends ERROR after the OACK (UEFI does this to learn
//! `tsize`) or simply goes away is dropped after `max_send_retries` retransmissions
//! `timeout_secs` apart, i.e. within `(max_send_retries + 1) × timeout_secs` (4 s with the
//! defaults). The client's own `timeout` option is ignored for that reason.
//!
//! Operator notes: `bootsvc/docs/tftp.md`.
//!
//! Interface used by the service wiring (`serve`): bind first, then run.

pub mod handler;

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_tftp::server::TftpServerBuilder;
use tracing::info;

use crate::config::Config;
use crate::jail::Jail;
use crate::metrics::Metrics;

pub const TFTP_PORT: u16 = 69;
/// Largest block size any client gets (RFC 2348's maximum).
pub const MAX_BLKSIZE: u16 = 65464;
/// Largest window (RFC 7440) granted: bounds the memory one transfer holds.
pub const MAX_WINDOW: u16 = 64;
/// IPv4 header + UDP header + TFTP DATA header.
const OVERHEAD: u32 = 20 + 8 + 4;

/// Bind `listen.address:69` on `listen.interface` when TFTP is enabled. Needs root (or
/// `CAP_NET_BIND_SERVICE`), not an async runtime.
pub fn bind_socket(cfg: &Config) -> Result<Option<std::net::UdpSocket>> {
    if !cfg.tftp.enabled {
        return Ok(None);
    }
    let iface = cfg.listen.interface.as_str();
    crate::udp::bind(SocketAddrV4::new(cfg.listen.address, TFTP_PORT), Some(iface), "TFTP").map(Some)
}

/// The bound TFTP service (UDP 69).
pub struct TftpServer {
    /// Nothing when TFTP is disabled.
    bound: Option<(std::net::UdpSocket, Arc<Jail>)>,
    timeout: Duration,
    max_send_retries: u32,
    blksize_limit: u16,
    metrics: Arc<Metrics>,
}

impl TftpServer {
    /// Open the root and bind `listen.address:69` on `listen.interface`. With
    /// `tftp.enabled = false` nothing is bound and [`TftpServer::run`] waits forever.
    pub fn bind(cfg: Arc<Config>, metrics: Arc<Metrics>) -> Result<TftpServer> {
        let socket = bind_socket(&cfg)?;
        TftpServer::new(cfg, metrics, socket)
    }

    /// Serve on a socket bound earlier ([`bind_socket`]); opens the root.
    pub fn new(cfg: Arc<Config>, metrics: Arc<Metrics>, socket: Option<std::net::UdpSocket>) -> Result<TftpServer> {
        let iface = cfg.listen.interface.as_str();
        let bound = match socket {
            Some(socket) => Some((socket, Arc::new(Jail::new(&cfg.tftp.root)?))),
            None => None,
        };
        Ok(TftpServer {
            bound,
            timeout: Duration::from_secs(cfg.tftp.timeout_secs.max(1)),
            max_send_retries: cfg.tftp.max_send_retries,
            blksize_limit: blksize_limit(link_mtu(iface)),
            metrics,
        })
    }

    /// Serve until the task is dropped.
    pub async fn run(self) -> Result<()> {
        let Some((socket, jail)) = self.bound else {
            info!("TFTP disabled (tftp.enabled = false)");
            return std::future::pending().await;
        };
        let addr = socket.local_addr().context("TFTP: socket address")?;
        info!(
            addr = %addr, root = %jail.root().display(), blksize_limit = self.blksize_limit,
            timeout_secs = self.timeout.as_secs(), max_send_retries = self.max_send_retries, "TFTP serving"
        );
        let handler = handler::Handler { jail, metrics: self.metrics };
        let builder = TftpServerBuilder::with_handler(handler)
            .std_socket(socket)
            .context("TFTP: registering the socket with async-io")?
            .timeout(self.timeout)
            .ignore_client_timeout()
            .max_send_retries(self.max_send_retries)
            .block_size_limit(self.blksize_limit)
            .window_size_limit(MAX_WINDOW);

        // Dropping `_stop` (when this future is dropped) ends the thread's serve loop.
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel::<Result<()>>();
        std::thread::Builder::new()
            .name("tftp".into())
            .spawn(move || {
                let r = async_io::block_on(async move {
                    let server = builder.build().await.context("TFTP: starting async-tftp")?;
                    let serve = async { server.serve().await.context("TFTP: serving") };
                    let stop = async {
                        let _ = stopped.await;
                        Ok(())
                    };
                    futures_lite::future::or(serve, stop).await
                });
                let _ = done_tx.send(r);
            })
            .context("TFTP: starting its thread")?;
        done.await.context("TFTP: its thread ended without a result")?
    }
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

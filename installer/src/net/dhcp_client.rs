//! The DHCP exchange over a real socket: a UDP socket on port 68 bound to the boot NIC
//! (`SO_BINDTODEVICE`, `SO_BROADCAST`), DISCOVER/REQUEST to 255.255.255.255:67, replies
//! asked to be broadcast (the interface has no address yet). Retransmits with exponential
//! backoff and jitter (RFC 2131 §4.1) until a deadline.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::socket::{bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use osie_api::MacAddr;

use super::dhcp::{self, Lease, Reply};

#[derive(Debug, Clone)]
pub struct Options {
    /// Give up (error) after this long without a lease.
    pub deadline: Duration,
    /// Wait for the first OFFER this long; doubles per retransmission up to `max_wait`.
    pub first_wait: Duration,
    pub max_wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            deadline: Duration::from_secs(300),
            first_wait: Duration::from_secs(2),
            max_wait: Duration::from_secs(32),
        }
    }
}

/// Wait before retransmission number `attempt` (0-based): `first * 2^attempt`, capped at
/// `max`, then moved by up to ±1 s (`jitter` in [-1, 1]) so machines that powered on together
/// do not retransmit in lockstep. Never below 500 ms.
pub fn backoff(attempt: u32, first: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = first.saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX)).min(max);
    let ms = exp.as_millis() as f64 + jitter.clamp(-1.0, 1.0) * 1000.0;
    Duration::from_millis(ms.max(500.0) as u64)
}

/// Obtain a lease on `ifname` (which must be up). Errors name the interface, how long and
/// how many DISCOVERs it tried.
pub fn obtain(ifname: &str, mac: MacAddr, opts: &Options) -> Result<Lease> {
    let sock = open_socket(ifname).with_context(|| format!("opening the DHCP client socket on {ifname}"))?;
    let start = Instant::now();
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let mut attempt = 0u32;
    let mut last = String::from("no OFFER received");
    while start.elapsed() < opts.deadline {
        let xid = random_u32();
        let secs = start.elapsed().as_secs().min(u16::MAX as u64) as u16;
        sock.send_to(&dhcp::discover(mac, xid, secs), server)
            .with_context(|| format!("sending DHCPDISCOVER on {ifname}"))?;
        tracing::debug!(ifname, xid, attempt, "DHCPDISCOVER sent");
        let wait = backoff(attempt, opts.first_wait, opts.max_wait, jitter());
        attempt += 1;
        let offer = match receive(&sock, mac, xid, wait)? {
            Some(Reply::Offer(o)) => o,
            Some(other) => {
                last = format!("unexpected reply to DISCOVER: {other:?}");
                continue;
            }
            None => continue,
        };
        tracing::info!(ifname, address = %offer.address, server = %offer.server, "DHCPOFFER");
        // SELECTING → REQUESTING: a few tries, then back to DISCOVER.
        for r in 0..3 {
            let secs = start.elapsed().as_secs().min(u16::MAX as u64) as u16;
            sock.send_to(&dhcp::request(mac, xid, secs, &offer), server)
                .with_context(|| format!("sending DHCPREQUEST on {ifname}"))?;
            match receive(&sock, mac, xid, backoff(r, opts.first_wait, opts.max_wait, jitter()))? {
                Some(Reply::Ack(lease)) => {
                    tracing::info!(ifname, address = %lease.address, prefix = lease.prefix, lease_secs = ?lease.lease_secs, "DHCPACK");
                    return Ok(lease);
                }
                Some(Reply::Nak(why)) => {
                    last = format!("DHCPNAK from {}: {why}", offer.server);
                    tracing::warn!(ifname, "{last}");
                    break;
                }
                Some(Reply::Offer(_)) | None => last = "no DHCPACK for our REQUEST".into(),
            }
        }
    }
    bail!("no DHCP lease on {ifname} ({mac}) after {} s and {attempt} DHCPDISCOVERs: {last}", start.elapsed().as_secs())
}

/// One renewal: REQUEST unicast to the lease's server, wait for its ACK. The new lease on
/// success; an error on NAK or silence (the caller tries again later).
pub fn renew_once(ifname: &str, mac: MacAddr, lease: &Lease, wait: Duration) -> Result<Lease> {
    let sock = open_socket(ifname).with_context(|| format!("opening the DHCP client socket on {ifname}"))?;
    let xid = random_u32();
    sock.send_to(&dhcp::renew(mac, xid, lease), SocketAddrV4::new(lease.server, 67))
        .with_context(|| format!("sending the renewal to {}", lease.server))?;
    match receive(&sock, mac, xid, wait)? {
        Some(Reply::Ack(l)) if l.address == lease.address => Ok(l),
        Some(Reply::Ack(l)) => bail!("the server renewed with another address {} (had {})", l.address, lease.address),
        Some(Reply::Nak(why)) => bail!("DHCPNAK from {} on renewal: {why}", lease.server),
        _ => bail!("no answer from {} to the renewal of {}", lease.server, lease.address),
    }
}

/// Keep the lease for as long as the installer runs: renew at half the lease time (T1),
/// retrying at half the remaining time, like RFC 2131 clients. The address stays
/// configured either way; renewing keeps the server from giving it to another machine.
pub fn spawn_renewal(ifname: String, mac: MacAddr, mut lease: Lease) {
    let Some(mut secs) = lease.lease_secs else { return };
    let r = std::thread::Builder::new().name("dhcp-renew".into()).spawn(move || {
        let mut left = Duration::from_secs(secs as u64);
        let mut wait = left / 2;
        loop {
            std::thread::sleep(wait.max(Duration::from_secs(10)));
            left = left.saturating_sub(wait);
            match renew_once(&ifname, mac, &lease, Duration::from_secs(5)) {
                Ok(l) => {
                    secs = l.lease_secs.unwrap_or(u32::MAX);
                    tracing::info!(ifname, address = %l.address, lease_secs = secs, "DHCP lease renewed");
                    lease = l;
                    left = Duration::from_secs(secs as u64);
                    wait = left / 2;
                }
                Err(e) => {
                    tracing::warn!(ifname, "DHCP renewal: {e:#}");
                    wait = (left / 2).max(Duration::from_secs(60));
                }
            }
        }
    });
    if let Err(e) = r {
        tracing::warn!("cannot start the DHCP renewal thread: {e}");
    }
}

/// The next reply to transaction `xid` within `wait`; `None` on timeout.
fn receive(sock: &UdpSocket, mac: MacAddr, xid: u32, wait: Duration) -> Result<Option<Reply>> {
    let until = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        sock.set_read_timeout(Some(left))?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                if let Some(r) = dhcp::parse_reply(&buf[..n], mac, xid) {
                    return Ok(Some(r));
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("receiving DHCP replies"),
        }
    }
}

fn open_socket(ifname: &str) -> Result<UdpSocket> {
    let fd: OwnedFd =
        socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).context("socket")?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
    setsockopt(&fd, sockopt::Broadcast, &true).context("SO_BROADCAST")?;
    setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(ifname)).context("SO_BINDTODEVICE")?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::new(0, 0, 0, 0, 68)).context("binding 0.0.0.0:68")?;
    Ok(UdpSocket::from(fd))
}

/// A random u32 from the kernel (transaction ids, jitter).
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most 4 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    if n != 4 {
        // No entropy yet is not a reason to fail a DHCP exchange: mix the clock instead.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(16);
    }
    u32::from_ne_bytes(b)
}

fn jitter() -> f64 {
    (random_u32() as f64 / u32::MAX as f64) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let s = Duration::from_secs;
        assert_eq!(backoff(0, s(2), s(32), 0.0), s(2));
        assert_eq!(backoff(1, s(2), s(32), 0.0), s(4));
        assert_eq!(backoff(3, s(2), s(32), 0.0), s(16));
        assert_eq!(backoff(4, s(2), s(32), 0.0), s(32));
        assert_eq!(backoff(30, s(2), s(32), 0.0), s(32));
        assert_eq!(backoff(0, s(2), s(32), 1.0), s(3));
        assert_eq!(backoff(0, s(2), s(32), -1.0), s(1));
        assert_eq!(backoff(0, Duration::from_millis(200), s(32), -1.0), Duration::from_millis(500));
        assert_eq!(backoff(0, s(2), s(32), 7.0), s(3), "jitter is clamped to ±1 s");
    }

    #[test]
    fn random_ids_differ() {
        let v: std::collections::BTreeSet<u32> = (0..16).map(|_| random_u32()).collect();
        assert!(v.len() > 1);
    }
}

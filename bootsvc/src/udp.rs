//! UDP sockets for the privileged protocol ports (DHCP 67 and 4011, TFTP 69 over IPv4 and
//! IPv6), made in
//! `bind` before privileges are dropped.

use std::net::{SocketAddrV4, SocketAddrV6, UdpSocket};

use anyhow::{Context, Result};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6};
use std::os::fd::{AsRawFd, OwnedFd};

/// Receive buffer asked for: a rack powering on sends hundreds of DISCOVERs within
/// milliseconds, and the kernel's default (about 200 KiB, some 150 packets) drops the rest
/// before the server reads them (the clients then wait a second or more to retry).
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// A non-blocking UDP socket bound to `addr`, limited to `interface` (`SO_BINDTODEVICE`)
/// when one is given, so the service answers only on the machines' network and can run
/// beside another DHCP server on another interface. Broadcast sends are allowed, and the
/// receive buffer is [`RECEIVE_BUFFER`] (`SO_RCVBUFFORCE` as root, past `rmem_max`; else as
/// much as `rmem_max` allows).
pub fn bind(addr: SocketAddrV4, interface: Option<&str>, what: &str) -> Result<UdpSocket> {
    let fd = udp_socket(AddressFamily::Inet, interface, what)?;
    socket::setsockopt(&fd, sockopt::Broadcast, &true).with_context(|| format!("{what}: setting SO_BROADCAST"))?;
    socket::bind(fd.as_raw_fd(), &SockaddrIn::from(addr)).with_context(|| format!("{what}: binding UDP {addr}"))?;
    Ok(UdpSocket::from(fd))
}

/// An IPv6 UDP socket bound to `addr` (IPv6 only), limited to `interface` when one is given,
/// with the receive buffer of [`bind`]. The address may still be tentative (duplicate address
/// detection runs for a second or so after it is added): `IP_FREEBIND` lets the bind succeed,
/// and the socket answers once the address is usable. `before_bind` sets what must be set on
/// the unbound socket (a multicast group).
pub fn bind6(
    addr: SocketAddrV6,
    interface: Option<&str>,
    what: &str,
    before_bind: impl FnOnce(&OwnedFd) -> Result<()>,
) -> Result<UdpSocket> {
    let fd = udp_socket(AddressFamily::Inet6, interface, what)?;
    socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true).with_context(|| format!("{what}: IPV6_V6ONLY"))?;
    socket::setsockopt(&fd, sockopt::IpFreebind, &true).with_context(|| format!("{what}: setting IP_FREEBIND"))?;
    before_bind(&fd)?;
    socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(addr)).with_context(|| format!("{what}: binding UDP {addr}"))?;
    Ok(UdpSocket::from(fd))
}

/// A non-blocking UDP socket of `family` with `SO_REUSEADDR`, the receive buffer and
/// `SO_BINDTODEVICE` set, not yet bound.
fn udp_socket(family: AddressFamily, interface: Option<&str>, what: &str) -> Result<OwnedFd> {
    let fd = socket::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .with_context(|| format!("{what}: creating a UDP socket"))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).with_context(|| format!("{what}: setting SO_REUSEADDR"))?;
    if socket::setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
        // Not root: the kernel caps this at net.core.rmem_max, which is fine.
        let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &RECEIVE_BUFFER);
    }
    if let Some(ifname) = interface.filter(|i| !i.is_empty()) {
        socket::setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(ifname))
            .with_context(|| format!("{what}: binding to interface {ifname} (SO_BINDTODEVICE)"))?;
    }
    Ok(fd)
}

/// setsockopt(2) with a plain value, for options nix does not name (ICMPv6 filters, IPv6
/// multicast on one interface).
pub fn set_raw<T>(fd: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: &T) -> std::io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>()).map_err(std::io::Error::other)?;
    // SAFETY: `value` points to a live `T` of `len` bytes for the length of the call.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

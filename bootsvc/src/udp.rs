//! UDP sockets for the privileged protocol ports (DHCP 67 and 4011, TFTP 69), made in
//! `bind` before privileges are dropped.

use std::net::{SocketAddrV4, UdpSocket};

use anyhow::{Context, Result};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::os::fd::AsRawFd;

/// A non-blocking UDP socket bound to `addr`, limited to `interface` (`SO_BINDTODEVICE`)
/// when one is given, so the service answers only on the machines' network and can run
/// beside another DHCP server on another interface. Broadcast sends are allowed.
pub fn bind(addr: SocketAddrV4, interface: Option<&str>, what: &str) -> Result<UdpSocket> {
    let fd =
        socket::socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
            .with_context(|| format!("{what}: creating a UDP socket"))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).with_context(|| format!("{what}: setting SO_REUSEADDR"))?;
    socket::setsockopt(&fd, sockopt::Broadcast, &true).with_context(|| format!("{what}: setting SO_BROADCAST"))?;
    if let Some(ifname) = interface.filter(|i| !i.is_empty()) {
        socket::setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(ifname))
            .with_context(|| format!("{what}: binding to interface {ifname} (SO_BINDTODEVICE)"))?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrIn::from(addr)).with_context(|| format!("{what}: binding UDP {addr}"))?;
    Ok(UdpSocket::from(fd))
}

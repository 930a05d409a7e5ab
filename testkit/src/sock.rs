//! UDP sockets for the clients: bound to an interface when asked (a DHCP client without an
//! address must send and hear broadcasts on its own link), with broadcast allowed and a
//! receive buffer large enough that a burst of answers to hundreds of clients is not
//! dropped by the kernel before the generator reads it.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result};

/// A non-blocking UDP socket bound to `addr` (optionally `SO_BINDTODEVICE` `interface`).
pub fn udp(addr: SocketAddrV4, interface: Option<&str>, rcvbuf: usize) -> Result<UdpSocket> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("creating a UDP socket");
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    setsockopt(&fd, libc::SO_REUSEADDR, &one).context("SO_REUSEADDR")?;
    setsockopt(&fd, libc::SO_BROADCAST, &one).context("SO_BROADCAST")?;
    let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
    // SO_RCVBUFFORCE passes over net.core.rmem_max (we are root); fall back to the capped one.
    if setsockopt(&fd, libc::SO_RCVBUFFORCE, &size).is_err() {
        setsockopt(&fd, libc::SO_RCVBUF, &size).context("SO_RCVBUF")?;
    }
    if let Some(ifname) = interface {
        // SAFETY: the pointer and length describe ifname's bytes.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                ifname.as_ptr().cast(),
                ifname.len() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("SO_BINDTODEVICE {ifname}"));
        }
    }
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sa is a valid sockaddr_in of the given length.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("binding UDP {addr}"));
    }
    Ok(UdpSocket::from(fd))
}

fn setsockopt(fd: &OwnedFd, opt: libc::c_int, val: &libc::c_int) -> io::Result<()> {
    // SAFETY: val points to a c_int of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

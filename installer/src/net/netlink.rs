//! rtnetlink over a raw `NETLINK_ROUTE` socket: list links, set one up, add an IPv4
//! address and a default route, list IPv6 addresses (SLAAC's, formed by the kernel). No `ip` binary in the initramfs, and a few message types are
//! all the installer needs. Message building and parsing are pure functions.
//!
//! Wire format (all host-endian): `nlmsghdr` (16 bytes) + a fixed family header
//! (`ifinfomsg` 16, `ifaddrmsg` 8, `rtmsg` 12) + attributes (`rtattr`: len u16, type u16,
//! data, padded to 4).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const IFA_FLAGS: u16 = 8;
/// `IFA_F_DADFAILED`, `IFA_F_TENTATIVE`: the address cannot be used (yet, or at all).
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_CARRIER: u16 = 33;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const IFF_UP: u32 = 0x1;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// One network interface as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
    pub carrier: Option<bool>,
    pub mtu: Option<u32>,
}

/// One IPv6 address of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr6 {
    pub index: u32,
    pub address: Ipv6Addr,
    pub prefix: u8,
    /// `RT_SCOPE_UNIVERSE` (0) for global and unique local addresses, 253 for link-local.
    pub scope: u8,
    /// `IFA_F_*` (the 32-bit `IFA_FLAGS` when the kernel sends it).
    pub flags: u32,
}

impl Addr6 {
    /// Global scope and done with duplicate address detection: usable to reach bootsvc.
    pub fn usable_global(&self) -> bool {
        self.scope == RT_SCOPE_UNIVERSE && self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0
    }
}

/// A netlink request: header + family header + attributes, with the length filled in.
pub fn message(ty: u16, flags: u16, seq: u32, family_hdr: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; NLMSG_HDRLEN];
    m.extend_from_slice(family_hdr);
    pad4(&mut m);
    for (t, data) in attrs {
        let len = 4 + data.len() as u16;
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&t.to_ne_bytes());
        m.extend_from_slice(data);
        pad4(&mut m);
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = libc::AF_UNSPEC as u8;
    h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

/// `RTM_NEWLINK` setting IFF_UP (and the MTU when given).
pub fn link_up_msg(seq: u32, index: u32, mtu: Option<u32>) -> Vec<u8> {
    let mtu_b = mtu.map(|m| m.to_ne_bytes());
    let attrs: Vec<(u16, &[u8])> = mtu_b.as_ref().map(|b| (IFLA_MTU, &b[..])).into_iter().collect();
    message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, &ifinfomsg(index, IFF_UP, IFF_UP), &attrs)
}

/// `RTM_NEWADDR` for `addr/prefix` with its broadcast address.
pub fn addr_add_msg(seq: u32, index: u32, addr: Ipv4Addr, prefix: u8) -> Vec<u8> {
    let mut h = [0u8; 8];
    h[0] = libc::AF_INET as u8;
    h[1] = prefix;
    h[3] = RT_SCOPE_UNIVERSE;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) };
    let brd = Ipv4Addr::from(u32::from(addr) | !mask).octets();
    let a = addr.octets();
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    message(RTM_NEWADDR, flags, seq, &h, &[(IFA_LOCAL, &a), (IFA_ADDRESS, &a), (IFA_BROADCAST, &brd)])
}

/// `RTM_NEWROUTE` 0.0.0.0/0 via `gateway` out of `index` (replacing any default).
pub fn default_route_msg(seq: u32, index: u32, gateway: Ipv4Addr) -> Vec<u8> {
    let h = [libc::AF_INET as u8, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0, 0, 0, 0];
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    let oif = index.to_ne_bytes();
    message(RTM_NEWROUTE, flags, seq, &h, &[(RTA_GATEWAY, &gateway.octets()), (RTA_OIF, &oif)])
}

pub fn dump_links_msg(seq: u32) -> Vec<u8> {
    message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, &ifinfomsg(0, 0, 0), &[])
}

/// `RTM_GETADDR` dump of the IPv6 addresses.
pub fn dump_addrs6_msg(seq: u32) -> Vec<u8> {
    let h = [libc::AF_INET6 as u8, 0, 0, 0, 0, 0, 0, 0];
    message(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, &h, &[])
}

/// A `RTM_NEWADDR` payload (from a dump) as an [`Addr6`]; `None` for other families or
/// without an address.
pub fn parse_addr6(payload: &[u8]) -> Option<Addr6> {
    let h = payload.get(0..8)?;
    if i32::from(h[0]) != libc::AF_INET6 {
        return None;
    }
    let index = u32::from_ne_bytes(h[4..8].try_into().ok()?);
    let (mut address, mut flags) = (None, u32::from(h[2]));
    for (ty, data) in attrs(payload, 8) {
        match ty {
            IFA_ADDRESS if data.len() == 16 => address = Some(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?)),
            IFA_FLAGS if data.len() == 4 => flags = u32::from_ne_bytes(data.try_into().ok()?),
            _ => {}
        }
    }
    Some(Addr6 { index, address: address?, prefix: h[1], scope: h[3], flags })
}

/// Split a receive buffer into `(type, seq, payload)` messages.
pub fn split(buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap_or_default());
        out.push((ty, seq, &buf[off + NLMSG_HDRLEN..off + len]));
        off += len.div_ceil(4) * 4;
    }
    out
}

/// Attributes after a family header of `hdr_len` bytes.
fn attrs(payload: &[u8], hdr_len: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = hdr_len;
    while off + 4 <= payload.len() {
        let len = u16::from_ne_bytes([payload[off], payload[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([payload[off + 2], payload[off + 3]]) & 0x3fff;
        if len < 4 || off + len > payload.len() {
            break;
        }
        out.push((ty, &payload[off + 4..off + len]));
        off += len.div_ceil(4) * 4;
    }
    out
}

/// A `RTM_NEWLINK` payload (from a dump) as a [`Link`].
pub fn parse_link(payload: &[u8]) -> Option<Link> {
    let index = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let flags = u32::from_ne_bytes(payload.get(8..12)?.try_into().ok()?);
    let mut l = Link { index, name: String::new(), mac: None, up: flags & IFF_UP != 0, carrier: None, mtu: None };
    for (ty, data) in attrs(payload, 16) {
        match ty {
            IFLA_IFNAME => l.name = String::from_utf8_lossy(data).trim_end_matches('\0').to_string(),
            IFLA_ADDRESS if data.len() == 6 => l.mac = data.try_into().ok(),
            IFLA_CARRIER if !data.is_empty() => l.carrier = Some(data[0] != 0),
            IFLA_MTU if data.len() == 4 => l.mtu = Some(u32::from_ne_bytes(data.try_into().ok()?)),
            _ => {}
        }
    }
    Some(l)
}

/// The errno in an `NLMSG_ERROR` payload (0 = ACK).
pub fn parse_error(payload: &[u8]) -> Option<i32> {
    Some(-i32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?))
}

/// A bound `NETLINK_ROUTE` socket in the calling thread's network namespace.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> Result<Netlink> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("opening a NETLINK_ROUTE socket");
        }
        // SAFETY: `raw` is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value (pid 0 = kernel assigns).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: bind with a correctly sized sockaddr_nl.
        let r = unsafe {
            libc::bind(fd.as_raw_fd(), (&sa as *const libc::sockaddr_nl).cast(), std::mem::size_of_val(&sa) as u32)
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("binding the netlink socket");
        }
        Ok(Netlink { fd, seq: 1 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, msg: &[u8]) -> Result<()> {
        // SAFETY: send from a valid buffer of msg.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("sending a netlink request");
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        loop {
            // SAFETY: recv into a valid buffer of buf.len() bytes.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("receiving a netlink reply");
            }
        }
    }

    /// Send a request with NLM_F_ACK and wait for its ACK; `Err(errno)` from the kernel.
    fn call(&mut self, msg: Vec<u8>) -> Result<std::result::Result<(), i32>> {
        let seq = u32::from_ne_bytes(msg[8..12].try_into().unwrap_or_default());
        self.send(&msg)?;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            for (ty, s, payload) in split(&buf[..n]) {
                if ty == NLMSG_ERROR && s == seq {
                    return Ok(match parse_error(payload) {
                        Some(0) => Ok(()),
                        Some(e) => Err(e),
                        None => Err(libc::EIO),
                    });
                }
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let seq = self.next_seq();
        self.dump(dump_links_msg(seq), RTM_NEWLINK, "listing links", parse_link)
    }

    /// Every IPv6 address of every interface.
    pub fn addresses6(&mut self) -> Result<Vec<Addr6>> {
        let seq = self.next_seq();
        self.dump(dump_addrs6_msg(seq), RTM_NEWADDR, "listing IPv6 addresses", parse_addr6)
    }

    /// Send a dump request and parse each message of type `ty` until `NLMSG_DONE`.
    fn dump<T>(&mut self, req: Vec<u8>, ty: u16, what: &str, parse: fn(&[u8]) -> Option<T>) -> Result<Vec<T>> {
        let seq = u32::from_ne_bytes(req[8..12].try_into().unwrap_or_default());
        self.send(&req)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            for (t, s, payload) in split(&buf[..n]) {
                if s != seq {
                    continue;
                }
                match t {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let e = parse_error(payload).unwrap_or(libc::EIO);
                        bail!("{what}: {}", std::io::Error::from_raw_os_error(e));
                    }
                    t if t == ty => out.extend(parse(payload)),
                    _ => {}
                }
            }
        }
    }

    pub fn set_up(&mut self, link: &Link, mtu: Option<u32>) -> Result<()> {
        let seq = self.next_seq();
        self.call(link_up_msg(seq, link.index, mtu))?
            .map_err(errno)
            .with_context(|| format!("setting {} up", link.name))
    }

    /// Add `addr/prefix`; an address that is already there is fine.
    pub fn add_address(&mut self, link: &Link, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let seq = self.next_seq();
        match self.call(addr_add_msg(seq, link.index, addr, prefix))? {
            Ok(()) | Err(libc::EEXIST) => Ok(()),
            Err(e) => Err(errno(e)).with_context(|| format!("adding {addr}/{prefix} to {}", link.name)),
        }
    }

    pub fn set_default_route(&mut self, link: &Link, gateway: Ipv4Addr) -> Result<()> {
        let seq = self.next_seq();
        self.call(default_route_msg(seq, link.index, gateway))?
            .map_err(errno)
            .with_context(|| format!("adding the default route via {gateway} dev {}", link.name))
    }
}

fn errno(e: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_length_prefixed_and_aligned() {
        let m = addr_add_msg(9, 3, Ipv4Addr::new(192, 0, 2, 10), 24);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize, m.len());
        assert_eq!(m.len() % 4, 0);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWADDR);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 9);
        // family header: AF_INET, prefix 24, ifindex 3
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(m[17], 24);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 3);
        let a = attrs(&m[16..], 8);
        assert_eq!(
            a,
            vec![
                (IFA_LOCAL, &[192, 0, 2, 10][..]),
                (IFA_ADDRESS, &[192, 0, 2, 10][..]),
                (IFA_BROADCAST, &[192, 0, 2, 255][..])
            ]
        );
    }

    #[test]
    fn link_payload_round_trips_through_the_parser() {
        let mac = [0x52, 0x54, 0, 1, 2, 3];
        let m = message(
            RTM_NEWLINK,
            0,
            1,
            &ifinfomsg(7, IFF_UP, 0),
            &[(IFLA_IFNAME, b"eth0\0"), (IFLA_ADDRESS, &mac), (IFLA_CARRIER, &[1]), (IFLA_MTU, &1500u32.to_ne_bytes())],
        );
        let msgs = split(&m);
        assert_eq!(msgs.len(), 1);
        let l = parse_link(msgs[0].2).unwrap();
        assert_eq!(
            l,
            Link { index: 7, name: "eth0".into(), mac: Some(mac), up: true, carrier: Some(true), mtu: Some(1500) }
        );
    }

    #[test]
    fn errors_and_truncation() {
        let mut e = message(NLMSG_ERROR, 0, 5, &(-libc::EEXIST).to_ne_bytes(), &[]);
        assert_eq!(parse_error(split(&e)[0].2), Some(libc::EEXIST));
        e.truncate(10);
        assert!(split(&e).is_empty());
    }

    #[test]
    fn default_route_names_gateway_and_device() {
        let m = default_route_msg(1, 4, Ipv4Addr::new(192, 0, 2, 1));
        let a = attrs(&m[16..], 12);
        assert_eq!(a[0], (RTA_GATEWAY, &[192, 0, 2, 1][..]));
        assert_eq!(a[1], (RTA_OIF, &4u32.to_ne_bytes()[..]));
        assert_eq!(m[16 + 4], RT_TABLE_MAIN);
    }

    #[test]
    fn parses_ipv6_addresses() {
        let a: Ipv6Addr = "2001:db8::5054:ff:fe12:3456".parse().unwrap();
        // ifaddrmsg: AF_INET6, /64, flags 0x40 (tentative) in the header, scope 0, index 3.
        let mut p = vec![libc::AF_INET6 as u8, 64, 0x40, 0];
        p.extend_from_slice(&3u32.to_ne_bytes());
        p.extend_from_slice(&20u16.to_ne_bytes());
        p.extend_from_slice(&IFA_ADDRESS.to_ne_bytes());
        p.extend_from_slice(&a.octets());
        let got = parse_addr6(&p).unwrap();
        assert_eq!((got.index, got.address, got.prefix, got.scope), (3, a, 64, 0));
        assert!(!got.usable_global(), "tentative");
        // IFA_FLAGS (32 bits) overrides the header's 8: DAD is done.
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&IFA_FLAGS.to_ne_bytes());
        p.extend_from_slice(&0x80u32.to_ne_bytes());
        assert!(parse_addr6(&p).unwrap().usable_global());
        // Link-local scope is not global; IPv4 and address-less messages are not IPv6 addresses.
        p[3] = 253;
        assert!(!parse_addr6(&p).unwrap().usable_global());
        p[0] = libc::AF_INET as u8;
        assert_eq!(parse_addr6(&p), None);
        assert_eq!(parse_addr6(&[libc::AF_INET6 as u8, 64, 0, 0, 3, 0, 0, 0]), None);
        assert_eq!(parse_addr6(&[1, 2]), None);
    }
}

//! The kernel's IPv4 neighbour (ARP) table of bootsvc's network namespace, read from
//! `/proc/net/arp` (world-readable: it works after privileges are dropped, and needs no
//! netlink socket). By the time an HTTP request is read, its TCP handshake has been answered,
//! so for a caller on a directly attached segment the kernel holds a complete entry naming
//! the NIC that completed it. Callers behind a relay or router have no entry of their own.
//!
//! IPv6 (NDP) entries are not in `/proc`: they are dumped over a `NETLINK_ROUTE` socket
//! (`RTM_GETNEIGH`), which needs no privilege either ([`parse_neigh6`] reads the answer).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};

use osie_api::MacAddr;

/// Where the identity decision gets neighbour entries from.
pub trait Neighbours: Send + Sync + 'static {
    /// The NICs of complete entries for `ip` (usually one; none when `ip` is not on a
    /// directly attached segment). `Err` when the table cannot be read.
    fn lookup(&self, ip: Ipv4Addr) -> Result<Vec<MacAddr>, String>;
    /// Every complete entry, by NIC (for the operator's view).
    fn by_mac(&self) -> Result<HashMap<MacAddr, Vec<Ipv4Addr>>, String>;
    /// The NICs of complete IPv6 (NDP) entries for `ip`. A table that does not know IPv6
    /// cannot be read for it, so nothing but a record's `ip6` identifies a caller over IPv6.
    fn lookup6(&self, _ip: Ipv6Addr) -> Result<Vec<MacAddr>, String> {
        Err("no IPv6 neighbour table".into())
    }
}

pub const PROC_NET_ARP: &str = "/proc/net/arp";

/// `ATF_COM`: the entry is resolved (it has a link-layer address).
const ATF_COM: u32 = 0x2;

/// Complete entries of a `/proc/net/arp` text: `(address, NIC)`. Incomplete and failed
/// entries (flags without `ATF_COM`, all-zero address) and lines that do not parse are
/// skipped.
pub fn parse(text: &str) -> Vec<(Ipv4Addr, MacAddr)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let ip: Ipv4Addr = w.next()?.parse().ok()?;
            let _hw_type = w.next()?;
            let flags = u32::from_str_radix(w.next()?.trim_start_matches("0x"), 16).ok()?;
            let mac: MacAddr = w.next()?.parse().ok()?;
            (flags & ATF_COM != 0 && mac.octets() != [0; 6]).then_some((ip, mac))
        })
        .collect()
}

/// The running kernel's table.
#[derive(Default)]
pub struct Kernel {
    /// A read error is logged once, not per request.
    warned: AtomicBool,
}

impl Kernel {
    fn read(&self) -> Result<Vec<(Ipv4Addr, MacAddr)>, String> {
        match std::fs::read_to_string(PROC_NET_ARP) {
            Ok(t) => Ok(parse(&t)),
            Err(e) => {
                let msg = format!("reading the neighbour table {PROC_NET_ARP}: {e}");
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::error!("{msg}: machines without a fixed address cannot be identified (is /proc mounted?)");
                }
                Err(msg)
            }
        }
    }
}

impl Neighbours for Kernel {
    fn lookup6(&self, ip: Ipv6Addr) -> Result<Vec<MacAddr>, String> {
        match dump_neigh6() {
            Ok(bytes) => Ok(parse_neigh6(&bytes).into_iter().filter(|(a, _)| *a == ip).map(|(_, m)| m).collect()),
            Err(e) => {
                let msg = format!("reading the IPv6 neighbour table (netlink RTM_GETNEIGH): {e}");
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::error!("{msg}: machines without ip6 cannot be identified over IPv6");
                }
                Err(msg)
            }
        }
    }

    fn lookup(&self, ip: Ipv4Addr) -> Result<Vec<MacAddr>, String> {
        Ok(self.read()?.into_iter().filter(|(a, _)| *a == ip).map(|(_, m)| m).collect())
    }

    fn by_mac(&self) -> Result<HashMap<MacAddr, Vec<Ipv4Addr>>, String> {
        let mut out: HashMap<MacAddr, Vec<Ipv4Addr>> = HashMap::new();
        for (ip, mac) in self.read()? {
            out.entry(mac).or_default().push(ip);
        }
        Ok(out)
    }
}

// Netlink's numbers (linux/netlink.h, linux/rtnetlink.h, linux/neighbour.h).
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// `NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT`: the entry has a
/// link-layer address that answered (as `ATF_COM` for ARP).
const NUD_COMPLETE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;
const NLMSG_HDR: usize = 16;
const NDMSG: usize = 12;
/// A dump larger than this is cut (a table of some 100 000 entries): bounded memory.
const MAX_DUMP: usize = 16 << 20;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Complete IPv6 entries in the messages of a `RTM_GETNEIGH` dump: `(address, NIC)`. Entries
/// of other families, without a 6-byte link-layer address, or not complete are skipped, and
/// so is whatever does not parse (a short or cut message ends the walk).
pub fn parse_neigh6(mut b: &[u8]) -> Vec<(Ipv6Addr, MacAddr)> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDR {
        let Some(len) = u32_at(b, 0).map(|l| l as usize) else { break };
        if len < NLMSG_HDR || len > b.len() {
            break;
        }
        let msg = &b[..len];
        if u16_at(msg, 4) == Some(RTM_NEWNEIGH) {
            if let Some(e) = neigh6(&msg[NLMSG_HDR..]) {
                out.push(e);
            }
        }
        b = &b[align4(len).min(b.len())..];
    }
    out
}

/// One `ndmsg` and its attributes.
fn neigh6(m: &[u8]) -> Option<(Ipv6Addr, MacAddr)> {
    let family = *m.first()?;
    let state = u16_at(m, 8)?;
    if i32::from(family) != libc::AF_INET6 || state & NUD_COMPLETE == 0 {
        return None;
    }
    let (mut dst, mut ll) = (None, None);
    let mut a = m.get(NDMSG..)?;
    while a.len() >= 4 {
        let len = usize::from(u16_at(a, 0)?);
        if len < 4 || len > a.len() {
            break;
        }
        let v = &a[4..len];
        match u16_at(a, 2)? {
            NDA_DST if v.len() == 16 => dst = Some(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?)),
            NDA_LLADDR if v.len() == 6 => ll = Some(MacAddr::new(<[u8; 6]>::try_from(v).ok()?)),
            _ => {}
        }
        a = &a[align4(len).min(a.len())..];
    }
    let mac = ll.filter(|m| m.octets() != [0; 6])?;
    Some((dst?, mac))
}

/// The kernel's IPv6 neighbour table, as the bytes of a netlink dump (every message up to
/// `NLMSG_DONE`).
fn dump_neigh6() -> std::io::Result<Vec<u8>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the descriptor is owned (and closed) by `fd`.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let timeout = libc::timeval { tv_sec: 1, tv_usec: 0 };
    crate::udp::set_raw(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
    let mut req = Vec::with_capacity(NLMSG_HDR + NDMSG);
    req.extend_from_slice(&((NLMSG_HDR + NDMSG) as u32).to_ne_bytes());
    req.extend_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
    req.extend_from_slice(&[libc::AF_INET6 as u8, 0, 0, 0]);
    req.extend_from_slice(&[0; NDMSG - 4]);
    // SAFETY: `req` is a live buffer of `req.len()` bytes.
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let chunk = &buf[..n as usize];
        if chunk.is_empty() {
            return Ok(out);
        }
        // The last message of a dump is NLMSG_DONE (or an error): walk this datagram's headers.
        let mut b = chunk;
        let mut done = false;
        while b.len() >= NLMSG_HDR {
            let len = u32_at(b, 0).unwrap_or(0) as usize;
            match u16_at(b, 4) {
                Some(NLMSG_DONE) => done = true,
                Some(NLMSG_ERROR) => return Err(std::io::Error::other("the kernel answered the dump with an error")),
                _ => {}
            }
            if len < NLMSG_HDR || len > b.len() {
                break;
            }
            b = &b[align4(len).min(b.len())..];
        }
        if out.len() + chunk.len() <= MAX_DUMP {
            out.extend_from_slice(chunk);
        }
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_entries_only() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 192.0.2.100      0x1         0x2         52:54:00:12:34:56     *        br0\n\
                 192.0.2.101      0x1         0x0         00:00:00:00:00:00     *        br0\n\
                 192.0.2.102      0x1         0x6         02:00:00:00:0e:01     *        br0\n\
                 192.0.2.103      0x1         0x2         00:00:00:00:00:00     *        br0\n\
                 not an address   0x1         0x2         52:54:00:12:34:56     *        br0\n\
                 192.0.2.104      0x1\n";
        let got = parse(t);
        assert_eq!(
            got,
            [
                ("192.0.2.100".parse().unwrap(), "52:54:00:12:34:56".parse().unwrap()),
                ("192.0.2.102".parse().unwrap(), "02:00:00:00:0e:01".parse().unwrap()),
            ]
        );
        assert!(parse("").is_empty());
    }

    #[test]
    fn reads_this_namespace() {
        // Whatever is in it, the file reads and parses (the header alone is a valid table).
        assert!(Kernel::default().by_mac().is_ok());
        // The netlink dump works unprivileged and ends.
        assert!(Kernel::default().lookup6("2001:db8::99".parse().unwrap()).is_ok());
    }

    /// One `RTM_NEWNEIGH` message as the kernel writes it.
    fn neigh_msg(family: u8, state: u16, dst: &[u8], ll: &[u8]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        body.extend_from_slice(&2i32.to_ne_bytes());
        body.extend_from_slice(&state.to_ne_bytes());
        body.extend_from_slice(&[0, 0]);
        for (t, v) in [(NDA_DST, dst), (NDA_LLADDR, ll)] {
            body.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(v);
            body.resize(align4(body.len()), 0);
        }
        let mut m = ((NLMSG_HDR + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn parses_complete_ipv6_entries_only() {
        let a: Ipv6Addr = "2001:db8::5054:ff:fe12:3456".parse().unwrap();
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let six = libc::AF_INET6 as u8;
        let mut dump = neigh_msg(six, 0x02, &a.octets(), &mac);
        dump.extend(neigh_msg(six, 0x01, &a.octets(), &mac)); // incomplete
        dump.extend(neigh_msg(six, 0x20, &a.octets(), &mac)); // failed
        dump.extend(neigh_msg(libc::AF_INET as u8, 0x02, &[192, 0, 2, 1], &mac));
        dump.extend(neigh_msg(six, 0x04, &a.octets(), &[0; 6]));
        dump.extend(neigh_msg(six, 0x04, &a.octets(), &mac[..4]));
        dump.extend(neigh_msg(six, 0x04, &"fe80::1".parse::<Ipv6Addr>().unwrap().octets(), &mac));
        let got = parse_neigh6(&dump);
        assert_eq!(got, [(a, MacAddr::new(mac)), ("fe80::1".parse().unwrap(), MacAddr::new(mac))]);
        // Cut anywhere: what is whole is read, nothing panics.
        for cut in 0..dump.len() {
            assert!(parse_neigh6(&dump[..cut]).len() <= 2);
        }
    }
}

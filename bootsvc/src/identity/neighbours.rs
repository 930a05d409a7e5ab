//! The kernel's IPv4 neighbour (ARP) table of bootsvc's network namespace, read from
//! `/proc/net/arp` (world-readable: it works after privileges are dropped, and needs no
//! netlink socket). By the time an HTTP request is read, its TCP handshake has been answered,
//! so for a caller on a directly attached segment the kernel holds a complete entry naming
//! the NIC that completed it. Callers behind a relay or router have no entry of their own.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};

use osie_api::MacAddr;

/// Where the identity decision gets neighbour entries from.
pub trait Neighbours: Send + Sync + 'static {
    /// The NICs of complete entries for `ip` (usually one; none when `ip` is not on a
    /// directly attached segment). `Err` when the table cannot be read.
    fn lookup(&self, ip: Ipv4Addr) -> Result<Vec<MacAddr>, String>;
    /// Every complete entry, by NIC (for the operator's view).
    fn by_mac(&self) -> Result<HashMap<MacAddr, Vec<Ipv4Addr>>, String>;
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
    }
}

//! Which read requests get a transfer. A request repeated while its transfer runs (same
//! address and port) is not a second transfer; beyond that at most `per_client` transfers
//! run at once from one source address, and at most `total` in all. The per-address cap
//! keeps one host (a hostile neighbour, a firmware stuck retrying) from filling the global
//! cap with abandoned transfers while every other machine is told "server busy".

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub total: usize,
    pub per_client: usize,
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Its transfer is running: the transfer's own retransmissions answer it.
    Repeat,
    /// This address has `per_client` transfers running.
    ClientBusy,
    /// `total` transfers are running.
    Busy,
}

/// The transfers running now, by client and by source address.
#[derive(Debug, Default)]
pub struct Active {
    peers: HashSet<SocketAddr>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Active {
    pub fn admit(&self, peer: SocketAddr, caps: Caps) -> Admit {
        if self.peers.contains(&peer) {
            Admit::Repeat
        } else if self.per_ip.get(&peer.ip()).is_some_and(|n| *n >= caps.per_client) {
            Admit::ClientBusy
        } else if self.peers.len() >= caps.total {
            Admit::Busy
        } else {
            Admit::Yes
        }
    }

    /// A transfer for `peer` started.
    pub fn insert(&mut self, peer: SocketAddr) {
        if self.peers.insert(peer) {
            *self.per_ip.entry(peer.ip()).or_default() += 1;
        }
    }

    /// `peer`'s transfer ended.
    pub fn remove(&mut self, peer: &SocketAddr) {
        if self.peers.remove(peer) {
            if let Some(n) = self.per_ip.get_mut(&peer.ip()) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&peer.ip());
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Transfers running from `ip`.
    pub fn from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    #[test]
    fn one_address_cannot_take_the_global_cap() {
        let caps = Caps { total: 10, per_client: 3 };
        let mut a = Active::default();
        for port in 1..=3 {
            assert_eq!(a.admit(at("192.0.2.66", port), caps), Admit::Yes);
            a.insert(at("192.0.2.66", port));
        }
        assert_eq!(a.admit(at("192.0.2.66", 4), caps), Admit::ClientBusy);
        assert_eq!(a.admit(at("192.0.2.66", 2), caps), Admit::Repeat, "a retransmitted request");
        assert_eq!(a.admit(at("192.0.2.77", 1), caps), Admit::Yes, "another address is not held up");
        // One ends: that address may start one more.
        a.remove(&at("192.0.2.66", 1));
        assert_eq!(a.from("192.0.2.66".parse().unwrap()), 2);
        assert_eq!(a.admit(at("192.0.2.66", 4), caps), Admit::Yes);
        // Removing twice, or what was never there, changes nothing.
        a.remove(&at("192.0.2.66", 1));
        a.remove(&at("192.0.2.99", 1));
        assert_eq!((a.len(), a.from("192.0.2.66".parse().unwrap())), (2, 2));
        a.remove(&at("192.0.2.66", 2));
        a.remove(&at("192.0.2.66", 3));
        assert!(a.is_empty() && a.per_ip.is_empty(), "no address left behind");
    }

    #[test]
    fn the_global_cap_still_holds() {
        let caps = Caps { total: 4, per_client: 3 };
        let mut a = Active::default();
        for (i, ip) in ["192.0.2.10", "192.0.2.11"].iter().enumerate() {
            for port in 0..2 {
                assert_eq!(a.admit(at(ip, port), caps), Admit::Yes, "{i}");
                a.insert(at(ip, port));
            }
        }
        assert_eq!(a.admit(at("192.0.2.12", 1), caps), Admit::Busy);
        assert_eq!(a.admit(at("192.0.2.10", 9), caps), Admit::Busy);
    }
}

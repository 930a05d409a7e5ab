//! The identity decision, as a pure function: may a request from `source` act as this machine
//! (read its data, post its events, phone home for it)? Everything bootsvc knows about
//! `source` goes in as [`Facts`]; out comes the sources that bind the address to the machine,
//! or why it is refused. The rules and their reasons are in `bootsvc/docs/security.md`.
//!
//! - A machine with a fixed address is that address, and only that address.
//! - A machine without one is known by what binds `source` to one of its MACs: bootsvc's own
//!   pool lease, the kernel's neighbour (ARP) entry for `source`, or (proxy mode) the DHCP
//!   REQUEST in which the machine asked the site server for `source`. A script fetch is not
//!   among them: anyone who knows a MAC can fetch its script.
//! - Refuted, whatever else says yes: `source` is another record's fixed address, bootsvc
//!   leased it to another NIC, or a neighbour entry for it names another NIC. A REQUEST by
//!   another NIC refutes only where there is no neighbour entry: a REQUEST is a claim anyone
//!   can broadcast, the neighbour entry is who completed the TCP handshake.
//! - The neighbour table could not be read: nothing but a fixed address is accepted.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use osie_api::MacAddr;
use serde::{Deserialize, Serialize};

use crate::config::DhcpMode;

/// What bootsvc knows that bears on "is `source` this machine".
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub mode: DhcpMode,
    pub source: Ipv4Addr,
    /// The claimed machine's NICs (its record's `macs`).
    pub macs: &'a [MacAddr],
    /// The claimed machine's fixed address (its record's `ip.address`).
    pub fixed: Option<Ipv4Addr>,
    /// The NIC holding bootsvc's own unexpired pool lease on `source`.
    pub lease: Option<MacAddr>,
    /// The inventory NIC whose latest DHCP REQUEST (seen on the segment or relayed) asked
    /// for `source`. Used in proxy mode only.
    pub requested: Option<MacAddr>,
    /// The NICs of the kernel's complete neighbour entries for `source`: empty when it is not
    /// on a directly attached segment (behind a relay or router). `None`: the table could not
    /// be read.
    pub neighbours: Option<&'a [MacAddr]>,
    /// `source` is the fixed address of another record.
    pub fixed_of_other: bool,
}

/// The sources that bind an accepted address to its machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sources {
    pub fixed_address: bool,
    pub lease: bool,
    pub neighbour: bool,
    pub dhcp_request: bool,
    /// An IPv6 source's EUI-64 interface identifier names the NIC its neighbour entry names
    /// (`super::decide6`).
    #[serde(default)]
    pub eui64: bool,
}

impl Sources {
    pub fn any(&self) -> bool {
        self.fixed_address || self.lease || self.neighbour || self.dhcp_request || self.eui64
    }
}

impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.fixed_address, "fixed-address"),
            (self.lease, "lease"),
            (self.neighbour, "neighbour"),
            (self.dhcp_request, "dhcp-request"),
            (self.eui64, "eui64"),
        ];
        let on: Vec<&str> = names.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
        if on.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&on.join("+"))
        }
    }
}

/// Why an address is not accepted as the machine's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The machine has a fixed address and `source` is not it.
    NotItsFixedAddress { fixed: IpAddr },
    /// `source` is another record's fixed address.
    FixedAddressOfAnother,
    /// bootsvc's pool lease on `source` is another NIC's.
    LeasedToAnother(MacAddr),
    /// The kernel's neighbour entry for `source` names a NIC that is not the machine's.
    NeighbourIsAnother(MacAddr),
    /// No neighbour entry, and the last DHCP REQUEST for `source` came from another NIC.
    RequestedByAnother(MacAddr),
    /// An IPv6 source's EUI-64 interface identifier was formed from a NIC that is not the
    /// machine's.
    Eui64IsAnother(MacAddr),
    /// The neighbour table could not be read, so nothing can refute a dynamic source.
    NeighboursUnknown,
    /// Nothing binds `source` to the machine.
    NoSource,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotItsFixedAddress { fixed } => write!(f, "the machine's fixed address is {fixed}"),
            Refusal::FixedAddressOfAnother => f.write_str("it is another machine's fixed address"),
            Refusal::LeasedToAnother(m) => write!(f, "bootsvc leased it to {m}, not to one of the machine's NICs"),
            Refusal::NeighbourIsAnother(m) => {
                write!(f, "its neighbour (ARP) entry says it is at {m}, not one of the machine's NICs")
            }
            Refusal::RequestedByAnother(m) => write!(f, "the last DHCP request for it came from {m}"),
            Refusal::Eui64IsAnother(m) => {
                write!(f, "its interface identifier was formed from {m} (EUI-64), not one of the machine's NICs")
            }
            Refusal::NeighboursUnknown => f.write_str(
                "the kernel's neighbour table could not be read, so only a fixed address identifies a machine",
            ),
            Refusal::NoSource => f.write_str(
                "no lease of bootsvc's, no DHCP request and no neighbour entry binds it to the machine's NICs; \
                 give the machine a fixed address in its record (ip, or ip6 for IPv6)",
            ),
        }
    }
}

/// The rule of fixed addresses, IPv4 and IPv6 alike: a machine with one is that address and
/// no other; another machine's is never its. `None`: the dynamic sources decide.
pub(super) fn by_fixed<A: PartialEq + Copy + Into<IpAddr>>(
    source: A,
    fixed: Option<A>,
    fixed_of_other: bool,
) -> Option<Result<Sources, Refusal>> {
    match fixed {
        Some(f) if f == source => Some(Ok(Sources { fixed_address: true, ..Default::default() })),
        // Another record's fixed address is never this machine's, whether or not it has one
        // of its own (IPv6 goes on to judge a machine's other addresses after
        // `NotItsFixedAddress`, so the order matters there).
        _ if fixed_of_other => Some(Err(Refusal::FixedAddressOfAnother)),
        Some(f) => Some(Err(Refusal::NotItsFixedAddress { fixed: f.into() })),
        None => None,
    }
}

/// Decide whether `f.source` is the machine's address.
pub fn decide(f: &Facts<'_>) -> Result<Sources, Refusal> {
    let ours = |m: &MacAddr| f.macs.contains(m);
    if let Some(r) = by_fixed(f.source, f.fixed, f.fixed_of_other) {
        return r;
    }
    let mut s = Sources::default();
    match f.lease {
        Some(m) if ours(&m) => s.lease = true,
        Some(m) => return Err(Refusal::LeasedToAnother(m)),
        None => {}
    }
    let Some(neighbours) = f.neighbours else { return Err(Refusal::NeighboursUnknown) };
    if let Some(m) = neighbours.iter().find(|m| !ours(m)) {
        return Err(Refusal::NeighbourIsAnother(*m));
    }
    s.neighbour = !neighbours.is_empty();
    if f.mode == DhcpMode::Proxy {
        match f.requested {
            Some(m) if ours(&m) => s.dhcp_request = true,
            Some(m) if !s.neighbour && !s.lease => return Err(Refusal::RequestedByAnother(m)),
            _ => {}
        }
    }
    if s.any() {
        Ok(s)
    } else {
        Err(Refusal::NoSource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A1: MacAddr = MacAddr::new([2, 0, 0, 0, 0xa, 1]);
    const A2: MacAddr = MacAddr::new([2, 0, 0, 0, 0xa, 2]);
    const B: MacAddr = MacAddr::new([2, 0, 0, 0, 0xb, 1]);
    const X: MacAddr = MacAddr::new([2, 0, 0, 0, 0xe, 1]);
    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);
    const FIXED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 30);

    fn facts<'a>(mode: DhcpMode, fixed: Option<Ipv4Addr>, neighbours: Option<&'a [MacAddr]>) -> Facts<'a> {
        Facts {
            mode,
            source: SRC,
            macs: &[A1, A2],
            fixed,
            lease: None,
            requested: None,
            neighbours,
            fixed_of_other: false,
        }
    }

    fn src(lease: bool, neighbour: bool, dhcp_request: bool) -> Sources {
        Sources { fixed_address: false, lease, neighbour, dhcp_request, eui64: false }
    }

    use DhcpMode::{Proxy, Reservation};

    /// Each row: mode, fixed, lease, requested, neighbours, fixed-of-other, expected.
    #[test]
    fn table() {
        type Row = (
            &'static str,
            DhcpMode,
            Option<Ipv4Addr>,
            Option<MacAddr>,
            Option<MacAddr>,
            Option<&'static [MacAddr]>,
            bool,
            Result<Sources, Refusal>,
        );
        let fixed_ok = Sources { fixed_address: true, ..Default::default() };
        #[rustfmt::skip]
        let rows: &[Row] = &[
            // Fixed addresses: that address only, whatever else is known.
            ("fixed, other address", Reservation, Some(FIXED), Some(A1), None, Some(&[A1]), false,
             Err(Refusal::NotItsFixedAddress { fixed: FIXED.into() })),
            ("script fetch only (no source at all)", Reservation, None, None, None, Some(&[]), false, Err(Refusal::NoSource)),
            ("pool lease, relayed", Reservation, None, Some(A2), None, Some(&[]), false, Ok(src(true, false, false))),
            ("pool lease and neighbour agree", Reservation, None, Some(A1), None, Some(&[A1]), false, Ok(src(true, true, false))),
            ("lease of another NIC", Reservation, None, Some(B), None, Some(&[A1]), false, Err(Refusal::LeasedToAnother(B))),
            ("own lease, intruder's neighbour entry", Reservation, None, Some(A1), None, Some(&[X]), false,
             Err(Refusal::NeighbourIsAnother(X))),
            ("neighbour alone", Reservation, None, None, None, Some(&[A2]), false, Ok(src(false, true, false))),
            ("neighbour, one entry not ours", Reservation, None, None, None, Some(&[A1, X]), false,
             Err(Refusal::NeighbourIsAnother(X))),
            ("another machine's fixed address", Reservation, None, Some(A1), None, Some(&[A1]), true,
             Err(Refusal::FixedAddressOfAnother)),
            ("request counts only in proxy mode", Reservation, None, None, Some(A1), Some(&[]), false, Err(Refusal::NoSource)),
            ("proxy: its request, relayed", Proxy, None, None, Some(A1), Some(&[]), false, Ok(src(false, false, true))),
            ("proxy: its request and neighbour", Proxy, None, None, Some(A1), Some(&[A1]), false, Ok(src(false, true, true))),
            ("proxy: forged request, intruder's neighbour", Proxy, None, None, Some(A1), Some(&[X]), false,
             Err(Refusal::NeighbourIsAnother(X))),
            ("proxy: another's request, relayed", Proxy, None, None, Some(B), Some(&[]), false,
             Err(Refusal::RequestedByAnother(B))),
            ("proxy: another's (forged) request, its own neighbour", Proxy, None, None, Some(B), Some(&[A1]), false,
             Ok(src(false, true, false))),
            ("proxy: no request seen, relayed", Proxy, None, None, None, Some(&[]), false, Err(Refusal::NoSource)),
            ("proxy: request of another machine's fixed address", Proxy, None, None, Some(A1), Some(&[A1]), true,
             Err(Refusal::FixedAddressOfAnother)),
            ("neighbour table unreadable", Proxy, None, None, Some(A1), None, false, Err(Refusal::NeighboursUnknown)),
            ("unreadable table, lease of another still named", Reservation, None, Some(B), None, None, false,
             Err(Refusal::LeasedToAnother(B))),
        ];
        for (what, mode, fixed, lease, requested, neighbours, other, want) in rows {
            let mut f = facts(*mode, *fixed, *neighbours);
            f.lease = *lease;
            f.requested = *requested;
            f.fixed_of_other = *other;
            assert_eq!(&decide(&f), want, "{what}");
        }
        // The fixed address itself, even with an unreadable table or a stranger's entry: the
        // operator bound it (docs/security.md says why the neighbour does not refute it).
        for n in [None, Some(&[X][..]), Some(&[][..])] {
            let mut f = facts(Proxy, Some(FIXED), n);
            f.source = FIXED;
            assert_eq!(decide(&f), Ok(fixed_ok), "{n:?}");
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        assert!(Refusal::NoSource.to_string().contains("give the machine a fixed address"));
        assert_eq!(src(true, true, false).to_string(), "lease+neighbour");
        assert_eq!(Sources::default().to_string(), "none");
    }
}

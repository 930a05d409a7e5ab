//! The identity decision for IPv6 sources: is this IPv6 address the machine's? Pure, like
//! [`super::decide`], whose rules it follows (`bootsvc/docs/security.md`, "IPv6 callers").
//!
//! - The record's `ip6` (the only address DHCPv6 hands out, so also its "lease") binds that
//!   address to the machine; another record's `ip6` is never this machine's. Unlike IPv4, an
//!   IPv6 host holds several addresses at once (link-local, SLAAC, DHCPv6) and the kernel
//!   picks the source, so a machine with `ip6` is also known at its other addresses by the
//!   rules below (the UEFI firmware takes the DHCPv6 address, the installer a SLAAC one).
//! - Otherwise the kernel's neighbour (NDP) entry for the source is the proof, as the ARP
//!   entry is for IPv4: it names the NIC that completed the TCP handshake. Every complete
//!   entry must be one of the machine's NICs, and at least one must exist (a source behind a
//!   router has none, and is not identified).
//! - The EUI-64 interface identifier of the source (SLAAC and link-local addresses formed from
//!   the NIC's MAC, as iPXE and Linux form them) is a claim the sender chose, not proof: it is
//!   counted only beside a neighbour entry that agrees, and refutes when it names a NIC that
//!   is not the machine's.
//! - The neighbour table could not be read: nothing but `ip6` is accepted.

use std::net::Ipv6Addr;

use osie_api::MacAddr;

use super::decide::{by_fixed, Refusal, Sources};
use crate::netaddr::eui64;

/// What bootsvc knows that bears on "is `source` this machine" for an IPv6 source.
#[derive(Debug, Clone)]
pub struct Facts6<'a> {
    pub source: Ipv6Addr,
    /// The claimed machine's NICs.
    pub macs: &'a [MacAddr],
    /// The claimed machine's `ip6.address`.
    pub fixed: Option<Ipv6Addr>,
    /// The NICs of the kernel's complete neighbour entries for `source` (empty: none, e.g.
    /// behind a router). `None`: the table could not be read.
    pub neighbours: Option<&'a [MacAddr]>,
    /// `source` is another record's `ip6`.
    pub fixed_of_other: bool,
}

/// Decide whether `f.source` is the machine's address.
pub fn decide6(f: &Facts6<'_>) -> Result<Sources, Refusal> {
    let ours = |m: &MacAddr| f.macs.contains(m);
    match by_fixed(f.source, f.fixed, f.fixed_of_other) {
        // Not its `ip6`: its other addresses are judged below.
        Some(Err(Refusal::NotItsFixedAddress { .. })) | None => {}
        Some(r) => return r,
    }
    let claimed = eui64(f.source);
    if let Some(m) = claimed.filter(|m| !ours(m)) {
        return Err(Refusal::Eui64IsAnother(m));
    }
    let Some(neighbours) = f.neighbours else { return Err(Refusal::NeighboursUnknown) };
    if let Some(m) = neighbours.iter().find(|m| !ours(m)) {
        return Err(Refusal::NeighbourIsAnother(*m));
    }
    if neighbours.is_empty() {
        return Err(Refusal::NoSource);
    }
    let eui64 = claimed.is_some_and(|m| neighbours.contains(&m));
    Ok(Sources { neighbour: true, eui64, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A1: MacAddr = MacAddr::new([0x52, 0x54, 0, 0, 0xa, 1]);
    const A2: MacAddr = MacAddr::new([0x52, 0x54, 0, 0, 0xa, 2]);
    const X: MacAddr = MacAddr::new([0x52, 0x54, 0, 0, 0xe, 1]);

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// Each row: what, source, fixed, neighbours, fixed-of-other, expected.
    #[test]
    fn table() {
        let fixed = Sources { fixed_address: true, ..Default::default() };
        let nb = |eui64| Sources { neighbour: true, eui64, ..Default::default() };
        type Row = (
            &'static str,
            &'static str,
            Option<&'static str>,
            Option<&'static [MacAddr]>,
            bool,
            Result<Sources, Refusal>,
        );
        #[rustfmt::skip]
        let rows: &[Row] = &[
            ("its ip6", "2001:db8::10", Some("2001:db8::10"), Some(&[X]), false, Ok(fixed)),
            ("its ip6, table unreadable", "2001:db8::10", Some("2001:db8::10"), None, false, Ok(fixed)),
            ("not its ip6: its SLAAC address, by neighbour and EUI-64", "2001:db8::5054:ff:fe00:a01", Some("2001:db8::10"),
             Some(&[A1]), false, Ok(nb(true))),
            ("not its ip6, a stranger's NIC", "2001:db8::99", Some("2001:db8::10"), Some(&[X]), false,
             Err(Refusal::NeighbourIsAnother(X))),
            ("not its ip6, table unreadable", "2001:db8::99", Some("2001:db8::10"), None, false,
             Err(Refusal::NeighboursUnknown)),
            ("SLAAC EUI-64 and neighbour agree", "2001:db8::5054:ff:fe00:a01", None, Some(&[A1]), false, Ok(nb(true))),
            ("link-local EUI-64 of its other NIC, that NIC's entry", "fe80::5054:ff:fe00:a02", None, Some(&[A2]), false, Ok(nb(true))),
            ("no EUI-64 (stable privacy address), its neighbour entry", "2001:db8::1234:5678:9abc:def0", None, Some(&[A1]), false, Ok(nb(false))),
            ("its EUI-64 claimed by a stranger's NIC", "2001:db8::5054:ff:fe00:a01", None, Some(&[X]), false,
             Err(Refusal::NeighbourIsAnother(X))),
            ("another NIC's EUI-64 at its NIC", "2001:db8::5054:ff:fe00:e01", None, Some(&[A1]), false,
             Err(Refusal::Eui64IsAnother(X))),
            ("its EUI-64, no neighbour entry (behind a router)", "2001:db8::5054:ff:fe00:a01", None, Some(&[]), false,
             Err(Refusal::NoSource)),
            ("its EUI-64, table unreadable", "2001:db8::5054:ff:fe00:a01", None, None, false, Err(Refusal::NeighboursUnknown)),
            ("another record's ip6", "2001:db8::20", None, Some(&[A1]), true, Err(Refusal::FixedAddressOfAnother)),
            ("another record's ip6 at its NIC, it has an ip6 of its own", "2001:db8::20", Some("2001:db8::10"),
             Some(&[A1]), true, Err(Refusal::FixedAddressOfAnother)),
        ];
        for (what, source, fixed, neighbours, other, want) in rows {
            let f = Facts6 {
                source: a(source),
                macs: &[A1, A2],
                fixed: fixed.map(a),
                neighbours: *neighbours,
                fixed_of_other: *other,
            };
            assert_eq!(&decide6(&f), want, "{what}");
        }
    }
}

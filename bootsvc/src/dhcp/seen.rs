//! Proxy mode: what inventory machines' own DHCP REQUESTs (to the site server, seen on the
//! segment or through a relay) say about their addresses, recorded in the storage's table of
//! requests seen ([`crate::storage::RequestsSeen`]) for the identity decision
//! (`bootsvc/docs/security.md`). The DHCP server calls [`Observer::observe`] for every packet
//! before it decides its own answer.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dhcproto::v4::MessageType;
use osie_api::MacAddr;

use super::reply::Via;
use super::request::Request;
use crate::inventory::Backend;
use crate::storage::requests::{Change, Requested, MAX_ENTRIES};
use crate::storage::RequestsSeen;

/// Info lines a MAC's REQUESTs may log at once; the rest go to debug until the budget
/// refills (forged REQUESTs at any rate cost a few lines).
const LOG_BURST: u32 = 8;
const LOG_REFILL: Duration = Duration::from_secs(30);

/// Records REQUESTs, with a log budget per MAC.
#[derive(Default)]
pub struct Observer {
    /// Per MAC: log lines left ([`LOG_BURST`], one back per [`LOG_REFILL`]) and when counted.
    budget: Mutex<HashMap<MacAddr, (u32, Instant)>>,
}

impl Observer {
    /// A received packet: record what an inventory machine's REQUEST names, forget what a
    /// DECLINE or RELEASE gives up. Port-67 traffic only (4011 is the firmware asking us).
    pub fn observe(&self, seen: &dyn RequestsSeen, req: &Request, via: Via, backend: &dyn Backend, now: u64) {
        if !seen.enabled() || via != Via::Dhcp {
            return;
        }
        let named = req.requested_ip.or_else(|| Some(req.ciaddr()).filter(|ip| !ip.is_unspecified()));
        let Some(ip) = named.filter(|ip| usable(*ip)) else { return };
        match req.msg_type {
            MessageType::Request => {}
            MessageType::Decline | MessageType::Release => {
                if seen.forget(&req.mac, ip) {
                    tracing::info!(mac = %req.mac, %ip, "DHCP: {:?} of {ip}: no longer this machine's", req.msg_type);
                }
                return;
            }
            _ => return,
        }
        let Some(m) = backend.by_mac(&req.mac) else { return };
        let relayed = !req.giaddr().is_unspecified();
        match seen.record(Requested { mac: req.mac, ip, at: now, relayed }) {
            Change::Same => {}
            Change::Recorded { superseded } if self.may_log(&req.mac) => tracing::info!(
                mac = %req.mac, host = %m.hostname, %ip, relayed, superseded = ?superseded,
                "DHCP: {} asked for {ip}: an address of {} (metadata, events, phone-home)", req.mac, m.hostname
            ),
            Change::Recorded { superseded } => tracing::debug!(
                mac = %req.mac, host = %m.hostname, %ip, relayed, superseded = ?superseded,
                "DHCP: {} asked for {ip} (log budget spent)", req.mac
            ),
            Change::Full => {
                tracing::warn!(mac = %req.mac, "DHCP requests seen: table full ({MAX_ENTRIES}), not recorded")
            }
        }
    }

    /// Take one of `mac`'s log lines, if it has one left.
    fn may_log(&self, mac: &MacAddr) -> bool {
        let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded like the table: a budget per inventory MAC at most.
        if b.len() >= MAX_ENTRIES && !b.contains_key(mac) {
            return false;
        }
        let now = Instant::now();
        let (left, at) = b.entry(*mac).or_insert((LOG_BURST, now));
        let refilled = (now.duration_since(*at).as_secs() / LOG_REFILL.as_secs()) as u32;
        if refilled > 0 {
            *left = (*left + refilled).min(LOG_BURST);
            *at = now;
        }
        if *left == 0 {
            return false;
        }
        *left -= 1;
        true
    }
}

/// Addresses a client may really hold.
fn usable(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 0xb]);

    #[test]
    fn logging_is_budgeted_per_mac() {
        let o = Observer::default();
        let n = (0..100).filter(|_| o.may_log(&A)).count();
        assert_eq!(n, LOG_BURST as usize);
        assert!(o.may_log(&B), "another MAC has its own budget");
    }

    #[test]
    fn only_addresses_a_client_can_hold() {
        for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1"] {
            assert!(!usable(bad.parse().unwrap()), "{bad}");
        }
        assert!(usable("192.0.2.80".parse().unwrap()));
    }
}

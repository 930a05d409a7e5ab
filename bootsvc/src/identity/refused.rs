//! Addresses that claimed a machine and were refused, shown to the operator on that machine
//! (admin API, `bootsvc machine <mac> show`, `bootsvc machines`).
//!
//! In memory only and bounded, whatever a caller sends: at most [`PER_MACHINE`] claims per
//! machine (the same address on the same route counts up one entry; the oldest entry goes
//! when a new one comes), machines only from the inventory. Nothing is written to disk, and
//! the warning line a refusal logs is written once per address and route per
//! [`LOG_EVERY`] (the rest go to debug).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use osie_api::MacAddr;
use serde::{Deserialize, Serialize};

pub const PER_MACHINE: usize = 8;
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// Machines with refused claims kept at once (the inventory bounds it anyway).
const MAX_MACHINES: usize = 65536;

/// One address's refused claims on one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedClaim {
    pub address: IpAddr,
    /// The route template (`/metadata`, `/events`, `/phone-home/{instance_id}`…).
    pub route: String,
    /// Why the last one was refused.
    pub why: String,
    /// RFC 3339.
    pub first: String,
    pub last: String,
    pub count: u64,
}

struct Kept {
    claim: RefusedClaim,
    logged: Instant,
}

#[derive(Default)]
pub struct Claims {
    by_machine: Mutex<HashMap<MacAddr, VecDeque<Kept>>>,
}

impl Claims {
    /// Note a refused claim on the machine keyed `key`. True when it should be logged as a
    /// warning (new, or not logged for [`LOG_EVERY`]).
    pub fn record(&self, key: MacAddr, address: IpAddr, route: &str, why: &str, now: &str) -> bool {
        let mut all = self.by_machine.lock().unwrap_or_else(|p| p.into_inner());
        if !all.contains_key(&key) && all.len() >= MAX_MACHINES {
            return false;
        }
        let list = all.entry(key).or_default();
        if let Some(k) = list.iter_mut().find(|k| k.claim.address == address && k.claim.route == route) {
            k.claim.count += 1;
            k.claim.last = now.to_string();
            if k.claim.why != why {
                k.claim.why = why.to_string();
            }
            if k.logged.elapsed() >= LOG_EVERY {
                k.logged = Instant::now();
                return true;
            }
            return false;
        }
        if list.len() >= PER_MACHINE {
            list.pop_front();
        }
        list.push_back(Kept {
            claim: RefusedClaim {
                address,
                route: route.to_string(),
                why: why.to_string(),
                first: now.to_string(),
                last: now.to_string(),
                count: 1,
            },
            logged: Instant::now(),
        });
        true
    }

    /// The machine's refused claims, most recent last.
    pub fn of(&self, key: &MacAddr) -> Vec<RefusedClaim> {
        let all = self.by_machine.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<RefusedClaim> =
            all.get(key).map(|l| l.iter().map(|k| k.claim.clone()).collect()).unwrap_or_default();
        v.sort_by(|a, b| a.last.cmp(&b.last));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: MacAddr = MacAddr::new([2, 0, 0, 0, 0, 1]);

    #[test]
    fn coalesced_bounded_and_rate_limited() {
        let c = Claims::default();
        let a = IpAddr::from([192, 0, 2, 66]);
        assert!(c.record(M, a, "/metadata", "no source", "t1"));
        for i in 0..1000 {
            assert!(!c.record(M, a, "/metadata", "no source", &format!("t2-{i:04}")), "logged once a minute");
        }
        assert!(c.record(M, a, "/events", "no source", "t3"), "another route is another claim");
        let v = c.of(&M);
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].count, v[0].first.as_str(), v[0].last.as_str()), (1001, "t1", "t2-0999"));
        for i in 0..100u8 {
            c.record(M, IpAddr::from([198, 51, 100, i]), "/metadata", "x", &format!("t4-{i:03}"));
        }
        let v = c.of(&M);
        assert_eq!(v.len(), PER_MACHINE, "the oldest go");
        assert_eq!(v.last().unwrap().address, IpAddr::from([198, 51, 100, 99]));
        assert!(c.of(&MacAddr::new([2, 0, 0, 0, 0, 2])).is_empty());
    }
}

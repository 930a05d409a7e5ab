//! The DHCP load generator: `window` machines in flight at any moment, each doing a full
//! DISCOVER → OFFER → REQUEST → ACK, MACs taken in turn from the list (a MAC is never in two
//! exchanges at once). Exchanges finishing in the warm-up are not counted; the rest give
//! exchanges per second and the latency distribution.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osie_testkit::dhcp::{DhcpClient, Identity};
use serde::{Deserialize, Serialize};

use crate::stats::Latency;

#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The machines; at least `window` of them.
    pub clients: Vec<Identity>,
    /// Exchanges in flight at once.
    pub window: usize,
    /// Not counted: servers warm their caches, the generator its sockets.
    pub warmup: Duration,
    /// Counted.
    pub duration: Duration,
    /// Stop after this many counted exchanges even if `duration` has not passed.
    pub max_exchanges: Option<u64>,
    /// The address each client must get (same order as `clients`); empty: not checked.
    pub expect: Vec<std::net::Ipv4Addr>,
}

/// One load run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub window: usize,
    pub clients: usize,
    /// Completed (ACKed) exchanges in the counted period.
    pub exchanges: u64,
    pub seconds: f64,
    pub exchanges_per_sec: f64,
    /// DISCOVER → ACK.
    pub latency: Latency,
    /// Messages sent again after a timeout (counted period).
    pub retransmits: u64,
    /// Failed exchanges by kind (`no-offer`, `no-ack`, `nak`…), counted period.
    pub failures: BTreeMap<String, u64>,
    /// Distinct addresses handed out, and whether every MAC always got the same one.
    pub distinct_addresses: usize,
    pub stable_addresses: bool,
    /// ACKs whose address was not the one in `expect`.
    pub wrong_addresses: u64,
}

/// Run the load and report. Call from inside the runtime that created `client`.
pub async fn run(client: Arc<DhcpClient>, spec: LoadSpec) -> LoadReport {
    let window = spec.window.clamp(1, spec.clients.len().max(1));
    let shared = Arc::new(Shared {
        clients: spec.clients.clone(),
        busy: Default::default(),
        next: AtomicU64::new(0),
        counting: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        results: Mutex::default(),
    });
    shared.busy.lock().unwrap_or_else(|e| e.into_inner()).resize(shared.clients.len(), false);
    let counted = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..window {
        let (client, shared, counted, max) = (client.clone(), shared.clone(), counted.clone(), spec.max_exchanges);
        workers.push(tokio::spawn(async move {
            let mut local = Results::default();
            while !shared.stop.load(Ordering::Relaxed) {
                let Some(i) = shared.take() else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let r = client.exchange(&shared.clients[i]).await;
                shared.release(i);
                if !shared.counting.load(Ordering::Relaxed) || shared.stop.load(Ordering::Relaxed) {
                    continue;
                }
                match r {
                    Ok(lease) => {
                        local.latencies.push(lease.latency);
                        local.retransmits += u64::from(lease.retransmits);
                        local.addresses.push((i, lease.address));
                        let n = counted.fetch_add(1, Ordering::Relaxed) + 1;
                        if max.is_some_and(|m| n >= m) {
                            shared.stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(e) => *local.failures.entry(e.kind().to_string()).or_default() += 1,
                }
            }
            shared.results.lock().unwrap_or_else(|e| e.into_inner()).push(local);
        }));
    }
    tokio::time::sleep(spec.warmup).await;
    shared.counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + spec.duration;
    while tokio::time::Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(5).min(deadline - tokio::time::Instant::now())).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    for w in workers {
        let _ = w.await;
    }
    let mut all = Results::default();
    for r in shared.results.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        all.latencies.extend(r.latencies);
        all.retransmits += r.retransmits;
        all.addresses.extend(r.addresses);
        for (k, v) in r.failures {
            *all.failures.entry(k).or_default() += v;
        }
    }
    let mut by_client: BTreeMap<usize, std::net::Ipv4Addr> = BTreeMap::new();
    let mut stable = true;
    for (i, a) in &all.addresses {
        if let Some(prev) = by_client.insert(*i, *a) {
            stable &= prev == *a;
        }
    }
    let distinct: std::collections::HashSet<_> = by_client.values().collect();
    let wrong = all.addresses.iter().filter(|(i, a)| spec.expect.get(*i).is_some_and(|e| e != a)).count() as u64;
    let exchanges = all.latencies.len() as u64;
    LoadReport {
        window,
        clients: shared.clients.len(),
        exchanges,
        seconds,
        exchanges_per_sec: exchanges as f64 / seconds,
        latency: Latency::of(&mut all.latencies),
        retransmits: all.retransmits,
        failures: all.failures,
        distinct_addresses: distinct.len(),
        stable_addresses: stable,
        wrong_addresses: wrong,
    }
}

struct Shared {
    clients: Vec<Identity>,
    busy: Mutex<Vec<bool>>,
    next: AtomicU64,
    counting: AtomicBool,
    stop: AtomicBool,
    results: Mutex<Vec<Results>>,
}

impl Shared {
    /// The next MAC in turn that is not in an exchange now.
    fn take(&self) -> Option<usize> {
        let n = self.clients.len();
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..n {
            let i = (self.next.fetch_add(1, Ordering::Relaxed) % n as u64) as usize;
            if !busy[i] {
                busy[i] = true;
                return Some(i);
            }
        }
        None
    }

    fn release(&self, i: usize) {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())[i] = false;
    }
}

#[derive(Default)]
struct Results {
    latencies: Vec<Duration>,
    retransmits: u64,
    addresses: Vec<(usize, std::net::Ipv4Addr)>,
    failures: BTreeMap<String, u64>,
}

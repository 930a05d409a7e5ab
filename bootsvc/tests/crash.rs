//! Crash safety: the real `bootsvc serve` is killed with SIGKILL in the middle of a stream of
//! writes, again and again, and after every restart nothing it acknowledged is missing and
//! nothing is there twice.
//!
//! - Events: several machines post events concurrently (one connection per event, as the
//!   installer does), re-sending after a restart whatever was never acknowledged (the
//!   installer retries until acknowledged). Checked through the admin API after each restart:
//!   every acknowledged event is stored, each (run, seq) once, numbered 0, 1, 2… without
//!   gaps, and the machine's event count agrees.
//! - DHCP leases: clients run DISCOVER/REQUEST for new MACs and renew old ones; every ACKed
//!   lease is in the lease file after the restart, no address is held by two MACs, and the
//!   machine is offered the same address again.
//!
//! A SIGKILL leaves the page cache alone, so this proves the ordering (acknowledge only what
//! is committed) and redb's and the lease file's recovery from a torn process, not
//! durability across power loss (that is `fsync` before the answer, see `src/state`).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Options, Site, TOKEN};
use osie_api::MacAddr;
use osie_testkit::dhcp::{ClientConfig, DhcpClient, ExchangeError, Identity};
use osie_testkit::{http, require_root, require_tools};

const ROUNDS: u64 = 20;
const MACHINES: usize = 6;
const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 8080);
/// The admin API (its own listener, the default `admin.listen`).
const ADMIN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8081);

fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 30 + i as u8)
}

fn mac(i: usize) -> MacAddr {
    MacAddr::new([0x52, 0x54, 0, 0, 0x0c, i as u8])
}

/// A small deterministic generator (xorshift), so a failing round can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What one machine sent and what came back, across rounds.
#[derive(Default)]
struct Ledger {
    /// Every (run, seq) ever sent, with its body.
    sent: BTreeMap<(String, u64), String>,
    /// Acknowledged with `stored: true`.
    acked: BTreeSet<(String, u64)>,
    /// Sent, answer lost (connection refused or cut): to be re-sent.
    pending: Vec<(String, u64)>,
    /// Re-sent events answered `duplicate: true`: committed before the kill, ack lost.
    committed_unacked: usize,
}

fn event(m: usize, run: &str, seq: u64) -> String {
    format!(
        r#"{{"machine":"{}","phase":"image-streaming","progress":{{"bytes_done":{},"bytes_total":1000000}},"message":"chunk {seq}","time":"2026-01-01T00:00:00Z","run_id":"{run}","seq":{seq}}}"#,
        mac(m),
        seq * 1000
    )
}

/// POST one event; `Some(duplicate)` when acknowledged.
fn post(m: usize, body: &str) -> Option<bool> {
    match http::post_json(addr(m), SERVER, "/events", body) {
        Ok((200, b)) => {
            let ack: serde_json::Value = serde_json::from_slice(&b).expect("an EventAck");
            assert_eq!(ack["stored"], true, "{ack}");
            Some(ack["duplicate"] == true)
        }
        Ok((status, b)) => panic!("event answered {status}: {}", String::from_utf8_lossy(&b)),
        Err(_) => None,
    }
}

/// One machine's installer for one round: re-send what is pending, then new events until the
/// server goes away or the round ends.
fn installer(m: usize, round: u64, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let pending = std::mem::take(&mut ledger.lock().unwrap().pending);
    for (i, key) in pending.iter().enumerate() {
        let body = ledger.lock().unwrap().sent[key].clone();
        match post(m, &body) {
            Some(dup) => {
                let mut l = ledger.lock().unwrap();
                l.acked.insert(key.clone());
                l.committed_unacked += usize::from(dup);
            }
            None => {
                ledger.lock().unwrap().pending.extend(pending[i..].iter().cloned());
                return;
            }
        }
    }
    let run = format!("run-{m}-{round}");
    for seq in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let body = event(m, &run, seq);
        let key = (run.clone(), seq);
        ledger.lock().unwrap().sent.insert(key.clone(), body.clone());
        match post(m, &body) {
            Some(dup) => {
                assert!(!dup, "a new event was taken for a duplicate");
                ledger.lock().unwrap().acked.insert(key);
            }
            None => {
                ledger.lock().unwrap().pending.push(key);
                return;
            }
        }
    }
}

/// Every acknowledged event stored once, numbered without gaps; returns how many are stored.
fn verify_events(site: &Site, ledgers: &[Arc<Mutex<Ledger>>]) -> usize {
    let mut total = 0;
    for (m, ledger) in ledgers.iter().enumerate() {
        let l = ledger.lock().unwrap();
        let auth = format!("Bearer {TOKEN}");
        let path = format!("/admin/machines/{}/events?limit=10000", mac(m));
        let h = site.ns.spawn(move || {
            http::request(
                Ipv4Addr::LOCALHOST,
                ADMIN,
                "GET",
                &path,
                &[("Authorization", &auth)],
                b"",
                Duration::from_secs(10),
            )
            .map_err(anyhow::Error::from)
        });
        let (status, body) = h.join().unwrap().unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let stored: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        let mut seen = BTreeSet::new();
        for (n, e) in stored.iter().enumerate() {
            assert_eq!(e["n"], n as u64, "machine {m}: event numbers have a gap or a repeat");
            let key = (e["event"]["run_id"].as_str().unwrap().to_string(), e["event"]["seq"].as_u64().unwrap());
            assert!(l.sent.contains_key(&key), "machine {m}: {key:?} was never sent");
            assert!(seen.insert(key.clone()), "machine {m}: {key:?} stored twice");
        }
        let missing: Vec<_> = l.acked.difference(&seen).collect();
        assert!(missing.is_empty(), "machine {m}: acknowledged but lost: {missing:?}");
        let view = site.admin("GET", &format!("/admin/machines/{}", mac(m)));
        assert_eq!(view.json()["state"]["events"], stored.len() as u64, "machine {m}: state disagrees with the events");
        total += stored.len();
    }
    total
}

#[test]
fn acknowledged_events_survive_kill_9() {
    if !common::prerequisites("acknowledged_events_survive_kill_9") {
        return;
    }
    let started = Instant::now();
    let mut site = Site::new(Options::default());
    for m in 0..MACHINES {
        site.ns.ip(&["addr", "add", &format!("{}/32", addr(m)), "dev", "lo"]).unwrap();
        site.machine(
            &format!("c{m}"),
            &format!(
                r#"{{"hostname":"c{m}","macs":["{}"],"ip":{{"address":"{}","prefix":24}},"netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#,
                mac(m),
                addr(m)
            ),
        );
    }
    let ledgers: Vec<Arc<Mutex<Ledger>>> = (0..MACHINES).map(|_| Arc::default()).collect();
    let mut rng = Rng(0x5eed_1234);
    let mut acked_at_kill = 0;
    for round in 0..ROUNDS {
        site.start();
        if round > 0 {
            verify_events(&site, &ledgers);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..MACHINES)
            .map(|m| {
                let (l, s) = (Arc::clone(&ledgers[m]), Arc::clone(&stop));
                site.ns.spawn(move || {
                    installer(m, round, l, s);
                    Ok(())
                })
            })
            .collect();
        // Kill somewhere in the stream: 50–400 ms in.
        std::thread::sleep(Duration::from_millis(50 + rng.next() % 350));
        site.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap().unwrap();
        }
        acked_at_kill = ledgers.iter().map(|l| l.lock().unwrap().acked.len()).sum::<usize>();
    }
    // Last restart: everything still pending is re-sent and must be stored exactly once.
    site.start();
    let stop = Arc::new(AtomicBool::new(true));
    for (m, l) in ledgers.iter().enumerate() {
        let (l, s) = (Arc::clone(l), Arc::clone(&stop));
        site.ns
            .spawn(move || {
                installer(m, ROUNDS, l, s);
                Ok(())
            })
            .join()
            .unwrap()
            .unwrap();
    }
    let stored = verify_events(&site, &ledgers);
    let sent: usize = ledgers.iter().map(|l| l.lock().unwrap().sent.len()).sum();
    let unacked: usize = ledgers.iter().map(|l| l.lock().unwrap().committed_unacked).sum();
    assert_eq!(stored, sent, "after re-sending, every event sent is stored once");
    assert!(acked_at_kill > 100, "the rounds did real work: {acked_at_kill} events acknowledged");
    eprintln!(
        "events: {ROUNDS} kills, {sent} events sent, {acked_at_kill} acknowledged before the last kill, \
         {unacked} committed but unacknowledged at a kill (re-sent, recognised as duplicates), {stored} stored, \
         0 lost, 0 duplicated, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    site.stop();
}

/// As iPXE asks (PXE options and user class `iPXE`).
fn identity(mac: MacAddr) -> Identity {
    Identity { mac: mac.octets(), arch: 0, ipxe: true }
}

/// Run `f` with the test kit's DHCP client on `iface`, each message sent once and answered
/// within `timeout` or not at all, in a runtime of this thread's own (call it inside the
/// client's namespace).
fn with_dhcp<T>(iface: &str, timeout: Duration, f: impl AsyncFnOnce(&DhcpClient) -> T) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut cfg = ClientConfig::broadcast(iface);
        (cfg.timeout, cfg.retries) = (timeout, 0);
        let client = DhcpClient::bind(cfg)?;
        Ok(f(&client).await)
    })
}

/// The lease file as bootsvc wrote it: MAC → address.
fn lease_file(site: &Site) -> HashMap<MacAddr, Ipv4Addr> {
    let text = std::fs::read_to_string(site.path("state/dhcp-leases.json")).unwrap_or_default();
    if text.is_empty() {
        return HashMap::new();
    }
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("torn lease file ({e}): {text}"));
    let mut out = HashMap::new();
    let mut by_ip = HashMap::new();
    for l in v["leases"].as_array().unwrap() {
        let mac: MacAddr = l["mac"].as_str().unwrap().parse().unwrap();
        let ip: Ipv4Addr = l["ip"].as_str().unwrap().parse().unwrap();
        assert!(out.insert(mac, ip).is_none(), "{mac} has two leases");
        if let Some(other) = by_ip.insert(ip, mac) {
            panic!("{ip} is leased to {other} and {mac}");
        }
    }
    out
}

#[test]
fn acknowledged_leases_survive_kill_9() {
    let t = "acknowledged_leases_survive_kill_9";
    if !require_root(t) || !require_tools(t, &["curl"]) {
        return;
    }
    const PER_ROUND: u64 = 4;
    let started = Instant::now();
    let mut site = Site::new(Options { pool: true, ..Default::default() });
    let (client_ns, srv_if, cli_if) = site.segment(None);
    site.serve_on(&srv_if, false);
    let macs: Vec<MacAddr> = (0..ROUNDS * PER_ROUND).map(|i| MacAddr::new([2, 0, 0, 0, 0x0d, i as u8])).collect();
    for (i, m) in macs.iter().enumerate() {
        site.machine(
            &format!("p{i}"),
            &format!(r#"{{"hostname":"p{i}","macs":["{m}"],"netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#),
        );
    }
    let acked: Arc<Mutex<HashMap<MacAddr, Ipv4Addr>>> = Arc::default();
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut rng = Rng(0xdead_beef);
    for round in 0..ROUNDS {
        site.start();
        // Every lease ACKed so far is on disk, and each machine is offered its address again.
        let on_disk = lease_file(&site);
        let known = acked.lock().unwrap().clone();
        for (m, ip) in &known {
            assert_eq!(on_disk.get(m), Some(ip), "round {round}: the ACKed lease of {m} was lost");
        }
        let iface = cli_if.clone();
        let sample: Vec<(MacAddr, Ipv4Addr)> = known.iter().take(8).map(|(m, ip)| (*m, *ip)).collect();
        client_ns
            .spawn(move || {
                with_dhcp(&iface, Duration::from_secs(2), async |c| {
                    for (m, ip) in &sample {
                        match c.offer(&identity(*m)).await {
                            Ok(offer) => {
                                assert_eq!(offer.yiaddr, *ip, "{m} is offered another address after a restart")
                            }
                            Err(e) => panic!("{m}: no offer after a restart: {e}"),
                        }
                    }
                })
            })
            .join()
            .unwrap()
            .unwrap();
        // Clients: new machines and renewals, as fast as they are answered, until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let (iface, s, a, n) = (cli_if.clone(), Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&acks));
        let mine: Vec<MacAddr> = macs[(round * PER_ROUND) as usize..((round + 1) * PER_ROUND) as usize].to_vec();
        let renew: Vec<MacAddr> = known.keys().copied().collect();
        let worker = client_ns.spawn(move || {
            with_dhcp(&iface, Duration::from_millis(300), async |c| -> anyhow::Result<()> {
                for m in mine.iter().chain(renew.iter()).cycle() {
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    // No answer (the server is being killed) or a NAK: not a lease, go on.
                    let ip = match c.exchange(&identity(*m)).await {
                        Ok(lease) => lease.address,
                        Err(ExchangeError::Send(e)) => return Err(e.into()),
                        Err(_) => continue,
                    };
                    n.fetch_add(1, Ordering::Relaxed);
                    if let Some(old) = a.lock().unwrap().insert(*m, ip) {
                        assert_eq!(old, ip, "{m} moved from {old} to {ip}");
                    }
                }
                Ok(())
            })?
        });
        std::thread::sleep(Duration::from_millis(50 + rng.next() % 250));
        site.kill9();
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap().unwrap();
    }
    site.start();
    let on_disk = lease_file(&site);
    let acked = acked.lock().unwrap().clone();
    for (m, ip) in &acked {
        assert_eq!(on_disk.get(m), Some(ip), "the ACKed lease of {m} was lost");
    }
    assert!(acked.len() as u64 >= ROUNDS, "the rounds did real work: {} leases", acked.len());
    eprintln!(
        "leases: {ROUNDS} kills, {} ACKs ({} machines' leases, renewals included), all on disk after each restart and \
         offered again, {:.1} s",
        acks.load(Ordering::Relaxed),
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    site.stop();
}

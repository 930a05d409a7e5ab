//! Load: 500 machines boot at once against the real `bootsvc serve`, over a veth from a
//! client namespace, each the way a BIOS machine with iPXE does: DHCP as a PXE ROM, TFTP
//! `undionly.kpxe`, DHCP again as iPXE, its iPXE script over HTTP, the initramfs, its
//! metadata, then its first event. Every machine must get the right answers (its reserved
//! address, the boot file for its stage, its own script and metadata, every byte of the
//! files). Three waves, while bootsvc's memory (VmRSS sampled, VmHWM) and open descriptors
//! are watched: the peak stays bounded, what is left after a wave stops growing after the
//! first, and the descriptor count returns to where it was.
//!
//! The clients are the test kit's (`osie_testkit::{dhcp, tftp, http}`), the same the
//! benchmarks drive servers with.
//! Figures go to stderr (`--no-capture`) and into RELIABILITY.md.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pattern, Options, Site};
use osie_testkit::dhcp::{ClientConfig, DhcpClient, Identity};
use osie_testkit::tftp::FetchOptions;
use osie_testkit::{http, require_root, require_tools, tftp, unique, Netns};

const MACHINES: usize = 500;
/// Waves in CI; `OSIE_LOAD_WAVES` runs more (the long run in RELIABILITY.md).
fn waves() -> usize {
    std::env::var("OSIE_LOAD_WAVES").ok().and_then(|v| v.parse().ok()).filter(|n| *n >= 3).unwrap_or(3)
}
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Machine `i`'s reserved address: 192.0.2.2–10 and .15–254, then 198.51.100.1–251 (the
/// site puts bootsvc and its test clients on 192.0.2.1 and .11–.14).
fn addr(i: usize) -> Ipv4Addr {
    match i {
        0..9 => Ipv4Addr::new(192, 0, 2, 2 + i as u8),
        9..249 => Ipv4Addr::new(192, 0, 2, 15 + (i - 9) as u8),
        _ => Ipv4Addr::new(198, 51, 100, 1 + (i - 249) as u8),
    }
}

fn mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0x01, (i >> 8) as u8, i as u8]
}

fn mac_str(i: usize) -> String {
    osie_api::MacAddr::new(mac(i)).to_string()
}

/// `key:` of `/proc/<pid>/status`, in kB for the memory lines.
fn status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What bootsvc keeps after a wave once it has had its chance to give memory back: it trims
/// the allocator every 5 s after a crowd of connections closes (`http::server`), so right
/// after a wave the resident size can still hold the wave's buffers. The smallest size seen
/// over 6 s, or sooner the first reading at or under the previous wave's.
fn retained(pid: u32, previous: Option<u64>) -> u64 {
    let until = Instant::now() + Duration::from_secs(6);
    let mut least = status(pid, "VmRSS:");
    while Instant::now() < until && previous.is_none_or(|p| least > p) {
        std::thread::sleep(Duration::from_millis(100));
        least = least.min(status(pid, "VmRSS:"));
    }
    least
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// One machine's boot; panics on any wrong answer, returns its DHCP retransmits.
async fn boot(i: usize, dhcp: Arc<DhcpClient>, undionly: Arc<Vec<u8>>, initrd: Arc<Vec<u8>>) -> anyhow::Result<u32> {
    let (ip, mac, m) = (addr(i), mac(i), mac_str(i));
    let server = SocketAddrV4::new(SERVER, 8080);
    let timeout = Duration::from_secs(60);

    let pxe = dhcp.exchange(&Identity { mac, arch: 0, ipxe: false }).await?;
    assert_eq!(pxe.address, ip, "{m}: not its reserved address");
    assert_eq!(pxe.boot_file.as_deref(), Some("undionly.kpxe"), "{m}: BIOS PXE boot file");
    assert_eq!(pxe.next_server, SERVER, "{m}: next server");

    let mut got = Vec::new();
    let opts = FetchOptions { local: Some(ip), timeout: Duration::from_secs(2), retries: 10, ..Default::default() };
    tftp::fetch(SocketAddrV4::new(SERVER, 69), "undionly.kpxe", &opts, Some(&mut got)).await?;
    assert!(got == *undionly, "{m}: TFTP undionly.kpxe differs ({} bytes)", got.len());

    let ipxe = dhcp.exchange(&Identity { mac, arch: 0, ipxe: true }).await?;
    assert_eq!(ipxe.address, ip, "{m}: iPXE got another address");
    let script_url = format!("http://192.0.2.1:8080/boot/{m}.ipxe");
    assert_eq!(ipxe.boot_file.as_deref(), Some(script_url.as_str()), "{m}: iPXE boot file");

    let mut script = Vec::new();
    http::get(server, &format!("/boot/{m}.ipxe"), Some(ip), &[], timeout, Some(&mut script)).await?;
    let script = String::from_utf8(script)?;
    assert!(script.contains(&format!("echo osie: installing l{i} ({m})\n")), "{m}: not its script:\n{script}");
    assert!(script.contains(&format!(" osie.mac={m} || goto osie_failed\n")), "{m}: not its script:\n{script}");

    let mut body = Vec::new();
    http::get(server, "/artifacts/initramfs.img", Some(ip), &[], timeout, Some(&mut body)).await?;
    assert!(body == *initrd, "{m}: initramfs differs ({} bytes)", body.len());

    let mut md = Vec::new();
    http::get(server, "/metadata", Some(ip), &[("X-Osie-Mac", &m)], timeout, Some(&mut md)).await?;
    let md: serde_json::Value = serde_json::from_slice(&md)?;
    assert_eq!((md["hostname"].as_str(), md["mac"].as_str()), (Some(format!("l{i}").as_str()), Some(m.as_str())));

    let ev = format!(
        r#"{{"machine":"{m}","phase":"booted-installer","time":"2026-01-01T00:00:00Z","run_id":"load-{}","seq":0}}"#,
        unique("")
    );
    let headers = [("Content-Type", "application/json")];
    let post = move || http::request(ip, server, "POST", "/events", &headers, ev.as_bytes(), timeout);
    let (status, body) = tokio::task::spawn_blocking(post).await??;
    assert_eq!(status, 200, "{m}: event: {}", String::from_utf8_lossy(&body));
    Ok(pxe.retransmits + ipxe.retransmits)
}

#[test]
fn five_hundred_machines_boot_at_once() {
    let t = "five_hundred_machines_boot_at_once";
    if !require_root(t) || !require_tools(t, &["curl", "ip", "nstat"]) {
        return;
    }
    let mut site = Site::new(Options::default());
    let (client, srv_if, cli_if) = site.segment(None);
    site.ns.ip(&["route", "add", "198.51.100.0/24", "dev", &srv_if]).unwrap();
    // Each machine's address on the client side, so it can talk from it after its DHCP.
    let batch = site.path("addrs.batch");
    let lines: String = (0..MACHINES).map(|i| format!("addr add {}/32 dev {cli_if}\n", addr(i))).collect();
    std::fs::write(&batch, lines + "route add 192.0.2.0/24 dev " + &cli_if + "\n").unwrap();
    client.ip(&["-batch", batch.to_str().unwrap()]).unwrap();
    site.serve_on(&srv_if, true);
    for i in 0..MACHINES {
        let prefix_gw = if i < 249 { "24,\"gateway\":\"192.0.2.1\"" } else { "24" };
        site.machine(
            &format!("l{i}"),
            &format!(
                r#"{{"hostname":"l{i}","macs":["{}"],"ip":{{"address":"{}","prefix":{prefix_gw}}},"netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#,
                mac_str(i),
                addr(i)
            ),
        );
    }
    site.start();
    let pid = site.pid();
    let undionly = Arc::new(std::fs::read(site.path("tftp/undionly.kpxe")).unwrap());
    let initrd = Arc::new(std::fs::read(site.path("artifacts/initramfs.img")).unwrap());
    assert_eq!(*initrd, pattern(1024 * 1024 + 5, 2));

    // Sample bootsvc's resident memory through both waves.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(status(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, fds0) = (status(pid, "VmRSS:"), fds(pid));
    let mut after = Vec::new();
    let waves = waves();
    for wave in 0..waves {
        let drops_before = udp_rcvbuf_errors(&site.ns);
        let started = Instant::now();
        let (iface, u, r) = (cli_if.clone(), Arc::clone(&undionly), Arc::clone(&initrd));
        let retransmits = client
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
                rt.block_on(async move {
                    let mut cfg = ClientConfig::broadcast(&iface);
                    cfg.retries = 10;
                    let dhcp = Arc::new(DhcpClient::bind(cfg)?);
                    let tasks: Vec<_> = (0..MACHINES)
                        .map(|i| tokio::spawn(boot(i, Arc::clone(&dhcp), Arc::clone(&u), Arc::clone(&r))))
                        .collect();
                    let mut retransmits = 0;
                    for (i, t) in tasks.into_iter().enumerate() {
                        match t.await {
                            Ok(Ok(n)) => retransmits += n,
                            Ok(Err(e)) => anyhow::bail!("machine {i} ({}): {e:#}", mac_str(i)),
                            Err(e) => anyhow::bail!("machine {i} ({}): {e}", mac_str(i)),
                        }
                    }
                    Ok(retransmits)
                })
            })
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("wave {wave}: {e:#}\n{}", tail(&site.logs())));
        let secs = started.elapsed().as_secs_f64();
        // Transfers and connections wind down: TFTP counts a transfer when it ends.
        osie_testkit::wait_for("bootsvc to settle", Duration::from_secs(20), || {
            (site.metric("osie_tftp_transfers_in_flight") == 0 && fds(pid) <= fds0).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}: {} descriptors open, {fds0} before the wave", fds(pid)));
        let rss = retained(pid, after.last().map(|(r, _)| *r));
        let n = fds(pid);
        eprintln!(
            "wave {wave}: {MACHINES} machines booted in {secs:.1} s; DHCP retransmits {retransmits}, \
             server UDP receive-buffer drops {}; bootsvc RSS {rss} kB, descriptors {n}",
            udp_rcvbuf_errors(&site.ns) - drops_before
        );
        after.push((rss, n));
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let (peak, hwm) = (peak.load(Ordering::Relaxed), status(pid, "VmHWM:"));
    eprintln!(
        "bootsvc: RSS before {rss0} kB, peak sampled {peak} kB, VmHWM {hwm} kB, after {after:?}; fds before {fds0}"
    );
    // At least one ACK per exchange (a client that timed out and asked again gets two).
    assert!(site.metric("osie_dhcp_replies_total{kind=\"ack\"}") >= (2 * MACHINES * waves) as u64);
    assert_eq!(site.metric("osie_tftp_transfers_total{outcome=\"complete\"}"), (MACHINES * waves) as u64);
    assert_eq!(site.metric("osie_events_total{kind=\"booted-installer\"}"), (MACHINES * waves) as u64);
    // Bounded: well under what the box has, and flat across waves (nothing kept per request).
    assert!(hwm < 256 * 1024, "bootsvc peaked at {hwm} kB");
    // What is left after each wave, once bootsvc has trimmed the allocator (`retained`),
    // must not keep climbing: alone a wave leaves about 1 MiB more than the one before
    // (28.6, 29.9, 30.7 MiB). 12 MiB is 24 KiB per machine: a buffer kept per transfer or
    // connection still fails here.
    let growth = after[waves - 1].0.saturating_sub(after[waves - 2].0);
    assert!(growth < 12 * 1024, "RSS grew {growth} kB between the last two waves: {after:?}");
    for (_, n) in &after {
        assert!(*n <= fds0, "descriptors leaked: {n} open after a wave, {fds0} before");
    }
    site.stop();
}

/// `UdpRcvbufErrors` in a namespace: datagrams the kernel dropped for a full socket buffer.
fn udp_rcvbuf_errors(ns: &Netns) -> u64 {
    let out = ns.cmd("nstat").args(["-az", "UdpRcvbufErrors"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("UdpRcvbufErrors"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

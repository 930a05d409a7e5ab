//! Machines booting at once against the real bootsvc, the way the "500 machines" load test
//! drives it: DHCP from each machine's MAC, the boot file over TFTP from the leased
//! address, then the iPXE script and the kernel over HTTP; and again as iPXE, whose DHCP
//! answer is the script's URL.

mod common;

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use osie_bench::servers::{self, BootsvcOptions, Lab, HTTP_PORT, SERVER_IP};
use osie_bench::storm::{self, StormSpec};
use osie_testkit::dhcp::{packet, ClientConfig, DhcpClient, Identity};
use osie_testkit::require_root;
use osie_testkit::tftp::FetchOptions;

#[test]
fn twenty_machines_boot_at_once() {
    if !require_root("storm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new(dir.path()).unwrap();
    let n = 20;
    let res = servers::reservations(n).unwrap();
    for r in &res {
        lab.pair.client.ip(&["addr", "add", &format!("{}/32", r.ip), "dev", &lab.pair.client_if]).unwrap();
    }
    let (tftp, artifacts) = (dir.path().join("tftp"), dir.path().join("artifacts"));
    std::fs::create_dir_all(&tftp).unwrap();
    std::fs::create_dir_all(&artifacts).unwrap();
    let kpxe: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(tftp.join("undionly.kpxe"), &kpxe).unwrap();
    std::fs::write(artifacts.join("vmlinuz"), vec![1u8; 300_000]).unwrap();
    std::fs::write(artifacts.join("initramfs.img"), vec![2u8; 100_000]).unwrap();
    let mut srv = lab
        .bootsvc(
            &common::bootsvc(),
            &BootsvcOptions {
                reservations: res.clone(),
                tftp_root: Some(tftp),
                artifacts: Some(artifacts),
                ..BootsvcOptions::default()
            },
        )
        .unwrap();

    let iface = lab.pair.client_if.clone();
    let run = move |ipxe: bool| {
        let iface = iface.clone();
        move || -> anyhow::Result<storm::StormReport> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let mut cfg = ClientConfig::broadcast(&iface);
                cfg.timeout = Duration::from_millis(500);
                cfg.retries = 20; // bootsvc may still be starting
                let client = Arc::new(DhcpClient::bind(cfg)?);
                let machines = (0..n).map(|i| Identity { mac: packet::nth_mac(i), arch: 0, ipxe }).collect();
                let spec = StormSpec {
                    machines,
                    window: 20,
                    tftp: Some(FetchOptions::default()),
                    http_server: Some(SocketAddrV4::new(SERVER_IP, HTTP_PORT)),
                    http_paths: if ipxe { vec!["/artifacts/vmlinuz".into()] } else { vec!["/boot/{mac}.ipxe".into()] },
                    from_lease: true,
                    http_timeout: Duration::from_secs(30),
                };
                Ok(storm::run(client, spec).await)
            })
        }
    };
    // Firmware: DHCP names undionly.kpxe, fetched over TFTP; then the script over HTTP.
    let r = lab.pair.client.spawn(run(false)).join().unwrap().unwrap();
    srv.check_running().unwrap();
    assert_eq!((r.booted, r.failed), (20, 0), "{:?}\n{}", r.errors, srv.log_tail(30));
    assert_eq!(r.tftp_bytes, 20 * kpxe.len() as u64);
    assert_eq!(r.dhcp.count, 20);
    assert!(r.http_bytes > 20 * 10, "20 iPXE scripts: {r:?}");
    // iPXE: DHCP names the script's URL, which is fetched; then the kernel.
    let r = lab.pair.client.spawn(run(true)).join().unwrap().unwrap();
    assert_eq!((r.booted, r.failed), (20, 0), "{:?}\n{}", r.errors, srv.log_tail(30));
    assert_eq!(r.tftp_bytes, 0, "iPXE is given a URL, no TFTP");
    assert!(r.http_bytes >= 20 * 300_000, "{r:?}");
    assert_eq!(r.http.count, 40);
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(log.contains("TFTP transfer complete"), "{log}");
}

/// The generator as a relay agent (giaddr 192.0.2.2): answers come back unicast to it, and
/// every machine gets its reservation, every time.
#[test]
fn relayed_load_gets_every_reservation() {
    if !require_root("storm_relay") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new(dir.path()).unwrap();
    let res = servers::reservations(30).unwrap();
    let mut srv =
        lab.bootsvc(&common::bootsvc(), &BootsvcOptions { reservations: res.clone(), ..Default::default() }).unwrap();
    let expect: Vec<_> = res.iter().map(|r| r.ip).collect();
    let report = lab
        .pair
        .client
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let mut cfg = ClientConfig::relay(servers::CLIENT_IP, SERVER_IP);
                cfg.timeout = Duration::from_millis(500);
                cfg.retries = 20; // bootsvc may still be starting
                let client = Arc::new(DhcpClient::bind(cfg)?);
                let spec = osie_bench::dhcp::LoadSpec {
                    clients: (0..30).map(|i| Identity { mac: packet::nth_mac(i), arch: 7, ipxe: false }).collect(),
                    window: 8,
                    warmup: Duration::ZERO,
                    duration: Duration::from_secs(30),
                    max_exchanges: Some(90),
                    expect,
                };
                anyhow::Ok(osie_bench::dhcp::load::run(client, spec).await)
            })
        })
        .join()
        .unwrap()
        .unwrap();
    srv.check_running().unwrap();
    assert!(report.exchanges >= 90, "{report:?}\n{}", srv.log_tail(20));
    assert_eq!(report.wrong_addresses, 0);
    assert!(report.stable_addresses);
    assert_eq!(report.distinct_addresses, 30);
    assert!(report.latency.p99_us > 0.0);
}

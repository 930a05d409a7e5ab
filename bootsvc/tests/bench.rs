//! Figures, not checks: run by hand (they are `#[ignore]`d so the suite stays quick and
//! free of timing assertions), in release mode, on an otherwise idle machine:
//!
//! ```text
//! cargo test -p bootsvc --release --test bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - `dhcp_round_trip`: DISCOVER → OFFER round trips over a veth, one at a time.
//! - `tftp_throughput`: a 100 MB file over TFTP with curl (blksize 1468) and atftp
//!   (blksize 1468, windowsize 32), as the ratio the design notes compare.

mod net;

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bootsvc::dhcp::request::HEADER_LEN;
use bootsvc::metrics::Metrics;
use net::{config, machine, start_dhcp, start_tftp};
use osie_testkit::site::config::Dhcp;
use osie_testkit::{require_root, require_tools, Pair};

#[test]
#[ignore = "benchmark: run by hand, see the file's doc"]
fn dhcp_round_trip() {
    if !require_root("dhcp_round_trip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::new("192.0.2.1/24").unwrap();
    pair.client.ip(&["addr", "add", "192.0.2.2/24", "dev", &pair.client_if]).unwrap();
    let mac = "02:00:00:00:ee:01";
    let cfg = Arc::new(config(dir.path(), &pair.server_if, Dhcp::default(), dir.path()));
    let backend = vec![machine("bench", mac, Some("192.0.2.10/24"), true)];
    let _srv = start_dhcp(&pair.server, cfg, backend, Arc::new(Metrics::new())).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dhcp/ovmf-pxe-discover.bin");
    let mut pkt = std::fs::read(fixture).unwrap();
    pkt[28..34].copy_from_slice(&mac.parse::<osie_api::MacAddr>().unwrap().octets());
    // Relayed from 192.0.2.2, so the offer comes back unicast to this socket.
    pkt[24..28].copy_from_slice(&[192, 0, 2, 2]);
    let n = 5000u32;
    let times = pair
        .client
        .spawn(move || {
            let s = UdpSocket::bind("192.0.2.2:67")?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut buf = [0u8; 1500];
            let mut times = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let t = Instant::now();
                s.send_to(&pkt, (Ipv4Addr::new(192, 0, 2, 1), 67))?;
                let (len, _) = s.recv_from(&mut buf)?;
                times.push(t.elapsed());
                assert!(len >= HEADER_LEN && buf[0] == 2);
            }
            Ok(times)
        })
        .join()
        .unwrap()
        .unwrap();
    let mut sorted = times.clone();
    sorted.sort();
    let total: Duration = times.iter().sum();
    eprintln!(
        "DHCP DISCOVER→OFFER, {n} round trips: mean {:?}, median {:?}, p99 {:?}, max {:?} ({:.0}/s one at a time)",
        total / n,
        sorted[sorted.len() / 2],
        sorted[sorted.len() * 99 / 100],
        sorted[sorted.len() - 1],
        f64::from(n) / total.as_secs_f64()
    );
}

#[test]
#[ignore = "benchmark: run by hand, see the file's doc"]
fn tftp_throughput() {
    if !require_root("tftp_throughput") || !require_tools("tftp_throughput", &["curl", "atftp"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tftp");
    std::fs::create_dir_all(&root).unwrap();
    let size = 100_000_000usize;
    let data: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(root.join("big"), &data).unwrap();
    let pair = Pair::new("192.0.2.1/24").unwrap();
    pair.client.ip(&["addr", "add", "192.0.2.2/24", "dev", &pair.client_if]).unwrap();
    let cfg = Arc::new(config(dir.path(), &pair.server_if, Dhcp::default(), &root));
    let _srv = start_tftp(&pair.server, cfg, Arc::new(Metrics::new())).unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let runs: [(&str, &str, Vec<&str>); 3] = [
        ("curl blksize 1468", "curl", vec!["-sS", "--tftp-blksize", "1468", "-o", o, "tftp://192.0.2.1/big"]),
        ("atftp blksize 1468", "atftp", vec!["--get", "-r", "big", "-l", o, "--option", "blksize 1468", "192.0.2.1"]),
        (
            "atftp blksize 1468 windowsize 32",
            "atftp",
            vec!["--get", "-r", "big", "-l", o, "--option", "blksize 1468", "--option", "windowsize 32", "192.0.2.1"],
        ),
    ];
    for (what, prog, args) in runs {
        let t = Instant::now();
        pair.client.run(prog, &args).unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(std::fs::metadata(&out).unwrap().len() as usize, size);
        eprintln!("TFTP 100 MB, {what}: {secs:.2} s, {:.1} MB/s", size as f64 / secs / 1e6);
        std::fs::remove_file(&out).unwrap();
    }
}

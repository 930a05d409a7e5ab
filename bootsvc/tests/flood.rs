//! A hostile host on the provisioning segment floods the real `bootsvc serve` with bad DHCP
//! packets and refused TFTP requests from its own namespace. Every drop is counted in the
//! metrics; the log gets the first few of each reason and a summary line per interval
//! (`src/droplog.rs`) instead of a line per packet; a real client in another namespace
//! still gets its lease (udhcpc) and its boot file (atftp) meanwhile.

mod common;
mod net;

use std::net::UdpSocket;
use std::time::Duration;

use common::{Options, Site};
use osie_testkit::{require_root, require_tools, wait_for, Netns};

const MAC: &str = "02:00:00:00:f1:01";
const HOSTILE: &str = "192.0.2.3";

/// Send `packets` to `to` from the hostile host, in batches, each once the server has
/// counted the one before (so the kernel's socket buffer never overflows and every packet
/// reaches bootsvc: the counts below are exact).
fn flood(site: &Site, hostile: &Netns, to: &'static str, packets: Vec<Vec<u8>>, counted: impl Fn(&Site) -> u64) {
    let total = packets.len() as u64;
    let before = counted(site);
    for (i, batch) in packets.chunks(100).enumerate() {
        let batch = batch.to_vec();
        hostile
            .spawn(move || {
                let s = UdpSocket::bind((HOSTILE, 0))?;
                for p in &batch {
                    s.send_to(p, to)?;
                }
                Ok(())
            })
            .join()
            .unwrap()
            .unwrap();
        let want = before + ((i as u64 + 1) * 100).min(total);
        wait_for("the batch to be counted", Duration::from_secs(20), || (counted(site) >= want).then_some(())).unwrap();
    }
}

/// The JSON log lines of `site` whose message starts with `prefix`.
fn lines(site: &Site, prefix: &str) -> Vec<serde_json::Value> {
    site.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        .collect()
}

/// Lines of their own for each dropped packet.
const DHCP_SINGLE: [&str; 1] = ["DHCP packet dropped"];
const TFTP_SINGLE: [&str; 2] = ["TFTP write request refused", "TFTP read request refused"];

/// Drops accounted for in the log: the lines of their own (`single`), plus what the
/// summaries say went unlogged. Returns (lines of their own, summaries, drops accounted).
fn accounted(site: &Site, single: &[&str], proto: &str) -> (u64, Vec<serde_json::Value>, u64) {
    let summaries = lines(site, &format!("{proto} packets dropped in the last"));
    let unlogged: u64 = summaries.iter().map(|s| s["dropped"].as_u64().unwrap() - s["logged"].as_u64().unwrap()).sum();
    let own: u64 = single.iter().map(|p| lines(site, p).len() as u64).sum();
    (own, summaries, own + unlogged)
}

#[test]
fn a_flood_of_bad_packets_makes_a_few_lines_and_a_summary() {
    let t = "a_flood_of_bad_packets_makes_a_few_lines_and_a_summary";
    if !require_root(t) || !require_tools(t, &["curl", "udhcpc", "atftp"]) {
        return;
    }
    let mut site = Site::new(Options { log_json: true, ..Default::default() });
    let (bridge, clients) = site.shared_segment(&[None, Some(MAC)]);
    let (hostile, hostile_if) = &clients[0];
    let (machine, machine_if) = &clients[1];
    hostile.ip(&["addr", "add", &format!("{HOSTILE}/24"), "dev", hostile_if]).unwrap();
    site.serve_on(&bridge, true);
    site.machine(
        "m",
        &format!(
            r#"{{"hostname":"flooded","macs":["{MAC}"],"ip":{{"address":"192.0.2.50","prefix":24}},
                "netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#
        ),
    );
    site.start();
    let dropped =
        |site: &Site, reason: &str| site.metric(&format!("osie_dropped_packets_total{{reason=\"{reason}\"}}"));

    // 9000 bad DHCP packets: too short for a header, and a header with a bad magic cookie.
    let mut bad_magic = vec![0u8; 300];
    (bad_magic[0], bad_magic[1], bad_magic[2]) = (1, 1, 6);
    let dhcp: Vec<Vec<u8>> =
        (0..9000).map(|i| if i % 2 == 0 { b"garbage".to_vec() } else { bad_magic.clone() }).collect();
    // 3000 refused TFTP requests: writes and `..`.
    let request = |op: u8, name: &str| [&[0, op][..], name.as_bytes(), b"\0octet\0"].concat();
    let tftp: Vec<Vec<u8>> =
        (0..3000).map(|i| if i % 2 == 0 { request(2, "upload") } else { request(1, "../admin.token") }).collect();

    std::thread::scope(|s| {
        // The real client asks for its lease while the flood runs.
        let lease = s.spawn(|| {
            let dir = tempfile::tempdir().unwrap();
            osie_testkit::dhcp::udhcpc(machine, machine_if, dir.path(), &[]).unwrap()
        });
        flood(&site, hostile, "192.0.2.1:67", dhcp, |site| {
            dropped(site, "dhcp-truncated") + dropped(site, "dhcp-malformed")
        });
        let env = lease.join().unwrap();
        assert_eq!(osie_testkit::dhcp::env_value(&env, "ip").as_deref(), Some("192.0.2.50"), "{env}");
    });
    flood(&site, hostile, "192.0.2.1:69", tftp, |site| dropped(site, "tftp-write") + dropped(site, "tftp-traversal"));
    assert_eq!((dropped(&site, "dhcp-truncated"), dropped(&site, "dhcp-malformed")), (4500, 4500));
    assert_eq!((dropped(&site, "tftp-write"), dropped(&site, "tftp-traversal")), (1500, 1500));

    // The machine gets its boot file over TFTP.
    machine.ip(&["addr", "add", "192.0.2.50/24", "dev", machine_if]).unwrap();
    let got = site.path("got.kpxe");
    let o =
        machine.cmd("atftp").args(["--get", "-r", "undionly.kpxe", "-l", got.to_str().unwrap(), "192.0.2.1"]).output();
    assert!(o.unwrap().status.success());
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(site.path("tftp/undionly.kpxe")).unwrap());

    // Within an interval (10 s) of the flood's end, the summaries account for every drop.
    let both = || (accounted(&site, &DHCP_SINGLE, "DHCP"), accounted(&site, &TFTP_SINGLE, "TFTP"));
    wait_for("the summaries", Duration::from_secs(25), || {
        let (d, t) = both();
        (d.2 == 9000 && t.2 == 3000).then_some(())
    })
    .unwrap_or_else(|e| {
        let (d, t) = both();
        panic!("{e}: DHCP {} of 9000, TFTP {} of 3000 accounted for", d.2, t.2)
    });
    let ((dhcp_own, dhcp_sums, _), (tftp_own, tftp_sums, _)) = both();
    eprintln!("DHCP: {dhcp_own} lines of their own and {} summaries for 9000 packets", dhcp_sums.len());
    eprintln!("TFTP: {tftp_own} lines of their own and {} summaries for 3000 requests", tftp_sums.len());
    for s in dhcp_sums.iter().chain(&tftp_sums) {
        eprintln!("  {}", s["message"]);
    }
    // 5 per reason per interval, 2 reasons each: the floods span one or two intervals.
    assert!((10..=20).contains(&dhcp_own), "{dhcp_own} DHCP lines");
    assert!((10..=20).contains(&tftp_own), "{tftp_own} TFTP lines");
    for s in dhcp_sums.iter().chain(&tftp_sums) {
        assert!(s["message"].as_str().unwrap().contains(&format!("from {HOSTILE} (")), "{s}");
    }
    // The whole log stays short: startup, the lease, the transfer, these.
    let all = site.logs().lines().count();
    assert!(all < 100, "{all} log lines:\n{}", site.logs());
}

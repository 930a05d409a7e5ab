//! A hostile host on the provisioning segment floods the real `bootsvc serve` from its own
//! namespace: bad DHCP packets and refused TFTP requests over IPv4; malformed DHCPv6
//! messages and a loop of valid Solicits over IPv6 (2001:db8::/32 and link-local only).
//! Every drop is counted in the metrics; the log gets the first few of each reason and a
//! summary line per interval (`src/droplog.rs`) instead of a line per packet; a real client
//! in another namespace still gets its lease (udhcpc, `dhclient -6`) and its boot file
//! (atftp) or boot file URL meanwhile.

mod common;
mod net;

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

use common::{Options, Site};
use osie_testkit::{require_root, require_tools, wait_for, Netns};

const MAC: &str = "02:00:00:00:f1:01";
const HOSTILE: &str = "192.0.2.3";

/// Send `packets` to `to` from `from` on the hostile host, in batches, each once the server
/// has counted the one before (so the kernel's socket buffer never overflows and every
/// packet reaches bootsvc: the counts below are exact).
fn flood(
    site: &Site,
    hostile: &Netns,
    (from, to): (SocketAddr, SocketAddr),
    packets: Vec<Vec<u8>>,
    counted: impl Fn(&Site) -> u64,
) {
    let total = packets.len() as u64;
    let before = counted(site);
    for (i, batch) in packets.chunks(100).enumerate() {
        let batch = batch.to_vec();
        hostile
            .spawn(move || {
                let s = UdpSocket::bind(from)?;
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

/// From the hostile host's IPv4 address to `to`.
fn v4(to: &str) -> (SocketAddr, SocketAddr) {
    ((HOSTILE.parse::<std::net::Ipv4Addr>().unwrap(), 0).into(), to.parse().unwrap())
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
        flood(&site, hostile, v4("192.0.2.1:67"), dhcp, |site| {
            dropped(site, "dhcp-truncated") + dropped(site, "dhcp-malformed")
        });
        let env = lease.join().unwrap();
        assert_eq!(osie_testkit::dhcp::env_value(&env, "ip").as_deref(), Some("192.0.2.50"), "{env}");
    });
    flood(&site, hostile, v4("192.0.2.1:69"), tftp, |site| {
        dropped(site, "tftp-write") + dropped(site, "tftp-traversal")
    });
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

/// The IPv6 flood's hosts: a machine in the inventory whose NIC a hostile host holds (or
/// whose client loops), and a machine beside it.
const HOSTILE_MAC: [u8; 6] = [2, 0, 0, 0, 0xf1, 0x66];
const MAC6: &str = "02:00:00:00:f1:06";
const SERVER6: &str = "2001:db8::1";
const A6: &str = "2001:db8::50";
/// A second link-local address on the hostile host: the malformed messages come from it.
const FORGED_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xbad);
const ALL_DHCP_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// The link-local address the kernel forms from `mac` (EUI-64).
fn eui64_link_local(m: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
}

/// A Solicit as UEFI HTTP boot sends it: DUID-LL of `mac`, elapsed time, an IA_NA and
/// client architecture 16.
fn solicit(mac: [u8; 6], xid: u32) -> Vec<u8> {
    let mut m = xid.to_be_bytes().to_vec();
    m[0] = 1;
    let duid = [&[0, 3, 0, 1][..], &mac].concat();
    let options: [(u16, &[u8]); 4] =
        [(1, &duid), (8, &[0, 0]), (3, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), (61, &[0, 16])];
    for (code, body) in options {
        m.extend(code.to_be_bytes());
        m.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
        m.extend(body);
    }
    m
}

#[test]
fn a_dhcp6_flood_is_counted_and_a_real_client_still_gets_its_address() {
    let t = "a_dhcp6_flood_is_counted_and_a_real_client_still_gets_its_address";
    if !require_root(t) || !require_tools(t, &["curl", "dhclient", "ip"]) {
        return;
    }
    let hostile_mac = HOSTILE_MAC.map(|b| format!("{b:02x}")).join(":");
    let mut site = Site::new(Options { log_json: true, ..Default::default() });
    let (bridge, hosts) = site.shared_segment(&[Some(&hostile_mac), Some(MAC6)]);
    let [(hostile, hostile_if), (machine, machine_if)] = &hosts[..] else { unreachable!() };
    site.ns.ip(&["-6", "addr", "add", &format!("{SERVER6}/64"), "dev", &bridge, "nodad"]).unwrap();
    hostile.ip(&["-6", "addr", "add", &format!("{FORGED_LL}/64"), "dev", hostile_if, "nodad"]).unwrap();
    site.serve_on(&bridge, false);
    let record = |host: &str, mac: &str, ip6: &str| {
        serde_json::json!({
            "hostname": host, "macs": [mac], "netboot": { "allow": true },
            "install": { "image": { "name": "debian-12" } },
            "ip6": { "address": ip6, "prefix": 64 },
        })
        .to_string()
    };
    site.machine("looping", &record("looping", &hostile_mac, "2001:db8::66"));
    site.machine("m", &record("flooded6", MAC6, A6));
    common::dhcp6::enable(&site, SERVER6);
    site.start();
    common::link_local_ready(&site.ns, &bridge);
    common::link_local_ready(hostile, hostile_if);
    common::link_local_ready(machine, machine_if);
    let dropped =
        |site: &Site, reason: &str| site.metric(&format!("osie_dropped_packets_total{{reason=\"{reason}\"}}"));
    let rate_limited = |site: &Site| dropped(site, "dhcp6-rate-source") + dropped(site, "dhcp6-rate-total");
    let advertised = |site: &Site| site.metric("osie_dhcp_replies_total{kind=\"dhcp6-advertise\"}");
    let iface = hostile_if.clone();
    let scope = hostile.spawn(move || Ok(nix::net::if_::if_nametoindex(iface.as_str())?)).join().unwrap().unwrap();
    let to = SocketAddr::V6(SocketAddrV6::new(ALL_DHCP_SERVERS, 547, 0, scope));
    let from = |a: Ipv6Addr| SocketAddr::V6(SocketAddrV6::new(a, 0, 0, scope));
    let looping_ll = eui64_link_local(HOSTILE_MAC);

    // Malformed messages: too short, a relayed one (not served), a server's message, an option
    // running past the end. They come from one source, so after its burst most are refused by
    // the rate limit before they are read: each counted once, under one reason.
    let malformed: Vec<Vec<u8>> = (0..1000)
        .map(|i| match i % 4 {
            0 => vec![1, 2],
            1 => vec![12, 0, 0, 0],
            2 => vec![2, 1, 2, 3],
            _ => vec![1, 1, 2, 3, 0, 1, 0, 50, 0, 0],
        })
        .collect();
    let read = ["dhcp6-malformed", "dhcp6-relayed", "dhcp6-not-client-message"];
    let all_drops = |site: &Site| read.iter().map(|r| dropped(site, r)).sum::<u64>() + rate_limited(site);
    let answered_hostile = |site: &Site| {
        lines(site, "DHCPv6 message")
            .iter()
            .filter(|l| l["mac"] == hostile_mac.as_str() && l["reply"] == "dhcp6-advertise")
            .count() as u64
    };

    let dir = tempfile::tempdir().unwrap();
    let (sent, secs) = std::thread::scope(|s| {
        // The real client asks for its address while the floods run: a round is 1000 malformed
        // messages, then 1000 valid Solicits from the looping machine's own address and DUID;
        // rounds go on until the client is done, 3 at least.
        let answered0 = advertised(&site);
        let client = s.spawn(|| osie_testkit::dhcp::dhclient6(machine, machine_if, dir.path(), None));
        let start = Instant::now();
        let mut rounds = 0u32;
        while rounds < 3 || !client.is_finished() {
            flood(&site, hostile, (from(FORGED_LL), to), malformed.clone(), all_drops);
            let solicits: Vec<Vec<u8>> = (0..1000).map(|i| solicit(HOSTILE_MAC, rounds * 1000 + i)).collect();
            flood(&site, hostile, (from(looping_ll), to), solicits, |site| rate_limited(site) + advertised(site));
            rounds += 1;
            assert!(rounds <= 30, "the real client never finished");
        }
        let secs = start.elapsed().as_secs();
        let env = client.join().unwrap().unwrap_or_else(|| panic!("the real client got no lease\n{}", site.logs()));
        assert_eq!(osie_testkit::dhcp::env_value(&env, "new_ip6_address").as_deref(), Some(A6), "{env}");
        let url = osie_testkit::dhcp::env_value(&env, "new_dhcp6_bootfile_url").unwrap_or_default();
        assert!(url.starts_with(&format!("http://[{SERVER6}]:")) && url.ends_with("/ipxe/ipxe.efi"), "{env}");
        assert!(advertised(&site) > answered0 + answered_hostile(&site), "the real client was not advertised to");
        (2000 * u64::from(rounds), secs)
    });

    // Exactly: every message was dropped for one reason, or (a Solicit) answered.
    wait_for("every message counted", Duration::from_secs(10), || {
        (all_drops(&site) + answered_hostile(&site) == sent).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {sent} sent, {} dropped, {} answered", all_drops(&site), answered_hostile(&site)));
    let answered = answered_hostile(&site);
    // The malformed ones: the first burst read (2 of each kind at least), the rest rate limited.
    let reasons: Vec<u64> = read.iter().map(|r| dropped(&site, r)).collect();
    assert!(reasons.iter().all(|&n| n >= 2), "{read:?}: {reasons:?}");
    // The looping machine got its burst, then one answer a second: not one per Solicit.
    let burst = u64::from(bootsvc::dhcp6::server::RATES.burst);
    eprintln!("{} Solicits in {secs} s: {answered} answered", sent / 2);
    assert!((burst..=burst + secs + 2).contains(&answered), "{answered} of {} Solicits answered in {secs} s", sent / 2);

    // Within an interval (10 s) of the flood's end, the summaries account for every drop.
    let own = ["DHCPv6 message dropped", "DHCPv6 message not answered"];
    let want = sent - answered;
    wait_for("the summaries", Duration::from_secs(25), || (accounted(&site, &own, "DHCPv6").2 == want).then_some(()))
        .unwrap_or_else(|e| panic!("{e}: {} of {want} drops accounted for", accounted(&site, &own, "DHCPv6").2));
    let (lines_own, sums, _) = accounted(&site, &own, "DHCPv6");
    eprintln!("DHCPv6: {lines_own} lines of their own and {} summaries for {want} drops", sums.len());
    for s in &sums {
        eprintln!("  {}", s["message"]);
        let m = s["message"].as_str().unwrap();
        assert!(m.contains(&format!("from {FORGED_LL} (")) || m.contains(&format!("from {looping_ll} (")), "{s}");
    }
    // 5 per reason per interval, 4 reasons (3 read, the rate limit).
    assert!(lines_own <= 4 * 5 * (secs + 20).div_ceil(10), "{lines_own} lines of their own");
    // The whole log stays short: startup, the client's exchange, the answers, these.
    let all = site.logs().lines().count() as u64;
    assert!(all < 150 + secs, "{all} log lines:\n{}", site.logs());
}

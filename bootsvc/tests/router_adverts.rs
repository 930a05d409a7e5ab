//! bootsvc's router advertisements (`bootsvc/src/ra/`, `[router_advertisements]`) over real
//! sockets: the real `bootsvc serve` on one end of a veth, a real client (`rdisc6`, from
//! ndisc6) on the other. It answers a solicitation with an advertisement that configures
//! nothing; solicitations that crossed a router (hop limit below 255) or are malformed are
//! dropped and counted; `auto` goes quiet once another router advertises configuration on the
//! segment; `off` sends nothing; a configured prefix is advertised for SLAAC.

mod common;

use std::time::Duration;

use common::{link_local_ready, Options, Site};
use osie_testkit::{require_root, require_tools, wait_for, Netns};

/// Send one ICMPv6 message (hex) from `iface` to `dest` with hop limit `hops`: Python's raw
/// socket, so the tests can send what no client sends (the kernel fills in the checksum).
const SEND: &str = r#"
import socket, sys
iface, hops, msg, dest = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hops)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops)
s.sendto(msg, (dest, 0, 0, socket.if_nametoindex(iface)))
"#;

/// A solicitation with no options (as sent before a host has an address it may use).
const RS: &str = "8500000000000000";

/// To all routers, as a host solicits; an advertisement goes to all nodes, as a router sends
/// its unsolicited ones.
fn send(ns: &Netns, iface: &str, hops: u8, msg_hex: &str) {
    let dest = if msg_hex.starts_with("86") { "ff02::1" } else { "ff02::2" };
    ns.run("python3", &["-c", SEND, iface, &hops.to_string(), msg_hex, dest]).unwrap();
}

/// `rdisc6` on `iface`: its output when an advertisement came, `None` when none did.
fn rdisc6(ns: &Netns, iface: &str) -> Option<String> {
    let out = ns.cmd("rdisc6").args(["-1", "-r", "2", "-w", "1000", iface]).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// A site serving DHCP on a veth to one host, with `mode` (`None`: the default), started;
/// both ends ready for IPv6.
fn start_site(mode: Option<&str>) -> (Site, Netns, String) {
    start_site_with(&mode.map(|m| format!("mode = \"{m}\"\n")).unwrap_or_default())
}

/// As [`start_site`], with `ra` as the `[router_advertisements]` table's lines.
fn start_site_with(ra: &str) -> (Site, Netns, String) {
    let mut site = Site::new(Options::default());
    let (host, srv_if, cli_if) = site.segment(Some("02:00:00:00:6a:01"));
    site.serve_on(&srv_if, false);
    if !ra.is_empty() {
        let mut text = std::fs::read_to_string(&site.config).unwrap();
        text.push_str(&format!("\n[router_advertisements]\n{ra}"));
        std::fs::write(&site.config, text).unwrap();
    }
    site.start();
    link_local_ready(&site.ns, &srv_if);
    link_local_ready(&host, &cli_if);
    (site, host, cli_if)
}

fn prerequisites(t: &str) -> bool {
    require_root(t) && require_tools(t, &["curl", "ip", "rdisc6", "python3"])
}

#[test]
fn a_solicitation_gets_an_advertisement_that_configures_nothing() {
    if !prerequisites("router_adverts") {
        return;
    }
    let (site, host, cli_if) = start_site(None);
    let out = rdisc6(&host, &cli_if).unwrap_or_else(|| panic!("no advertisement came\n{}", site.logs()));
    for line in [
        "Router lifetime           :            0 (0x00000000) seconds",
        "Stateful address conf.    :           No",
        "Stateful other conf.      :           No",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
    assert!(!out.contains("Prefix"), "no prefix may be advertised:\n{out}");
    assert!(site.logs().contains("router solicitation answered"), "{}", site.logs());

    // From off the link (hop limit 64), and cut short: dropped and counted, not answered.
    send(&host, &cli_if, 64, RS);
    send(&host, &cli_if, 255, "85000000");
    send(&host, &cli_if, 255, "850000000000000001000000");
    wait_for("the drops to be counted", Duration::from_secs(5), || {
        let hop = site.metric("osie_dropped_packets_total{reason=\"ra-hop-limit\"}");
        let bad = site.metric("osie_dropped_packets_total{reason=\"ra-malformed\"}");
        (hop == 1 && bad == 2).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", site.get("/metrics").text()));
    // Still answering.
    assert!(rdisc6(&host, &cli_if).is_some(), "{}", site.logs());
}

#[test]
fn auto_goes_quiet_when_a_router_serves_the_segment_and_off_says_nothing() {
    if !prerequisites("router_adverts") {
        return;
    }
    let (site, host, cli_if) = start_site(None);
    assert!(rdisc6(&host, &cli_if).is_some(), "{}", site.logs());
    // An advertisement that configures nothing (another bootsvc): still answering.
    send(&host, &cli_if, 255, "86000000000000000000000000000000");
    std::thread::sleep(Duration::from_millis(300));
    assert!(rdisc6(&host, &cli_if).is_some(), "{}", site.logs());
    // A router: lifetime 1800 s, O set. bootsvc stops answering.
    send(&host, &cli_if, 255, "86000000404007080000000000000000");
    wait_for("bootsvc to note the router", Duration::from_secs(5), || {
        site.logs().contains("another router serves this link").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", site.logs()));
    assert_eq!(rdisc6(&host, &cli_if), None, "{}", site.logs());
    drop(site);

    let (site, host, cli_if) = start_site(Some("off"));
    assert_eq!(rdisc6(&host, &cli_if), None, "mode off answered\n{}", site.logs());
}

#[test]
fn a_configured_prefix_is_advertised_for_slaac() {
    if !prerequisites("router_adverts") {
        return;
    }
    let (site, host, cli_if) = start_site_with("prefix = \"2001:db8:1::/64\"\n");
    let out = rdisc6(&host, &cli_if).unwrap_or_else(|| panic!("no advertisement came\n{}", site.logs()));
    for line in [
        "Router lifetime           :            0 (0x00000000) seconds",
        "Stateful address conf.    :           No",
        " Prefix                   : 2001:db8:1::/64",
        "  On-link                 :          Yes",
        "  Autonomous address conf.:          Yes",
        "  Valid time              :        86400 (0x00015180) seconds",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
}

//! bootsvc serving over IPv6 (`http.listen = "[::]:…"`, `[dhcp6]`, TFTP on `dhcp6.address`):
//! the real `bootsvc serve` on a LAN bridge in a namespace with 2001:db8::1, hosts in their
//! own namespaces on it calling with real `curl -6` and `atftp` over IPv6. A machine that
//! comes over IPv6 is given bracketed IPv6 URLs (script, `osie.url`, metadata), one over
//! IPv4 on the same dual-stack listener IPv4 URLs; a machine is identified by its record's
//! `ip6` or by its NDP entry with its EUI-64; a neighbour claiming it (`X-Osie-Mac`, a forged
//! EUI-64 source, another's `ip6`) is refused. Addresses: 2001:db8::/32 and 192.0.2.0/24,
//! inside the test's namespaces only.

mod common;

use common::{link_local_ready, Options, Site, CLIENTS};
use osie_testkit::site::curl::{curl, Resp};
use osie_testkit::{require_root, require_tools, wait_for, Netns};

const MAC_A: &str = "52:54:00:6c:00:01";
const MAC_B: &str = "52:54:00:6c:00:02";
/// A record with no host of its own: the intruder forges its EUI-64 address.
const MAC_C: &str = "52:54:00:6c:00:03";
const MAC_X: &str = "52:54:00:6c:00:99";
const SERVER6: &str = "2001:db8::1";
/// A's SLAAC address, formed from MAC_A (modified EUI-64).
const A6: &str = "2001:db8::5054:ff:fe6c:1";
/// B's record's `ip6`.
const B6: &str = "2001:db8::21";
/// C's EUI-64 address, which the intruder takes.
const C6: &str = "2001:db8::5054:ff:fe6c:3";
const X6: &str = "2001:db8::99";
const BASE6: &str = "http://[2001:db8::1]:8080";

fn record(name: &str, mac: &str, ip6: Option<&str>) -> String {
    let mut r = serde_json::json!({
        "hostname": name, "macs": [mac], "netboot": { "allow": true },
        "install": { "image": { "name": "debian-12" } },
        "cloud_init": { "user_data": format!("#cloud-config\n# secret of {name}\n") },
    });
    if let Some(a) = ip6 {
        r["ip6"] = serde_json::json!({ "address": a, "prefix": 64 });
    }
    r.to_string()
}

/// `curl -6` from `ns`, its source address `from`.
fn get6(site: &Site, ns: &Netns, from: &str, mac: Option<&str>, path: &str) -> Resp {
    let h = mac.map(|m| format!("X-Osie-Mac: {m}"));
    let mut args = vec!["-6", "--interface", from];
    if let Some(h) = &h {
        args.extend(["-H", h.as_str()]);
    }
    curl(ns, site.dir(), &args, &format!("{BASE6}{path}"))
}

fn post_event6(site: &Site, ns: &Netns, from: &str, mac: &str, phase: &str, seq: u64) -> Resp {
    let json =
        format!(r#"{{"machine":"{mac}","phase":"{phase}","time":"2026-01-01T00:00:00Z","run_id":"r6","seq":{seq}}}"#);
    let args = ["-6", "--interface", from, "-H", "Content-Type: application/json", "--data-binary", &json];
    curl(ns, site.dir(), &args, &format!("{BASE6}/events"))
}

/// Put `addr/64` on `iface` in `ns`, without duplicate address detection (usable at once);
/// `replace`: SLAAC from bootsvc's advertisement may have formed it already.
fn address(ns: &Netns, iface: &str, addr: &str) {
    ns.ip(&["-6", "addr", "replace", &format!("{addr}/64"), "dev", iface, "nodad"]).unwrap();
}

#[test]
fn machines_over_ipv6_get_ipv6_urls_and_only_their_own_data() {
    let t = "ipv6_http";
    if !require_root(t) || !require_tools(t, &["curl", "ip", "atftp"]) {
        return;
    }
    let mut site = Site::new(Options::default());
    let (bridge, hosts) = site.shared_segment(&[Some(MAC_A), Some(MAC_B), Some(MAC_X)]);
    address(&site.ns, &bridge, SERVER6);
    site.serve_on(&bridge, true);
    site.machine("a", &record("a", MAC_A, None));
    site.machine("b", &record("b", MAC_B, Some(B6)));
    site.machine("c", &record("c", MAC_C, None));
    let text = std::fs::read_to_string(&site.config).unwrap();
    assert!(text.contains("listen = \"192.0.2.1:8080\""), "{text}");
    let mut text = text.replace("listen = \"192.0.2.1:8080\"", "listen = \"[::]:8080\"");
    // SLAAC in 2001:db8::/64 for machines without `ip6` (A forms A6 from its MAC).
    text.push_str(&format!(
        "\n[dhcp6]\nenabled = true\naddress = \"{SERVER6}\"\n\n[router_advertisements]\nprefix = \"2001:db8::/64\"\n"
    ));
    std::fs::write(&site.config, text).unwrap();
    let check = site.cli(&["check", "--config", &site.config.display().to_string()]);
    assert!(check.status.success(), "check refused what serve is given: {}", String::from_utf8_lossy(&check.stdout));
    site.start();
    let [(a, a_if), (b, b_if), (x, x_if)] = &hosts[..] else { unreachable!() };
    for (ns, iface) in [(a, a_if), (b, b_if), (x, x_if)] {
        link_local_ready(ns, iface);
    }
    address(a, a_if, A6);
    address(b, b_if, B6);
    address(x, x_if, X6);
    address(x, x_if, C6);

    // The script over IPv6: every URL bracketed IPv6, and `osie.url` too.
    let s = wait_for("the script over IPv6", std::time::Duration::from_secs(10), || {
        let r = get6(&site, a, A6, None, &format!("/boot/{MAC_A}.ipxe"));
        (r.status == 200).then_some(r)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", site.logs()));
    let script = s.text();
    assert!(script.contains(&format!("kernel --name vmlinuz {BASE6}/artifacts/vmlinuz ")), "{script}");
    assert!(script.contains(&format!("initrd --name initrd {BASE6}/artifacts/initramfs.img")), "{script}");
    assert!(script.contains(&format!(" osie.url={BASE6} ")), "{script}");
    assert!(!script.contains("192.0.2.1"), "an IPv4 URL given over IPv6: {script}");
    // The same listener over IPv4 (IPv4-mapped on `[::]`): IPv4 URLs.
    let s4 = site.get_as(CLIENTS[0], None, &format!("/boot/{MAC_A}.ipxe")).text();
    assert!(s4.contains(" osie.url=http://192.0.2.1:8080 ") && !s4.contains("2001:db8"), "{s4}");

    // A, by its NDP entry and EUI-64: its metadata, with IPv6 URLs.
    let m = get6(&site, a, A6, Some(MAC_A), "/metadata");
    assert_eq!(m.status, 200, "{}\n{}", m.text(), site.logs());
    let md = m.json();
    let image = md["install"]["image"]["url"].as_str().unwrap_or_default();
    assert_eq!(image, format!("{BASE6}/images/debian-12.raw.zst"), "{md}");
    assert_eq!(md["metadata_base_url"].as_str(), Some(BASE6), "{md}");
    assert!(site.logs().contains("matched=neighbour+eui64"), "{}", site.logs());
    let ev = post_event6(&site, a, A6, MAC_A, "booted-installer", 0);
    assert!(ev.status == 200 || ev.status == 201, "{} {}", ev.status, ev.text());
    let events = site.admin("GET", &format!("/admin/machines/{MAC_A}/events")).text();
    assert!(events.contains(A6), "the event's source is A's IPv6 address: {events}");
    // The EC2 tree names no machine: A is found by its address.
    let ec2 = get6(&site, a, A6, None, "/latest/meta-data/ipv6");
    assert_eq!((ec2.status, ec2.text().as_str()), (200, A6), "{}", site.logs());
    // B by its record's ip6.
    let mb = get6(&site, b, B6, Some(MAC_B), "/nocloud/52:54:00:6c:00:02/user-data");
    assert!(mb.status == 200 && mb.text().contains("secret of b"), "{} {}", mb.status, mb.text());

    // The intruder: A's MAC from its own address, C from C's forged EUI-64 address, B from
    // an address that is not B's ip6. Each refused, nothing of theirs in the answer.
    let tries = [
        ("A's MAC from its own address", X6, MAC_A, "a"),
        ("C's forged EUI-64 address", C6, MAC_C, "c"),
        ("B from another address", X6, MAC_B, "b"),
    ];
    for (what, from, mac, name) in tries {
        let r = get6(&site, x, from, Some(mac), "/metadata");
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        let r = get6(&site, x, from, None, &format!("/nocloud/{mac}/user-data"));
        assert!(r.status == 403 && !r.text().contains(&format!("secret of {name}")), "{what}: {}", r.text());
        let r = post_event6(&site, x, from, mac, "installed", 1);
        assert_eq!(r.status, 403, "{what}: {}", r.text());
    }
    // The forged EUI-64 address is caught by its neighbour entry, which names the intruder.
    let logs = site.logs();
    assert!(logs.contains(&format!("neighbour (ARP) entry says it is at {MAC_X}")), "{logs}");
    // Nothing the intruder sent reached A's or C's state.
    let shown = site.admin_cli(&["machine", MAC_C, "show"]).unwrap();
    assert!(shown.contains(C6), "the refused claim is shown on C: {shown}");

    // TFTP over IPv6, on dhcp6.address (the host of DHCPv6's tftp:// URLs).
    let out = a
        .cmd("atftp")
        .args(["-g", "-r", "undionly.kpxe", "-l"])
        .arg(site.dir().join("got.kpxe"))
        .args([SERVER6, "69"])
        .output()
        .unwrap();
    let got = std::fs::read(site.dir().join("got.kpxe")).unwrap_or_default();
    let want = std::fs::read(site.dir().join("tftp/undionly.kpxe")).unwrap();
    assert!(
        got == want,
        "atftp over IPv6: {} of {} bytes\n{}\n{}",
        got.len(),
        want.len(),
        String::from_utf8_lossy(&out.stderr),
        site.logs()
    );
}

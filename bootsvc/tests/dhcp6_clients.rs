//! DHCPv6 (`bootsvc/src/dhcp6/`, `[dhcp6]`) over real sockets: the real `bootsvc serve` on a
//! LAN bridge in a namespace, ISC `dhclient -6` in two hosts' namespaces on it. A machine
//! in the inventory gets its record's IPv6 address from bootsvc; a neighbour that asks with
//! that machine's DUID-LL from its own link-local address gets nothing (the DUID's MAC and
//! the source's EUI-64 disagree), and the drop is counted. Addresses: 2001:db8::/32 and
//! link-local only, inside the test's namespaces.

mod common;

use common::dhcp6::enable;
use common::{link_local_ready, Options, Site};
use osie_testkit::dhcp::{dhclient6, env_value};
use osie_testkit::{require_root, require_tools};

const MAC_A: &str = "02:00:00:00:6b:01";
const MAC_B: &str = "02:00:00:00:6b:02";
const SERVER6: &str = "2001:db8::1";
const A6: &str = "2001:db8::11";

#[test]
fn a_machine_gets_its_address_and_a_neighbour_with_its_duid_gets_nothing() {
    let t = "dhcp6_clients";
    if !require_root(t) || !require_tools(t, &["dhclient", "ip"]) {
        return;
    }
    let mut site = Site::new(Options::default());
    let (bridge, hosts) = site.shared_segment(&[Some(MAC_A), Some(MAC_B)]);
    site.ns.ip(&["-6", "addr", "add", &format!("{SERVER6}/64"), "dev", &bridge, "nodad"]).unwrap();
    site.serve_on(&bridge, false);
    site.machine(
        "a",
        &serde_json::json!({
            "hostname": "a", "macs": [MAC_A], "netboot": { "allow": true },
            "install": { "image": { "name": "debian-12" } },
            "ip": { "address": "192.0.2.11", "prefix": 24 },
            "ip6": { "address": A6, "prefix": 64 },
        })
        .to_string(),
    );
    enable(&site, SERVER6);
    site.start();
    link_local_ready(&site.ns, &bridge);
    let dir = tempfile::tempdir().unwrap();
    let [(a, a_if), (b, b_if)] = &hosts[..] else { unreachable!() };
    link_local_ready(a, a_if);
    link_local_ready(b, b_if);

    // A's own dhclient (its DUID-LLT names its MAC): the record's address.
    let env = dhclient6(a, a_if, dir.path(), None).unwrap_or_else(|| panic!("A got no lease\n{}", site.logs()));
    assert_eq!(env_value(&env, "new_ip6_address").as_deref(), Some(A6), "{env}");
    let metrics = site.get("/metrics").text();
    assert!(metrics.contains("dhcp6-reply"), "{metrics}");
    let base = site.base_url();
    let port = base.rsplit(':').next().unwrap();
    assert_eq!(
        env_value(&env, "new_dhcp6_bootfile_url").as_deref(),
        Some(format!("http://[{SERVER6}]:{port}/ipxe/ipxe.efi").as_str()),
        "{env}"
    );

    // B asks with A's DUID-LL from its own link-local address: nothing.
    let a_duid = format!("00030001{}", MAC_A.replace(':', ""));
    let got = dhclient6(b, b_if, dir.path(), Some(&a_duid));
    assert_eq!(got, None, "the neighbour was answered\n{}", site.logs());
    let dropped = site.metric("osie_dropped_packets_total{reason=\"dhcp6-mac-mismatch\"}");
    assert!(dropped >= 1, "no mismatch counted\n{}", site.logs());
    // A's address went out once, to A (its Advertise and Reply), never to B.
    let to_b = site.logs().lines().filter(|l| l.contains(A6) && l.contains(MAC_B)).count();
    assert_eq!(to_b, 0, "{}", site.logs());
}

//! DHCPv6 (`bootsvc/src/dhcp6/`, `[dhcp6]`) over real sockets: the real `bootsvc serve` on a
//! LAN bridge in a namespace, ISC `dhclient -6` in two hosts' namespaces on it. A machine
//! in the inventory gets its record's IPv6 address from bootsvc; a neighbour that asks with
//! that machine's DUID-LL from its own link-local address gets nothing (the DUID's MAC and
//! the source's EUI-64 disagree), and the drop is counted. Addresses: 2001:db8::/32 and
//! link-local only, inside the test's namespaces.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{link_local_ready, Options, Site};
use osie_testkit::{require_root, require_tools, wait_for, Netns};

const MAC_A: &str = "02:00:00:00:6b:01";
const MAC_B: &str = "02:00:00:00:6b:02";
const SERVER6: &str = "2001:db8::1";
const A6: &str = "2001:db8::11";

/// `dhclient -6` once on `iface`, with `duid` (hex) as its DUID when given: the
/// environment its script saw on `BOUND6`, or `None` when it got no lease within its
/// timeout. The script only records; it configures nothing.
fn dhclient6(ns: &Netns, iface: &str, dir: &Path, name: &str, duid: Option<&str>) -> Option<String> {
    let out = dir.join(format!("{name}.env"));
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$reason\" in BOUND6|REBOOT6) env > {}.tmp && mv {0}.tmp {0};; esac\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let conf = dir.join(format!("{name}.conf"));
    // Option 61 = 16: what UEFI HTTP boot over IPv6 sends, so bootsvc answers with its boot
    // file URL and vendor class.
    std::fs::write(
        &conf,
        "option dhcp6.arch code 61 = unsigned integer 16;\nsend dhcp6.arch 16;\n\
         also request dhcp6.bootfile-url;\ntimeout 8;\ninitial-interval 1;\n",
    )
    .unwrap();
    let leases = dir.join(format!("{name}.leases"));
    // dhclient takes its DUID from the lease file's `default-duid` (octal-escaped bytes).
    let lease_text = duid.map_or_else(String::new, |hex| {
        let octal: String = (0..hex.len() / 2)
            .map(|i| format!("\\{:03o}", u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()))
            .collect();
        format!("default-duid \"{octal}\";\n")
    });
    std::fs::write(&leases, lease_text).unwrap();
    let mut child = ns
        .cmd("dhclient")
        .args(["-6", "-d", "-1", "-v", "-cf"])
        .arg(&conf)
        .arg("-sf")
        .arg(&script)
        .arg("-lf")
        .arg(&leases)
        .arg("-pf")
        .arg(dir.join(format!("{name}.pid")))
        .arg(iface)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let got = wait_for("dhclient -6 to be bound", Duration::from_secs(12), || std::fs::read_to_string(&out).ok()).ok();
    // The child is ours: end it by its own id.
    let _ = child.kill();
    let _ = child.wait();
    got
}

fn value<'a>(env: &'a str, key: &str) -> Option<&'a str> {
    env.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

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
    // The boot file URLs are IPv6: HTTP must accept IPv6 (`check` refuses it otherwise).
    let mut text =
        std::fs::read_to_string(&site.config).unwrap().replace("listen = \"192.0.2.1:8080\"", "listen = \"[::]:8080\"");
    text.push_str(&format!("\n[dhcp6]\nenabled = true\naddress = \"{SERVER6}\"\n"));
    std::fs::write(&site.config, text).unwrap();
    site.start();
    link_local_ready(&site.ns, &bridge);
    let dir = tempfile::tempdir().unwrap();
    let [(a, a_if), (b, b_if)] = &hosts[..] else { unreachable!() };
    link_local_ready(a, a_if);
    link_local_ready(b, b_if);

    // A's own dhclient (its DUID-LLT names its MAC): the record's address.
    let env = dhclient6(a, a_if, dir.path(), "a", None).unwrap_or_else(|| panic!("A got no lease\n{}", site.logs()));
    assert_eq!(value(&env, "new_ip6_address"), Some(A6), "{env}");
    let metrics = site.get("/metrics").text();
    assert!(metrics.contains("dhcp6-reply"), "{metrics}");
    let base = site.base_url();
    let port = base.rsplit(':').next().unwrap();
    assert_eq!(
        value(&env, "new_dhcp6_bootfile_url"),
        Some(format!("http://[{SERVER6}]:{port}/ipxe/ipxe.efi").as_str()),
        "{env}"
    );

    // B asks with A's DUID-LL from its own link-local address: nothing.
    let a_duid = format!("00030001{}", MAC_A.replace(':', ""));
    let got = dhclient6(b, b_if, dir.path(), "b", Some(&a_duid));
    assert_eq!(got, None, "the neighbour was answered\n{}", site.logs());
    let dropped = site.metric("osie_dropped_packets_total{reason=\"dhcp6-mac-mismatch\"}");
    assert!(dropped >= 1, "no mismatch counted\n{}", site.logs());
    // A's address went out once, to A (its Advertise and Reply), never to B.
    let to_b = site.logs().lines().filter(|l| l.contains(A6) && l.contains(MAC_B)).count();
    assert_eq!(to_b, 0, "{}", site.logs());
}

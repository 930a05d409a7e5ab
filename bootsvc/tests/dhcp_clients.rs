//! bootsvc's DHCP server over real sockets, in a network namespace pair (server | client
//! joined by a veth), answering real clients: busybox udhcpc and ISC dhclient.

mod net;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bootsvc::dhcp::request::{code, Options, HEADER_LEN};
use bootsvc::metrics::Metrics;
use net::{config, dropped, machine, replies, start_dhcp};
use osie_testkit::dhcp::{dhclient, env_value, udhcpc};
use osie_testkit::site::config::{Dhcp, Pool};
use osie_testkit::{require_root, require_tools, Pair};

const MAC_A: &str = "02:00:00:00:0a:01";
const MAC_B: &str = "02:00:00:00:0b:01";

fn server(
    pair: &Pair,
    dir: &Path,
    dhcp: Dhcp,
    backend: Vec<bootsvc::inventory::Machine>,
) -> (net::Running, Arc<Metrics>) {
    let cfg = Arc::new(config(dir, &pair.server_if, dhcp, dir));
    let metrics = Arc::new(Metrics::new());
    let running = start_dhcp(&pair.server, cfg, backend, metrics.clone()).unwrap();
    (running, metrics)
}

/// A server (reservation mode) and a client namespace whose interface has `mac`, which
/// the inventory reserves `ip` for. `None` when the test is skipped.
fn reserved(
    test: &str,
    tools: &[&str],
    mac: &str,
    ip: &str,
) -> Option<(tempfile::TempDir, Pair, net::Running, Arc<Metrics>)> {
    if !require_root(test) || !require_tools(test, tools) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::new("192.0.2.1/24").unwrap();
    pair.set_client_mac(mac).unwrap();
    let backend = vec![machine(&format!("node-{}", &mac[12..14]), mac, Some(ip), true)];
    let (srv, m) = server(&pair, dir.path(), Dhcp::default(), backend);
    Some((dir, pair, srv, m))
}

#[test]
fn udhcpc_gets_its_reservation_and_the_boot_file_for_its_class() {
    let Some((dir, pair, _srv, m)) = reserved("udhcpc_gets_its_reservation", &["udhcpc"], MAC_A, "192.0.2.10/24")
    else {
        return;
    };

    // A plain client (an OS's DHCP) gets its reservation and no boot file.
    let env = udhcpc(&pair.client, &pair.client_if, dir.path(), &[]).unwrap();
    let v = |k: &str| env_value(&env, k);
    assert_eq!(v("ip").as_deref(), Some("192.0.2.10"), "{env}");
    assert_eq!(v("subnet").as_deref(), Some("255.255.255.0"));
    assert_eq!(v("mask").as_deref(), Some("24"));
    assert_eq!(v("router").as_deref(), Some("192.0.2.254"));
    assert_eq!(v("dns").as_deref().map(str::trim), Some("192.0.2.53 198.51.100.53"));
    assert_eq!(v("hostname").as_deref(), Some("node-0a"));
    assert_eq!(v("serverid").as_deref(), Some("192.0.2.1"));
    assert_eq!(v("lease").as_deref(), Some("600"));
    assert_eq!(v("boot_file"), None, "BOOTP file field: {env}");
    assert_eq!(v("bootfile"), None, "option 67: {env}");

    // The same client saying it is BIOS PXE (option 60 PXEClient, no option 93): undionly.kpxe.
    let env = udhcpc(&pair.client, &pair.client_if, dir.path(), &["-V", "PXEClient"]).unwrap();
    assert_eq!(env_value(&env, "boot_file").as_deref(), Some("undionly.kpxe"), "BOOTP file field: {env}");
    assert_eq!(env_value(&env, "bootfile").as_deref(), Some("undionly.kpxe"), "option 67: {env}");
    assert_eq!(env_value(&env, "siaddr").as_deref(), Some("192.0.2.1"), "next server: {env}");

    // The same client saying it is UEFI x64 PXE (option 93 = 7, option 60 PXEClient).
    let env = udhcpc(
        &pair.client,
        &pair.client_if,
        dir.path(),
        &["-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "0x5d:0007"],
    )
    .unwrap();
    assert_eq!(env_value(&env, "boot_file").as_deref(), Some("ipxe.efi"), "{env}");

    // And as iPXE (user class iPXE): the per-machine script URL.
    let env = udhcpc(&pair.client, &pair.client_if, dir.path(), &["-x", "0x4d:69505845"]).unwrap();
    assert_eq!(
        env_value(&env, "bootfile").as_deref(),
        Some("http://192.0.2.1:8080/boot/02:00:00:00:0a:01.ipxe"),
        "{env}"
    );

    // ARM64 firmware on this (x86_64) machine's record: its own architecture wins, so the
    // arm64 GRUB, never an x86 program. UEFI PXE (93 = 11), then UEFI HTTP boot (93 = 19).
    let env = udhcpc(
        &pair.client,
        &pair.client_if,
        dir.path(),
        &["-V", "PXEClient:Arch:00011:UNDI:003000", "-x", "0x5d:000b"],
    )
    .unwrap();
    assert_eq!(env_value(&env, "boot_file").as_deref(), Some("grubaa64.efi"), "{env}");
    let env =
        udhcpc(&pair.client, &pair.client_if, dir.path(), &["-V", "HTTPClient:Arch:00019", "-x", "0x5d:0013"]).unwrap();
    assert_eq!(env_value(&env, "bootfile").as_deref(), Some("http://192.0.2.1:8080/ipxe/grubaa64-http.efi"), "{env}");
    // An arm64 iPXE (built into ARM64 firmware): the arm64 script, which names arm64 files.
    let env = udhcpc(&pair.client, &pair.client_if, dir.path(), &["-x", "0x4d:69505845", "-x", "0x5d:000b"]).unwrap();
    assert_eq!(
        env_value(&env, "bootfile").as_deref(),
        Some("http://192.0.2.1:8080/boot/arm64/02:00:00:00:0a:01.ipxe"),
        "{env}"
    );

    assert_eq!(replies(&m, "offer"), 7.0);
    assert_eq!(replies(&m, "ack"), 7.0);
}

#[test]
fn dhclient_gets_its_reservation() {
    let Some((dir, pair, _srv, m)) = reserved("dhclient_gets_its_reservation", &["dhclient"], MAC_B, "192.0.2.11/24")
    else {
        return;
    };

    let env = dhclient(&pair.client, &pair.client_if, dir.path(), None).unwrap();
    let v = |k: &str| env_value(&env, k);
    assert_eq!(v("new_ip_address").as_deref(), Some("192.0.2.11"), "{env}");
    assert_eq!(v("new_subnet_mask").as_deref(), Some("255.255.255.0"));
    assert_eq!(v("new_routers").as_deref(), Some("192.0.2.254"));
    assert_eq!(v("new_domain_name_servers").as_deref(), Some("192.0.2.53 198.51.100.53"));
    assert_eq!(v("new_host_name").as_deref(), Some("node-0b"));
    assert_eq!(v("new_dhcp_server_identifier").as_deref(), Some("192.0.2.1"));
    assert_eq!(v("new_filename"), None, "an OS's DHCP client gets no boot file: {env}");
    assert_eq!(replies(&m, "ack"), 1.0);
}

#[test]
fn wrong_requested_address_is_naked_and_the_client_recovers() {
    let Some((dir, pair, _srv, m)) =
        reserved("wrong_requested_address_is_naked", &["dhclient"], MAC_B, "192.0.2.11/24")
    else {
        return;
    };

    // dhclient remembers 192.0.2.99 and asks for it first (INIT-REBOOT): NAK, then DISCOVER.
    let env = dhclient(&pair.client, &pair.client_if, dir.path(), Some("192.0.2.99")).unwrap();
    assert_eq!(env_value(&env, "new_ip_address").as_deref(), Some("192.0.2.11"), "{env}");
    assert_eq!(replies(&m, "nak"), 1.0);
    assert_eq!(replies(&m, "ack"), 1.0);
}

#[test]
fn pool_lease_survives_a_restart() {
    if !require_root("pool_lease_survives_a_restart") || !require_tools("pool_lease_survives_a_restart", &["udhcpc"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::new("192.0.2.1/24").unwrap();
    let pool = || Dhcp {
        pool: Some(Pool {
            start: "192.0.2.100".parse().unwrap(),
            end: "192.0.2.110".parse().unwrap(),
            prefix: 24,
            gateway: Some("192.0.2.1".parse().unwrap()),
        }),
        ..Dhcp::default()
    };
    let inventory = || vec![machine("pool-a", MAC_A, None, true), machine("pool-b", MAC_B, None, true)];

    pair.set_client_mac(MAC_A).unwrap();
    let (srv, _m) = server(&pair, dir.path(), pool(), inventory());
    let env = udhcpc(&pair.client, &pair.client_if, dir.path(), &[]).unwrap();
    let a_ip = env_value(&env, "ip").unwrap();
    assert_eq!(a_ip, "192.0.2.100", "{env}");
    assert_eq!(env_value(&env, "router").as_deref(), Some("192.0.2.1"));
    // Through the server's storage (not held past `stop`: the state store is one process's).
    let holder = srv.storage.as_ref().unwrap().leases().mac_for_ip(a_ip.parse().unwrap());
    assert_eq!(holder.map(|m| m.to_string()).as_deref(), Some(MAC_A));
    srv.stop().unwrap();
    let file = std::fs::read_to_string(dir.path().join("state/dhcp-leases.json")).unwrap();
    assert!(file.contains(MAC_A) && file.contains("192.0.2.100"), "{file}");

    // A new server process state: B asks first and must not get A's address.
    let (_srv, m) = server(&pair, dir.path(), pool(), inventory());
    pair.set_client_mac(MAC_B).unwrap();
    let env = udhcpc(&pair.client, &pair.client_if, dir.path(), &[]).unwrap();
    assert_eq!(env_value(&env, "ip").as_deref(), Some("192.0.2.101"), "{env}");
    pair.set_client_mac(MAC_A).unwrap();
    let env = udhcpc(&pair.client, &pair.client_if, dir.path(), &[]).unwrap();
    assert_eq!(env_value(&env, "ip").as_deref(), Some("192.0.2.100"), "{env}");
    assert_eq!(replies(&m, "ack"), 2.0);
}

/// A captured OVMF DISCOVER, as a relay agent at `giaddr` forwards it: hops 1 (0 without a
/// giaddr: not relayed), giaddr, option 82 appended.
fn relayed_discover(mac: [u8; 6], giaddr: Ipv4Addr, agent: &[u8]) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dhcp/ovmf-pxe-discover.bin");
    let mut p = std::fs::read(path).unwrap();
    p[3] = u8::from(!giaddr.is_unspecified());
    p[24..28].copy_from_slice(&giaddr.octets());
    p[28..34].copy_from_slice(&mac);
    let end = p[HEADER_LEN..].iter().rposition(|b| *b == 255).unwrap() + HEADER_LEN;
    p.truncate(end);
    p.push(code::RELAY_AGENT);
    p.push(agent.len() as u8);
    p.extend_from_slice(agent);
    p.push(255);
    p
}

/// A server (reservation mode) whose inventory reserves `ip` for `mac`, and a relay agent
/// at 192.0.2.2 on the client side. `None` when the test is skipped.
fn behind_a_relay(test: &str, mac: &str, ip: &str) -> Option<(tempfile::TempDir, Pair, net::Running, Arc<Metrics>)> {
    if !require_root(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::new("192.0.2.1/24").unwrap();
    // The relay agent: an address on the client side, listening on the server port.
    pair.client.ip(&["addr", "add", "192.0.2.2/24", "dev", &pair.client_if]).unwrap();
    let backend = vec![machine("relayed", mac, Some(ip), true)];
    let (srv, m) = server(&pair, dir.path(), Dhcp::default(), backend);
    Some((dir, pair, srv, m))
}

#[test]
fn relayed_request_is_answered_unicast_to_the_relay_with_option_82() {
    let Some((_dir, pair, _srv, m)) =
        behind_a_relay("relayed_request_is_answered_unicast", "02:00:00:00:0c:01", "198.51.100.20/24")
    else {
        return;
    };
    let mac = [2, 0, 0, 0, 0x0c, 1];

    let agent: Vec<u8> = vec![1, 6, b'e', b't', b'h', b'1', b'/', b'7', 2, 4, 0xde, 0xad, 0xbe, 0xef];
    let pkt = relayed_discover(mac, Ipv4Addr::new(192, 0, 2, 2), &agent);
    let got = pair
        .client
        .spawn(move || {
            // Bound to the relay's own address: a broadcast reply would not arrive here.
            let s = UdpSocket::bind("192.0.2.2:67")?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.send_to(&pkt, "192.0.2.1:67")?;
            let mut buf = [0u8; 1500];
            let (n, from) = s.recv_from(&mut buf)?;
            Ok((buf[..n].to_vec(), from))
        })
        .join()
        .unwrap()
        .unwrap();
    let (reply, from) = got;
    assert_eq!(from, "192.0.2.1:67".parse().unwrap(), "from the server port");
    assert!(reply.len() >= 300);
    assert_eq!(reply[0], 2, "BOOTREPLY");
    assert_eq!(&reply[16..20], &[198, 51, 100, 20], "yiaddr");
    assert_eq!(&reply[24..28], &[192, 0, 2, 2], "giaddr kept");
    let opts = Options::parse(&reply[HEADER_LEN..]).unwrap();
    assert_eq!(opts.get(code::RELAY_AGENT), Some(&agent[..]), "option 82 echoed byte for byte");
    assert_eq!(opts.get(code::BOOTFILE), Some(&b"ipxe.efi\0"[..]));
    // Counted just after the send returns.
    osie_testkit::wait_for("the offer to be counted", Duration::from_secs(2), || {
        (replies(&m, "offer") == 1.0).then_some(())
    })
    .unwrap();
}

#[test]
fn malformed_packets_are_dropped_counted_and_service_continues() {
    let Some((dir, pair, _srv, m)) = reserved("malformed_packets_are_dropped", &["udhcpc"], MAC_A, "192.0.2.10/24")
    else {
        return;
    };
    pair.client.ip(&["addr", "add", "192.0.2.3/24", "dev", &pair.client_if]).unwrap();

    let good = relayed_discover([2, 0, 0, 0, 0x0a, 1], Ipv4Addr::UNSPECIFIED, &[1, 1, 1]);
    let mut bad: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        vec![0u8; 1],
        good[..100].to_vec(),            // cut in the header
        good[..HEADER_LEN + 5].to_vec(), // cut in the options
        good[..good.len() - 1].to_vec(), // no END
    ];
    let mut overlong = good.clone();
    overlong[HEADER_LEN + 1] = 200; // option 53 claims 200 bytes
    bad.push(overlong);
    let mut magic = good.clone();
    magic[236] = 0;
    bad.push(magic);
    let mut reply_op = good.clone();
    reply_op[0] = 2;
    bad.push(reply_op);
    // Lengths that make dhcproto's own option decoder assert (client FQDN of length 0).
    let mut fqdn = good[..good.len() - 1].to_vec();
    fqdn.extend_from_slice(&[81, 0, 80, 2, 1, 1, 255]);
    bad.push(fqdn);
    let n_bad = bad.len();
    pair.client
        .spawn(move || {
            let s = UdpSocket::bind("192.0.2.3:0")?;
            for b in &bad {
                s.send_to(b, SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 67))?;
            }
            Ok(())
        })
        .join()
        .unwrap()
        .unwrap();

    // The server still answers a real client, and counted what it refused.
    let env = udhcpc(&pair.client, &pair.client_if, dir.path(), &[]).unwrap();
    assert_eq!(env_value(&env, "ip").as_deref(), Some("192.0.2.10"), "{env}");
    assert_eq!(dropped(&m, "dhcp-truncated"), 6.0);
    assert_eq!(dropped(&m, "dhcp-malformed"), 1.0);
    assert_eq!(dropped(&m, "dhcp-not-request"), 1.0);
    // The FQDN packet parses (lengths are ours to check, and 81/80 are not read): it is a
    // DISCOVER from the known MAC and gets an offer.
    assert_eq!(replies(&m, "offer"), 2.0, "{n_bad} bad packets sent");
    let total: f64 = ["dhcp-truncated", "dhcp-malformed", "dhcp-not-request"].iter().map(|r| dropped(&m, r)).sum();
    assert_eq!(total as usize, n_bad - 1);
}

/// A relay at 192.0.2.2 (the client namespace) sends `packets` to the server's port 67 and
/// collects every answer that comes back to it within a second.
fn relay_exchange(pair: &Pair, packets: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    pair.client
        .spawn(move || {
            let s = UdpSocket::bind("192.0.2.2:67")?;
            for p in &packets {
                s.send_to(p, "192.0.2.1:67")?;
            }
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = s.recv(&mut buf) {
                got.push(buf[..n].to_vec());
            }
            Ok(got)
        })
        .join()
        .unwrap()
        .unwrap()
}

/// A relayed request whose giaddr no relay can have (loopback, multicast, broadcast,
/// link-local, bootsvc's own, or none although it says it was relayed) is dropped with a
/// reason: nothing is sent there. A sane relay is still answered.
#[test]
fn impossible_relay_addresses_are_dropped_over_a_socket() {
    let Some((_dir, pair, _srv, m)) =
        behind_a_relay("impossible_relay_addresses_are_dropped", "02:00:00:00:0c:02", "198.51.100.21/24")
    else {
        return;
    };
    let mac = [2, 0, 0, 0, 0x0c, 2];
    let bad = ["127.0.0.1", "224.0.0.1", "255.255.255.255", "169.254.7.7", "192.0.2.1"];
    let mut packets: Vec<Vec<u8>> = bad.iter().map(|g| relayed_discover(mac, g.parse().unwrap(), &[1, 1, 1])).collect();
    let mut unnamed = relayed_discover(mac, Ipv4Addr::UNSPECIFIED, &[1, 1, 1]);
    unnamed[3] = 2; // hops: relayed twice, yet no giaddr
    packets.push(unnamed);
    assert!(relay_exchange(&pair, packets).is_empty(), "nothing comes back");
    osie_testkit::wait_for("the drops to be counted", Duration::from_secs(5), || {
        (dropped(&m, "dhcp-bad-giaddr") == 6.0).then_some(())
    })
    .unwrap();
    assert_eq!(replies(&m, "offer"), 0.0, "no offer went anywhere");
    let got = relay_exchange(&pair, vec![relayed_discover(mac, Ipv4Addr::new(192, 0, 2, 2), &[1, 1, 1])]);
    assert_eq!(got.len(), 1, "a real relay is answered");
    assert_eq!(&got[0][16..20], &[198, 51, 100, 21]);
}

/// Packets are read whole or refused, never cut: a request whose options run past 1500
/// bytes (what the socket buffer used to cut at) is answered; one over 4096 bytes is
/// refused as too long; one whose options continue in the `file` field under option 52 is
/// answered like any other.
#[test]
fn long_and_overloaded_requests_over_a_socket() {
    let Some((_dir, pair, _srv, m)) =
        behind_a_relay("long_and_overloaded_requests", "02:00:00:00:0d:01", "198.51.100.22/24")
    else {
        return;
    };
    let mac = [2, 0, 0, 0, 0x0d, 1];
    let relay = Ipv4Addr::new(192, 0, 2, 2);

    // Options up to ~1800 bytes: the DISCOVER's own but its arch, private options 224–230,
    // then the client arch, changed to BIOS, last.
    let orig = relayed_discover(mac, relay, &[1, 1, 1]);
    let opts = Options::parse(&orig[HEADER_LEN..]).unwrap();
    let mut long = orig[..HEADER_LEN].to_vec();
    for c in opts.codes().filter(|c| *c != code::CLIENT_ARCH) {
        let v = opts.get(c).unwrap();
        long.extend_from_slice(&[c, v.len() as u8]);
        long.extend_from_slice(v);
    }
    for c in 224..231u8 {
        long.extend_from_slice(&[c, 250]);
        long.extend_from_slice(&[0x5a; 250]);
    }
    long.extend_from_slice(&[code::CLIENT_ARCH, 2, 0, 0, 255]); // now says BIOS
    assert!(long.len() > 1800);
    let got = relay_exchange(&pair, vec![long.clone()]);
    assert_eq!(got.len(), 1, "answered");
    let opts = Options::parse(&got[0][HEADER_LEN..]).unwrap();
    assert_eq!(opts.get(code::BOOTFILE), Some(&b"undionly.kpxe\0"[..]), "option 93 past byte 1500 was read");

    // Too long: refused, counted, not answered.
    let mut huge = long.clone();
    huge.resize(5000, 0);
    assert!(relay_exchange(&pair, vec![huge]).is_empty());
    assert_eq!(dropped(&m, "dhcp-too-long"), 1.0);

    // Option 52: message type in the options field, vendor class and arch in `file`.
    let mut over = relayed_discover(mac, relay, &[1, 1, 1]);
    let opts = Options::parse(&over[HEADER_LEN..]).unwrap();
    let mut file = Vec::new();
    for c in [code::CLASS_ID, code::CLIENT_ARCH] {
        let v = opts.get(c).unwrap();
        file.extend_from_slice(&[c, v.len() as u8]);
        file.extend_from_slice(v);
    }
    file.push(255);
    over[108..108 + file.len()].copy_from_slice(&file);
    let mut rest = vec![code::MESSAGE_TYPE, 1, 1, 52, 1, 1, code::RELAY_AGENT, 3, 1, 1, 1, 255];
    over.truncate(HEADER_LEN);
    over.append(&mut rest);
    let got = relay_exchange(&pair, vec![over]);
    assert_eq!(got.len(), 1, "answered");
    let opts = Options::parse(&got[0][HEADER_LEN..]).unwrap();
    assert_eq!(opts.get(code::BOOTFILE), Some(&b"ipxe.efi\0"[..]), "UEFI, as its options in `file` say");
    assert_eq!(replies(&m, "offer"), 2.0);
}

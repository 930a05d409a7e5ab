//! The boot NIC coming up for real: the installer's netlink and DHCP client in a network
//! namespace of their own, against dnsmasq in a peer namespace (a veth between them): DHCP,
//! and SLAAC from dnsmasq's router advertisements (IPv6).

use std::path::Path;
use std::time::Duration;

use installer::net::{bring_up, bring_up6, dhcp_client, NetConfig, NetOptions};
use osie_api::{MacAddr, StaticIp};
use osie_testkit::{require_root, require_tools, ChildGuard, Pair};

const SERVER: &str = "192.0.2.1";

fn ready(test: &str) -> bool {
    require_root(test) && require_tools(test, &["ip", "dnsmasq"])
}

/// dnsmasq serving DHCP only (port=0) on the server end. Tags clients that send the osie
/// vendor class, and gives only those a domain name: the lease then proves the server saw it.
fn dnsmasq(pair: &Pair, dir: &Path) -> ChildGuard {
    let mut cmd = pair.server.cmd("dnsmasq");
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--bind-interfaces",
        "--user=root",
        "--log-dhcp",
        "--dhcp-authoritative",
        "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h",
        "--dhcp-option=option:router,192.0.2.1",
        "--dhcp-option=option:dns-server,192.0.2.53,198.51.100.53",
        "--dhcp-vendorclass=set:osie,osie-installer",
        "--dhcp-option=tag:osie,option:domain-name,osie.test",
    ])
    .arg(format!("--interface={}", pair.server_if))
    .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
    .arg(format!("--pid-file={}", dir.join("pid").display()));
    ChildGuard::spawn("dnsmasq", &mut cmd).unwrap()
}

fn options(dir: &Path, deadline: Duration) -> NetOptions {
    NetOptions {
        resolv_conf: dir.join("resolv.conf"),
        dhcp: dhcp_client::Options { deadline, first_wait: Duration::from_secs(1), max_wait: Duration::from_secs(4) },
        link_wait: Duration::from_secs(5),
        carrier_wait: Duration::from_secs(5),
        ..NetOptions::default()
    }
}

/// Run `bring_up` inside the client namespace.
fn up_in_client(pair: &Pair, mac: MacAddr, ip: Option<StaticIp>, opts: NetOptions) -> anyhow::Result<NetConfig> {
    pair.client.spawn(move || bring_up(mac, ip.as_ref(), &opts)).join().unwrap()
}

fn client_ip(pair: &Pair, args: &[&str]) -> String {
    let mut a = vec!["-4"];
    a.extend_from_slice(args);
    String::from_utf8(pair.client.run("ip", &a).unwrap().stdout).unwrap()
}

/// A TCP connection from the client namespace to a listener on the server's address: the
/// configured address and route really carry traffic.
fn assert_reaches_server(pair: &Pair) {
    let listener = pair.server.spawn(|| {
        let l = std::net::TcpListener::bind((SERVER, 7777))?;
        let (_, peer) = l.accept()?;
        Ok(peer)
    });
    std::thread::sleep(Duration::from_millis(200));
    let conn = pair.client.spawn(|| {
        let s = std::net::TcpStream::connect_timeout(
            &(SERVER.parse::<std::net::IpAddr>()?, 7777).into(),
            Duration::from_secs(3),
        )?;
        Ok(s.local_addr()?)
    });
    let local = conn.join().unwrap().unwrap();
    let peer = listener.join().unwrap().unwrap();
    assert_eq!(local, peer);
}

fn mac_of(pair: &Pair) -> MacAddr {
    pair.client_mac().unwrap().parse().unwrap()
}

#[test]
fn dhcp_lease_from_dnsmasq_configures_address_route_and_dns() {
    if !ready("dhcp_lease_from_dnsmasq_configures_address_route_and_dns") {
        return;
    }
    let pair = Pair::new(&format!("{SERVER}/24")).unwrap();
    // The client end starts down: bring_up must set it up itself.
    pair.client.ip(&["link", "set", &pair.client_if, "down"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _d = dnsmasq(&pair, dir.path());
    let mac = mac_of(&pair);

    let cfg = up_in_client(&pair, mac, None, options(dir.path(), Duration::from_secs(30))).unwrap();
    assert_eq!(cfg.method, "dhcp");
    assert_eq!(cfg.ifname, pair.client_if);
    let std::net::IpAddr::V4(a) = cfg.address else { panic!("DHCP gave an IPv6 address: {cfg}") };
    let o = a.octets();
    assert!(o[..3] == [192, 0, 2] && (100..=150).contains(&o[3]), "{cfg}");
    assert_eq!(cfg.prefix, 24);
    assert_eq!(cfg.gateway, Some(SERVER.parse().unwrap()));
    assert_eq!(cfg.domain.as_deref(), Some("osie.test"), "dnsmasq saw vendor class osie-installer");

    // The kernel has what the lease said.
    let addrs = client_ip(&pair, &["addr", "show", "dev", &pair.client_if]);
    assert!(addrs.contains(&format!("inet {}/24", cfg.address)) && addrs.contains("UP"), "{addrs}");
    let routes = client_ip(&pair, &["route", "show", "default"]);
    assert!(routes.contains(&format!("default via {SERVER} dev {}", pair.client_if)), "{routes}");
    let resolv = std::fs::read_to_string(dir.path().join("resolv.conf")).unwrap();
    assert!(resolv.contains("search osie.test\nnameserver 192.0.2.53\nnameserver 198.51.100.53\n"), "{resolv}");
    // dnsmasq recorded the lease for our MAC and address.
    let leases = std::fs::read_to_string(dir.path().join("leases")).unwrap();
    assert!(leases.contains(&mac.to_string()) && leases.contains(&cfg.address.to_string()), "{leases}");
    // And the address works: traffic flows to the server.
    assert_reaches_server(&pair);

    // Renewal: a unicast REQUEST from the configured address, ACKed by dnsmasq.
    let (ifname, lease) = (cfg.ifname.clone(), cfg.lease.clone().unwrap());
    let renewed = pair
        .client
        .spawn(move || dhcp_client::renew_once(&ifname, mac, &lease, Duration::from_secs(5)))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(renewed.address, cfg.address);
    assert_eq!(renewed.lease_secs, Some(3600));
}

#[test]
fn dhcp_retries_until_a_late_server_answers() {
    if !ready("dhcp_retries_until_a_late_server_answers") {
        return;
    }
    let pair = Pair::new(&format!("{SERVER}/24")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mac = mac_of(&pair);
    let opts = options(dir.path(), Duration::from_secs(40));
    let client = pair.client.spawn(move || bring_up(mac, None, &opts));
    // Several DISCOVERs go unanswered before the server starts.
    std::thread::sleep(Duration::from_secs(4));
    assert!(!client.is_finished());
    let _d = dnsmasq(&pair, dir.path());
    let cfg = client.join().unwrap().unwrap();
    assert_eq!(cfg.gateway, Some(SERVER.parse().unwrap()));
    assert!(client_ip(&pair, &["addr"]).contains(&cfg.address.to_string()));
}

#[test]
fn no_server_gives_a_clear_error_after_the_deadline() {
    if !ready("no_server_gives_a_clear_error_after_the_deadline") {
        return;
    }
    let pair = Pair::new(&format!("{SERVER}/24")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mac = mac_of(&pair);
    let err = up_in_client(&pair, mac, None, options(dir.path(), Duration::from_secs(3))).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("no DHCP lease on") && msg.contains(&pair.client_if) && msg.contains("DHCPDISCOVER"), "{msg}");
    assert!(!dir.path().join("resolv.conf").exists());
}

#[test]
fn static_addressing_from_osie_ip() {
    if !ready("static_addressing_from_osie_ip") {
        return;
    }
    let pair = Pair::new(&format!("{SERVER}/24")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mac = mac_of(&pair);
    let ip = StaticIp::parse("192.0.2.77/24,192.0.2.1,192.0.2.53").unwrap();
    let cfg = up_in_client(&pair, mac, Some(ip), options(dir.path(), Duration::from_secs(1))).unwrap();
    assert_eq!(cfg.method, "static");
    assert!(client_ip(&pair, &["addr"]).contains("inet 192.0.2.77/24"));
    assert!(client_ip(&pair, &["route", "show", "default"]).contains("default via 192.0.2.1"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("resolv.conf")).unwrap(),
        "# written by osie's installer\nnameserver 192.0.2.53\n"
    );
    assert_reaches_server(&pair);
    // Running it again (a retry after a failure) is idempotent.
    let again = up_in_client(
        &pair,
        mac,
        StaticIp::parse("192.0.2.77/24,192.0.2.1").ok(),
        options(dir.path(), Duration::from_secs(1)),
    );
    assert!(again.is_ok(), "{again:?}");
}

#[test]
fn unknown_mac_names_the_interfaces_present() {
    if !ready("unknown_mac_names_the_interfaces_present") {
        return;
    }
    let pair = Pair::new(&format!("{SERVER}/24")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), Duration::from_secs(1));
    opts.link_wait = Duration::from_millis(300);
    let err = up_in_client(&pair, "02:00:00:00:00:99".parse().unwrap(), None, opts).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("no network interface with MAC 02:00:00:00:00:99") && msg.contains(&pair.client_if), "{msg}");
}

/// dnsmasq sending router advertisements for 2001:db8::/64 (SLAAC only, no DHCPv6), as
/// bootsvc's `router_advertisements.prefix` does.
fn dnsmasq_ra(pair: &Pair, dir: &Path) -> ChildGuard {
    pair.server.ip(&["-6", "addr", "add", "2001:db8::1/64", "dev", &pair.server_if, "nodad"]).unwrap();
    let mut cmd = pair.server.cmd("dnsmasq");
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--bind-interfaces",
        "--user=root",
        "--enable-ra",
        "--dhcp-range=2001:db8::,ra-only,64",
    ])
    .arg(format!("--interface={}", pair.server_if))
    .arg(format!("--pid-file={}", dir.join("pid6").display()));
    ChildGuard::spawn("dnsmasq", &mut cmd).unwrap()
}

/// The SLAAC address of `mac` in 2001:db8::/64 (modified EUI-64).
fn eui64_address(mac: MacAddr) -> std::net::Ipv6Addr {
    let m = mac.octets();
    let mut o = [0u8; 16];
    o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    o[8..].copy_from_slice(&[m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    o.into()
}

#[test]
fn slaac_address_from_a_router_advertisement_reaches_the_server_over_ipv6() {
    if !ready("slaac_address_from_a_router_advertisement") {
        return;
    }
    let pair = Pair::new(&format!("{SERVER}/24")).unwrap();
    pair.client.ip(&["link", "set", &pair.client_if, "down"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _d = dnsmasq_ra(&pair, dir.path());
    let mac = mac_of(&pair);
    let opts = NetOptions { slaac_wait: Duration::from_secs(30), ..options(dir.path(), Duration::from_secs(5)) };
    let cfg = pair.client.spawn(move || bring_up6(mac, &opts)).join().unwrap().unwrap();
    assert_eq!((cfg.method, cfg.prefix), ("slaac", 64), "{cfg}");
    assert_eq!(cfg.address, std::net::IpAddr::V6(eui64_address(mac)), "the EUI-64 address bootsvc identifies: {cfg}");
    // It carries traffic: a TCP connection to the server's IPv6 address, from that address.
    let listener = pair.server.spawn(|| {
        let l = std::net::TcpListener::bind("[2001:db8::1]:7777")?;
        let (_, peer) = l.accept()?;
        Ok(peer)
    });
    std::thread::sleep(Duration::from_millis(200));
    let conn = pair.client.spawn(|| {
        let s = std::net::TcpStream::connect_timeout(&"[2001:db8::1]:7777".parse()?, Duration::from_secs(3))?;
        Ok(s.local_addr()?)
    });
    let local = conn.join().unwrap().unwrap();
    assert_eq!(listener.join().unwrap().unwrap(), local);
    assert_eq!(local.ip(), cfg.address);
}

#[test]
fn no_router_advertisement_gives_a_clear_error() {
    if !ready("no_router_advertisement_gives_a_clear_error") {
        return;
    }
    let pair = Pair::new(&format!("{SERVER}/24")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mac = mac_of(&pair);
    let opts = NetOptions { slaac_wait: Duration::from_secs(3), ..options(dir.path(), Duration::from_secs(5)) };
    let e = pair.client.spawn(move || bring_up6(mac, &opts)).join().unwrap().unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("no global IPv6 address") && msg.contains("after 3 s") && msg.contains("fe80::"), "{msg}");
}

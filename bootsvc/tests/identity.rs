//! Which machine is calling, over the whole path: the real `bootsvc serve` on a LAN (a
//! bridge in the site's namespace) that the real machine and a hostile host join from
//! namespaces of their own, each with its own MAC, so the kernel's neighbour entries are
//! real; real DHCP clients (udhcpc) and, in proxy mode, a real site DHCP server (dnsmasq) in
//! a namespace of its own on the same LAN. The model is `docs/security.md`.
//!
//! The hostile host fetches the machine's iPXE script (anyone who knows the MAC can), then
//! tries everything a machine may do about itself: its metadata, NoCloud seed, EC2 tree,
//! events (`installed` too) and phone-home. Every try is 403, nothing is stored, netboot
//! stays allowed, and the refused claims show on the machine in `bootsvc machine <mac> show`
//! and `bootsvc machines`; the machine's own calls succeed. For a pool machine (reservation
//! mode, a lease from bootsvc), a fixed-address machine, and a proxy-mode machine (an
//! address from dnsmasq, known by the DHCP REQUEST bootsvc saw), including one whose second
//! DHCP client is leased another address, one behind a relay, and across a restart.

mod common;
mod net;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use common::{Options, Site};
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Encodable, Encoder};
use osie_api::MacAddr;
use osie_testkit::site::Resp;
use osie_testkit::{require_root, require_tools, Netns};

const POOLED: &str = "02:00:00:00:0a:01";
const FIXED: &str = "02:00:00:00:0f:01";
const RELAYED: &str = "02:00:00:00:0c:01";
const INTRUDER: &str = "02:00:00:00:0e:01";
const INTRUDER_IP: &str = "192.0.2.66";
const FIXED_IP: &str = "192.0.2.30";

fn secret(host: &str) -> String {
    format!("user-data-secret-of-{host}")
}

fn record(host: &str, mac: &str, ip: Option<&str>) -> String {
    let ip = ip.map(|a| format!(r#","ip":{{"address":"{a}","prefix":24}}"#)).unwrap_or_default();
    format!(
        r##"{{"hostname":"{host}","macs":["{mac}"]{ip},"netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}},
            "cloud_init":{{"user_data":"#cloud-config\n# {s}\n","vendor_data":"v-{s}","network_config":"n-{s}"}},
            "ssh_keys":["ssh-ed25519 AAAAkey{host} ops@{host}"]}}"##,
        s = secret(host)
    )
}

fn instance(mac: &str) -> String {
    format!("i-{}", mac.replace(':', ""))
}

fn event(mac: &str, phase: &str, seq: u64) -> String {
    format!(r#"{{"machine":"{mac}","phase":"{phase}","time":"2026-01-01T00:00:00Z","run_id":"r","seq":{seq}}}"#)
}

/// Everything a machine may do about itself, as `host` (in namespace `ns`, from `from`)
/// claiming machine `mac`: each route and what it answered.
fn everything(site: &Site, ns: &Netns, from: &str, mac: &str, phases: &[&str]) -> Vec<(String, Resp)> {
    let get = |path: &str, hdr: bool| {
        let h = format!("X-Osie-Mac: {mac}");
        let mut args = vec!["--interface", from];
        if hdr {
            args.extend(["-H", h.as_str()]);
        }
        (format!("GET {path}"), site.curl_in(ns, &args, path))
    };
    let mut out = vec![get("/metadata", true)];
    for doc in ["meta-data", "user-data", "vendor-data", "network-config"] {
        out.push(get(&format!("/nocloud/{mac}/{doc}"), false));
    }
    for path in [
        "/2009-04-04/",
        "/2009-04-04/user-data",
        "/latest/meta-data/instance-id",
        "/latest/meta-data/public-keys/0/openssh-key",
    ] {
        out.push(get(path, true));
    }
    for (seq, phase) in phases.iter().enumerate() {
        let json = event(mac, phase, seq as u64);
        let args = ["--interface", from, "-H", "Content-Type: application/json", "--data-binary", &json];
        out.push((format!("POST /events {phase}"), site.curl_in(ns, &args, "/events")));
    }
    let args = ["--interface", from, "-d", "hostname=x", "-d", "fqdn=x.example"];
    out.push(("POST /phone-home".into(), site.curl_in(ns, &args, &format!("/phone-home/{}", instance(mac)))));
    out
}

/// The hostile host at `from` fetches `mac`'s script, then tries everything: all refused,
/// none of the machine's data in any answer. Returns the number of refusals.
fn intruder_is_refused(site: &Site, ns: &Netns, from: &str, mac: &str, host: &str) -> u64 {
    let script = site.curl_in(ns, &["--interface", from], &format!("/boot/{mac}.ipxe"));
    assert!(script.text().contains("kernel --name vmlinuz"), "anyone may fetch the script: {}", script.text());
    let tries = everything(site, ns, from, mac, &["booted-installer", "installed"]);
    for (what, r) in &tries {
        assert_eq!(r.status, 403, "{from} as {host}: {what}: {}", r.text());
        let body = r.text();
        assert!(!body.contains(&secret(host)) && !body.contains(&format!("key{host}")), "{what} leaked: {body}");
    }
    tries.len() as u64
}

/// The machine itself: every read answers with its data, its events are stored.
fn machine_is_served(site: &Site, ns: &Netns, from: &str, mac: &str, host: &str) {
    for (what, r) in everything(site, ns, from, mac, &["booted-installer"]) {
        assert_eq!(r.status, 200, "{host} from {from}: {what}: {}", r.text());
        if what.ends_with("/user-data") {
            assert!(r.text().contains(&secret(host)), "{what}: {}", r.text());
        }
        if what.ends_with("openssh-key") {
            assert!(r.text().contains(&format!("key{host}")), "{what}: {}", r.text());
        }
    }
}

/// The stored events of `mac`: (phase, source).
fn events(site: &Site, mac: &str) -> Vec<(String, String)> {
    let cfg = site.config.to_str().unwrap().to_string();
    let out = site.cli(&["machine", mac, "events", "--config", &cfg, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event"]["phase"].as_str().unwrap().to_string(), e["source"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// `bootsvc machine <mac> show` (text) and its JSON.
fn show(site: &Site, mac: &str) -> (String, serde_json::Value) {
    let cfg = site.config.to_str().unwrap().to_string();
    let text = site.cli(&["machine", mac, "show", "--config", &cfg]);
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    let json = site.cli(&["machine", mac, "show", "--config", &cfg, "--json"]);
    (String::from_utf8_lossy(&text.stdout).into_owned(), serde_json::from_slice(&json.stdout).unwrap())
}

/// The addresses the admin view lists for a machine: (address, source).
fn known(view: &serde_json::Value) -> Vec<(String, String)> {
    view["identity"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["address"].as_str().unwrap().to_string(), a["source"].as_str().unwrap().to_string()))
        .collect()
}

/// After the intruder: nothing stored for the machine, netboot still allowed, and the
/// refused claims on it, in `show` and in `machines`.
fn nothing_happened_and_the_operator_sees_it(site: &Site, mac: &str, from: &str) {
    assert!(events(site, mac).is_empty(), "events stored for {mac}: {:?}", events(site, mac));
    assert!(site.get(&format!("/boot/{mac}.ipxe")).text().contains("kernel --name vmlinuz"), "netboot cleared");
    let (text, json) = show(site, mac);
    assert_eq!(json["netboot"]["allowed"], true);
    let claims = json["identity"]["refused"].as_array().unwrap();
    let routes: Vec<&str> =
        claims.iter().filter(|c| c["address"] == from).map(|c| c["route"].as_str().unwrap()).collect();
    for r in ["/metadata", "/nocloud/{mac}/{doc}", "/events", "/phone-home/{instance_id}"] {
        assert!(routes.contains(&r), "no refused claim from {from} on {r}: {claims:?}");
    }
    assert!(text.contains("Refused claims:") && text.contains(from) && text.contains("/events"), "{text}");
    let cfg = site.config.to_str().unwrap().to_string();
    let all = site.cli(&["machines", "--config", &cfg]);
    let all = String::from_utf8_lossy(&all.stdout);
    assert!(all.contains("Refused claims") && all.lines().any(|l| l.contains(mac) && l.contains(from)), "{all}");
}

fn forbidden(site: &Site) -> u64 {
    site.metric("osie_dropped_packets_total{reason=\"http-forbidden\"}")
}

/// Add the address a DHCP client got, as its hook would.
fn configure(ns: &Netns, iface: &str, ip: &str) {
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", iface]).unwrap();
}

#[test]
fn reservation_mode_pool_and_fixed_machines_cannot_be_claimed() {
    let t = "reservation_mode_pool_and_fixed_machines_cannot_be_claimed";
    if !require_root(t) || !require_tools(t, &["curl", "udhcpc"]) {
        return;
    }
    let mut site = Site::new(Options { pool: true, ..Default::default() });
    let lan = site.lan();
    site.serve_on(&lan, false);
    site.machine("pool1", &record("pool1", POOLED, None));
    site.machine("fixed1", &record("fixed1", FIXED, Some(FIXED_IP)));
    site.start();

    // The pool machine takes its lease from bootsvc with a real DHCP client.
    let (pooled, pooled_if) = site.join(&lan, POOLED, None);
    let env = osie_testkit::dhcp::udhcpc(&pooled, &pooled_if, site.dir(), &[]).unwrap();
    let pool_ip = osie_testkit::dhcp::env_value(&env, "ip").unwrap();
    assert_eq!(pool_ip, "192.0.2.100", "{env}");
    configure(&pooled, &pooled_if, &pool_ip);
    let (fixed, _) = site.join(&lan, FIXED, Some(&format!("{FIXED_IP}/24")));
    let (intruder, intruder_if) = site.join(&lan, INTRUDER, Some(&format!("{INTRUDER_IP}/24")));

    let before = forbidden(&site);
    let mut refused = intruder_is_refused(&site, &intruder, INTRUDER_IP, POOLED, "pool1");
    refused += intruder_is_refused(&site, &intruder, INTRUDER_IP, FIXED, "fixed1");
    assert_eq!(forbidden(&site) - before, refused, "every refusal counted");
    nothing_happened_and_the_operator_sees_it(&site, POOLED, INTRUDER_IP);
    nothing_happened_and_the_operator_sees_it(&site, FIXED, INTRUDER_IP);
    // From where nothing is known (no lease, no neighbour entry): the operator is told to
    // give the machine a fixed address, the client is told as much and nothing more.
    let r = site.get_as(common::CLIENTS[3], Some(POOLED), "/metadata");
    assert!(r.status == 403 && r.text().contains("fixed address"), "{}", r.text());
    let (text, _) = show(&site, POOLED);
    assert!(text.contains("give the machine a fixed address"), "the operator is told what to do:\n{text}");

    // The machines themselves.
    machine_is_served(&site, &pooled, &pool_ip, POOLED, "pool1");
    machine_is_served(&site, &fixed, FIXED_IP, FIXED, "fixed1");
    assert_eq!(
        events(&site, POOLED),
        [("booted-installer".into(), pool_ip.clone()), ("first-boot".into(), pool_ip.clone())]
    );
    assert_eq!(events(&site, FIXED)[0].1, FIXED_IP);
    // The operator sees where it is: its lease, and the neighbour entry of its NIC.
    osie_testkit::wait_for("the lease and the neighbour entry in the machine's view", Duration::from_secs(5), || {
        let k = known(&show(&site, POOLED).1);
        (k.contains(&(pool_ip.clone(), "lease".into())) && k.contains(&(pool_ip.clone(), "neighbour".into())))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", known(&show(&site, POOLED).1)));

    // The intruder takes the pool machine's address while it still holds the lease (its
    // interface lost the address): the neighbour entry names the intruder's NIC.
    pooled.ip(&["addr", "del", &format!("{pool_ip}/24"), "dev", &pooled_if]).unwrap();
    configure(&intruder, &intruder_if, &pool_ip);
    intruder.ip(&["neigh", "flush", "dev", &intruder_if]).unwrap();
    let tries = everything(&site, &intruder, &pool_ip, POOLED, &["installed"]);
    for (what, r) in &tries {
        assert_eq!(r.status, 403, "squatter at the leased {pool_ip}: {what}: {}", r.text());
    }
    let (_, view) = show(&site, POOLED);
    let why: Vec<&str> = view["identity"]["refused"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["address"] == pool_ip.as_str())
        .map(|c| c["why"].as_str().unwrap())
        .collect();
    assert!(!why.is_empty() && why.iter().all(|w| w.contains(INTRUDER)), "refuted by the neighbour entry: {why:?}");
    assert_eq!(events(&site, POOLED).len(), 2, "nothing stored from the squatter");
    assert!(site.get(&format!("/boot/{POOLED}.ipxe")).text().contains("kernel --name vmlinuz"), "netboot not cleared");
}

/// A DHCP REQUEST of `mac` for `ip` to the site server (192.0.2.5), relayed by `giaddr`
/// when given, with a client identifier of its own.
fn request_packet(mac: &str, ip: Ipv4Addr, giaddr: Option<Ipv4Addr>, client_id: &[u8]) -> Vec<u8> {
    let mac: MacAddr = mac.parse().unwrap();
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m =
        Message::new_with_id(0x5e1a_7000 | u32::from(mac.octets()[5]), z, z, z, giaddr.unwrap_or(z), &mac.octets());
    m.set_opcode(Opcode::BootRequest).set_hops(u8::from(giaddr.is_some()));
    m.opts_mut().insert(DhcpOption::MessageType(MessageType::Request));
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 5)));
    m.opts_mut().insert(DhcpOption::ClientIdentifier(client_id.to_vec()));
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

/// A relay agent on the LAN (192.0.2.2) forwarding a REQUEST of `mac` for `ip` to bootsvc,
/// as a router's DHCP helper does.
fn relayed_request(relay: &Netns, mac: &str, ip: Ipv4Addr) {
    let buf = request_packet(mac, ip, Some(Ipv4Addr::new(192, 0, 2, 2)), b"\x01relayed");
    relay
        .spawn(move || {
            let s = UdpSocket::bind("192.0.2.2:67")?;
            for _ in 0..3 {
                s.send_to(&buf, SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 67))?;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        })
        .join()
        .unwrap()
        .unwrap();
}

/// A host on the LAN broadcasting a REQUEST in `mac`'s name for `ip` (its own client
/// identifier, so the site server's lease of the real machine is left alone).
fn forged_request(ns: &Netns, iface: &str, mac: &str, ip: Ipv4Addr) {
    let buf = request_packet(mac, ip, None, b"\xffforged");
    let iface = iface.to_string();
    ns.spawn(move || {
        let s = bootsvc::udp::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68), Some(&iface), "forger")?;
        // Sent three times, as a client retransmits: one lost broadcast must not fail the test.
        for _ in 0..3 {
            s.send_to(&buf, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })
    .join()
    .unwrap()
    .unwrap();
}

/// Wait until bootsvc lists `ip` as a DHCP-request address of `mac`.
fn wait_requested(site: &Site, mac: &str, ip: &str) {
    osie_testkit::wait_for(&format!("bootsvc to note {mac}'s REQUEST for {ip}"), Duration::from_secs(10), || {
        known(&show(site, mac).1).contains(&(ip.to_string(), "dhcp-request".into())).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", known(&show(site, mac).1)));
}

#[test]
fn proxy_mode_machines_are_known_by_their_own_dhcp_requests() {
    let t = "proxy_mode_machines_are_known_by_their_own_dhcp_requests";
    if !require_root(t) || !require_tools(t, &["curl", "udhcpc", "dnsmasq"]) {
        return;
    }
    let mut site = Site::new(Options { proxy: true, ..Default::default() });
    let lan = site.lan();
    site.serve_on(&lan, false);
    site.machine("pool1", &record("pool1", POOLED, None));
    site.machine("relayed1", &record("relayed1", RELAYED, None));
    site.start();
    // The site's DHCP server, addresses only, on the same LAN.
    let (dns, dns_if) = site.join(&lan, "02:00:00:00:05:05", Some("192.0.2.5/24"));
    let (_dnsmasq, _) = net::lan::dnsmasq(&dns, &dns_if, site.dir()).unwrap();

    // The machine gets its address from dnsmasq; bootsvc sees the REQUEST go by.
    let (pooled, pooled_if) = site.join(&lan, POOLED, None);
    let env = osie_testkit::dhcp::udhcpc(&pooled, &pooled_if, site.dir(), &["-t", "10"]).unwrap();
    let first_ip = osie_testkit::dhcp::env_value(&env, "ip").unwrap();
    assert_eq!(osie_testkit::dhcp::env_value(&env, "serverid").as_deref(), Some("192.0.2.5"), "{env}");
    configure(&pooled, &pooled_if, &first_ip);
    wait_requested(&site, POOLED, &first_ip);

    // The intruder fetches the script, forges a REQUEST of the machine's MAC for its own
    // address (so bootsvc takes that as the machine's request), and tries everything: the
    // neighbour entry for its address names its own NIC.
    let (intruder, intruder_if) = site.join(&lan, INTRUDER, Some(&format!("{INTRUDER_IP}/24")));
    forged_request(&intruder, &intruder_if, POOLED, INTRUDER_IP.parse().unwrap());
    wait_requested(&site, POOLED, INTRUDER_IP);
    let before = forbidden(&site);
    let refused = intruder_is_refused(&site, &intruder, INTRUDER_IP, POOLED, "pool1");
    assert_eq!(forbidden(&site) - before, refused);
    nothing_happened_and_the_operator_sees_it(&site, POOLED, INTRUDER_IP);

    // The machine itself (its installer), still at its address: its neighbour entry names its
    // NIC (the forged REQUEST moved its DHCP binding, and counts for nothing against that).
    machine_is_served(&site, &pooled, &first_ip, POOLED, "pool1");

    // Its installed OS's DHCP client sends another client identifier (a DUID): dnsmasq leases
    // it another address, bootsvc sees that REQUEST, and the OS is the machine there.
    let env =
        osie_testkit::dhcp::udhcpc(&pooled, &pooled_if, site.dir(), &["-t", "10", "-x", "0x3d:ff0000000100010001"])
            .unwrap();
    let second_ip = osie_testkit::dhcp::env_value(&env, "ip").unwrap();
    assert_ne!(second_ip, first_ip, "dnsmasq leases another client id another address: {env}");
    pooled.ip(&["addr", "del", &format!("{first_ip}/24"), "dev", &pooled_if]).unwrap();
    configure(&pooled, &pooled_if, &second_ip);
    wait_requested(&site, POOLED, &second_ip);
    let home = format!("/phone-home/{}", instance(POOLED));
    let r = site.curl_in(&pooled, &["--interface", &second_ip, "-d", "hostname=pool1"], &home);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = site.curl_in(&pooled, &["--interface", &second_ip], "/2009-04-04/user-data");
    assert!(r.status == 200 && r.text().contains(&secret("pool1")), "{}", r.text());

    // Behind a relay (no neighbour entry: the machine's address is routed, here on the site's
    // loopback): its relayed REQUEST is the only source, and it names that machine only.
    let (relay, _) = site.join(&lan, "02:00:00:00:02:02", Some("192.0.2.2/24"));
    let remote = "198.51.100.20";
    site.ns.ip(&["addr", "add", &format!("{remote}/32"), "dev", "lo"]).unwrap();
    assert_eq!(site.get_as(remote, Some(RELAYED), "/metadata").status, 403, "nothing known yet");
    relayed_request(&relay, RELAYED, remote.parse().unwrap());
    wait_requested(&site, RELAYED, remote);
    let md = site.get_as(remote, Some(RELAYED), "/metadata");
    assert_eq!((md.status, md.json()["hostname"].as_str()), (200, Some("relayed1")), "{}", md.text());
    assert_eq!(site.get_as(remote, Some(POOLED), "/metadata").status, 403, "requested by another NIC");
    assert_eq!(site.get_as(remote, None, "/latest/meta-data/hostname").text(), "relayed1");

    // Across a restart: what was seen is kept (the relayed machine has no other source).
    site.stop();
    site.start();
    let md = site.get_as(remote, Some(RELAYED), "/metadata");
    assert_eq!(md.status, 200, "known again after a restart: {}", md.text());
    assert!(known(&show(&site, POOLED).1).contains(&(second_ip.clone(), "dhcp-request".into())));
    let phases: Vec<String> = events(&site, POOLED).into_iter().map(|(p, _)| p).collect();
    assert_eq!(phases, ["booted-installer", "first-boot", "first-boot"]);
    let file = std::fs::read_to_string(site.path("state/dhcp-requests.json")).unwrap();
    assert!(file.contains(RELAYED) && file.contains(remote) && !file.contains(INTRUDER), "{file}");
}

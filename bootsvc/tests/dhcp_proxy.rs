//! Proxy mode beside a real site DHCP server (dnsmasq) on one L2 segment: clients get
//! their address from dnsmasq and, if they are PXE clients that may netboot, their boot
//! file from bootsvc. The PXE clients are real firmware in QEMU: iPXE (QEMU's NIC ROM under
//! SeaBIOS), which takes the boot file from the proxy offer, and OVMF's UEFI PXE, which asks
//! again on port 4011 and then fetches ipxe.efi over bootsvc's TFTP.

mod net;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bootsvc::metrics::Metrics;
use net::lan::{boot, dnsmasq, Firmware, Lan};
use net::{config, dropped, machine, metric, replies, start_dhcp, start_tftp, tftp_root, Running};
use osie_testkit::dhcp::{dhclient, env_value};
use osie_testkit::qemu::OVMF_CODE;
use osie_testkit::site::config::{Dhcp, DhcpMode};
use osie_testkit::{require_root, require_tools, ChildGuard, Netns};

struct Site {
    lan: Lan,
    site: Netns,
    _dnsmasq: ChildGuard,
    dnsmasq_leases: std::path::PathBuf,
    metrics: Arc<Metrics>,
    _dhcp: Running,
    _tftp: Running,
}

/// bootsvc in proxy mode on the bridge, dnsmasq (192.0.2.5) on the same segment.
fn site(dir: &Path, backend: Vec<bootsvc::inventory::Machine>) -> Site {
    let lan = Lan::new().unwrap();
    let site = Netns::new().unwrap();
    let site_if = lan.attach(&site, Some("192.0.2.5/24")).unwrap();
    let (dns, dnsmasq_leases) = dnsmasq(&site, &site_if, dir).unwrap();
    let cfg = Arc::new(config(dir, &lan.bridge, Dhcp { mode: Some(DhcpMode::Proxy), ..Dhcp::default() }, &tftp_root()));
    let metrics = Arc::new(Metrics::new());
    let dhcp = start_dhcp(&lan.ns, cfg.clone(), backend, metrics.clone()).unwrap();
    let tftp = start_tftp(&lan.ns, cfg, metrics.clone()).unwrap();
    Site { lan, site, _dnsmasq: dns, dnsmasq_leases, metrics, _dhcp: dhcp, _tftp: tftp }
}

#[test]
fn plain_clients_are_left_to_the_site_server() {
    let t = "proxy_plain_clients";
    if !require_root(t) || !require_tools(t, &["dnsmasq", "dhclient"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mac = "02:00:00:00:0d:01";
    // Known and allowed to netboot, but an OS DHCP client, not a PXE client.
    let s = site(dir.path(), vec![machine("plain", mac, None, true)]);
    let client = Netns::new().unwrap();
    let cif = s.lan.attach(&client, None).unwrap();
    client.ip(&["link", "set", &cif, "address", mac]).unwrap();

    let env = dhclient(&client, &cif, dir.path(), None).unwrap();
    let ip = env_value(&env, "new_ip_address").unwrap();
    assert!(ip.starts_with("192.0.2.1") && ip.len() == 11, "address from dnsmasq's range: {env}");
    assert_eq!(env_value(&env, "new_dhcp_server_identifier").as_deref(), Some("192.0.2.5"));
    assert_eq!(env_value(&env, "new_filename"), None, "{env}");
    assert_eq!(replies(&s.metrics, "proxy-offer"), 0.0);
    assert!(dropped(&s.metrics, "dhcp-not-pxe") >= 1.0);
    let leases = std::fs::read_to_string(&s.dnsmasq_leases).unwrap();
    assert!(leases.contains(mac), "{leases}");
    drop(s.site);
}

#[test]
fn ipxe_gets_its_address_from_dnsmasq_and_its_boot_file_from_bootsvc() {
    let t = "proxy_ipxe";
    if !require_root(t) || !require_tools(t, &["dnsmasq", "qemu-system-x86_64"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mac = "52:54:00:0e:00:01";
    let s = site(dir.path(), vec![machine("ipxe-rom", mac, None, true)]);
    let started = Instant::now();
    let vm = boot(&s.lan, Firmware::SeabiosIpxeRom, mac, dir.path()).unwrap();
    let url = format!("Filename: http://192.0.2.1:8080/boot/{mac}.ipxe");
    let console = vm.wait_console(&[&url], Duration::from_secs(120)).unwrap();
    eprintln!("iPXE had its boot file after {:?}", started.elapsed());
    // Address and router from dnsmasq, boot file from bootsvc.
    assert!(console.contains("net0: 192.0.2.1") && console.contains("gw 192.0.2.5"), "{console}");
    assert!(console.contains("Next server: 192.0.2.1"), "{console}");
    assert!(std::fs::read_to_string(&s.dnsmasq_leases).unwrap().contains(mac));
    // This iPXE takes the boot file straight from the proxy offer (no port-4011 request).
    assert!(replies(&s.metrics, "proxy-offer") >= 1.0);
}

#[test]
fn uefi_pxe_asks_on_4011_and_fetches_ipxe_efi_over_tftp() {
    let t = "proxy_uefi_pxe";
    if !require_root(t) || !require_tools(t, &["dnsmasq", "qemu-system-x86_64"]) {
        return;
    }
    assert!(Path::new(OVMF_CODE).is_file(), "{OVMF_CODE} missing: scripts/setup installs ovmf");
    let dir = tempfile::tempdir().unwrap();
    let mac = "52:54:00:0e:00:02";
    let s = site(dir.path(), vec![machine("uefi", mac, None, true)]);
    let started = Instant::now();
    let vm = boot(&s.lan, Firmware::OvmfPxe, mac, dir.path()).unwrap();
    // OVMF's PXE: proxy offer, REQUEST on 4011, TFTP ipxe.efi; then iPXE's own DHCP gets
    // the proxy offer with its script URL.
    let url = format!("Filename: http://192.0.2.1:8080/boot/{mac}.ipxe");
    let console = vm.wait_console(&["iPXE initialising devices", &url], Duration::from_secs(240)).unwrap();
    eprintln!("OVMF → ipxe.efi → script URL after {:?}", started.elapsed());
    assert!(console.contains("net0: 192.0.2.1") && console.contains("gw 192.0.2.5"), "{console}");
    // EDK2 takes the proxy offer as "ask the boot server": a REQUEST on port 4011.
    assert!(replies(&s.metrics, "proxy-ack") >= 1.0, "OVMF asks on port 4011");
    assert!(replies(&s.metrics, "proxy-offer") >= 2.0, "OVMF and then iPXE");
    // EDK2 first opens a transfer only to read tsize and abandons it, then downloads.
    let tftp = |o: &str| metric(&s.metrics, &format!("osie_tftp_transfers_total{{outcome=\"{o}\"}}"));
    assert!(tftp("complete") >= 1.0, "ipxe.efi over TFTP");
    assert!(tftp("aborted") >= 1.0, "the tsize probe");
}

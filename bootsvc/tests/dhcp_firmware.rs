//! Reservation mode with real UEFI firmware: OVMF's PXE client gets its reserved address
//! and `ipxe.efi` (DHCP + TFTP from bootsvc), OVMF's HTTP boot gets the `ipxe.efi` URL;
//! either way iPXE starts and is sent to its script URL.

mod net;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bootsvc::metrics::Metrics;
use net::lan::{boot, httpd, Firmware, Lan};
use net::{config, machine, metric, replies, start_dhcp, start_tftp, tftp_root};
use osie_testkit::qemu::OVMF_CODE;
use osie_testkit::site::config::Dhcp;
use osie_testkit::{require_root, require_tools};

#[test]
fn ovmf_pxe_boots_ipxe_efi_from_bootsvc() {
    let t = "reservation_ovmf_pxe";
    if !require_root(t) || !require_tools(t, &["qemu-system-x86_64"]) {
        return;
    }
    assert!(Path::new(OVMF_CODE).is_file(), "{OVMF_CODE} missing: scripts/setup installs ovmf");
    let dir = tempfile::tempdir().unwrap();
    let mac = "52:54:00:0f:00:01";
    let lan = Lan::new().unwrap();
    let cfg = Arc::new(config(dir.path(), &lan.bridge, Dhcp::default(), &tftp_root()));
    let metrics = Arc::new(Metrics::new());
    let backend = vec![machine("uefi-node", mac, Some("192.0.2.20/24"), true)];
    let _dhcp = start_dhcp(&lan.ns, cfg.clone(), backend, metrics.clone()).unwrap();
    let _tftp = start_tftp(&lan.ns, cfg, metrics.clone()).unwrap();

    let started = Instant::now();
    let vm = boot(&lan, Firmware::OvmfPxe, mac, dir.path()).unwrap();
    let url = format!("Filename: http://192.0.2.1:8080/boot/{mac}.ipxe");
    let console = vm.wait_console(&["iPXE initialising devices", &url], Duration::from_secs(240)).unwrap();
    eprintln!("OVMF → ipxe.efi → script URL after {:?}", started.elapsed());
    assert!(console.contains("net0: 192.0.2.20/255.255.255.0 gw 192.0.2.254"), "{console}");
    // Firmware and iPXE each: OFFER then ACK.
    assert!(replies(&metrics, "offer") >= 2.0 && replies(&metrics, "ack") >= 2.0);
    assert!(metric(&metrics, "osie_tftp_transfers_total{outcome=\"complete\"}") >= 1.0);
}

#[test]
fn ovmf_http_boot_gets_the_ipxe_efi_url() {
    let t = "reservation_ovmf_http";
    if !require_root(t) || !require_tools(t, &["qemu-system-x86_64", "busybox"]) {
        return;
    }
    assert!(Path::new(OVMF_CODE).is_file(), "{OVMF_CODE} missing: scripts/setup installs ovmf");
    let dir = tempfile::tempdir().unwrap();
    let mac = "52:54:00:0f:00:02";
    let lan = Lan::new().unwrap();
    // bootsvc's HTTP side serves the TFTP root under /ipxe/; a plain web server does here.
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("ipxe")).unwrap();
    std::fs::copy(tftp_root().join("ipxe.efi"), www.join("ipxe/ipxe.efi")).unwrap();
    let _www = httpd(&lan.ns, &www).unwrap();
    let cfg = Arc::new(config(dir.path(), &lan.bridge, Dhcp::default(), &tftp_root()));
    let metrics = Arc::new(Metrics::new());
    let backend = vec![machine("http-node", mac, Some("192.0.2.21/24"), true)];
    let _dhcp = start_dhcp(&lan.ns, cfg, backend, metrics.clone()).unwrap();

    let started = Instant::now();
    let vm = boot(&lan, Firmware::OvmfHttp, mac, dir.path()).unwrap();
    let url = format!("Filename: http://192.0.2.1:8080/boot/{mac}.ipxe");
    let console = vm.wait_console(&["iPXE initialising devices", &url], Duration::from_secs(240)).unwrap();
    eprintln!("OVMF HTTP boot → ipxe.efi → script URL after {:?}", started.elapsed());
    assert!(console.contains("net0: 192.0.2.21/255.255.255.0 gw 192.0.2.254"), "{console}");
    assert!(replies(&metrics, "ack") >= 2.0, "OVMF's HTTP boot and iPXE");
}

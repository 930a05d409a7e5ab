//! One L2 segment for firmware tests: a namespace with a bridge (192.0.2.1, where bootsvc
//! runs) and a tap for QEMU; other namespaces (a site DHCP server, a client) join it by
//! veth. QEMU machines (the test kit's command line) boot on the tap with their serial
//! console in a file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use osie_testkit::qemu::{self, ovmf, Nic, Qemu};
use osie_testkit::{unique, wait_for, ChildGuard, Netns};

pub struct Lan {
    /// bootsvc's namespace: the bridge (192.0.2.1/24) and the tap.
    pub ns: Netns,
    pub bridge: String,
    pub tap: String,
}

impl Lan {
    pub fn new() -> Result<Lan> {
        let ns = Netns::new()?;
        let bridge = unique("br");
        let tap = unique("tp");
        ns.add_bridge(&bridge, "192.0.2.1/24")?;
        ns.add_tap(&tap, &bridge)?;
        Ok(Lan { ns, bridge, tap })
    }

    /// Connect `other` to the segment; returns its interface name there.
    pub fn attach(&self, other: &Netns, cidr: Option<&str>) -> Result<String> {
        Ok(self.ns.veth(other, Some(&self.bridge), None, cidr)?.1)
    }
}

/// busybox httpd serving `root` on 192.0.2.1:8080 in `ns` (the test's stand-in for
/// bootsvc's HTTP side, which lives elsewhere).
pub fn httpd(ns: &Netns, root: &Path) -> Result<ChildGuard> {
    let g = ChildGuard::spawn(
        "busybox httpd",
        ns.cmd("busybox").args(["httpd", "-f", "-p", "192.0.2.1:8080", "-h"]).arg(root).stdout(Stdio::null()),
    )?;
    wait_for("httpd to listen", Duration::from_secs(10), || {
        ns.run("busybox", &["wget", "-q", "-O", "/dev/null", "http://192.0.2.1:8080/ipxe/ipxe.efi"]).ok().map(|_| ())
    })?;
    Ok(g)
}

/// A site DHCP server (dnsmasq) handing out 192.0.2.150–199 and nothing about booting.
pub fn dnsmasq(ns: &Netns, iface: &str, dir: &Path) -> Result<(ChildGuard, PathBuf)> {
    let leases = dir.join("dnsmasq.leases");
    let log = std::fs::File::create(dir.join("dnsmasq.log"))?;
    let guard = ChildGuard::spawn(
        "dnsmasq",
        ns.cmd("dnsmasq")
            .arg("--no-daemon")
            .arg("--conf-file=/dev/null")
            .arg("--port=0")
            .arg(format!("--interface={iface}"))
            .arg("--bind-interfaces")
            .arg("--dhcp-range=192.0.2.150,192.0.2.199,255.255.255.0,10m")
            .arg("--dhcp-option=option:router,192.0.2.5")
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .arg("--log-dhcp")
            .stdout(Stdio::null())
            .stderr(log),
    )?;
    // Ready when it has bound its DHCP socket.
    wait_for("dnsmasq to start", Duration::from_secs(10), || {
        std::fs::read_to_string(dir.join("dnsmasq.log")).ok().filter(|l| l.contains("DHCP, IP range")).map(|_| ())
    })?;
    Ok((guard, leases))
}

#[derive(Debug, Clone, Copy)]
pub enum Firmware {
    /// SeaBIOS with QEMU's default virtio NIC ROM (iPXE), console on serial (sercon).
    SeabiosIpxeRom,
    /// OVMF with the NIC ROM disabled: its own UEFI PXE client.
    OvmfPxe,
    /// OVMF with the NIC ROM disabled and both PXE boot options switched off, so its first
    /// network boot option is UEFI HTTP boot (IPv4).
    OvmfHttp,
}

pub struct Vm {
    _qemu: ChildGuard,
    pub serial: PathBuf,
}

/// Boot a machine with `mac` on the lan's tap.
pub fn boot(lan: &Lan, fw: Firmware, mac: &str, dir: &Path) -> Result<Vm> {
    let serial = dir.join(unique("serial") + ".log");
    let mut q = Qemu::new(512, &serial);
    let nic = Nic { tap: lan.tap.clone(), mac: Some(mac.to_string()), rom: true, bootindex: None };
    match fw {
        Firmware::SeabiosIpxeRom => {
            // SeaBIOS prints (and lets the ROM print) on the serial port.
            q.firmware = qemu::Firmware::seabios_on_serial(&dir.join("sercon-port"))?;
            q.nic(nic);
            q.boot = Some("n".into());
        }
        Firmware::OvmfPxe | Firmware::OvmfHttp => {
            if matches!(fw, Firmware::OvmfHttp) {
                q.fw_cfg = vec![ovmf::IPV4_PXE_OFF.into(), ovmf::IPV6_PXE_OFF.into()];
            }
            q.machine = Some("q35".into());
            q.firmware = qemu::Firmware::ovmf(&dir.join(unique("vars") + ".fd"))?;
            q.nic(Nic { rom: false, ..nic });
        }
    }
    let qemu = ChildGuard::spawn("qemu", q.command(&lan.ns).stdout(Stdio::null()).stderr(Stdio::null()))?;
    Ok(Vm { _qemu: qemu, serial })
}

impl Vm {
    /// The serial console, escape sequences removed.
    pub fn console(&self) -> String {
        let raw = std::fs::read(&self.serial).unwrap_or_default();
        let s = String::from_utf8_lossy(&raw);
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC [ params final-byte
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                continue;
            }
            if c != '\r' {
                out.push(c);
            }
        }
        out
    }

    /// Wait until every string in `all` is on the console.
    pub fn wait_console(&self, all: &[&str], timeout: Duration) -> Result<String> {
        wait_for(&format!("{all:?} on the serial console"), timeout, || {
            let c = self.console();
            all.iter().all(|s| c.contains(s)).then_some(c)
        })
        .with_context(|| format!("console so far:\n{}", self.console()))
    }
}

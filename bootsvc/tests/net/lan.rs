//! One L2 segment for firmware tests: a namespace with a bridge (192.0.2.1, where bootsvc
//! runs) and a tap for QEMU; other namespaces (a site DHCP server, a client) join it by
//! veth. QEMU machines boot on the tap with their serial console in a file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
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
        let here = unique("lb");
        let there = unique("lx");
        self.ns.ip(&["link", "add", &here, "type", "veth", "peer", "name", &there, "netns", other.name()])?;
        self.ns.ip(&["link", "set", &here, "master", &self.bridge])?;
        self.ns.ip(&["link", "set", &here, "up"])?;
        if let Some(c) = cidr {
            other.ip(&["addr", "add", c, "dev", &there])?;
        }
        other.ip(&["link", "set", &there, "up"])?;
        Ok(there)
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

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

pub struct Vm {
    _qemu: ChildGuard,
    pub serial: PathBuf,
}

/// Boot a machine with `mac` on the lan's tap.
pub fn boot(lan: &Lan, fw: Firmware, mac: &str, dir: &Path) -> Result<Vm> {
    let serial = dir.join(unique("serial") + ".log");
    let mut cmd = lan.ns.cmd("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-netdev")
        .arg(format!("tap,id=n0,ifname={},script=no,downscript=no", lan.tap));
    match fw {
        Firmware::SeabiosIpxeRom => {
            // SeaBIOS prints (and lets the ROM print) on the serial port given here.
            let sercon = dir.join("sercon-port");
            std::fs::write(&sercon, 0x3f8u16.to_le_bytes())?;
            cmd.arg("-fw_cfg")
                .arg(format!("name=etc/sercon-port,file={}", sercon.display()))
                .arg("-device")
                .arg(format!("virtio-net-pci,netdev=n0,mac={mac}"))
                .args(["-boot", "n"]);
        }
        Firmware::OvmfPxe | Firmware::OvmfHttp => {
            if matches!(fw, Firmware::OvmfHttp) {
                cmd.args(["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"])
                    .args(["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]);
            }
            let vars = dir.join(unique("vars") + ".fd");
            std::fs::copy(OVMF_VARS, &vars).with_context(|| format!("copying {OVMF_VARS}"))?;
            cmd.args(["-machine", "q35", "-drive"])
                .arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"))
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,unit=1,file={}", vars.display()))
                .arg("-device")
                .arg(format!("virtio-net-pci,netdev=n0,mac={mac},romfile="));
        }
    }
    let qemu = ChildGuard::spawn("qemu", cmd.stdout(Stdio::null()).stderr(Stdio::null()))?;
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

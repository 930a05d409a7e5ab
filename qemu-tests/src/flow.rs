//! The path of one machine, phase by phase, as the scenarios and `scripts/demo` expect it:
//! firmware DHCP → (iPXE binary) → iPXE's script → kernel + initramfs → installer phases →
//! `installed` → reboot (DHCP without a boot file) → the installed OS's user-data on the
//! console → its `first-boot` event. Each phase has its own time limit, so a failure names
//! the phase that never came.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use bootsvc::state::Status;
use osie_api::Phase;

use crate::lab::{Lab, PUBLIC_URL};
use crate::machine::{Firmware, Machine};
use crate::record::Record;
use crate::timeline::{Mark, Step, Timeline, Who};
use crate::watch::Watch;

/// Time limits per phase. Generous: a loaded 2-core CI machine runs two TCG guests at once,
/// and a limit is for a hung machine, not a slow one.
#[derive(Debug, Clone)]
pub struct Limits {
    pub firmware: Duration,
    pub installer: Duration,
    pub install: Duration,
    pub reboot: Duration,
    pub first_boot: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            firmware: Duration::from_secs(240),
            installer: Duration::from_secs(300),
            install: Duration::from_secs(900),
            reboot: Duration::from_secs(300),
            first_boot: Duration::from_secs(900),
        }
    }
}

/// Labels of the console lines a provisioning run watches for.
pub const OS_KERNEL: &str = "installed OS kernel";
pub const USER_DATA: &str = "user-data ran";

/// Who the timeline is about: the record's MAC and address, the lab's file names (an arm64
/// machine's under `arm64/`, as bootsvc names them: `bootsvc/docs/arm64.md`).
pub fn who(rec: &Record) -> Who {
    let ip = rec.fixed_address.then_some(rec.ip);
    let sub = if rec.arch == Some("aarch64") { "arm64/" } else { "" };
    Who { mac: rec.mac.clone(), ip, kernel: format!("{sub}vmlinuz"), initrd: format!("{sub}initramfs.img") }
}

/// A watch over `machine` for `rec`, with the console lines of a provisioning run.
pub fn watch<'a>(lab: &'a Lab, machine: &'a mut Machine, rec: &Record) -> Watch<'a> {
    let mut w = Watch::new(lab, machine, who(rec));
    // The image's kernel is Debian's cloud flavour; the installer's is not.
    w.watch_console(OS_KERNEL, rec.os_kernel());
    w.watch_console(USER_DATA, &rec.marker());
    w
}

pub fn is_dhcp_reply(m: &Mark) -> bool {
    m.step == Step::Dhcp
}

fn dhcp_of(m: &Mark, class: &str, arch: Option<u16>) -> bool {
    m.dhcp.as_ref().is_some_and(|d| d.class == class && (arch.is_none() || d.arch == arch) && d.boot_file.is_some())
}

/// From power-on to the installer's `installed` event.
pub fn install(w: &mut Watch, fw: Firmware, mac: &str, limits: &Limits) -> Result<()> {
    let script_url = format!("{PUBLIC_URL}/boot/{mac}.ipxe");
    match fw {
        // GRUB, not iPXE: a path of its own.
        Firmware::Arm64UefiPxe => return install_arm64(w, mac, limits),
        Firmware::Arm64UefiHttp => {
            arm64_http_to_installer(w, mac, limits)?;
            return installer_phases(w, limits);
        }
        Firmware::Bios => {
            // The NIC ROM is iPXE: its very first DHCP gets the script URL.
            w.until("DHCP answer to the iPXE ROM (class ipxe, script URL)", limits.firmware, |t| {
                t.first(|m| dhcp_of(m, "ipxe", None)).is_some()
            })?;
        }
        Firmware::UefiPxe => {
            w.until("DHCP answer to OVMF's PXE client (uefi-pxe, arch 7, ipxe.efi)", limits.firmware, |t| {
                t.first(|m| dhcp_of(m, "uefi-pxe", Some(7))).is_some()
            })?;
            w.until("ipxe.efi over TFTP", limits.firmware, |t| {
                t.first(|m| {
                    m.step == Step::BootProgram && m.detail.contains("TFTP ipxe.efi") && m.detail.contains("complete")
                })
                .is_some()
            })?;
        }
        Firmware::UefiHttp6 | Firmware::UefiPxe6 => {
            bail!("boot over IPv6 is watched by its own scenario (j), not this IPv4 flow")
        }
        Firmware::UefiHttp => {
            w.until("DHCP answer to OVMF's HTTP boot (uefi-http, arch 16, ipxe.efi URL)", limits.firmware, |t| {
                t.first(|m| dhcp_of(m, "uefi-http", Some(16))).is_some()
            })?;
            w.until("ipxe.efi over HTTP", limits.firmware, |t| {
                t.first(|m| m.step == Step::BootProgram && m.detail.contains("HTTP ipxe.efi")).is_some()
            })?;
        }
    }
    if fw.is_uefi() {
        w.until("DHCP answer to iPXE (class ipxe, script URL)", limits.firmware, |t| {
            t.first(|m| dhcp_of(m, "ipxe", None)).is_some()
        })?;
    }
    let t = w.timeline();
    if let Some(d) = t.first(|m| dhcp_of(m, "ipxe", None)).and_then(|m| m.dhcp.as_ref()) {
        ensure!(
            d.boot_file.as_deref() == Some(script_url.as_str()),
            "iPXE was given {:?}, not {script_url}",
            d.boot_file
        );
    }
    w.until("iPXE script (installer)", limits.firmware, |t| {
        t.first(|m| m.step == Step::Script && m.detail == "kind installer").is_some()
    })?;
    w.until("kernel over HTTP", limits.firmware, |t| t.first(|m| m.step == Step::Kernel).is_some())?;
    w.until("initramfs over HTTP", limits.firmware, |t| t.first(|m| m.step == Step::Initrd).is_some())?;
    installer_phases(w, limits)
}

/// From power-on to `installed` through the shim/GRUB chain (`bootsvc/docs/secure-boot.md`)
/// on OVMF's UEFI PXE: Debian's signed shim and GRUB, the machine's GRUB configuration, the
/// installer's kernel and initramfs, all over TFTP.
pub fn install_shim_grub(w: &mut Watch, mac: &str, limits: &Limits) -> Result<()> {
    w.until("DHCP answer to OVMF's PXE client (uefi-pxe, arch 7, shimx64.efi)", limits.firmware, |t| {
        t.first(|m| {
            m.dhcp.as_ref().is_some_and(|d| d.class == "uefi-pxe" && d.boot_file.as_deref() == Some("shimx64.efi"))
        })
        .is_some()
    })?;
    // GRUB names its files from its root, with a leading `/`.
    let config = format!("/boot/{mac}.grub");
    for f in ["shimx64.efi", "grubx64.efi", "/grub/grub.cfg", &config, "/artifacts/vmlinuz", "/artifacts/initramfs.img"]
    {
        w.until(&format!("{f} over TFTP"), limits.firmware, |t| tftp_complete(t, f))?;
    }
    installer_phases(w, limits)
}

/// From power-on to `installed` on an arm64 machine (`bootsvc/docs/arm64.md`): AAVMF's UEFI
/// PXE (arch 11) gets Debian's signed arm64 GRUB, which reads the entry configuration, the
/// machine's arm64 configuration, and the arm64 kernel and initramfs, all over TFTP.
pub fn install_arm64(w: &mut Watch, mac: &str, limits: &Limits) -> Result<()> {
    w.until("DHCP answer to AAVMF's PXE client (uefi-pxe-arm, arch 11, grubaa64.efi)", limits.firmware, |t| {
        t.first(|m| {
            m.dhcp.as_ref().is_some_and(|d| {
                d.class == "uefi-pxe-arm" && d.arch == Some(11) && d.boot_file.as_deref() == Some("grubaa64.efi")
            })
        })
        .is_some()
    })?;
    let config = format!("/boot/arm64/{mac}.grub");
    for f in ["grubaa64.efi", "/grub/grub.cfg", &config, "/artifacts/arm64/vmlinuz", "/artifacts/arm64/initramfs.img"] {
        w.until(&format!("{f} over TFTP"), limits.firmware, |t| tftp_complete(t, f))?;
    }
    // Never a file of the other architecture.
    let t = w.timeline();
    let x86 = [format!("/boot/{mac}.grub"), "/artifacts/vmlinuz".into(), "/artifacts/initramfs.img".into()];
    for f in x86.iter().map(String::as_str).chain(["ipxe.efi", "snponly.efi", "shimx64.efi", "grubx64.efi"]) {
        let want = format!("TFTP {f}: ");
        ensure!(
            t.first(|m| m.step == Step::BootProgram && m.detail.starts_with(&want)).is_none(),
            "the arm64 machine was sent {f}:\n{}",
            t.render()
        );
    }
    installer_phases(w, limits)
}

/// From power-on to the installer's first event on an arm64 machine that UEFI-HTTP-boots
/// (`bootsvc/docs/arm64.md`): AAVMF's HTTP boot (arch 19) gets the URL of the arm64 GRUB with
/// `http`, which reads the entry configuration, the machine's arm64 configuration, and the
/// arm64 kernel and initramfs, all over HTTP from bootsvc; nothing over TFTP.
pub fn arm64_http_to_installer(w: &mut Watch, mac: &str, limits: &Limits) -> Result<()> {
    let grub = format!("{PUBLIC_URL}/ipxe/grubaa64-http.efi");
    w.until(&format!("DHCP answer to AAVMF's HTTP boot (uefi-http-arm, arch 19, {grub})"), limits.firmware, |t| {
        t.first(|m| {
            m.dhcp.as_ref().is_some_and(|d| {
                d.class == "uefi-http-arm" && d.arch == Some(19) && d.boot_file.as_deref() == Some(grub.as_str())
            })
        })
        .is_some()
    })?;
    w.until("grubaa64-http.efi over HTTP", limits.firmware, |t| {
        t.first(|m| m.step == Step::BootProgram && m.detail.starts_with("HTTP grubaa64-http.efi")).is_some()
    })?;
    // The machine's own arm64 configuration, the installer's, went out over HTTP (bootsvc's
    // log names the protocol of each).
    let lab = w.lab;
    w.until("the machine's arm64 GRUB configuration over HTTP", limits.firmware, |_| {
        lab.log_text().lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).any(|e| {
            e["message"] == "GRUB configuration"
                && e["mac"] == mac
                && e["via"] == "http"
                && e["arch"] == "aarch64"
                && e["kind"] == "installer"
        })
    })?;
    w.until("the arm64 kernel over HTTP", limits.firmware, |t| t.first(|m| m.step == Step::Kernel).is_some())?;
    w.until("the arm64 initramfs over HTTP", limits.firmware, |t| t.first(|m| m.step == Step::Initrd).is_some())?;
    w.phase(Phase::BootedInstaller, limits.installer)?;
    // Everything came over HTTP: not one file over TFTP (which this GRUB would only use if
    // it had been booted by PXE).
    let t = w.timeline();
    if let Some(m) = t.first(|m| m.step == Step::BootProgram && m.detail.starts_with("TFTP ")) {
        bail!("the HTTP-booted arm64 machine fetched over TFTP: {}\n{}", m.detail, t.render());
    }
    Ok(())
}

/// The firmware, shim or GRUB read `file` over TFTP to its end.
pub fn tftp_complete(t: &Timeline, file: &str) -> bool {
    let want = format!("TFTP {file}: ");
    t.first(|m| m.step == Step::BootProgram && m.detail.starts_with(&want) && m.detail.ends_with("complete")).is_some()
}

/// From the installer's kernel to `installed`.
fn installer_phases(w: &mut Watch, limits: &Limits) -> Result<()> {
    w.phase(Phase::BootedInstaller, limits.installer)?;
    w.until("the image download", limits.installer, |t| t.first(|m| m.step == Step::Image).is_some())?;
    w.phase(Phase::ImageVerified, limits.install)?;
    w.phase(Phase::Installed, limits.installer)?;
    Ok(())
}

/// From `installed` to the installed OS's `first-boot`: the reboot's DHCP without a boot
/// file, the OS's kernel, the user-data's marker on the console, the phone-home.
pub fn first_boot(w: &mut Watch, limits: &Limits) -> Result<()> {
    w.until("DHCP after the reboot, without a boot file (netboot cleared)", limits.reboot, |t| {
        let Some(installed) = t.event(Phase::Installed) else { return false };
        t.first_after(installed, |m| m.dhcp.as_ref().is_some_and(|d| d.boot_file.is_none())).is_some()
    })?;
    w.until("the installed OS's kernel on the console", limits.reboot, |t| console_mark(t, OS_KERNEL))?;
    w.until("the user-data's marker on the console (cloud-init runcmd)", limits.first_boot, |t| {
        console_mark(t, USER_DATA)
    })?;
    w.phase(Phase::FirstBoot, limits.first_boot)?;
    Ok(())
}

/// The most iPXE may take from its DHCP DISCOVER to its script request: no timer waits
/// between (`bootsvc/docs/dhcp.md`, "No idle waits").
pub const DISCOVER_TO_SCRIPT: Duration = Duration::from_secs(1);

/// From bootsvc's log: iPXE's first DHCP DISCOVER (the offer bootsvc answered it with) to its
/// first script request after it. `None` until both are there.
pub fn discover_to_script(t: &Timeline) -> Option<Duration> {
    let discover = t.first(|m| m.dhcp.as_ref().is_some_and(|d| d.class == "ipxe" && d.msg == "discover"))?;
    let script = t.first_after(discover, |m| m.step == Step::Script)?;
    Some(script.at.saturating_sub(discover.at))
}

/// From the `installed` event to the installed OS's kernel on the console: the reboot, what
/// the firmware does on the network, the disk's boot loader. `None` until both are there.
pub fn installed_to_os_kernel(t: &Timeline) -> Option<Duration> {
    let installed = t.event(Phase::Installed)?;
    let kernel = t.first_after(installed, |m| m.step == Step::Console && m.label == OS_KERNEL)?;
    Some(kernel.at.saturating_sub(installed.at))
}

fn console_mark(t: &Timeline, label: &str) -> bool {
    t.first(|m| m.step == Step::Console && m.label == label).is_some()
}

/// After [`install`] and [`first_boot`]: what bootsvc and the timeline must show for a
/// machine provisioned once. Used by the install scenarios.
pub fn check_provisioned(lab: &Lab, rec: &Record, t: &Timeline) -> Result<()> {
    ensure!(
        t.count(|m| m.step == Step::Event(Phase::BootedInstaller)) == 1,
        "the installer ran more than once:\n{}",
        t.render()
    );
    ensure!(t.event(Phase::Failed).is_none(), "a failed event:\n{}", t.render());
    let installed = t.event(Phase::Installed).map(|m| m.time);
    // After `installed` nothing fetched the installer again (iPXE may fetch the script that
    // boots its disk).
    let again = |m: &Mark| match m.step {
        Step::Script => m.detail != "kind local-boot",
        Step::Kernel | Step::Initrd => true,
        _ => false,
    };
    ensure!(
        !t.marks.iter().any(|m| Some(m.time) > installed && again(m)),
        "the machine fetched the installer again after it was installed:\n{}",
        t.render()
    );
    let fb = lab.events(&rec.mac)?.into_iter().find(|e| e.event.phase == Phase::FirstBoot);
    let fb = fb.ok_or_else(|| anyhow::anyhow!("no first-boot event stored"))?;
    if rec.fixed_address {
        ensure!(fb.source == Some(rec.ip.into()), "first-boot came from {:?}, not the machine's {}", fb.source, rec.ip);
    } else {
        // Proxy mode: from an address the machine asked the site DHCP server for.
        let asked = crate::bootlog::requested(&lab.log_entries(), &rec.mac);
        ensure!(
            fb.source.is_some_and(|s| asked.iter().any(|a| std::net::IpAddr::from(*a) == s)),
            "first-boot came from {:?}, not one of the addresses the machine asked for ({asked:?})",
            fb.source
        );
    }
    let view = lab.machine(&rec.mac)?;
    ensure!(
        view.netboot.cleared && !view.netboot.allowed,
        "netboot should be cleared after the install: {:?}",
        view.netboot
    );
    ensure!(view.state.status == Status::Installed, "machine status {} (want installed)", view.state.status.as_str());
    ensure!(view.state.first_boot_at.is_some(), "bootsvc did not record the first boot: {:?}", view.state);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::bootlog::parse_line;

    const MAC: &str = "52:54:00:e2:00:01";

    fn ts(ms: u64) -> String {
        osie_api::time::rfc3339(1_795_284_000_000 + ms)
    }

    fn dhcp(ms: u64, msg: &str, class: &str) -> String {
        format!(
            r#"{{"timestamp":"{}","message":"DHCP x","mac":"{MAC}","msg":"{msg}","class":"{class}","arch":"0","reply":"offer","yiaddr":"192.0.2.21","boot_file":"http://192.0.2.1:8080/boot/{MAC}.ipxe"}}"#,
            ts(ms)
        )
    }

    fn script(ms: u64) -> String {
        format!(
            r#"{{"timestamp":"{}","message":"iPXE script","mac":"{MAC}","peer":"192.0.2.21:25001","kind":"installer"}}"#,
            ts(ms)
        )
    }

    fn timeline(lines: &[String]) -> Timeline {
        let who =
            Who { mac: MAC.into(), ip: Some(Ipv4Addr::new(192, 0, 2, 21)), kernel: "k".into(), initrd: "i".into() };
        let log: Vec<_> = lines.iter().filter_map(|l| parse_line(l)).collect();
        let on: SystemTime = UNIX_EPOCH + Duration::from_millis(1_795_284_000_000);
        Timeline::build(on, &who, &log, &[], &[])
    }

    #[test]
    fn discover_to_script_is_read_from_the_log() {
        // iPXE's DISCOVER at 2.3 s, its script at 2.37 s: 70 ms.
        let fast = timeline(&[dhcp(2_300, "discover", "ipxe"), dhcp(2_310, "request", "ipxe"), script(2_370)]);
        assert_eq!(discover_to_script(&fast), Some(Duration::from_millis(70)));
        // The waits of old: 3 s for ProxyDHCP, 13 s for IPv6.
        let slow = timeline(&[dhcp(2_300, "discover", "ipxe"), dhcp(5_300, "request", "ipxe"), script(18_400)]);
        assert_eq!(discover_to_script(&slow), Some(Duration::from_millis(16_100)));
        assert!(discover_to_script(&slow).is_some_and(|d| d > DISCOVER_TO_SCRIPT));
        // The firmware's own DISCOVER (UEFI PXE) does not count; nothing yet: None.
        assert_eq!(discover_to_script(&timeline(&[dhcp(1_000, "discover", "uefi-pxe")])), None);
        assert_eq!(discover_to_script(&timeline(&[dhcp(1_000, "discover", "ipxe")])), None);
    }
}

//! (g) An installed machine reinstalled by `bootsvc machine <mac> reinstall --power` alone:
//! the machine is a libvirt QEMU domain (TCG, SeaBIOS, virtio NIC with its iPXE ROM on the
//! lab bridge) whose disk holds the OS, powered off; its BMC is sushy-tools' Redfish emulator
//! in front of that libvirt (TLS with the test's CA, on a management address apart from the
//! provisioning network). After the one command (`--wait`: it returns once the machine
//! netboots), nothing touches QEMU or libvirt: bootsvc
//! sets the one-time network boot and powers the machine on through the BMC, the machine
//! netboots the installer, installs, reboots, and its new OS phones home. See
//! `bootsvc/docs/power.md`.

use std::time::{Duration, Instant};

use osie_api::Phase;
use osie_qemu_tests::{signals, Disk, Inputs, Lab, Record};
use osie_testkit::bmc::{self, Libvirt};
use osie_testkit::proc::wait_for;

const MGMT_IP: &str = "198.51.100.50";
const PASSWORD: &str = "reinstall-Pa55word";
const DISK_BYTES: u64 = 4 << 30;

fn check<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

/// The domain: as scenario (a)'s machine (1 GiB, `-cpu max`, SeaBIOS, virtio disk and NIC),
/// booting its disk, as an installed machine does.
fn domain_xml(name: &str, mac: &str, tap: &str, disk: &std::path::Path, serial: &std::path::Path) -> String {
    format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>1024</memory><vcpu>1</vcpu>\
         <cpu mode='maximum'/>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/><apic/></features>\
         <clock offset='utc'/><on_reboot>restart</on_reboot>\
         <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
         <disk type='file' device='disk'><driver name='qemu' type='raw' cache='unsafe'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/><boot order='1'/></disk>\
         <interface type='ethernet'><mac address='{mac}'/><target dev='{tap}' managed='no'/><model type='virtio'/></interface>\
         <serial type='file'><source path='{}'/></serial></devices></domain>",
        disk.display(),
        serial.display()
    )
}

#[test]
fn g_installed_machine_reinstalled_by_reinstall_power_alone() {
    let test = "g_installed_machine_reinstalled_by_reinstall_power_alone";
    let Some(inputs) = Inputs::for_test(test) else { return };
    if !bmc::prerequisites(test, &[]) {
        return;
    }
    signals::install();
    let lab = check(Lab::start(test, &inputs));
    let mac = "52:54:00:e2:0f:01";
    let rec = Record::new("node1", mac, Lab::address(1));

    // The BMC, on a management address of its own.
    check(lab.site.loopback(&[MGMT_IP]));
    let (ca, _, cert, key) = bmc::certificates(lab.dir(), MGMT_IP);
    let creds = bmc::credentials(lab.dir(), "node1.json", "admin", PASSWORD);
    let mut json = rec.to_json("192.0.2.1");
    json["bmc"] = serde_json::json!({"protocol": "redfish", "address": format!("https://{MGMT_IP}:8443"),
                                     "ca_file": ca, "credentials": creds, "boot_mode": "legacy"});
    check(lab.site.machine("node1", &json.to_string()));
    check(wait_for("bootsvc to load node1", Duration::from_secs(20), || lab.machine(mac).ok()));

    // The installed machine, off, behind its BMC.
    let dir = check(lab.subdir("node1"));
    let disk = check(Disk::from_image(&dir, &inputs.image_file(), DISK_BYTES));
    let tap = check(lab.add_tap());
    let mut lv = Libvirt::daemon(&lab.site.ns, lab.dir());
    lv.define("node1", &domain_xml("node1", mac, &tap, &disk.path, &dir.join("serial.log")));
    let _sushy = bmc::sushy(&lab.site.ns, &lv, MGMT_IP, 8443, (&cert, &key), "admin", PASSWORD);
    assert_eq!(lv.state(), "shut off");

    // The one command.
    let t0 = Instant::now();
    let out = check(lab.cli(&["machine", mac, "reinstall", "--power", "--wait", "600"]));
    assert!(out.contains("reinstall done (power was off)"), "{out}");
    assert!(out.contains("node1 (52:54:00:e2:0f:01): netbooted: the installer is at "), "{out}");
    eprintln!("{test}: {}", out.trim());

    // From here on only the machine and bootsvc: wait for its events.
    let phases = |lab: &Lab| -> Vec<(Phase, String)> {
        lab.events(mac).map(|v| v.into_iter().map(|e| (e.event.phase, e.received)).collect()).unwrap_or_default()
    };
    let until = |what: &str, limit: Duration, p: Phase| {
        let r = wait_for(what, limit, || {
            std::thread::sleep(Duration::from_secs(2));
            phases(&lab).iter().any(|(x, _)| *x == p).then_some(())
        });
        if let Err(e) = r {
            lab.failed();
            let console = std::fs::read_to_string(dir.join("serial.log")).unwrap_or_default();
            let tail: Vec<&str> = console.lines().rev().take(30).collect();
            panic!(
                "{e:#} ({:?} after the command); events: {:?}; domain {}; console:\n{}",
                t0.elapsed(),
                phases(&lab),
                lv.state(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        eprintln!("{test}: {p} at +{:.0} s", t0.elapsed().as_secs_f64());
    };
    until("the installer to boot (booted-installer)", Duration::from_secs(600), Phase::BootedInstaller);
    until("the install to finish (installed)", Duration::from_secs(1200), Phase::Installed);
    until("the installed OS to phone home (first-boot)", Duration::from_secs(1200), Phase::FirstBoot);

    // The timeline: the BMC action, then one installer run, then the new OS.
    let events = check(lab.events(mac));
    let order: Vec<Phase> = events
        .iter()
        .map(|e| e.event.phase)
        .filter(|p| matches!(p, Phase::Power | Phase::BootedInstaller | Phase::Installed | Phase::FirstBoot))
        .collect();
    assert_eq!(order, [Phase::Power, Phase::BootedInstaller, Phase::Installed, Phase::FirstBoot], "{events:#?}");
    assert!(events.iter().all(|e| e.event.phase != Phase::Failed), "{events:#?}");
    let power = &events[0].event.message;
    assert!(
        power.contains("reinstall via redfish") && power.contains(r#""BootSourceOverrideTarget":"Pxe""#),
        "{power}"
    );
    let fb = events.iter().find(|e| e.event.phase == Phase::FirstBoot).unwrap();
    assert_eq!(fb.source, Some(rec.ip.into()), "first-boot from the machine's own address");
    let view = check(lab.machine(mac));
    assert!(view.netboot.cleared && !view.netboot.allowed, "{:?}", view.netboot);
    assert_eq!(lv.state(), "running");
    assert!(!lab.log_text().contains(PASSWORD));
    eprintln!("{test}: reinstalled and booted its new OS in {:.0} s", t0.elapsed().as_secs_f64());
    for e in &events {
        eprintln!(
            "  {}  {:<18} {}",
            e.received,
            e.event.phase.as_str(),
            e.event.message.chars().take(120).collect::<String>()
        );
    }
    drop(lv);
}

//! (g) An installed machine reinstalled by `bootsvc machine <mac> reinstall --power` alone:
//! the machine is a libvirt QEMU domain (TCG, SeaBIOS, virtio NIC with its iPXE ROM on the
//! lab bridge) whose disk holds the OS, powered off; its BMC is sushy-tools' Redfish emulator
//! in front of that libvirt (TLS with the test's CA, on a management address apart from the
//! provisioning network). After the one command (`--wait`: it returns once the machine
//! netboots), nothing touches QEMU or libvirt: bootsvc
//! sets the one-time network boot and powers the machine on through the BMC, the machine
//! netboots the installer, installs, reboots, and its new OS phones home. See
//! `bootsvc/docs/power.md`.
//!
//! Then the same machine is deprovisioned by `bootsvc machine <mac> deprovision --power`
//! alone (`bootsvc/docs/deprovision.md`): beside its installed virtio disk it has an NVMe
//! disk (QEMU's `nvme`, which does Format NVM) and a virtio disk with discard, both full of
//! data from the start. It netboots the installer in erase mode, which erases all three,
//! reports each, and powers off; afterwards every byte of every disk file reads zero, and
//! a network boot through the BMC gets no boot file.

use std::time::{Duration, Instant};

use bootsvc::trace::Step;
use osie_api::{EraseMethod, Phase};
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
/// booting its disk, as an installed machine does; and two small disks the install does not
/// choose (too small for the image) for the deprovisioning: a virtio disk with discard, and
/// an NVMe disk (libvirt 9 has no emulated NVMe disk: given to QEMU directly, in a PCI slot libvirt leaves free).
fn domain_xml(
    name: &str,
    mac: &str,
    tap: &str,
    disk: &std::path::Path,
    serial: &std::path::Path,
    (discarding, nvme): (&std::path::Path, &std::path::Path),
) -> String {
    format!(
        "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\
         <name>{name}</name><memory unit='MiB'>1024</memory><vcpu>1</vcpu>\
         <cpu mode='maximum'/>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/><apic/></features>\
         <clock offset='utc'/><on_reboot>restart</on_reboot>\
         <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
         <disk type='file' device='disk'><driver name='qemu' type='raw' cache='unsafe'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/><boot order='1'/></disk>\
         <disk type='file' device='disk'><driver name='qemu' type='raw' cache='unsafe' discard='unmap'/>\
         <source file='{}'/><target dev='vdb' bus='virtio'/></disk>\
         <interface type='ethernet'><mac address='{mac}'/><target dev='{tap}' managed='no'/><model type='virtio'/></interface>\
         <serial type='file'><source path='{}'/></serial></devices>\
         <qemu:commandline><qemu:arg value='-drive'/>\
         <qemu:arg value='file={},if=none,id=nvm,format=raw,cache=unsafe'/>\
         <qemu:arg value='-device'/><qemu:arg value='nvme,serial=osie-nvme-1,drive=nvm,bus=pci.0,addr=0x1e'/></qemu:commandline>\
         </domain>",
        disk.display(),
        discarding.display(),
        serial.display(),
        nvme.display()
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
    let (discarding, nvme) = (dir.join("vdb.img"), dir.join("nvme.img"));
    for f in [&discarding, &nvme] {
        fill(f, SMALL_DISK_BYTES);
    }
    let tap = check(lab.add_tap());
    let mut lv = Libvirt::daemon(&lab.site.ns, lab.dir());
    lv.define("node1", &domain_xml("node1", mac, &tap, &disk.path, &dir.join("serial.log"), (&discarding, &nvme)));
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

    // Deprovisioning, by one command.
    let t1 = Instant::now();
    let out = check(lab.cli(&["machine", mac, "deprovision", "--power", "--wait", "600"]));
    assert!(out.contains("deprovision done (power was on)"), "{out}");
    eprintln!("{test}: {}", out.trim());
    assert!(out.contains("netbooted: the installer is at "), "{out}");
    until("the erase to finish (deprovisioned)", Duration::from_secs(1200), Phase::Deprovisioned);
    wait_for("the machine to power off", Duration::from_secs(180), || (lv.state() == "shut off").then_some(()))
        .unwrap_or_else(|e| panic!("{e:#}: the domain is {}", lv.state()));
    eprintln!("{test}: deprovisioned and off {:.0} s after the command", t1.elapsed().as_secs_f64());
    let events = check(lab.events(mac));
    let since = events.iter().rposition(|e| e.event.phase == Phase::Power).unwrap();
    let erased: Vec<_> = events[since..].iter().filter_map(|e| e.event.erase.clone()).collect();
    let mut paths: Vec<&str> = erased.iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/dev/nvme0n1", "/dev/vda", "/dev/vdb"], "{erased:#?}");
    for r in &erased {
        eprintln!(
            "{test}: {} {} {} bytes in {:.2} s ({:.0} MB/s); fallbacks {:?}",
            r.path,
            r.method,
            r.bytes,
            r.seconds,
            r.bytes as f64 / r.seconds.max(1e-3) / 1e6,
            r.fallbacks
        );
        let want = if r.path == "/dev/vda" { DISK_BYTES } else { SMALL_DISK_BYTES };
        assert_eq!(r.bytes, want, "{r:?}");
        assert!(r.verified_samples > 2, "{r:?}");
    }
    let method = |p: &str| erased.iter().find(|r| r.path == p).map(|r| r.method).unwrap();
    assert!(
        matches!(method("/dev/nvme0n1"), EraseMethod::NvmeFormat | EraseMethod::NvmeFormatCrypto),
        "QEMU's NVMe controller formats: {erased:#?}"
    );
    assert_eq!(method("/dev/vdb"), EraseMethod::Discard, "{erased:#?}");
    let power = &events[since].event.message;
    assert!(power.contains("deprovision via redfish") && power.contains("\"Pxe\""), "{power}");
    for (f, size) in [(&disk.path, DISK_BYTES), (&discarding, SMALL_DISK_BYTES), (&nvme, SMALL_DISK_BYTES)] {
        assert_eq!(std::fs::metadata(f).unwrap().len(), size);
        assert_all_zero(f);
    }
    let view = check(lab.machine(mac));
    assert_eq!(view.state.status.as_str(), "deprovisioned", "{:?}", view.state);
    assert!(!view.netboot.allowed, "{:?}", view.netboot);

    // Its next network boot, through the BMC: an address and no installer; iPXE is given only
    // the script that boots the (now empty) disk.
    let seen = check(lab.trace(mac)).steps.last().map(|s| s.n).unwrap_or(0);
    check(lab.cli(&["machine", mac, "power", "netboot"]));
    check(lab.cli(&["machine", mac, "power", "on"]));
    let script = format!("/boot/{mac}.ipxe");
    let after = |t: &bootsvc::trace::TraceView, f: &dyn Fn(&Step) -> bool| {
        t.steps.iter().any(|s| s.n > seen && f(&s.step.step))
    };
    let t = wait_for(
        "its netboot answered without the installer, then its local boot script",
        Duration::from_secs(300),
        || {
            std::thread::sleep(Duration::from_secs(2));
            let t = lab.trace(mac).ok()?;
            let refused = after(&t, &|s| {
                matches!(s, Step::Dhcp(d) if d.answer.is_some() && d.reason.contains("netboot not allowed")
                && d.boot_file.as_deref().is_none_or(|f| f.ends_with(&script)))
            });
            let local = after(&t, &|s| matches!(s, Step::Script(x) if x.script == "local"));
            (refused && local).then_some(t)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!after(&t, &|s| matches!(s, Step::Script(x) if x.script != "local") || matches!(s, Step::Download(_))));
    eprintln!("{test}: netboot after deprovisioning: an address, the local boot script, no installer");
    drop(lv);
}

const SMALL_DISK_BYTES: u64 = 256 << 20;

/// A disk file of `size` bytes full of a pattern that is nowhere zero.
fn fill(path: &std::path::Path, size: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 + 1).collect();
    for _ in 0..size >> 20 {
        f.write_all(&block).unwrap();
    }
}

/// Every byte of the file reads zero.
fn assert_all_zero(path: &std::path::Path) {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    let mut at = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
            panic!("{}: byte {} is {:#x}, not zero", path.display(), at + i as u64, buf[i]);
        }
        at += n as u64;
    }
}

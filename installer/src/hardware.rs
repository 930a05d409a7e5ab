//! The machine's hardware, as sent with the first event: CPU and memory from `/proc`,
//! disks, NICs, DMI and whether UEFI Secure Boot is on from `/sys`. Every reader takes the root directory, so tests point it
//! at captured trees (`tests/fixtures/machine/`); parsers of `/proc` text are pure. The
//! disks are the ones the disk chooser picks from, read by the same code
//! ([`crate::disk::sysfs`]), so the report and the choice cannot disagree.

use std::collections::BTreeSet;
use std::path::Path;

use osie_api::hardware::{Cpu, Disk, Dmi, Nic};
use osie_api::{Hardware, MacAddr};

use crate::disk::sysfs::{self, DiskInfo};

/// Everything, from the live `/proc` and `/sys`.
pub fn collect() -> Hardware {
    collect_from(Path::new("/"))
}

/// Everything, from `<root>/proc` and `<root>/sys`. Missing files make fields empty, never
/// errors: an inventory with gaps beats no install.
pub fn collect_from(root: &Path) -> Hardware {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let sys = root.join("sys");
    let mut cpu = parse_cpuinfo(&read("proc/cpuinfo"));
    if let Some((sockets, cores)) = topology(&sys).filter(|&(s, c)| s >= 1 && c >= s && c <= cpu.threads) {
        (cpu.sockets, cpu.cores) = (sockets, cores);
    }
    Hardware {
        cpu,
        memory_bytes: parse_meminfo(&read("proc/meminfo")),
        disks: disks(&sys),
        nics: nics(&sys),
        dmi: dmi(&sys),
        secure_boot: secure_boot(&sys),
    }
}

/// The global variable `SecureBoot` (EFI_GLOBAL_VARIABLE), through efivarfs.
const SECURE_BOOT_VAR: &str = "firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Whether the firmware enforces Secure Boot: the `SecureBoot` variable's one data byte after
/// efivarfs' 4 bytes of attributes (1: on). `None` without UEFI or without the variable.
pub fn secure_boot(sys: &Path) -> Option<bool> {
    if !sys.join("firmware/efi").is_dir() {
        return None;
    }
    parse_secure_boot(&std::fs::read(sys.join(SECURE_BOOT_VAR)).ok()?)
}

/// efivarfs' `SecureBoot` file: 4 bytes of attributes, then the value (one byte).
pub fn parse_secure_boot(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [_, _, _, _, v] => Some(*v == 1),
        _ => None,
    }
}

/// CPU model and topology from `/proc/cpuinfo`: one block per logical CPU on both x86 and
/// arm64. arm64 names no model there, only the MIDR fields (`CPU implementer`, `CPU part`),
/// and an ACPI-booted arm64 server (UEFI; QEMU's `virt` with AAVMF too) has no device tree to
/// read one from: the model is named from those fields ([`arm_cpu_name`]).
pub fn parse_cpuinfo(text: &str) -> Cpu {
    let mut cpu = Cpu::default();
    let mut sockets = BTreeSet::new();
    let mut cores = BTreeSet::new();
    let mut cores_per_socket = 0u32;
    let (mut phys, mut core) = (None, None);
    let (mut implementer, mut part) = (None, None);
    let mut flush = |phys: &mut Option<String>, core: &mut Option<String>| {
        if let Some(p) = phys.take() {
            if let Some(c) = core.take() {
                cores.insert((p.clone(), c));
            }
            sockets.insert(p);
        }
        *core = None;
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            flush(&mut phys, &mut core);
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => cpu.threads += 1,
            "model name" | "Processor" | "cpu model" if cpu.model.is_empty() => cpu.model = v.to_string(),
            "physical id" => phys = Some(v.to_string()),
            "core id" => core = Some(v.to_string()),
            "cpu cores" => cores_per_socket = v.parse().unwrap_or(0),
            "CPU implementer" if implementer.is_none() => implementer = parse_hex(v),
            "CPU part" if part.is_none() => part = parse_hex(v),
            _ => {}
        }
    }
    flush(&mut phys, &mut core);
    if let (true, Some(i), Some(p)) = (cpu.model.is_empty(), implementer, part) {
        cpu.model = arm_cpu_name(i, p);
    }
    cpu.sockets = (sockets.len() as u32).max(u32::from(cpu.threads > 0));
    cpu.cores = if !cores.is_empty() {
        cores.len() as u32
    } else if cores_per_socket > 0 {
        cores_per_socket * cpu.sockets
    } else {
        cpu.threads
    };
    cpu
}

/// Sockets and cores from the kernel's CPU topology
/// (`/sys/devices/system/cpu/cpu<N>/topology/{physical_package_id,core_id}`), which it takes
/// from the firmware: on arm64 ACPI's PPTT or the device tree's `cpu-map` (`/proc/cpuinfo`
/// has no topology lines there), on x86 CPUID. `None` without it.
pub fn topology(sys: &Path) -> Option<(u32, u32)> {
    let dir = sys.join("devices/system/cpu");
    let mut sockets = BTreeSet::new();
    let mut cores = BTreeSet::new();
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_prefix("cpu")) else { continue };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let read = |f: &str| std::fs::read_to_string(e.path().join("topology").join(f)).ok();
        let (Some(p), Some(c)) = (read("physical_package_id"), read("core_id")) else { continue };
        let (p, c) = (p.trim().to_string(), c.trim().to_string());
        sockets.insert(p.clone());
        cores.insert((p, c));
    }
    (!cores.is_empty()).then_some((sockets.len() as u32, cores.len() as u32))
}

fn parse_hex(v: &str) -> Option<u32> {
    u32::from_str_radix(v.strip_prefix("0x").unwrap_or(v), 16).ok()
}

/// An arm64 core's name from its MIDR implementer and part numbers, for the cores found in
/// servers and in QEMU (the numbers are those of Linux's arch/arm64/include/asm/cputype.h);
/// others are named by their numbers.
pub fn arm_cpu_name(implementer: u32, part: u32) -> String {
    let known = match (implementer, part) {
        (0x41, 0xd07) => "ARM Cortex-A57",
        (0x41, 0xd08) => "ARM Cortex-A72",
        (0x41, 0xd0c) => "ARM Neoverse-N1",
        (0x41, 0xd40) => "ARM Neoverse-V1",
        (0x41, 0xd49) => "ARM Neoverse-N2",
        (0x41, 0xd4f) => "ARM Neoverse-V2",
        (0x43, 0x0af) => "Cavium ThunderX2",
        (0x46, 0x001) => "Fujitsu A64FX",
        (0x48, 0xd01) => "HiSilicon Kunpeng-920",
        (0xc0, 0xac3) => "Ampere-1",
        (0xc0, 0xac4) => "Ampere-1a",
        // QEMU's `-cpu max` (implementer 0: "reserved for software use")
        (0x00, 0x051) => "QEMU max",
        _ => "",
    };
    if known.is_empty() {
        format!("arm64 implementer {implementer:#04x} part {part:#05x}")
    } else {
        known.to_string()
    }
}

/// `MemTotal` in bytes.
pub fn parse_meminfo(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The machine's disks ([`sysfs::BlockDevices::machine_disks`]); none when `/sys/block` cannot be
/// read.
pub fn disks(sys: &Path) -> Vec<Disk> {
    sysfs::scan(sys).map(|b| b.machine_disks().map(DiskInfo::to_api).collect()).unwrap_or_default()
}

/// Ethernet interfaces (ARPHRD_ETHER), with their driver, carrier and speed.
pub fn nics(sys: &Path) -> Vec<Nic> {
    let net = sys.join("class/net");
    names(&net)
        .into_iter()
        .filter_map(|n| {
            let d = net.join(&n);
            if text(&d.join("type")).as_deref() != Some("1") {
                return None;
            }
            let mac: MacAddr = text(&d.join("address"))?.parse().ok()?;
            let driver = std::fs::read_link(d.join("device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
            // `speed` is -1 or unreadable without a link.
            let speed_mbps =
                text(&d.join("speed")).and_then(|s| s.parse::<i64>().ok()).filter(|s| *s > 0).map(|s| s as u32);
            Some(Nic { name: n, mac, driver, link: text(&d.join("carrier")).as_deref() == Some("1"), speed_mbps })
        })
        .collect()
}

pub fn dmi(sys: &Path) -> Dmi {
    let d = sys.join("class/dmi/id");
    let f = |name: &str| text(&d.join(name));
    Dmi {
        sys_vendor: f("sys_vendor"),
        product_name: f("product_name"),
        product_serial: f("product_serial"),
        product_uuid: f("product_uuid"),
        board_vendor: f("board_vendor"),
        board_name: f("board_name"),
        bios_version: f("bios_version"),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A sysfs attribute, trimmed; `None` when missing, unreadable or empty.
fn text(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/machine")
    }

    #[test]
    fn secure_boot_from_efivarfs() {
        assert_eq!(parse_secure_boot(&[6, 0, 0, 0, 1]), Some(true));
        assert_eq!(parse_secure_boot(&[6, 0, 0, 0, 0]), Some(false));
        assert_eq!(parse_secure_boot(&[6, 0, 0, 0]), None);
        assert_eq!(parse_secure_boot(&[]), None);
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        assert_eq!(secure_boot(sys), None, "no UEFI: not known, not off");
        std::fs::create_dir_all(sys.join("firmware/efi/efivars")).unwrap();
        assert_eq!(secure_boot(sys), None, "UEFI without the variable");
        std::fs::write(sys.join(SECURE_BOOT_VAR), [6, 0, 0, 0, 1]).unwrap();
        assert_eq!(secure_boot(sys), Some(true));
        std::fs::write(sys.join(SECURE_BOOT_VAR), [6, 0, 0, 0, 0]).unwrap();
        assert_eq!(secure_boot(sys), Some(false));
    }

    #[test]
    fn cpuinfo_of_the_dev_vm() {
        let cpu = parse_cpuinfo(&std::fs::read_to_string(fixture().join("proc/cpuinfo")).unwrap());
        assert_eq!(cpu, Cpu { model: "AMD EPYC".into(), threads: 2, cores: 2, sockets: 1 });
    }

    #[test]
    fn cpuinfo_of_arm64_names_the_core_from_its_midr() {
        // Linux's arm64 layout (QEMU virt, -cpu cortex-a57 -smp 2): no model name, no
        // topology lines.
        let block = |n| {
            format!(
                "processor\t: {n}\nBogoMIPS\t: 125.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n\
                 CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd07\nCPU revision\t: 0\n\n"
            )
        };
        let cpu = parse_cpuinfo(&format!("{}{}", block(0), block(1)));
        assert_eq!(cpu.model, "ARM Cortex-A57");
        assert_eq!((cpu.sockets, cpu.cores, cpu.threads), (1, 2, 2));
        let max = parse_cpuinfo("processor\t: 0\nCPU implementer\t: 0x00\nCPU part\t: 0x051\n");
        assert_eq!(max.model, "QEMU max");
        assert_eq!(arm_cpu_name(0x51, 0x0c00), "arm64 implementer 0x51 part 0xc00");
        // An x86 model name is never replaced.
        let x86 =
            parse_cpuinfo("processor\t: 0\nmodel name\t: Intel Xeon\nCPU part\t: 0xd07\nCPU implementer\t: 0x41\n");
        assert_eq!(x86.model, "Intel Xeon");
    }

    #[test]
    fn cores_from_the_kernel_topology_on_arm64() {
        // An arm64 server's cpuinfo has no topology lines; the kernel's topology (from ACPI's
        // PPTT or the device tree) says 2 sockets of 2 cores, 2 threads each (8 CPUs).
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let mut info = String::new();
        for (i, (p, c)) in [(0, 0), (0, 0), (0, 1), (0, 1), (1, 0), (1, 0), (1, 1), (1, 1)].iter().enumerate() {
            let t = root.join(format!("sys/devices/system/cpu/cpu{i}/topology"));
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("physical_package_id"), format!("{p}\n")).unwrap();
            std::fs::write(t.join("core_id"), format!("{c}\n")).unwrap();
            info += &format!("processor\t: {i}\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n");
        }
        // Not CPUs: ignored.
        std::fs::create_dir_all(root.join("sys/devices/system/cpu/cpufreq")).unwrap();
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::write(root.join("proc/cpuinfo"), info).unwrap();
        assert_eq!(topology(&root.join("sys")), Some((2, 4)));
        let cpu = collect_from(root).cpu;
        assert_eq!(cpu, Cpu { model: "ARM Neoverse-N1".into(), threads: 8, cores: 4, sockets: 2 });
        // No topology in sysfs (the fixture tree): cpuinfo's count stands.
        assert_eq!(topology(&fixture().join("sys")), None);
    }

    #[test]
    fn cpuinfo_with_hyperthreads_and_two_sockets() {
        let mut t = String::new();
        for (i, (p, c)) in [(0, 0), (0, 0), (0, 1), (0, 1), (1, 0), (1, 0), (1, 1), (1, 1)].iter().enumerate() {
            t.push_str(&format!(
                "processor\t: {i}\nmodel name\t: Intel(R) Xeon(R) Gold 6230\nphysical id\t: {p}\ncore id\t\t: {c}\ncpu cores\t: 2\n\n"
            ));
        }
        assert_eq!(
            parse_cpuinfo(&t),
            Cpu { model: "Intel(R) Xeon(R) Gold 6230".into(), threads: 8, cores: 4, sockets: 2 }
        );
        // No topology lines (some VMs, other arches): one socket, a core per thread.
        assert_eq!(
            parse_cpuinfo("processor : 0\n\nprocessor : 1\n"),
            Cpu { model: String::new(), threads: 2, cores: 2, sockets: 1 }
        );
        assert_eq!(parse_cpuinfo(""), Cpu::default());
    }

    #[test]
    fn meminfo_total() {
        let m = parse_meminfo(&std::fs::read_to_string(fixture().join("proc/meminfo")).unwrap());
        assert!(m > 1 << 30, "{m}");
        assert_eq!(m % 1024, 0);
        assert_eq!(parse_meminfo("MemTotal:       24569468 kB\nMemFree: 1 kB\n"), 24569468 * 1024);
        assert_eq!(parse_meminfo("garbage"), 0);
    }

    #[test]
    fn disks_from_sysfs() {
        let d = disks(&fixture().join("sys"));
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["/dev/nvme0n1", "/dev/sdb", "/dev/vda"], "loop and zram are left out");
        assert_eq!(
            d[0],
            Disk {
                path: "/dev/nvme0n1".into(),
                size: 1953525168 * 512,
                logical_sector_size: 4096,
                physical_sector_size: 4096,
                rotational: false,
                removable: false,
                read_only: false,
                model: Some("Samsung SSD 980 PRO 1TB".into()),
                serial: Some("S5GXNF0R123456".into()),
                wwn: Some("eui.0025385b71b2c3d4".into()),
            }
        );
        assert!(d[1].removable && d[1].serial.is_none());
        assert_eq!(d[2].size, 536870912 * 512);
        assert_eq!((d[2].logical_sector_size, d[2].physical_sector_size), (512, 4096));
        assert_eq!(d[2].serial.as_deref(), Some("overlayblk"));
    }

    #[test]
    fn the_report_lists_exactly_the_disks_the_chooser_picks_from() {
        use crate::disk::sysfs::{fake, NotADisk};
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        let gib = |n: u64| n * (1 << 30) / 512;
        fake::write(
            &sys,
            &[
                fake::disk("sda", gib(240)),
                fake::FakeDisk { removable: true, ..fake::disk("sdb", gib(16)) },
                fake::FakeDisk { ro: true, ..fake::disk("sdc", gib(100)) },
                fake::disk("nvme0n1", gib(960)),
                fake::disk("nvme1n1", gib(960)),
                fake::disk("md0", gib(960)),
                fake::disk("dm-0", gib(50)),
                fake::disk("sr0", 700 << 11),
                fake::disk("loop3", gib(2)),
                fake::disk("loop9", 0),
                fake::disk("ram0", 8192),
                fake::disk("zram0", gib(4)),
                fake::disk("nbd0", gib(10)),
                fake::disk("fd0", 2880),
                fake::disk("vdb", 0),
            ],
        );
        std::fs::write(sys.join("block/nvme0n1/holders/md0"), "").unwrap();

        // Removable, read-only and md members are disks (the chooser refuses them, saying why).
        let reported: Vec<String> = collect_from(t.path()).disks.iter().map(|d| d.path.clone()).collect();
        assert_eq!(reported, ["/dev/nvme0n1", "/dev/nvme1n1", "/dev/sda", "/dev/sdb", "/dev/sdc"]);
        let scanned = sysfs::scan(&sys).unwrap();
        let pool: Vec<String> = scanned.pool(&[]).iter().map(|d| d.path.display().to_string()).collect();
        assert_eq!(pool, reported);
        // The chooser, asked for more than any disk holds, lists every disk it looked at.
        let e = crate::disk::choose(&sys, &osie_api::DiskHints::default(), u64::MAX, None, &[]).unwrap_err();
        let e = format!("{e:#}");
        let seen: Vec<&str> = e
            .split("disks seen: ")
            .nth(1)
            .unwrap_or_else(|| panic!("{e}"))
            .split("; ")
            .filter_map(|s| s.split(' ').next())
            .collect();
        assert_eq!(seen, reported, "{e}");
        assert!(
            e.contains("/dev/nvme0n1 (1030792151040 bytes): too small") && e.contains("device-mapper or md"),
            "{e}"
        );

        // The rest is accounted for: loop devices (only when named), and what is no disk.
        let loops: Vec<&str> = scanned.disks.iter().filter(|d| d.is_loop).map(|d| d.name.as_str()).collect();
        assert_eq!(loops, ["loop3"]);
        let not: Vec<(&str, NotADisk)> = scanned.not_disks.iter().map(|(n, w)| (n.as_str(), *w)).collect();
        assert_eq!(
            not,
            [
                ("dm-0", NotADisk::DeviceMapper),
                ("fd0", NotADisk::Floppy),
                ("loop9", NotADisk::Empty),
                ("md0", NotADisk::Raid),
                ("nbd0", NotADisk::Network),
                ("ram0", NotADisk::Ram),
                ("sr0", NotADisk::Optical),
                ("vdb", NotADisk::Empty),
                ("zram0", NotADisk::Ram),
            ]
        );
        // Named explicitly, such a device is refused with the reason.
        std::fs::create_dir(t.path().join("dev")).unwrap();
        let dm = t.path().join("dev/dm-0");
        std::fs::write(&dm, "").unwrap();
        let e = crate::disk::choose(&sys, &osie_api::DiskHints::default(), 0, Some(&dm), &[]).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("(dm-0) is not a disk to install to: a device-mapper device (its disks are listed)"),
            "{e}"
        );
    }

    #[test]
    fn nics_from_sysfs() {
        let n = nics(&fixture().join("sys"));
        assert_eq!(n.len(), 1, "lo is not ethernet: {n:?}");
        assert_eq!(n[0].name, "eth0");
        assert_eq!(n[0].mac.to_string(), "02:fc:00:00:00:01");
        assert_eq!(n[0].driver.as_deref(), Some("virtio_net"));
        assert!(n[0].link);
        assert_eq!(n[0].speed_mbps, None, "virtio reports speed -1");
    }

    #[test]
    fn dmi_and_the_whole_inventory() {
        let hw = collect_from(&fixture());
        assert_eq!(hw.dmi.sys_vendor.as_deref(), Some("QEMU"));
        assert_eq!(hw.dmi.product_serial, None, "empty attributes are None");
        assert_eq!(hw.cpu.threads, 2);
        assert_eq!(hw.disks.len(), 3);
        // It serialises as the api type bootsvc stores.
        let j = serde_json::to_value(&hw).unwrap();
        assert_eq!(j["nics"][0]["driver"], "virtio_net");
        let empty = collect_from(Path::new("/nonexistent"));
        assert_eq!(empty, Hardware::default());
    }
}

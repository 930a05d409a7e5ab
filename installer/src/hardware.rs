//! The machine's hardware, as sent with the first event: CPU and memory from `/proc`,
//! disks, NICs and DMI from `/sys`. Every reader takes the root directory, so tests point it
//! at captured trees (`tests/fixtures/machine/`); parsers of `/proc` text are pure.

use std::collections::BTreeSet;
use std::path::Path;

use osie_api::hardware::{Cpu, Disk, Dmi, Nic};
use osie_api::{Hardware, MacAddr};

/// Everything, from the live `/proc` and `/sys`.
pub fn collect() -> Hardware {
    collect_from(Path::new("/"))
}

/// Everything, from `<root>/proc` and `<root>/sys`. Missing files make fields empty, never
/// errors: an inventory with gaps beats no install.
pub fn collect_from(root: &Path) -> Hardware {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let sys = root.join("sys");
    Hardware {
        cpu: parse_cpuinfo(&read("proc/cpuinfo")),
        memory_bytes: parse_meminfo(&read("proc/meminfo")),
        disks: disks(&sys),
        nics: nics(&sys),
        dmi: dmi(&sys),
    }
}

/// CPU model and topology from `/proc/cpuinfo` (x86 layout: one block per logical CPU).
pub fn parse_cpuinfo(text: &str) -> Cpu {
    let mut cpu = Cpu::default();
    let mut sockets = BTreeSet::new();
    let mut cores = BTreeSet::new();
    let mut cores_per_socket = 0u32;
    let (mut phys, mut core) = (None, None);
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
            _ => {}
        }
    }
    flush(&mut phys, &mut core);
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

/// `MemTotal` in bytes.
pub fn parse_meminfo(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Block devices that could hold an OS: not loop, RAM, zram or empty (size 0) devices.
pub fn disks(sys: &Path) -> Vec<Disk> {
    let block = sys.join("block");
    let mut out: Vec<Disk> = names(&block)
        .into_iter()
        .filter(|n| !["loop", "ram", "zram", "fd", "nbd"].iter().any(|p| n.starts_with(p)))
        .filter_map(|n| {
            let d = block.join(&n);
            let size = num(&d.join("size")) * 512;
            (size > 0).then(|| Disk {
                path: format!("/dev/{n}"),
                size,
                logical_sector_size: num(&d.join("queue/logical_block_size")) as u32,
                physical_sector_size: num(&d.join("queue/physical_block_size")) as u32,
                rotational: num(&d.join("queue/rotational")) == 1,
                removable: num(&d.join("removable")) == 1,
                read_only: num(&d.join("ro")) == 1,
                model: first(&d, &["device/model"]),
                serial: first(&d, &["serial", "device/serial"]),
                wwn: first(&d, &["wwid", "device/wwid"]),
            })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
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

fn num(p: &Path) -> u64 {
    text(p).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn first(dir: &Path, rel: &[&str]) -> Option<String> {
    rel.iter().find_map(|r| text(&dir.join(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/machine")
    }

    #[test]
    fn cpuinfo_of_the_dev_vm() {
        let cpu = parse_cpuinfo(&std::fs::read_to_string(fixture().join("proc/cpuinfo")).unwrap());
        assert_eq!(cpu, Cpu { model: "AMD EPYC".into(), threads: 2, cores: 2, sockets: 1 });
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

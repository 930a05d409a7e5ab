//! What block devices the machine has, read from `/sys/block` once ([`scan`]; a root
//! directory is passed in so tests can point it at a fake tree), and the one rule for which
//! of them are disks. Everything that lists disks starts here: the hardware report
//! ([`crate::hardware`]), the disk chooser ([`super::choose`]) and `installer disks`.
//!
//! - Never disks ([`NotADisk`]): RAM and zram devices, floppy and optical drives, network
//!   block devices, md arrays and device-mapper devices (their member disks are listed, and
//!   refused as in use), and devices of size 0 (no medium, a loop device with no file).
//! - Loop devices are disks, but files of the host: only chosen when named (`--disk`,
//!   `--candidate`) and not in the hardware report ([`BlockDevices::machine_disks`]).
//! - Whether a disk can be the target (removable, read-only, in use, size, hints) is
//!   [`super::select`]'s question, asked of these disks.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One whole disk as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskInfo {
    /// Kernel name: `vda`, `nvme0n1`, `loop3`.
    pub name: String,
    /// `/dev/<name>`.
    pub path: PathBuf,
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub rotational: bool,
    pub removable: bool,
    pub read_only: bool,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    /// `major:minor`.
    pub dev: String,
    pub partitions: Vec<PartInfo>,
    /// Another device is stacked on it (device-mapper, md).
    pub has_holders: bool,
    /// A loop device (kept apart: a host's loop devices are not install targets unless named).
    pub is_loop: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartInfo {
    pub name: String,
    pub dev: String,
    /// Bytes from the start of the disk.
    pub start: u64,
    pub size: u64,
}

impl DiskInfo {
    pub fn to_api(&self) -> osie_api::hardware::Disk {
        osie_api::hardware::Disk {
            path: self.path.display().to_string(),
            size: self.size,
            logical_sector_size: self.logical_sector_size,
            physical_sector_size: self.physical_sector_size,
            rotational: self.rotational,
            removable: self.removable,
            read_only: self.read_only,
            model: self.model.clone(),
            serial: self.serial.clone(),
            wwn: self.wwn.clone(),
        }
    }
}

/// Why a block device is not a disk to install to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotADisk {
    Ram,
    Floppy,
    Optical,
    Network,
    Raid,
    DeviceMapper,
    /// Size 0: no medium, or a loop device with no file behind it.
    Empty,
}

impl fmt::Display for NotADisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotADisk::Ram => "a RAM disk",
            NotADisk::Floppy => "a floppy drive",
            NotADisk::Optical => "an optical drive",
            NotADisk::Network => "a network block device",
            NotADisk::Raid => "an md array (its member disks are listed)",
            NotADisk::DeviceMapper => "a device-mapper device (its disks are listed)",
            NotADisk::Empty => "empty (size 0)",
        })
    }
}

/// Kernel name prefixes of block devices that are never disks.
const NOT_DISKS: [(&str, NotADisk); 7] = [
    ("ram", NotADisk::Ram),
    ("zram", NotADisk::Ram),
    ("fd", NotADisk::Floppy),
    ("sr", NotADisk::Optical),
    ("nbd", NotADisk::Network),
    ("md", NotADisk::Raid),
    ("dm-", NotADisk::DeviceMapper),
];

/// Everything under `<sys>/block`, sorted by name.
#[derive(Debug, Clone, Default)]
pub struct BlockDevices {
    /// The disks, loop devices included ([`DiskInfo::is_loop`]).
    pub disks: Vec<DiskInfo>,
    /// The other devices (kernel name), and why they are not disks.
    pub not_disks: Vec<(String, NotADisk)>,
}

impl BlockDevices {
    /// The machine's own disks: what the hardware report lists, and what the chooser picks
    /// from when no candidates are named. Loop devices are the host's files, not the
    /// machine's disks.
    pub fn machine_disks(&self) -> impl Iterator<Item = &DiskInfo> {
        self.disks.iter().filter(|d| !d.is_loop)
    }

    /// What the chooser picks from: the disks named by kernel name (loop devices too), or
    /// when none are named, the machine's disks.
    pub fn pool(&self, named: &[String]) -> Vec<DiskInfo> {
        if named.is_empty() {
            self.machine_disks().cloned().collect()
        } else {
            self.disks.iter().filter(|d| named.contains(&d.name)).cloned().collect()
        }
    }
}

/// Every block device under `<sys>/block`: the disks, and the rest with the reason.
pub fn scan(sys: &Path) -> Result<BlockDevices> {
    let dir = sys.join("block");
    let mut out = BlockDevices::default();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((_, why)) = NOT_DISKS.iter().find(|(prefix, _)| name.starts_with(prefix)) {
            out.not_disks.push((name, *why));
            continue;
        }
        let d = read_disk(&entry.path(), &name).with_context(|| format!("reading {}", entry.path().display()))?;
        if d.size > 0 {
            out.disks.push(d);
        } else {
            out.not_disks.push((name, NotADisk::Empty));
        }
    }
    out.disks.sort_by(|a, b| a.name.cmp(&b.name));
    out.not_disks.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// One disk from its `/sys/block/<name>` directory.
pub fn read_disk(dir: &Path, name: &str) -> Result<DiskInfo> {
    let num = |f: &str| attr(dir, f).and_then(|v| v.parse::<u64>().ok());
    let flag = |f: &str| num(f).is_some_and(|v| v != 0);
    let logical = num("queue/logical_block_size").unwrap_or(512) as u32;
    let mut partitions = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let pname = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if pname.starts_with(name) && p.join("partition").exists() {
                partitions.push(PartInfo {
                    dev: attr(&p, "dev").unwrap_or_default(),
                    start: attr(&p, "start").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 512,
                    size: attr(&p, "size").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 512,
                    name: pname,
                });
            }
        }
    }
    partitions.sort_by_key(|p| p.start);
    Ok(DiskInfo {
        name: name.to_string(),
        path: PathBuf::from("/dev").join(name),
        // `size` counts 512-byte units whatever the sector size.
        size: num("size").unwrap_or(0) * 512,
        logical_sector_size: logical,
        physical_sector_size: num("queue/physical_block_size").unwrap_or(u64::from(logical)) as u32,
        rotational: flag("queue/rotational"),
        removable: flag("removable"),
        read_only: flag("ro"),
        model: attr(dir, "device/model"),
        serial: attr(dir, "serial").or_else(|| attr(dir, "device/serial")).or_else(|| vpd_serial(dir)),
        wwn: attr(dir, "wwid").or_else(|| attr(dir, "device/wwid")),
        dev: attr(dir, "dev").unwrap_or_default(),
        partitions,
        has_holders: fs::read_dir(dir.join("holders")).is_ok_and(|mut d| d.next().is_some()),
        is_loop: name.starts_with("loop"),
    })
}

/// A trimmed, non-empty attribute.
fn attr(dir: &Path, f: &str) -> Option<String> {
    let v = fs::read_to_string(dir.join(f)).ok()?;
    let v = v.trim().trim_matches('\0').trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// SCSI/SATA serials live in the unit-serial VPD page (4-byte header, then ASCII).
fn vpd_serial(dir: &Path) -> Option<String> {
    let b = fs::read(dir.join("device/vpd_pg80")).ok()?;
    let s = String::from_utf8_lossy(b.get(4..)?).trim().trim_matches('\0').to_string();
    (!s.is_empty()).then_some(s)
}

/// `major:minor` of every mounted block device, and of swap devices.
pub fn devices_in_use() -> HashSet<String> {
    let mut set = HashSet::new();
    if let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") {
        // "36 35 98:0 / /mnt rw … - ext3 /dev/root rw": the third field.
        set.extend(mi.lines().filter_map(|l| l.split_whitespace().nth(2)).map(str::to_string));
    }
    if let Ok(sw) = fs::read_to_string("/proc/swaps") {
        for dev in sw.lines().skip(1).filter_map(|l| l.split_whitespace().next()) {
            if let Ok(md) = fs::metadata(dev) {
                use std::os::unix::fs::MetadataExt;
                let r = md.rdev();
                set.insert(format!("{}:{}", libc::major(r), libc::minor(r)));
            }
        }
    }
    set
}

#[cfg(test)]
pub mod fake {
    //! A `/sys/block`-like tree for tests.
    use super::*;

    pub struct FakeDisk<'a> {
        pub name: &'a str,
        pub sectors: u64,
        pub removable: bool,
        pub ro: bool,
        pub serial: Option<&'a str>,
        pub wwid: Option<&'a str>,
        pub model: Option<&'a str>,
    }

    pub fn disk(name: &str, sectors: u64) -> FakeDisk<'_> {
        FakeDisk { name, sectors, removable: false, ro: false, serial: None, wwid: None, model: None }
    }

    pub fn write(root: &Path, disks: &[FakeDisk]) {
        for (i, d) in disks.iter().enumerate() {
            let dir = root.join("block").join(d.name);
            fs::create_dir_all(dir.join("queue")).unwrap();
            fs::create_dir_all(dir.join("device")).unwrap();
            fs::create_dir_all(dir.join("holders")).unwrap();
            let w = |f: &str, v: &str| fs::write(dir.join(f), format!("{v}\n")).unwrap();
            w("size", &d.sectors.to_string());
            w("removable", if d.removable { "1" } else { "0" });
            w("ro", if d.ro { "1" } else { "0" });
            w("dev", &format!("253:{}", i * 16));
            w("queue/logical_block_size", "512");
            w("queue/physical_block_size", "4096");
            w("queue/rotational", "0");
            if let Some(s) = d.serial {
                w("serial", s);
            }
            if let Some(s) = d.wwid {
                w("device/wwid", s);
            }
            if let Some(s) = d.model {
                w("device/model", &format!("{s}   "));
            }
        }
    }

    #[test]
    fn reads_a_fake_tree() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            &[
                FakeDisk { serial: Some("S1"), model: Some("QEMU HARDDISK"), ..disk("sda", 2048) },
                disk("loop9", 0),
                disk("ram0", 100),
            ],
        );
        fs::create_dir_all(t.path().join("block/sda/sda1")).unwrap();
        fs::write(t.path().join("block/sda/sda1/partition"), "1\n").unwrap();
        fs::write(t.path().join("block/sda/sda1/start"), "2048\n").unwrap();
        fs::write(t.path().join("block/sda/sda1/size"), "100\n").unwrap();
        let scanned = scan(t.path()).unwrap();
        let d = &scanned.disks;
        assert_eq!(d.len(), 1, "empty loop and ram devices are left out: {d:?}");
        assert_eq!(scanned.not_disks, [("loop9".into(), NotADisk::Empty), ("ram0".into(), NotADisk::Ram)]);
        let sda = &d[0];
        assert_eq!(sda.path, PathBuf::from("/dev/sda"));
        assert_eq!(sda.size, 2048 * 512);
        assert_eq!((sda.logical_sector_size, sda.physical_sector_size), (512, 4096));
        assert_eq!(sda.serial.as_deref(), Some("S1"));
        assert_eq!(sda.model.as_deref(), Some("QEMU HARDDISK"));
        assert_eq!(
            sda.partitions,
            vec![PartInfo { name: "sda1".into(), dev: String::new(), start: 1 << 20, size: 51200 }]
        );
    }
}

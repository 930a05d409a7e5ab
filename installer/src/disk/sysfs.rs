//! What block devices the machine has, read from `/sys/block` (a root directory is passed in
//! so tests can point it at a fake tree).

use std::collections::HashSet;
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

/// Devices that are never disks to install to.
fn ignored(name: &str) -> bool {
    ["ram", "zram", "sr", "fd", "md", "dm-", "nbd"].iter().any(|p| name.starts_with(p))
}

/// Every disk under `<sys>/block`, sorted by name. Empty devices (unattached loops) are left out.
pub fn enumerate(sys: &Path) -> Result<Vec<DiskInfo>> {
    let dir = sys.join("block");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ignored(&name) {
            continue;
        }
        let d = read_disk(&entry.path(), &name).with_context(|| format!("reading {}", entry.path().display()))?;
        if d.size > 0 {
            out.push(d);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
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
        let d = enumerate(t.path()).unwrap();
        assert_eq!(d.len(), 1, "empty loop and ram devices are left out: {d:?}");
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

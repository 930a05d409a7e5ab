//! UEFI variables through efivarfs (`/sys/firmware/efi/efivars`): each variable a file
//! `<Name>-<vendor GUID>` holding its 4-byte attributes, then its data. Reading the boot
//! options and `BootOrder`, writing them. The kernel marks existing variables immutable
//! (chattr +i) so a stray write cannot brick a machine; the flag is cleared just before a
//! deliberate write.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::loadopt::{self, Parsed};

/// Where efivarfs is mounted.
pub const DIR: &str = "/sys/firmware/efi/efivars";
/// `EFI_GLOBAL_VARIABLE`: the vendor of `Boot####` and `BootOrder`.
pub const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// Non-volatile, boot service and runtime access: how boot options are stored.
const ATTRIBUTES: u32 = 0x7;
/// `FS_IMMUTABLE_FL` (linux/fs.h).
const IMMUTABLE: libc::c_long = 0x10;

/// The boot options that parsed, by number, and a line for each that did not.
pub type BootOptions = (Vec<(u16, Parsed)>, Vec<String>);

pub struct Vars {
    dir: PathBuf,
}

impl Vars {
    pub fn at(dir: impl Into<PathBuf>) -> Vars {
        Vars { dir: dir.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-{GLOBAL}"))
    }

    /// A variable's data (without its attributes); `None` when it does not exist.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let p = self.path(name);
        match fs::read(&p) {
            Ok(b) if b.len() >= 4 => Ok(Some(b[4..].to_vec())),
            Ok(b) => anyhow::bail!("{}: {} bytes, shorter than the attributes", p.display(), b.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Set a variable (non-volatile, boot and runtime access) in one write, as efivarfs
    /// requires.
    pub fn set(&self, name: &str, data: &[u8]) -> Result<()> {
        let p = self.path(name);
        if p.exists() {
            clear_immutable(&p)?;
        }
        let mut buf = ATTRIBUTES.to_le_bytes().to_vec();
        buf.extend_from_slice(data);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))?;
        f.write_all(&buf).with_context(|| format!("writing {} ({} bytes)", p.display(), buf.len()))?;
        // Not truncated on open: efivarfs takes the variable from one write. A plain
        // directory (tests) keeps old bytes past a shorter write: cut them; efivarfs has
        // nothing to cut.
        let _ = f.set_len(buf.len() as u64);
        Ok(())
    }

    /// Every `Boot####` option that parses, by number; those that do not are named in the
    /// returned list of problems (and left alone).
    pub fn boot_options(&self) -> Result<BootOptions> {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        let entries = fs::read_dir(&self.dir).with_context(|| format!("listing {}", self.dir.display()))?;
        for e in entries {
            let name = e.with_context(|| format!("listing {}", self.dir.display()))?.file_name();
            let Some(n) = name.to_str().and_then(boot_number) else { continue };
            let var = format!("Boot{n:04X}");
            match self.get(&var)?.map(|d| loadopt::parse(&d)) {
                Some(Ok(p)) => out.push((n, p)),
                Some(Err(e)) => problems.push(format!("{var}: {e:#}")),
                None => {}
            }
        }
        out.sort_by_key(|(n, _)| *n);
        Ok((out, problems))
    }

    /// `BootOrder` (absent: empty).
    pub fn boot_order(&self) -> Result<Vec<u16>> {
        Ok(self
            .get("BootOrder")?
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    pub fn set_boot_order(&self, order: &[u16]) -> Result<()> {
        let data: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
        self.set("BootOrder", &data)
    }
}

/// `Boot0003-8be4df61-…` → 3; other names → `None`.
fn boot_number(file: &str) -> Option<u16> {
    let (name, vendor) = file.split_once('-')?;
    let hex = name.strip_prefix("Boot")?;
    if vendor != GLOBAL || hex.len() != 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

/// Clear `FS_IMMUTABLE_FL` on `p` (efivarfs sets it on variables it did not create); a
/// filesystem without such flags (a test directory) has nothing to clear.
fn clear_immutable(p: &Path) -> Result<()> {
    let f = fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`, which lives through the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    if rc != 0 || flags & IMMUTABLE == 0 {
        return Ok(());
    }
    flags &= !IMMUTABLE;
    // SAFETY: FS_IOC_SETFLAGS reads one long from `flags`, which lives through the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!("clearing the immutable flag of {}: {e}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_round_trip_in_the_efivarfs_layout() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vars::at(dir.path());
        assert_eq!(v.boot_order().unwrap(), Vec::<u16>::new());
        v.set_boot_order(&[1, 2, 0x10]).unwrap();
        assert_eq!(v.boot_order().unwrap(), [1, 2, 0x10]);
        let raw = fs::read(dir.path().join(format!("BootOrder-{GLOBAL}"))).unwrap();
        assert_eq!(raw, [7, 0, 0, 0, 1, 0, 2, 0, 0x10, 0]);
        // A shorter value replaces the longer one whole.
        v.set_boot_order(&[2]).unwrap();
        assert_eq!(v.boot_order().unwrap(), [2]);
    }

    #[test]
    fn boot_options_are_listed_by_number_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vars::at(dir.path());
        let loader = loadopt::DiskLoader {
            partition_number: 15,
            start_lba: 2048,
            size_lba: 100,
            partition_guid: [1; 16],
            path: "\\EFI\\BOOT\\BOOTX64.EFI".into(),
        };
        v.set("Boot000A", &loadopt::encode("debian", &loader).unwrap()).unwrap();
        v.set("Boot0001", &[1, 0, 0, 0]).unwrap();
        fs::write(dir.path().join("Boot0002-00000000-0000-0000-0000-000000000000"), [7, 0, 0, 0]).unwrap();
        fs::write(dir.path().join(format!("Timeout-{GLOBAL}")), [7, 0, 0, 0, 0, 0]).unwrap();
        let (opts, problems) = v.boot_options().unwrap();
        assert_eq!(opts.len(), 1);
        assert_eq!((opts[0].0, opts[0].1.description.as_str()), (10, "debian"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("Boot0001:"), "{problems:?}");
        assert_eq!(boot_number(&format!("Boot00ZZ-{GLOBAL}")), None);
        assert_eq!(boot_number(&format!("BootOrder-{GLOBAL}")), None);
    }
}

//! Checking a disk after an install, against the image it should hold (`image.rs` says
//! what the installer may change and what it may not).

use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::image::{Image, IMAGE_SIZE, PAYLOAD_LEN, PAYLOAD_START, ROOT_LEN, ROOT_START, SECTOR};

/// What an installed disk showed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiskCheck {
    /// Bytes compared with the image byte for byte (all but LBA 0–1, the root filesystem and
    /// the image's old backup GPT header).
    pub bytes_identical: u64,
    pub root_files_ok: usize,
    pub seed_ok: bool,
}

fn read_disk(dev: &Path, len: u64) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let mut v = vec![0u8; len as usize];
    f.read_exact(&mut v).with_context(|| format!("reading {}", dev.display()))?;
    Ok(v)
}

/// An installed disk: the image's bytes everywhere the installer has no business changing,
/// a clean root filesystem holding the image's files and this machine's seed, a valid GPT.
pub fn installed(dev: &Path, image: &Image, user_data: &str, scratch: &Path) -> Result<DiskCheck> {
    let disk = read_disk(dev, IMAGE_SIZE)?;
    let raw = &image.raw;
    // LBA 0 (the protective MBR's size) and LBA 1 (the primary header: the backup's new
    // place, its CRC) are the GPT fix's, and so is the image's last sector (its old backup
    // header, blanked); the root filesystem is mounted and seeded.
    let fixed = 2 * SECTOR;
    let old_backup = IMAGE_SIZE - SECTOR;
    if disk[old_backup as usize..].iter().any(|b| *b != 0) {
        bail!("the image's old backup GPT header at byte {old_backup} was not blanked");
    }
    let mut identical = 0;
    for (a, b) in [(fixed, ROOT_START), (ROOT_START + ROOT_LEN, old_backup)] {
        let (a, b) = (a as usize, b as usize);
        if disk[a..b] != raw[a..b] {
            let first = (a..b).find(|&i| disk[i] != raw[i]).unwrap_or(a);
            bail!(
                "CORRUPT: byte {first} differs from the image (disk {:#04x}, image {:#04x}){}",
                disk[first],
                raw[first],
                if (PAYLOAD_START as usize..(PAYLOAD_START + PAYLOAD_LEN) as usize).contains(&first) {
                    " in the payload partition"
                } else {
                    ""
                }
            );
        }
        identical += (b - a) as u64;
    }
    if disk[510..512] != [0x55, 0xaa] || disk[446 + 4] != 0xee {
        bail!("CORRUPT: the protective MBR is gone");
    }
    let out = Command::new("sgdisk").arg("-v").arg(dev).output().context("running sgdisk -v")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("No problems found") {
        bail!("CORRUPT: sgdisk -v: {}", text.trim());
    }

    // The root filesystem, copied out so e2fsck and debugfs read it without a device node.
    let fs = scratch.join("root.ext4");
    std::fs::write(&fs, &disk[ROOT_START as usize..(ROOT_START + ROOT_LEN) as usize])?;
    let out = Command::new("e2fsck").args(["-f", "-n"]).arg(&fs).output().context("running e2fsck")?;
    if !out.status.success() {
        bail!("CORRUPT: e2fsck: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let cat = |path: &str| -> Result<Vec<u8>> {
        let out = Command::new("debugfs").args(["-R", &format!("cat /{path}")]).arg(&fs).output()?;
        Ok(out.stdout)
    };
    let mut files = 0;
    for (path, want) in &image.files {
        if cat(path)? != *want {
            bail!("CORRUPT: /{path} in the root filesystem differs from the image's");
        }
        files += 1;
    }
    let seed = cat("var/lib/cloud/seed/nocloud/user-data")?;
    if seed != user_data.as_bytes() {
        bail!("the seed's user-data is not this machine's: {:?}", String::from_utf8_lossy(&seed));
    }
    std::fs::remove_file(&fs)?;
    Ok(DiskCheck { bytes_identical: identical, root_files_ok: files, seed_ok: true })
}

/// A disk whose install failed must not look installed: the installer writes the image's
/// first MiB only after the whole image verified.
pub fn not_installed(dev: &Path, image: &Image) -> Result<()> {
    let head = read_disk(dev, 1 << 20)?;
    if head == image.raw[..1 << 20] {
        bail!("CORRUPT: a failed install left the image's first MiB on the disk (it would boot)");
    }
    Ok(())
}

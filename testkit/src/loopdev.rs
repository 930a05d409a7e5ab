//! Loop devices backed by sparse files, detached on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::netns::run;

pub struct LoopDev {
    pub path: PathBuf,
    pub backing: PathBuf,
}

impl LoopDev {
    /// A sparse file of `size` bytes in `dir`, attached with partition scanning.
    pub fn new(dir: &Path, size: u64) -> Result<LoopDev> {
        Self::with_sector_size(dir, size, 512)
    }

    /// As [`LoopDev::new`] with a logical sector size (512 or 4096).
    pub fn with_sector_size(dir: &Path, size: u64, sector: u32) -> Result<LoopDev> {
        let backing = dir.join(crate::unique("disk") + ".img");
        let f = std::fs::File::create(&backing).with_context(|| format!("creating {}", backing.display()))?;
        f.set_len(size).with_context(|| format!("sizing {}", backing.display()))?;
        drop(f);
        let out = run(Command::new("losetup")
            .args(["--find", "--show", "--partscan", "--sector-size", &sector.to_string()])
            .arg(&backing))
        .context("attaching a loop device")?;
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(LoopDev { path, backing })
    }

    /// Re-read the partition table and create the partition nodes (`/dev/loopNpM`), which
    /// this environment does not do by itself.
    pub fn rescan(&self) -> Result<()> {
        let _ = Command::new("partx").arg("-d").arg(&self.path).output();
        run(Command::new("partx").arg("-a").arg(&self.path)).map(|_| ())
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("partx").arg("-d").arg(&self.path).output();
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
        let _ = std::fs::remove_file(&self.backing);
    }
}

//! The soak's OS image: a real GPT disk image, small enough for hundreds of installs, shaped
//! so every installed disk can be checked against it.
//!
//! ```text
//!  0      1 MiB                    49 MiB            63 MiB  64 MiB
//!  | GPT  | p1 "payload": 48 MiB    | p2 "root": ext4 | gap   | backup GPT
//!  |      | pseudo-random bytes     | 14 MiB, files   |       |
//! ```
//!
//! After an install the installer has moved the backup GPT to the end of the (larger) disk,
//! so the primary header (LBA 1) and the protective MBR's size changed, and it has mounted the
//! root filesystem and written the cloud-init seed into it. Everything else must be the
//! image's bytes exactly: the payload partition (random, so any lost, repeated, shifted or
//! flipped block shows), the partition entries, the gaps. The root filesystem is checked by
//! `e2fsck` and by reading back every file the image put there, and the seed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::rng::Rng;

pub const SECTOR: u64 = 512;
pub const IMAGE_SIZE: u64 = 64 << 20;
pub const PAYLOAD_START: u64 = 1 << 20;
pub const PAYLOAD_LEN: u64 = 48 << 20;
pub const ROOT_START: u64 = 49 << 20;
pub const ROOT_LEN: u64 = 14 << 20;
/// Files put into the root filesystem (path, size); their contents are pseudo-random.
pub const FILES: [(&str, usize); 3] = [("etc/soak-release", 200), ("usr/share/soak/blob", 1 << 20), ("srv/x/y", 4097)];

/// The built image and what the checks need to know about it.
pub struct Image {
    /// The raw disk image, as the disk must hold it.
    pub raw: Vec<u8>,
    /// The compressed file bootsvc serves.
    pub zst: PathBuf,
    pub zst_size: u64,
    /// sha256 of the compressed file (the manifest's `checksum_of: compressed`).
    pub sha256: String,
    /// The files of the root filesystem: path, contents.
    pub files: Vec<(String, Vec<u8>)>,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Build the image in `dir` (named `soak.raw.zst`), from `seed`.
pub fn build(dir: &Path, seed: u64) -> Result<Image> {
    let mut rng = Rng::new(seed).fork(0x1a6e);
    let raw_path = dir.join("soak.raw");
    {
        let f = std::fs::File::create(&raw_path).with_context(|| format!("creating {}", raw_path.display()))?;
        f.set_len(IMAGE_SIZE)?;
    }
    let mb = |b: u64| format!("{}M", b >> 20);
    run(Command::new("sgdisk")
        .args(["-o", "-a", "2048"])
        .args(["-n", &format!("1:{}:+{}", mb(PAYLOAD_START), mb(PAYLOAD_LEN))])
        .args(["-t", "1:8300", "-c", "1:payload"])
        .args(["-n", &format!("2:{}:+{}", mb(ROOT_START), mb(ROOT_LEN))])
        .args(["-t", "2:8304", "-c", "2:root"])
        .arg(&raw_path))
    .context("partitioning the soak image")?;

    // The root filesystem: made from a directory of files, then copied into partition 2.
    let tree = tempfile::tempdir()?;
    let mut files = Vec::new();
    for (path, size) in FILES {
        let mut bytes = vec![0u8; size];
        rng.fill(&mut bytes);
        let p = tree.path().join(path);
        std::fs::create_dir_all(p.parent().context("file path has a parent")?)?;
        std::fs::write(&p, &bytes)?;
        files.push((path.to_string(), bytes));
    }
    let fs_path = dir.join("root.ext4");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-L", "root", "-d"])
        .arg(tree.path())
        .arg(&fs_path)
        .arg(format!("{}k", ROOT_LEN >> 10)))
    .context("making the root filesystem")?;
    let fs = std::fs::read(&fs_path)?;
    std::fs::remove_file(&fs_path)?;

    let mut raw = std::fs::read(&raw_path)?;
    let mut payload = vec![0u8; PAYLOAD_LEN as usize];
    rng.fill(&mut payload);
    raw[PAYLOAD_START as usize..(PAYLOAD_START + PAYLOAD_LEN) as usize].copy_from_slice(&payload);
    raw[ROOT_START as usize..ROOT_START as usize + fs.len()].copy_from_slice(&fs);
    std::fs::write(&raw_path, &raw)?;

    let zst = dir.join("soak.raw.zst");
    run(Command::new("zstd").args(["-q", "-f", "-3"]).arg(&raw_path).arg("-o").arg(&zst))
        .context("compressing the soak image")?;
    std::fs::remove_file(&raw_path)?;
    let z = std::fs::read(&zst)?;
    let sha256 = hex(&Sha256::digest(&z));
    Ok(Image { raw, zst, zst_size: z.len() as u64, sha256, files })
}

impl Image {
    /// The image manifest bootsvc reads (`images/soak.json`).
    pub fn write_manifest(&self, images_dir: &Path) -> Result<()> {
        let m = serde_json::json!({
            "name": "soak", "file": "soak.raw.zst", "format": "zstd", "size": self.zst_size,
            "raw_size": IMAGE_SIZE, "sha256": self.sha256, "checksum_of": "compressed",
        });
        let mut f = std::fs::File::create(images_dir.join("soak.json"))?;
        f.write_all(m.to_string().as_bytes())?;
        Ok(())
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

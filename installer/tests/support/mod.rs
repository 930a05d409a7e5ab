//! Shared by the installer's integration tests: the HTTP server ([`http`]), test images,
//! running the installer binary, and checks with the real tools (sgdisk, debugfs, e2fsck).
#![allow(dead_code)]

pub mod http;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use osie_testkit::{require_root, require_tools, LoopDev};
use sha2::{Digest, Sha256};

pub const MIB: u64 = 1 << 20;

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Root and the tools every disk test uses; false = skip (outside CI).
pub fn disk_prereqs(test: &str) -> bool {
    require_root(test) && require_tools(test, &["losetup", "partx", "sgdisk", "mke2fs", "debugfs", "e2fsck", "blkid"])
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run the installer binary; returns (success, stderr).
pub fn installer(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_installer"))
        .args(args)
        .env("RUST_LOG", std::env::var("OSIE_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()))
        .output()
        .expect("running the installer");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("--- installer {args:?} ---\n{err}");
    (out.status.success(), err)
}

/// An image: raw bytes, the ranges of its partitions.
pub struct TestImage {
    pub raw: Vec<u8>,
    /// The name used in reports.
    pub name: String,
    /// Logical sector size the GPT was made for.
    pub sector: u64,
}

/// A GPT disk image shaped like Debian's cloud images: partition 14 (BIOS boot), 15 (ESP),
/// 1 (ext4 root, labelled `root`, with real files) last on the disk, so growing the last
/// partition grows the root. Built with sgdisk and mke2fs -d (no root needed) for 512-byte
/// sectors; for 4096 it is partitioned through a 4Kn loop device.
pub fn build_image(dir: &Path, size: u64, sector: u64) -> TestImage {
    let img = dir.join(format!("img-{sector}.raw"));
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    let lba = |bytes: u64| (bytes / sector).to_string();
    let sg = |dev: &Path| {
        run(Command::new("sgdisk")
            .arg("-n")
            .arg(format!("14:{}:{}", lba(MIB), lba(4 * MIB).parse::<u64>().unwrap() - 1))
            .args(["-t", "14:ef02", "-c", "14:bios"])
            .arg("-n")
            .arg(format!("15:{}:{}", lba(4 * MIB), lba(12 * MIB).parse::<u64>().unwrap() - 1))
            .args(["-t", "15:ef00", "-c", "15:esp"])
            .arg("-n")
            .arg(format!("1:{}:0", lba(12 * MIB)))
            .args(["-t", "1:8304", "-c", "1:root"])
            .arg(dev));
    };
    if sector == 512 {
        sg(&img);
    } else {
        let l = run(Command::new("losetup").args(["--find", "--show", "--sector-size", &sector.to_string()]).arg(&img));
        let dev = PathBuf::from(String::from_utf8_lossy(&l.stdout).trim());
        let r = std::panic::catch_unwind(|| sg(&dev));
        let _ = Command::new("losetup").arg("-d").arg(&dev).status();
        r.unwrap();
    }
    // Root filesystem content: text, random data (incompressible), a sparse-ish big file.
    let root = dir.join(format!("rootfs-{sector}"));
    std::fs::create_dir_all(root.join("etc/cloud/cloud.cfg.d")).unwrap();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    std::fs::write(root.join("etc/hostname"), "image\n").unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=osie-test\n").unwrap();
    let mut noise = vec![0u8; 6 * MIB as usize];
    let mut x: u64 = 0x9e3779b97f4a7c15 ^ sector;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(root.join("var/lib/noise.bin"), &noise).unwrap();
    let fs_start = 12 * MIB;
    let fs_len = size - fs_start - MIB; // leave room for the backup GPT
    let fs = dir.join(format!("root-{sector}.ext4"));
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "root", "-b", "4096", "-d"])
        .arg(&root)
        .arg(&fs)
        .arg(format!("{}k", fs_len / 1024)));
    let mut raw = std::fs::read(&img).unwrap();
    let fsb = std::fs::read(&fs).unwrap();
    raw[fs_start as usize..fs_start as usize + fsb.len()].copy_from_slice(&fsb);
    TestImage { raw, name: format!("test image ({sector}-byte sectors)"), sector }
}

/// One zstd frame without a content size, as a streaming encoder (or `zstd` from a pipe)
/// writes it: the installer decodes it as one stream.
pub fn zstd(raw: &[u8]) -> Vec<u8> {
    zstd::encode_all(raw, 3).unwrap()
}

/// Independent zstd frames of `frame` bytes, each with its content size and checksum, as
/// `images/pack` writes them: the installer decodes them on several threads.
pub fn zstd_frames(raw: &[u8], frame: usize) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.include_checksum(true).unwrap();
    raw.chunks(frame).flat_map(|p| c.compress(p).unwrap()).collect()
}

/// The real Debian image from `images/` with its manifest, when it has been built. Under
/// `OSIE_REQUIRE_ALL=1` its absence fails the test.
pub fn debian_image() -> Option<(Vec<u8>, serde_json::Value)> {
    let dir = osie_testkit::workspace_root().join("build/images");
    let (img, man) = (dir.join("debian-12.raw.zst"), dir.join("debian-12.json"));
    if !img.exists() || !man.exists() {
        if std::env::var_os("OSIE_REQUIRE_ALL").is_some_and(|v| v == "1") {
            panic!(
                "{} or its manifest is missing and OSIE_REQUIRE_ALL=1: build the Debian image first (images/ builds it; see images/README.md)",
                img.display()
            );
        }
        eprintln!("NOTE: {} not built; using the test image built here", img.display());
        return None;
    }
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&man).unwrap()).unwrap();
    Some((std::fs::read(&img).unwrap(), manifest))
}

pub fn read_dev(path: &Path, off: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; len as usize];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

/// A read-only loop device over a byte range of another device's backing file (a partition),
/// for debugfs and e2fsck. Detached on drop.
pub struct PartLoop(pub PathBuf);

impl PartLoop {
    pub fn new(backing: &Path, off: u64, len: u64) -> PartLoop {
        let o = run(Command::new("losetup")
            .args(["--find", "--show", "-r", "-o", &off.to_string(), "--sizelimit", &len.to_string()])
            .arg(backing));
        PartLoop(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    }

    pub fn debugfs_cat(&self, path: &str) -> String {
        let o = run(Command::new("debugfs").args(["-R", &format!("cat {path}")]).arg(&self.0));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for PartLoop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// `sgdisk -p` partitions: (number, first sector, last sector, name).
pub fn sgdisk_parts(dev: &Path) -> Vec<(u32, u64, u64, String)> {
    let o = run(Command::new("sgdisk").arg("-p").arg(dev));
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("Number"))
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?, f.get(6..)?.join(" ")))
        })
        .collect()
}

/// `sgdisk -v` finds no problem.
pub fn assert_sgdisk_clean(dev: &Path) {
    let o = Command::new("sgdisk").arg("-v").arg(dev).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("No problems found"), "sgdisk -v {}:\n{text}", dev.display());
}

pub fn loopdev(dir: &Path, size: u64, sector: u32) -> LoopDev {
    LoopDev::with_sector_size(dir, size, sector).expect("attaching a loop device")
}

/// The phases and messages a real bootsvc `site` stored for `mac`, in the order it stored
/// them (its admin API).
pub fn stored(site: &osie_testkit::site::Site, mac: &str) -> Vec<(String, String)> {
    let path = format!("/admin/machines/{mac}/events?limit=1000");
    let v = site.admin_json(&path, std::time::Duration::from_secs(10)).unwrap();
    let mut all = v.as_array().cloned().unwrap_or_default();
    all.sort_by_key(|e| e["n"].as_u64());
    all.iter()
        .map(|e| {
            let ev = &e["event"];
            (
                ev["phase"].as_str().unwrap_or_default().to_string(),
                ev["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

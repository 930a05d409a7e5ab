//! Deprovisioning's erase on loop devices, through the `erase` command: every byte reads
//! zero afterwards whichever method ran, and a read-only disk and a disk with a mounted
//! filesystem (where the installer's own files would be) are left as they were.

mod support;

use std::io::Write;
use std::process::Command;

use osie_testkit::LoopDev;
use support::*;

const SIZE: u64 = 64 * MIB;

/// Fill `dev` with a pattern that is nowhere zero.
fn fill(dev: &LoopDev) {
    let mut f = std::fs::OpenOptions::new().write(true).open(&dev.path).unwrap();
    let block: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 + 1).collect();
    for _ in 0..SIZE / MIB {
        f.write_all(&block).unwrap();
    }
    f.sync_all().unwrap();
}

/// The device's contents, read from its backing file.
fn contents(dev: &LoopDev) -> Vec<u8> {
    std::fs::read(&dev.backing).unwrap()
}

/// Run `installer erase`; its JSON report.
fn erase(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_installer")).arg("erase").args(args).output().unwrap();
    eprintln!("--- installer erase {args:?} ---\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "erase failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Sets the device read-write again when dropped.
struct Rw(std::path::PathBuf);

impl Drop for Rw {
    fn drop(&mut self) {
        let _ = Command::new("blockdev").arg("--setrw").arg(&self.0).status();
    }
}

#[test]
fn every_byte_is_zero_and_read_only_and_mounted_disks_are_kept() {
    if !disk_prereqs("every_byte_is_zero_and_read_only_and_mounted_disks_are_kept") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b, ro, busy) = (
        LoopDev::new(dir.path(), SIZE).unwrap(),
        LoopDev::new(dir.path(), SIZE).unwrap(),
        LoopDev::new(dir.path(), SIZE).unwrap(),
        LoopDev::new(dir.path(), SIZE).unwrap(),
    );
    for d in [&a, &b, &ro] {
        fill(d);
    }
    run(Command::new("blockdev").arg("--setro").arg(&ro.path));
    // The flag stays on the device node after the loop device is detached: clear it however
    // the test ends, or the next test given this loop device cannot write to it.
    let _rw = Rw(ro.path.clone());
    run(Command::new("mke2fs").args(["-q", "-t", "ext4"]).arg(&busy.path));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // Read-only, so that the mount itself writes nothing the comparison would see.
    run(Command::new("mount").args(["-o", "ro,noload"]).arg(&busy.path).arg(&mnt));
    let ro_before = sha256_hex(&contents(&ro));
    let busy_before = sha256_hex(&contents(&busy));

    let p = |d: &LoopDev| d.path.display().to_string();
    let (pa, pro, pbusy) = (p(&a), p(&ro), p(&busy));
    let report = erase(&["--disk", &pa, "--disk", &pro, "--disk", &pbusy]);
    let _ = Command::new("umount").arg(&mnt).status();

    let erased = report["erased"].as_array().unwrap();
    assert_eq!(erased.len(), 1, "{report}");
    assert_eq!(erased[0]["path"], pa.as_str());
    assert_eq!(erased[0]["bytes"], SIZE);
    let method = erased[0]["method"].as_str().unwrap();
    // A loop device discards by punching holes in its file; where the file system under it
    // cannot, zeroout is the fallback.
    assert!(["discard", "zeroout"].contains(&method), "{report}");
    assert!(erased[0]["verified_samples"].as_u64().unwrap() > 2, "{report}");
    assert!(erased[0]["seconds"].as_f64().unwrap() >= 0.0);
    assert!(contents(&a).iter().all(|b| *b == 0), "{pa}: every byte zero after {method}");
    let kept: std::collections::HashMap<String, String> =
        serde_json::from_value::<Vec<(String, String)>>(report["kept"].clone()).unwrap().into_iter().collect();
    assert_eq!(kept.len(), 2, "{report}");
    assert_eq!(kept[&pro], "read-only");
    assert!(kept[&pbusy].starts_with("in use"), "{kept:?}");
    assert_eq!(sha256_hex(&contents(&ro)), ro_before, "the read-only disk is untouched");
    assert_eq!(sha256_hex(&contents(&busy)), busy_before, "the disk in use is untouched");
    eprintln!("{method}: {} bytes in {} s", SIZE, erased[0]["seconds"]);

    // Zero writes, asked for by name, on a disk that could discard.
    let pb = p(&b);
    let report = erase(&["--disk", &pb, "--method", "zeroout"]);
    assert_eq!(report["erased"][0]["method"], "zeroout", "{report}");
    assert!(contents(&b).iter().all(|b| *b == 0), "{pb}: every byte zero after zeroout");
    eprintln!("zeroout: {} bytes in {} s", SIZE, report["erased"][0]["seconds"]);
}

#[test]
fn erase_refuses_to_guess_which_disks() {
    let out = Command::new(env!("CARGO_BIN_EXE_installer")).arg("erase").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--all-disks-of-this-machine"), "{err}");
}

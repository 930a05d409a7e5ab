//! `installer install` end to end against loop devices and the test HTTP server standing in
//! for bootsvc: metadata, disk choice, wipe, stream, GPT fix-ups, cloud-init seed, events.

mod support;

use std::path::Path;
use std::process::Command;

use osie_api::Phase;
use serde_json::json;
use support::http::{File, Server};
use support::*;

const MAC: &str = "52:54:00:12:34:56";

struct Img {
    compressed: Vec<u8>,
    raw: Vec<u8>,
    sector: u64,
    /// sha256 and what it covers, as a manifest says (`None`: of the compressed bytes).
    checksum: Option<(String, String)>,
}

/// The real Debian image when built (CI), else the test image shaped like it.
fn whole_disk_image(dir: &Path, sector: u64) -> Img {
    if sector == 512 {
        if let Some((z, manifest)) = debian_image() {
            let raw = zstd::decode_all(&z[..]).unwrap();
            let of = manifest["checksum_of"].as_str().unwrap_or("compressed").to_string();
            let sha = manifest["sha256"].as_str().expect("manifest has sha256").to_string();
            let covered = if of == "raw" { &raw } else { &z };
            assert_eq!(sha, sha256_hex(covered), "the manifest's sha256 ({of}) matches the file");
            return Img { compressed: z, raw, sector, checksum: Some((sha, of)) };
        }
    }
    let t = build_image(dir, 64 * MIB, sector);
    Img { compressed: zstd(&t.raw), raw: t.raw, sector, checksum: None }
}

fn metadata(srv: &Server, img: &Img, install_extra: serde_json::Value) -> serde_json::Value {
    let mut install = json!({
        "image": {
            "url": srv.url("/images/os.raw.zst"),
            "sha256": img.checksum.as_ref().map(|c| c.0.clone()).unwrap_or_else(|| sha256_hex(&img.compressed)),
            "checksum_of": img.checksum.as_ref().map(|c| c.1.clone()).unwrap_or_else(|| "compressed".into()),
            "size": img.compressed.len(),
            "raw_size": img.raw.len(),
            "format": "auto",
        },
        "gpt": { "grow_last_partition": true },
    });
    if let (Some(a), Some(b)) = (install.as_object_mut(), install_extra.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
    json!({
        "instance_id": "i-0123",
        "hostname": "node-7",
        "mac": MAC,
        "install": install,
        "cloud_init": {
            "user_data": "#cloud-config\nruncmd: [[touch, /var/tmp/osie-was-here]]\n",
            "network_config": "version: 2\nethernets: {eth0: {dhcp4: true}}\n",
            "vendor_data": "#cloud-config\n{}\n",
        },
        "ssh_keys": ["ssh-ed25519 AAAAC3Nza test@osie"],
        "metadata_base_url": srv.url("/ec2"),
        "phone_home_url": srv.url("/phone-home/$INSTANCE_ID"),
    })
}

fn serve(img: &Img, md_extra: serde_json::Value) -> Server {
    let srv = Server::start();
    srv.put("/images/os.raw.zst", File::new(img.compressed.clone(), "os-1"));
    let md = metadata(&srv, img, md_extra);
    srv.set_metadata(&md.to_string());
    srv
}

fn install(srv: &Server, args: &[&str]) -> (bool, String) {
    let url = srv.url("");
    let mut a = vec!["install", "--metadata-url", url.as_str(), "--mac", MAC];
    a.extend_from_slice(args);
    installer(&a)
}

/// The seed files in the root filesystem of a partition (via debugfs, read-only).
fn check_seed(backing: &Path, start: u64, len: u64) {
    let p = PartLoop::new(backing, start, len);
    assert_eq!(
        p.debugfs_cat("/var/lib/cloud/seed/nocloud/meta-data"),
        "instance-id: \"i-0123\"\nlocal-hostname: \"node-7\"\npublic-keys:\n  - \"ssh-ed25519 AAAAC3Nza test@osie\"\n"
    );
    assert_eq!(
        p.debugfs_cat("/var/lib/cloud/seed/nocloud/user-data"),
        "#cloud-config\nruncmd: [[touch, /var/tmp/osie-was-here]]\n"
    );
    assert_eq!(
        p.debugfs_cat("/var/lib/cloud/seed/nocloud/network-config"),
        "version: 2\nethernets: {eth0: {dhcp4: true}}\n"
    );
    assert_eq!(p.debugfs_cat("/var/lib/cloud/seed/nocloud/vendor-data"), "#cloud-config\n{}\n");
    let cfg = p.debugfs_cat("/etc/cloud/cloud.cfg.d/90-osie.cfg");
    assert!(cfg.contains("datasource_list: [NoCloud, Ec2, None]"), "{cfg}");
    assert!(
        cfg.contains("/ec2\"]") && cfg.contains("phone_home:") && cfg.contains("/phone-home/$INSTANCE_ID"),
        "{cfg}"
    );
    // The filesystem is still consistent after the seed was written.
    run(Command::new("e2fsck").arg("-fn").arg(&p.0));
}

fn phases(srv: &Server) -> Vec<Phase> {
    let mut v: Vec<Phase> = srv.events().iter().map(|e| e.phase).collect();
    v.dedup();
    v
}

fn check_events(srv: &Server) {
    let evs = srv.events();
    assert_eq!(
        phases(srv),
        vec![
            Phase::Metadata,
            Phase::DiskSelected,
            Phase::DiskWiped,
            Phase::ImageStreaming,
            Phase::ImageVerified,
            Phase::GptFixed,
            Phase::CloudInitSeeded,
            Phase::Installed
        ]
    );
    let run_id = evs[0].run_id.clone().expect("run_id");
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e.run_id.as_ref(), Some(&run_id));
        assert_eq!(e.seq, Some(i as u64), "events arrive in order");
        assert_eq!(e.machine.to_string(), MAC);
    }
    let p = evs.iter().find(|e| e.phase == Phase::ImageStreaming).unwrap().progress.clone().unwrap();
    assert!(p.bytes_total.is_some() && p.bytes_done <= p.bytes_total.unwrap());
    for l in srv.log().iter().filter(|l| l.path == "/metadata" || l.path == "/events") {
        assert_eq!(l.headers.get("x-osie-mac").map(String::as_str), Some(MAC), "{} without X-Osie-Mac", l.path);
    }
}

fn whole_disk(sector: u32) {
    let test = format!("installs_a_whole_disk_image_{sector}");
    if !disk_prereqs(&test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = whole_disk_image(dir.path(), u64::from(sector));
    let ss = img.sector;
    let before = sgdisk_parts_of(&img.raw, dir.path(), sector);
    let disk_size = (img.raw.len() as u64 + 192 * MIB).div_ceil(MIB) * MIB;
    let dev = loopdev(dir.path(), disk_size, sector);
    // An old install on the disk: a stale GPT at both ends must not survive.
    run(Command::new("sgdisk").args(["-o", "-n", "1:0:0"]).arg(&dev.path));
    let srv = serve(&img, json!({}));

    // First the bare stream: the disk holds the image byte for byte.
    let (sha, of) = img.checksum.clone().unwrap_or_else(|| (sha256_hex(&img.compressed), "compressed".into()));
    let (ok, log) = installer(&[
        "write-image",
        "--url",
        &srv.url("/images/os.raw.zst"),
        "--sha256",
        &sha,
        "--checksum-of",
        &of,
        "--disk",
        dev.path.to_str().unwrap(),
    ]);
    assert!(ok, "{log}");
    assert!(read_dev(&dev.path, 0, img.raw.len() as u64) == img.raw, "write-image: the disk differs from the image");

    // Then the whole install over it.
    let (ok, log) = install(&srv, &["--disk", dev.path.to_str().unwrap()]);
    assert!(ok, "{log}");

    // Still the image byte for byte, apart from what the install changes on purpose: the
    // GPT headers (primary header + array at the start, the old backup header in the image's
    // last sector), the protective MBR's size field, and the root filesystem (the seed).
    let after = sgdisk_parts(&dev.path);
    let root = after.iter().find(|p| p.3 == "root" || p.0 == 1).unwrap().clone();
    let got = read_dev(&dev.path, 0, img.raw.len() as u64);
    assert_eq!(&got[..440], &img.raw[..440], "boot code");
    let (a, b) = (34 * 512.max(ss as usize), img.raw.len() - ss as usize);
    let (ra, rb) = ((root.1 * ss) as usize, ((root.2 + 1) * ss) as usize);
    let same = |x: usize, y: usize| x >= y || got[x..y] == img.raw[x..y];
    assert!(same(a, ra.min(b)) && same(rb.min(b), b), "outside the root filesystem the disk differs from the image");

    // Backup GPT at the real end, sgdisk happy, same numbers and names, last one grown.
    assert_sgdisk_clean(&dev.path);
    let last = read_dev(&dev.path, disk_size - ss, 8);
    assert_eq!(&last, b"EFI PART", "backup header in the disk's last sector");
    let nums = |v: &[(u32, u64, u64, String)]| v.iter().map(|p| (p.0, p.1, p.3.clone())).collect::<Vec<_>>();
    assert_eq!(nums(&after), nums(&before), "numbers, starts and names kept");
    let last_part = after.iter().max_by_key(|p| p.2).unwrap();
    let last_usable = disk_size / ss - 2 - 16384 / ss;
    assert_eq!(last_part.2, last_usable, "grown to the end");
    let old_last = before.iter().find(|p| p.0 == last_part.0).unwrap();
    assert!(last_part.2 > old_last.2);
    for p in &after {
        if p.0 != last_part.0 {
            assert!(before.contains(p), "partition {} changed", p.0);
        }
    }
    // blkid sees exactly one partition table type, no stale signature.
    let o = run(Command::new("blkid").args(["-p", "-o", "value", "-s", "PTTYPE"]).arg(&dev.path));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "gpt");

    // cloud-init seed in the root filesystem.
    check_seed(&dev.backing, root.1 * ss, (root.2 - root.1 + 1) * ss);
    check_events(&srv);
}

/// `sgdisk -p` of an image file (through a loop device for 4Kn).
fn sgdisk_parts_of(raw: &[u8], dir: &Path, sector: u32) -> Vec<(u32, u64, u64, String)> {
    let d = loopdev(dir, raw.len() as u64, sector);
    std::fs::write(&d.backing, raw).unwrap();
    sgdisk_parts(&d.path)
}

#[test]
fn installs_a_whole_disk_image_512() {
    whole_disk(512);
}

#[test]
fn installs_a_whole_disk_image_4096() {
    whole_disk(4096);
}

#[test]
fn layout_mode_writes_the_image_into_its_partition() {
    if !disk_prereqs("layout_mode_writes_the_image_into_its_partition") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The image is a bare ext4 filesystem (a partition's contents).
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "fs-image\n").unwrap();
    let fsimg = dir.path().join("root.ext4");
    // 4 KiB blocks: a filesystem for 4Kn disks must not have blocks smaller than a sector.
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "root", "-b", "4096", "-d"])
        .arg(&root)
        .arg(&fsimg)
        .arg("40M"));
    let raw = std::fs::read(&fsimg).unwrap();
    let img = Img { compressed: zstd(&raw), raw, sector: 4096, checksum: None };
    for sector in [512u32, 4096] {
        let dev = loopdev(dir.path(), 128 * MIB, sector);
        let srv = serve(
            &img,
            json!({"gpt": {"layout": [
                {"name": "EFI", "type": "esp", "size": "16MiB"},
                {"name": "root", "type": "linux-root-x86-64", "size": "rest", "image": true},
                {"name": "swap", "type": "swap", "size": "8MiB"},
            ]}}),
        );
        // bootsvc restarting: the first metadata request and the first events get 503.
        {
            let mut st = srv.state.lock().unwrap();
            st.fail_metadata = 1;
            st.fail_events = 3;
        }
        let (ok, log) = install(&srv, &["--disk", dev.path.to_str().unwrap()]);
        assert!(ok, "{sector}: {log}");
        let fails = srv.log().iter().filter(|l| l.status == 503).count();
        assert_eq!(fails, 4, "the injected failures were hit and retried");
        assert_sgdisk_clean(&dev.path);
        let parts = sgdisk_parts(&dev.path);
        let ss = u64::from(sector);
        let names: Vec<(u32, String)> = parts.iter().map(|p| (p.0, p.3.clone())).collect();
        assert_eq!(names, vec![(1, "EFI".into()), (2, "root".into()), (3, "swap".into())]);
        assert_eq!(parts[0].1 * ss, MIB, "aligned to 1 MiB");
        assert_eq!((parts[0].2 + 1 - parts[0].1) * ss, 16 * MIB);
        assert_eq!((parts[2].2 + 1 - parts[2].1) * ss, 8 * MIB);
        let (start, len) = (parts[1].1 * ss, (parts[1].2 + 1 - parts[1].1) * ss);
        assert_eq!(start % MIB, 0);
        let o = run(Command::new("sgdisk").args(["-i", "2"]).arg(&dev.path));
        assert!(String::from_utf8_lossy(&o.stdout).contains("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"));
        // The seed was written into the filesystem afterwards, so check through it (e2fsck
        // in check_seed) rather than byte for byte.
        check_seed(&dev.backing, start, len);
        let p = PartLoop::new(&dev.backing, start, len);
        assert_eq!(p.debugfs_cat("/etc/hostname"), "fs-image\n");
        drop(p);
        check_events(&srv);
    }
}

#[test]
fn hints_choose_among_loop_devices_and_refuse_the_wrong_ones() {
    if !disk_prereqs("hints_choose_among_loop_devices_and_refuse_the_wrong_ones") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img =
        Img { raw: build_image(dir.path(), 64 * MIB, 512).raw, compressed: Vec::new(), sector: 512, checksum: None };
    let img = Img { compressed: zstd(&img.raw), ..img };
    let small = loopdev(dir.path(), 48 * MIB, 512);
    let mid = loopdev(dir.path(), 96 * MIB, 512);
    let big = loopdev(dir.path(), 200 * MIB, 512);
    let ro = RoLoop::new(dir.path(), 150 * MIB);
    let cands: Vec<String> =
        [&small.path, &mid.path, &big.path, &ro.0].iter().map(|p| p.display().to_string()).collect();
    let mut cand_args: Vec<&str> = Vec::new();
    for c in &cands {
        cand_args.extend_from_slice(&["--candidate", c]);
    }
    let marker = |p: &Path| read_dev(p, 512, 8) == b"EFI PART";

    // No hints: the smallest disk the image fits on (not the 48 MiB one).
    let srv = serve(&img, json!({}));
    let (ok, log) = install(&srv, &cand_args);
    assert!(ok, "{log}");
    assert!(marker(&mid.path) && !marker(&small.path) && !marker(&big.path));

    // min_size steers to the big one (the read-only one is skipped).
    let srv = serve(&img, json!({"disk": {"min_size": 160 * MIB}}));
    let (ok, log) = install(&srv, &cand_args);
    assert!(ok, "{log}");
    assert!(marker(&big.path));

    // Named: the read-only disk is refused with the reason, and bootsvc hears it.
    let srv = serve(&img, json!({"disk": {"path": ro.0.display().to_string()}}));
    let (ok, log) = install(&srv, &cand_args);
    assert!(!ok);
    assert!(log.contains("read-only"), "{log}");
    let failed = srv.events().into_iter().find(|e| e.phase == Phase::Failed).expect("a failed event");
    assert!(failed.error.iter().any(|e| e.contains("read-only")), "{:?}", failed.error);
    assert!(failed.error.len() >= 2, "the whole chain: {:?}", failed.error);

    // Named but too small.
    let srv = serve(&img, json!({"disk": {"path": small.path.display().to_string()}}));
    let (ok, log) = install(&srv, &cand_args);
    assert!(!ok && log.contains("too small"), "{log}");

    // Nothing fits: every disk is listed with its reason.
    let srv = serve(&img, json!({"disk": {"max_size": 50 * MIB}}));
    let (ok, log) = install(&srv, &cand_args);
    assert!(!ok, "{log}");
    for c in &cands {
        assert!(log.contains(c.as_str()), "{c} not listed: {log}");
    }

    // --disk with a read-only device is refused too.
    let srv = serve(&img, json!({}));
    let (ok, log) = install(&srv, &["--disk", ro.0.to_str().unwrap(), "--no-events"]);
    assert!(!ok && log.contains("read-only"), "{log}");
    assert!(srv.events().is_empty(), "--no-events sends nothing");
}

#[test]
fn a_corrupt_image_fails_the_install_and_reports_the_chain() {
    if !disk_prereqs("a_corrupt_image_fails_the_install_and_reports_the_chain") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = build_image(dir.path(), 64 * MIB, 512);
    let mut img = Img { compressed: zstd(&t.raw), raw: t.raw, sector: 512, checksum: None };
    let dev = loopdev(dir.path(), 128 * MIB, 512);
    // An earlier install left a bootable disk behind.
    std::fs::write(&dev.backing, &img.raw).unwrap();
    let srv = serve(&img, json!({}));
    // The served file gets one byte flipped after the metadata named the good one.
    let mid = img.compressed.len() / 2;
    img.compressed[mid] ^= 1;
    srv.put("/images/os.raw.zst", File::new(img.compressed.clone(), "os-2"));
    let (ok, log) = install(&srv, &["--disk", dev.path.to_str().unwrap()]);
    assert!(!ok && log.contains("sha256"), "{log}");
    assert!(read_dev(&dev.path, 0, MIB).iter().all(|&b| b == 0), "the disk's first MiB is not blank");
    let p = phases(&srv);
    assert_eq!(p.first(), Some(&Phase::Metadata));
    assert_eq!(p.last(), Some(&Phase::Failed));
    assert!(!p.contains(&Phase::ImageVerified) && !p.contains(&Phase::Installed), "{p:?}");
    let failed = srv.events().into_iter().find(|e| e.phase == Phase::Failed).unwrap();
    assert!(failed.error.len() >= 3, "the chain, outermost first: {:?}", failed.error);
    assert!(failed.error[0].contains("writing the image to"), "{:?}", failed.error);
    assert!(failed.error.iter().any(|e| e.contains("sha256")), "{:?}", failed.error);
}

#[test]
fn malformed_metadata_names_the_field_and_touches_no_disk() {
    if !disk_prereqs("malformed_metadata_names_the_field_and_touches_no_disk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dev = loopdev(dir.path(), 16 * MIB, 512);
    std::fs::write(&dev.backing, vec![0x77u8; 16 * MIB as usize]).unwrap();
    let srv = Server::start();
    srv.set_metadata(&json!({"instance_id": "i", "hostname": "h", "mac": MAC, "install": {"image": {"url": "http://x/y", "sha256": "00"}}}).to_string());
    let (ok, log) = install(&srv, &["--disk", dev.path.to_str().unwrap()]);
    assert!(!ok && log.contains("install.image.sha256"), "{log}");
    srv.set_metadata(&json!({"instance_id": "i", "hostname": "h", "mac": MAC, "install": {"image": {"url": "http://x/y", "sha256": "0", "size": -1}}}).to_string());
    let (ok, log) = install(&srv, &["--disk", dev.path.to_str().unwrap()]);
    assert!(!ok && log.contains("install.image.size"), "{log}");
    assert!(std::fs::read(&dev.backing).unwrap().iter().all(|&b| b == 0x77), "the disk was touched");
    assert_eq!(phases(&srv), vec![Phase::Failed]);
}

/// A read-only loop device (`losetup -r`), detached on drop.
struct RoLoop(std::path::PathBuf);

impl RoLoop {
    fn new(dir: &Path, size: u64) -> RoLoop {
        let backing = dir.join("ro.img");
        std::fs::File::create(&backing).unwrap().set_len(size).unwrap();
        let o = run(Command::new("losetup").args(["--find", "--show", "-r"]).arg(&backing));
        RoLoop(String::from_utf8_lossy(&o.stdout).trim().into())
    }
}

impl Drop for RoLoop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

//! `installer write-image` against loop devices and the fault-injecting HTTP server: the
//! stream lands byte-for-byte, zero runs included; a corrupt or truncated image fails and
//! leaves the first MiB blank; dropped connections resume; a file replaced mid-download
//! restarts cleanly instead of splicing.

mod support;

use std::time::Duration;

use support::http::{Faults, File, Server};
use support::*;

/// A 24 MiB image: noise with zero holes of several sizes, some ≥ 1 MiB (BLKZEROOUT) and
/// some not, and data on the first MiB (held back) and at the very end.
fn patterned(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x: u32 = 12345;
    for (i, b) in v.iter_mut().enumerate() {
        let mb = i / MIB as usize;
        if mb % 3 == 1 || (mb == 8 && i % (MIB as usize) < 1000) {
            continue; // zero regions
        }
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    v
}

fn write_image(url: &str, sha: &str, dev: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let mut args =
        vec!["write-image", "--url", url, "--sha256", sha, "--disk", dev.to_str().unwrap(), "--progress-every", "0.2"];
    args.extend_from_slice(extra);
    installer(&args)
}

#[test]
fn streams_byte_for_byte_in_every_format() {
    let test = "streams_byte_for_byte_in_every_format";
    if !disk_prereqs(test) || !osie_testkit::require_tools(test, &["gzip", "xz"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = patterned(24 * MIB as usize + 3 * 512);
    let dev = loopdev(dir.path(), 64 * MIB, 512);
    // The disk held other data: zero runs must really be zeroed, not skipped.
    std::fs::write(&dev.backing, vec![0xAAu8; 64 * MIB as usize]).unwrap();
    let srv = Server::start();
    let mut gz = flate2_gz(&raw);
    let xz = xz(&raw);
    srv.put("/i.zst", File::new(zstd(&raw), "z1"));
    // Frames that do not line up with the MiB segments the writer zeroes or holds back.
    srv.put("/frames.zst", File::new(zstd_frames(&raw, 3 * MIB as usize + 4096 + 17), "z2"));
    srv.put("/i.gz", File::new(std::mem::take(&mut gz), "g1"));
    srv.put("/i.xz", File::new(xz, "x1"));
    srv.put("/i.raw", File::new(raw.clone(), "r1"));
    let raw_sha = sha256_hex(&raw);
    for (path, of_raw) in
        [("/i.zst", false), ("/frames.zst", true), ("/i.gz", false), ("/i.xz", true), ("/i.raw", false)]
    {
        let body = srv.state.lock().unwrap().files[path].body.clone();
        let sha = if of_raw { raw_sha.clone() } else { sha256_hex(&body) };
        let extra: &[&str] = if of_raw { &["--checksum-of", "raw"] } else { &[] };
        let (ok, log) = write_image(&srv.url(path), &sha, &dev.path, extra);
        assert!(ok, "{path}: {log}");
        if path == "/frames.zst" {
            assert!(log.contains("decoded 8 zstd frame(s)"), "{path}: not decoded frame by frame:\n{log}");
        }
        // Eight whole zero MiBs (1, 4, … 22) go out as zero runs; the 1000 zero bytes at
        // MiB 8 are written as data.
        assert!(log.contains(", 8388608 zeroed)"), "{path}: {log}");
        let got = read_dev(&dev.path, 0, raw.len() as u64);
        assert!(got == raw, "{path}: the disk differs from the image");
        assert_eq!(read_dev(&dev.path, raw.len() as u64, 4096), vec![0xAA; 4096], "{path}: wrote past the image");
        std::fs::write(&dev.backing, vec![0xAAu8; 64 * MIB as usize]).unwrap();
    }
}

fn flate2_gz(raw: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    std::fs::write(&p, raw).unwrap();
    run(std::process::Command::new("gzip").arg("-1").arg(&p));
    std::fs::read(dir.path().join("x.gz")).unwrap()
}

fn xz(raw: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    std::fs::write(&p, raw).unwrap();
    run(std::process::Command::new("xz").args(["-0", "-T1"]).arg(&p));
    std::fs::read(dir.path().join("x.xz")).unwrap()
}

#[test]
fn corrupt_and_truncated_images_fail_and_leave_the_first_mib_blank() {
    if !disk_prereqs("corrupt_and_truncated_images_fail_and_leave_the_first_mib_blank") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = patterned(16 * MIB as usize);
    let z = zstd(&raw);
    let good_sha = sha256_hex(&z);
    let dev = loopdev(dir.path(), 32 * MIB, 512);
    let srv = Server::start();

    // One flipped byte in the middle: decodes (zstd has no checksum by default) but the sha256 differs.
    let mut corrupt = z.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x40;
    srv.put("/corrupt.zst", File::new(corrupt, "c"));
    // Cut short: the server's Content-Length agrees, so only the decoder and sizes can tell.
    srv.put("/short.zst", File::new(z[..z.len() * 2 / 3].to_vec(), "s"));
    // The same in frames, each with a checksum: the frame's decoder catches it.
    let zf = zstd_frames(&raw, 4 * MIB as usize);
    let frames_sha = sha256_hex(&zf);
    let mut corrupt = zf.clone();
    let (third, mib) = (zstd_frames(&raw[..8 * MIB as usize], 4 * MIB as usize).len(), MIB as usize);
    corrupt[third + zstd_frames(&raw[8 * mib..12 * mib], 4 * mib).len() / 2] ^= 0x40;
    srv.put("/corrupt-frames.zst", File::new(corrupt, "cf"));
    srv.put("/short-frames.zst", File::new(zf[..zf.len() * 2 / 3].to_vec(), "sf"));
    // Raw and cut short, with the metadata's raw size.
    srv.put("/short.raw", File::new(raw[..raw.len() - 3 * MIB as usize].to_vec(), "r"));

    for (path, sha, extra, want) in [
        ("/corrupt.zst", good_sha.as_str(), &[][..], "sha256"),
        ("/short.zst", good_sha.as_str(), &[][..], "zstd"),
        ("/corrupt-frames.zst", frames_sha.as_str(), &[][..], "zstd frame 2 at byte"),
        ("/short-frames.zst", frames_sha.as_str(), &[][..], "zstd"),
        ("/short.raw", &sha256_hex(&raw)[..], &["--raw-size", "16777216", "--checksum-of", "raw"][..], "16777216"),
    ] {
        // The disk held a bootable-looking first MiB before.
        std::fs::write(&dev.backing, vec![0x55u8; 32 * MIB as usize]).unwrap();
        let (ok, log) = write_image(&srv.url(path), sha, &dev.path, extra);
        assert!(!ok, "{path} was accepted");
        assert!(log.contains(want), "{path}: the error does not say {want:?}:\n{log}");
        assert!(log.contains("first MiB") || log.contains("decoding"), "{path}: {log}");
        let head = read_dev(&dev.path, 0, MIB);
        assert!(head.iter().all(|&b| b == 0), "{path}: the first MiB is not blank");
        assert_ne!(head, raw[..MIB as usize], "{path}: the image's first MiB is on the disk");
    }
}

#[test]
fn dropped_connections_resume_byte_identical() {
    if !disk_prereqs("dropped_connections_resume_byte_identical") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = patterned(24 * MIB as usize);
    let z = zstd(&raw);
    let n = z.len() as u64;
    let dev = loopdev(dir.path(), 32 * MIB, 512);
    let srv = Server::start();
    srv.put("/i.zst", File::new(z.clone(), "v1"));
    // Early, inside the first chunk, mid-stream twice, one byte before the end; plus a stall
    // longer than the read timeout (counts as a drop).
    srv.faults(
        "/i.zst",
        Faults {
            drop_at: vec![1000, n / 3, n / 3 + 70_000, n - 1],
            stall_at: Some((n / 2, Duration::from_secs(4))),
            ..Default::default()
        },
    );
    let (ok, log) = write_image(&srv.url("/i.zst"), &sha256_hex(&z), &dev.path, &["--read-timeout", "1"]);
    assert!(ok, "{log}");
    assert!(read_dev(&dev.path, 0, raw.len() as u64) == raw, "the disk differs from the image");
    let log_entries = srv.log();
    let ranges: Vec<String> = log_entries.iter().filter_map(|l| l.headers.get("range").cloned()).collect();
    // Everything the server sent before the stall reached the client: the resume after the
    // read timeout starts exactly at the stall.
    let want: Vec<String> = [1000, n / 3, n / 3 + 70_000, n / 2, n - 1].iter().map(|o| format!("bytes={o}-")).collect();
    assert_eq!(ranges, want, "each drop resumes exactly where it stopped");
    for l in log_entries.iter().filter(|l| l.headers.contains_key("range")) {
        assert_eq!(l.headers.get("if-range").map(String::as_str), Some("\"v1\""));
        assert_eq!(l.status, 206);
    }
    assert!(log.contains("5 resumes, 0 restarts"), "{log}");
}

#[test]
fn a_file_replaced_mid_download_restarts_cleanly() {
    if !disk_prereqs("a_file_replaced_mid_download_restarts_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let old = patterned(16 * MIB as usize);
    let mut new = old.clone();
    for b in new.iter_mut().step_by(4099) {
        *b = b.wrapping_add(1);
    }
    let (zo, zn) = (zstd(&old), zstd(&new));
    let dev = loopdev(dir.path(), 32 * MIB, 512);
    let srv = Server::start();
    srv.put("/i.zst", File::new(zo.clone(), "old"));
    srv.faults(
        "/i.zst",
        Faults { replace_at: Some((zo.len() as u64 / 2, File::new(zn.clone(), "new"))), ..Default::default() },
    );
    // The metadata names the new image (its sha256): a splice of old and new would fail it.
    let (ok, log) = write_image(&srv.url("/i.zst"), &sha256_hex(&zn), &dev.path, &[]);
    assert!(ok, "{log}");
    assert!(read_dev(&dev.path, 0, new.len() as u64) == new, "the disk is not the new image");
    let log_entries = srv.log();
    let resumed = log_entries.iter().find(|l| l.headers.contains_key("range")).expect("a resume was tried");
    assert_eq!(resumed.status, 200, "If-Range with the old ETag gets the whole new file");
    assert!(log.contains("restarting the stream from byte 0"), "{log}");
    assert!(log.contains("0 resumes, 1 restarts"), "{log}");

    // A server with no validators cannot be resumed safely: it restarts too.
    let srv2 = Server::start();
    let mut f = File::new(zo.clone(), "x");
    f.etag = None;
    srv2.put("/i.zst", f);
    srv2.faults("/i.zst", Faults { drop_at: vec![zo.len() as u64 / 2], ..Default::default() });
    let (ok, log) = write_image(&srv2.url("/i.zst"), &sha256_hex(&zo), &dev.path, &[]);
    assert!(ok, "{log}");
    assert!(log.contains("no ETag or Last-Modified"), "{log}");
    assert!(read_dev(&dev.path, 0, old.len() as u64) == old);
}

#[test]
fn four_k_sector_disk() {
    if !disk_prereqs("four_k_sector_disk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = patterned(8 * MIB as usize + 4096 * 3);
    let dev = loopdev(dir.path(), 16 * MIB, 4096);
    let srv = Server::start();
    srv.put("/i.zst", File::new(zstd(&raw), "a"));
    let body = srv.state.lock().unwrap().files["/i.zst"].body.clone();
    let (ok, log) = write_image(&srv.url("/i.zst"), &sha256_hex(&body), &dev.path, &[]);
    assert!(ok, "{log}");
    assert!(read_dev(&dev.path, 0, raw.len() as u64) == raw);
}

#[test]
fn an_image_larger_than_the_disk_stops_cleanly() {
    if !disk_prereqs("an_image_larger_than_the_disk_stops_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = patterned(40 * MIB as usize);
    let dev = loopdev(dir.path(), 16 * MIB, 512);
    let srv = Server::start();
    srv.put("/i.zst", File::new(zstd(&raw), "a"));
    srv.put("/frames.zst", File::new(zstd_frames(&raw, 2 * MIB as usize), "b"));
    // No raw size given: the writer finds out mid-stream and the pipeline winds down, with
    // frame decoders busy ahead of it or without.
    for path in ["/i.zst", "/frames.zst"] {
        let body = srv.state.lock().unwrap().files[path].body.clone();
        let (ok, log) = write_image(&srv.url(path), &sha256_hex(&body), &dev.path, &[]);
        assert!(!ok, "{path}");
        assert!(log.contains("larger than") && log.contains(&dev.path.display().to_string()), "{path}: {log}");
        assert!(read_dev(&dev.path, 0, MIB).iter().all(|&b| b == 0), "{path}: first MiB blank");
    }
    let body = srv.state.lock().unwrap().files["/i.zst"].body.clone();
    // Given up front, it is refused before anything is written.
    let (ok, log) = write_image(&srv.url("/i.zst"), &sha256_hex(&body), &dev.path, &["--raw-size", "41943040"]);
    assert!(!ok && log.contains("does not fit"), "{log}");
}

/// A vendor's SHA512SUMS gives a SHA-512: the stream is checked against it (and a wrong one
/// fails, leaving the first MiB blank as for SHA-256).
#[test]
fn sha512_digests_are_checked() {
    use sha2::{Digest, Sha512};
    if !disk_prereqs("sha512_digests_are_checked") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = patterned(4 * MIB as usize);
    let dev = loopdev(dir.path(), 16 * MIB, 512);
    let srv = Server::start();
    srv.put("/i.zst", File::new(zstd(&raw), "a"));
    let body = srv.state.lock().unwrap().files["/i.zst"].body.clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let good = hex(&Sha512::digest(&body[..]));
    let (ok, log) = write_image(&srv.url("/i.zst"), &good, &dev.path, &["--algo", "sha512"]);
    assert!(ok && log.contains(&format!("sha512 {good} ok")), "{log}");
    assert!(read_dev(&dev.path, 0, raw.len() as u64) == raw);

    std::fs::write(&dev.backing, vec![0u8; 16 * MIB as usize]).unwrap();
    let wrong = hex(&Sha512::digest(b"another file"));
    let (ok, log) = write_image(&srv.url("/i.zst"), &wrong, &dev.path, &["--algo", "sha512"]);
    assert!(!ok && log.contains("sha512 of the downloaded bytes"), "{log}");
    assert_eq!(read_dev(&dev.path, 0, MIB), vec![0u8; MIB as usize], "the first MiB was written");
    // A SHA-256 is not taken for a SHA-512.
    let (ok, log) = write_image(&srv.url("/i.zst"), &sha256_hex(&body), &dev.path, &["--algo", "sha512"]);
    assert!(!ok && log.contains("128 hex digits"), "{log}");
}

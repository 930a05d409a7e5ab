//! qcow2 images through `installer write-image` onto loop devices, from the test HTTP
//! server: fixtures made here with `qemu-img convert -O qcow2` (v2 and v3, zlib and zstd
//! clusters, 64 KiB and 2 MiB clusters, extended L2 entries, a sparse image) land on the
//! disk byte for byte as `qemu-img convert -O raw` writes them; bad files (truncated, an L2
//! entry past the end, a compressed cluster that does not decode, a backing file, a virtual
//! size larger than the disk) are refused with the reason and the first MiB left blank; a
//! dropped connection resumes.

mod support;

use std::path::Path;
use std::process::Command;

use osie_api::qcow2::{Header, HEADER_READ};
use support::http::{Faults, File, Server};
use support::*;

/// 20 MiB of noise with zero MiBs (they stay unallocated in the qcow2), half-compressible
/// text in places, and data in the first MiB and at the very end.
fn patterned(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x: u32 = 777;
    for (i, b) in v.iter_mut().enumerate() {
        let mb = i / MIB as usize;
        if mb % 4 == 2 {
            continue;
        }
        if mb % 4 == 1 {
            *b = b"osie qcow2 text "[i % 16];
            continue;
        }
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    v
}

fn qemu_img(args: &[&str]) {
    run(Command::new("qemu-img").args(args));
}

/// `raw` converted with `opts`; the file's bytes.
fn qcow2(dir: &Path, raw: &Path, name: &str, opts: &[&str]) -> Vec<u8> {
    let out = dir.join(name);
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(opts);
    args.extend([raw.to_str().unwrap(), out.to_str().unwrap()]);
    qemu_img(&args);
    std::fs::read(out).unwrap()
}

/// What `qemu-img convert -O raw` makes of `file`.
fn reference(dir: &Path, file: &[u8]) -> Vec<u8> {
    let (q, r) = (dir.join("ref.qcow2"), dir.join("ref.raw"));
    std::fs::write(&q, file).unwrap();
    qemu_img(&["convert", "-O", "raw", q.to_str().unwrap(), r.to_str().unwrap()]);
    std::fs::read(r).unwrap()
}

fn write_image(url: &str, sha: &str, dev: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["write-image", "--url", url, "--sha256", sha, "--disk", dev.to_str().unwrap()];
    args.extend_from_slice(extra);
    installer(&args)
}

fn prereqs(test: &str) -> bool {
    disk_prereqs(test) && osie_testkit::require_tools(test, &["qemu-img"])
}

#[test]
fn qcow2_variants_land_as_qemu_img_converts_them() {
    let test = "qcow2_variants_land_as_qemu_img_converts_them";
    if !prereqs(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = patterned(20 * MIB as usize + 3 * 512);
    let raw_path = dir.path().join("disk.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    // Sparse: 48 MiB on the disk, three small islands of data.
    let sparse_path = dir.path().join("sparse.raw");
    let mut sparse = vec![0u8; 48 * MIB as usize];
    for (at, n) in [(4096usize, 70_000usize), (30 * MIB as usize + 12_345, 5000), (48 * MIB as usize - 512, 512)] {
        sparse[at..at + n].copy_from_slice(&raw[at % (8 * MIB as usize)..at % (8 * MIB as usize) + n]);
    }
    std::fs::write(&sparse_path, &sparse).unwrap();
    let dev = loopdev(dir.path(), 64 * MIB, 512);
    let srv = Server::start();
    let cases: [(&str, &Path, &[&str]); 8] = [
        ("plain", &raw_path, &[]),
        ("v2", &raw_path, &["-o", "compat=0.10"]),
        ("zlib", &raw_path, &["-c"]),
        ("zstd", &raw_path, &["-c", "-o", "compression_type=zstd"]),
        ("2m", &raw_path, &["-o", "cluster_size=2M"]),
        ("2m-zlib", &raw_path, &["-c", "-o", "cluster_size=2M"]),
        ("extended-l2", &raw_path, &["-o", "extended_l2=on,cluster_size=128K"]),
        ("sparse", &sparse_path, &[]),
    ];
    for (name, src, opts) in cases {
        let file = qcow2(dir.path(), src, &format!("{name}.qcow2"), opts);
        let want = reference(dir.path(), &file);
        let path = format!("/{name}.qcow2");
        srv.put(&path, File::new(file.clone(), name));
        // The disk held other data: unallocated clusters must really become zeros.
        std::fs::write(&dev.backing, vec![0xAAu8; 64 * MIB as usize]).unwrap();
        let format: &[&str] = if name == "zlib" { &["--format", "qcow2"] } else { &[] };
        let (ok, log) = write_image(&srv.url(&path), &sha256_hex(&file), &dev.path, format);
        assert!(ok, "{name}: {log}");
        assert!(log.contains("qcow2 v"), "{name}: {log}");
        let got = read_dev(&dev.path, 0, want.len() as u64);
        assert!(got == want, "{name}: the disk differs from qemu-img convert -O raw");
        assert_eq!(read_dev(&dev.path, want.len() as u64, 4096), vec![0xAA; 4096], "{name}: wrote past the image");
        // The tables were read with Range requests, the file once from byte 0.
        let log_entries = srv.log();
        let whole = log_entries.iter().filter(|l| l.path == path && !l.headers.contains_key("range")).count();
        assert_eq!(whole, 1, "{name}: the file was downloaded {whole} times");
    }
}

/// The first L2 table's offset and the file's cluster size.
fn first_l2(file: &[u8]) -> (usize, u64) {
    let h = Header::parse(&file[..HEADER_READ as usize], file.len() as u64).unwrap();
    let (at, len) = h.l1_range();
    let l1 = &file[at as usize..(at + len) as usize];
    (h.l2_tables(l1).unwrap()[0].offset as usize, h.cluster_size())
}

#[test]
fn bad_qcow2_files_are_refused_and_leave_the_first_mib_blank() {
    let test = "bad_qcow2_files_are_refused_and_leave_the_first_mib_blank";
    if !prereqs(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = patterned(12 * MIB as usize);
    let raw_path = dir.path().join("disk.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    let good = qcow2(dir.path(), &raw_path, "good.qcow2", &[]);
    let zlib = qcow2(dir.path(), &raw_path, "zlib.qcow2", &["-c"]);

    let truncated = good[..good.len() / 2].to_vec();
    let mut past_eof = good.clone();
    let (l2, _) = first_l2(&past_eof);
    past_eof[l2 + 8..l2 + 16].copy_from_slice(&((1u64 << 40) | 1 << 63).to_be_bytes());
    // The first compressed cluster's bytes overwritten with garbage (noise is stored
    // uncompressed: the first is the text at MiB 1).
    let mut undecodable = zlib.clone();
    let (l2, cs) = first_l2(&undecodable);
    let entry = |i: usize| u64::from_be_bytes(undecodable[l2 + 8 * i..l2 + 8 * i + 8].try_into().unwrap());
    let first = (0..(cs / 8) as usize).find(|&i| entry(i) & 1 << 62 != 0).expect("a compressed cluster");
    let host = (entry(first) & ((1 << (62 - (cs.trailing_zeros() - 8))) - 1)) as usize;
    undecodable[host..host + 64].fill(0xff);
    let undecodable_err = format!("compressed cluster for disk byte {} (file byte {host})", first as u64 * cs);
    let base = dir.path().join("good.qcow2");
    let overlay = dir.path().join("overlay.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-b", base.to_str().unwrap(), "-F", "qcow2", overlay.to_str().unwrap()]);
    let huge = dir.path().join("huge.qcow2");
    qemu_img(&["create", "-f", "qcow2", huge.to_str().unwrap(), "1T"]);

    let dev = loopdev(dir.path(), 32 * MIB, 512);
    let srv = Server::start();
    srv.put("/good.qcow2", File::new(good.clone(), "g"));
    let cases = [
        ("truncated", truncated, "points outside the file"),
        ("past-eof", past_eof, "for disk byte 65536 (table at"),
        ("undecodable", undecodable, undecodable_err.as_str()),
        ("backing", std::fs::read(&overlay).unwrap(), "has a backing file"),
        ("huge", std::fs::read(&huge).unwrap(), "virtual size (1099511627776 bytes) does not fit on"),
    ];
    for (name, file, want) in cases {
        let path = format!("/{name}.qcow2");
        srv.put(&path, File::new(file.clone(), name));
        std::fs::write(&dev.backing, vec![0x55u8; 32 * MIB as usize]).unwrap();
        let (ok, log) = write_image(&srv.url(&path), &sha256_hex(&file), &dev.path, &[]);
        assert!(!ok, "{name} was accepted");
        assert!(log.contains(want), "{name}: the error does not say {want:?}:\n{log}");
        assert!(read_dev(&dev.path, 0, MIB).iter().all(|&b| b == 0), "{name}: the first MiB is not blank");
    }
    // A sha256 over the raw bytes cannot be checked for qcow2: refused before anything.
    let raw_sha = ["--checksum-of", "raw", "--format", "qcow2"];
    let (ok, log) = write_image(&srv.url("/huge.qcow2"), &sha256_hex(b""), &dev.path, &raw_sha);
    assert!(!ok && log.contains("covers the downloaded file"), "{log}");
    // Found out from the magic (`auto`): the hash stage says so.
    let (ok, log) = write_image(&srv.url("/good.qcow2"), &sha256_hex(b""), &dev.path, &raw_sha[..2]);
    assert!(!ok && log.contains("its sha256 covers the download"), "{log}");
}

#[test]
fn a_dropped_qcow2_download_resumes() {
    let test = "a_dropped_qcow2_download_resumes";
    if !prereqs(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = patterned(24 * MIB as usize);
    let raw_path = dir.path().join("disk.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    let file = qcow2(dir.path(), &raw_path, "i.qcow2", &[]);
    let want = reference(dir.path(), &file);
    let n = file.len() as u64;
    let dev = loopdev(dir.path(), 32 * MIB, 512);
    let srv = Server::start();
    srv.put("/i.qcow2", File::new(file.clone(), "q1"));
    srv.faults("/i.qcow2", Faults { drop_at: vec![n * 2 / 3, n - 1], ..Default::default() });
    let (ok, log) = write_image(&srv.url("/i.qcow2"), &sha256_hex(&file), &dev.path, &[]);
    assert!(ok, "{log}");
    assert!(read_dev(&dev.path, 0, want.len() as u64) == want, "the disk differs from qemu-img convert -O raw");
    let resumed: Vec<String> = srv
        .log()
        .iter()
        .filter(|l| l.headers.contains_key("if-range"))
        .filter_map(|l| l.headers.get("range").cloned())
        .collect();
    assert_eq!(resumed, [format!("bytes={}-", n * 2 / 3), format!("bytes={}-", n - 1)]);
    assert!(log.contains("2 resumes, 0 restarts"), "{log}");
}

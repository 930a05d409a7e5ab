//! `installer install --metadata-url A,B` against two real `bootsvc serve` instances of one
//! site: metadata, events and the image start on A; A is SIGKILLed while the image streams;
//! the install completes on B, the image verified (sha256). With B's copy of the image
//! carrying the same size and mtime (what `cp -p` or `rsync -a` keep) the download resumes
//! there; with another mtime it starts over from byte 0 on B.
//!
//! The list of instances is the one A renders into the machine's iPXE script (each instance
//! names the other in `[http] peers`).
//!
//! And against the test HTTP server (two of them on loopback): a `503` moves metadata and
//! events to the next server and they stay there; a `404` for the image is an answer, and
//! the next server is not asked.
//!
//! The network: A's namespace holds a bridge with A's address; B's namespace and the
//! machine's (the installer's) hang on it by veths. The bridge's port towards the machine is
//! shaped to 32 Mbit/s, so the image takes seconds and the kill lands mid-stream. Each
//! instance has its own inventory (the same record), state and copy of the image.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc::channel;
use std::time::Duration;

use osie_api::BootParams;
use osie_testkit::site::config::Admin;
use osie_testkit::site::{self, Dir, Launch, Site};
use osie_testkit::ChildGuard;
use support::http::{File, Server};
use support::*;

const A: &str = "192.0.2.1";
const B: &str = "192.0.2.2";
const MACHINE: &str = "192.0.2.11";
const MAC: &str = "52:54:00:fa:11:01";
const TOKEN: &str = "failover-token-0123456789abcdef";
const IMAGE: &str = "failover.raw";

/// One instance: its tree (artifacts, the image and its manifest, the machine's record) and
/// config; not started.
fn instance(bin: &Path, address: &str, image: &[u8], mtime: std::time::SystemTime) -> Site {
    let dir = Dir::temp("osie-failover-").unwrap();
    for sub in ["tftp", "artifacts", "images", "machines"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    std::fs::write(dir.path().join("artifacts/vmlinuz"), b"kernel").unwrap();
    std::fs::write(dir.path().join("artifacts/initramfs.img"), b"initramfs").unwrap();
    let file = dir.path().join("images").join(IMAGE);
    std::fs::write(&file, image).unwrap();
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(mtime).unwrap();
    let manifest = serde_json::json!({
        "name": "failover", "file": IMAGE, "format": "raw", "size": image.len(), "raw_size": image.len(),
        "sha256": sha256_hex(image), "checksum_of": "compressed"
    });
    std::fs::write(dir.path().join("images/failover.json"), manifest.to_string()).unwrap();
    let mut c = site::Config::new("lo", address.parse().unwrap());
    c.dhcp.enabled = Some(false);
    c.tftp.enabled = Some(false);
    c.admin = Some(Admin::with_token(TOKEN));
    // Each instance names the other in `[http] peers`.
    let peer = if address == A { B } else { A };
    c.http.peers = vec![format!("http://{peer}:8080")];
    let s = Site::new(Launch::new(bin), dir, c).unwrap();
    let record = serde_json::json!({
        "hostname": "fo-1", "macs": [MAC], "ip": {"address": MACHINE, "prefix": 24},
        "netboot": {"allow": true},
        "install": {"image": {"name": "failover"}, "gpt": {"grow_last_partition": true}},
        "cloud_init": {"user_data": "#cloud-config\n{}\n"}
    });
    s.machine("fo-1", &record.to_string()).unwrap();
    s
}

fn kill_mid_image(test: &str, same_mtime: bool) {
    if !disk_prereqs(test) || !osie_testkit::require_tools(test, &["curl", "ip", "tc"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Raw, so the download is as long as the image: 48 MiB take 12 s at 32 Mbit/s.
    let img = build_image(dir.path(), 48 * MIB, 512).raw;
    let sha = sha256_hex(&img);
    let t = std::time::UNIX_EPOCH + Duration::new(1_790_000_000, 123_456_789);
    let t_b = if same_mtime { t } else { t + Duration::from_secs(1) };
    // The installer does not depend on bootsvc: the kit builds it.
    let bin = site::bootsvc_binary().unwrap();
    let a = instance(&bin, A, &img, t);
    let b = instance(&bin, B, &img, t_b);

    let bridge = a.lan().unwrap();
    a.attach(&bridge, &b.ns, Some(&format!("{B}/24"))).unwrap();
    let host = osie_testkit::Netns::new().unwrap();
    let (port, _) = a.ns.veth(&host, Some(&bridge), Some(MAC), Some(&format!("{MACHINE}/24"))).unwrap();
    a.ns.run(
        "tc",
        &["qdisc", "add", "dev", &port, "root", "tbf", "rate", "32mbit", "burst", "64kb", "latency", "200ms"],
    )
    .unwrap();
    a.start().unwrap();
    b.start().unwrap();

    // The list the installer gets is the one A renders into the machine's iPXE script.
    let script = a.get(&format!("/boot/{MAC}.ipxe")).text();
    let kernel = script.lines().find(|l| l.starts_with("kernel ")).unwrap_or_else(|| panic!("{script}"));
    let params = BootParams::parse(kernel.split(" || ").next().unwrap()).unwrap();
    assert_eq!(params.urls(), [format!("http://{A}:8080"), format!("http://{B}:8080")], "{kernel}");
    assert!(kernel.contains(&format!(" || kernel --name vmlinuz http://{B}:8080/artifacts/vmlinuz ")), "{kernel}");
    let urls = params.urls().join(",");

    let dev = loopdev(dir.path(), 64 * MIB, 512);
    let mut cmd = host.cmd(env!("CARGO_BIN_EXE_installer"));
    cmd.args(["install", "--metadata-url", &urls, "--mac", MAC, "--disk", dev.path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn("installer", &mut cmd).unwrap();
    let stderr = child.child.stderr.take().unwrap();
    let (line_tx, lines) = channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = line_tx.send(l.clone());
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    // The first progress line: the image is streaming from A.
    let progress = lines.iter().find(|l| l.contains("image: ")).expect("the installer ended before the image streamed");
    assert!(!progress.contains("100.0%"), "the image was through before the kill: {progress}");
    a.kill9();
    let status = osie_testkit::wait_for("the installer to finish", Duration::from_secs(120), || {
        child.child.try_wait().ok().flatten()
    })
    .unwrap();
    let log = reader.join().unwrap();
    eprintln!("--- installer ---\n{log}");
    assert!(status.success(), "the install failed after A was killed:\n{log}");

    // Metadata came from A, the rest went to B, the image verified.
    assert!(log.contains(&format!("metadata from http://{A}:8080/metadata")), "{log}");
    assert!(log.contains(&format!("bootsvc http://{A}:8080 failed (")), "the failover is logged:\n{log}");
    assert!(log.contains(&format!("going on with http://{B}:8080")), "{log}");
    let verified = log.lines().find(|l| l.contains("event image-verified")).expect("no image-verified event");
    assert!(verified.contains(&format!("sha256 {sha} ok")), "{verified}");
    assert!(verified.contains(&format!("from http://{B}:8080/images/{IMAGE}")), "{verified}");
    if same_mtime {
        assert!(log.contains(&format!("resumed http://{B}:8080/images/{IMAGE} at byte ")), "no resume on B:\n{log}");
        assert!(verified.contains("0 restarts"), "the same validator must resume, not restart: {verified}");
    } else {
        assert!(log.contains("restarting the stream from byte 0"), "{log}");
        assert!(verified.contains("1 restarts"), "another validator starts over: {verified}");
    }
    // The disk: the image's bytes outside what the install changes on purpose (GPT headers,
    // the grown root filesystem with its seed), and a clean GPT.
    let got = read_dev(&dev.path, 0, 12 * MIB);
    assert!(got[..440] == img[..440], "boot code");
    assert!(got[34 * 512..] == img[34 * 512..12 * MIB as usize], "the BIOS boot and EFI partitions differ");
    assert_sgdisk_clean(&dev.path);

    // B stored the rest of the install, the first event there carrying the failover note.
    let on_b = stored(&b, MAC);
    let phases: Vec<&str> = on_b.iter().map(|(p, _)| p.as_str()).collect();
    for want in ["image-verified", "gpt-fixed", "cloud-init-seeded", "installed"] {
        assert!(phases.contains(&want), "B has no {want}: {phases:?}");
    }
    assert!(!phases.contains(&"metadata"), "the metadata event went to A: {phases:?}");
    let note = format!("[failover: http://{A}:8080 failed (");
    assert!(on_b[0].1.contains(&note), "B's first event carries the note: {:?}", on_b[0]);
    assert_eq!(on_b.iter().filter(|(_, m)| m.contains(&note)).count(), 1, "the note is sent once: {on_b:?}");
}

#[test]
fn a_killed_instance_hands_over_and_the_image_resumes() {
    kill_mid_image("a_killed_instance_hands_over_and_the_image_resumes", true);
}

#[test]
fn another_validator_restarts_the_image_on_the_next_instance() {
    kill_mid_image("another_validator_restarts_the_image_on_the_next_instance", false);
}

/// A whole-disk image (zstd) on `srv` at `/images/os.raw.zst`, unless `missing`, and the
/// metadata naming it there.
fn serve_image(srv: &Server, z: &[u8], raw_len: usize, missing: bool) {
    if !missing {
        srv.put("/images/os.raw.zst", File::new(z.to_vec(), "os-1"));
    }
    let md = serde_json::json!({
        "instance_id": "i-fo", "hostname": "fo-2", "mac": MAC,
        "install": {
            "image": {"url": srv.url("/images/os.raw.zst"), "sha256": sha256_hex(z), "size": z.len(),
                      "raw_size": raw_len, "format": "zstd"},
            "gpt": {"grow_last_partition": true},
        },
        "cloud_init": {"user_data": "#cloud-config\n{}\n"},
    });
    srv.set_metadata(&md.to_string());
}

fn requests(srv: &Server, path: &str) -> Vec<u16> {
    srv.log().iter().filter(|l| l.path.starts_with(path)).map(|l| l.status).collect()
}

#[test]
fn a_5xx_moves_on_and_a_404_is_an_answer() {
    let test = "a_5xx_moves_on_and_a_404_is_an_answer";
    if !disk_prereqs(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = build_image(dir.path(), 32 * MIB, 512).raw;
    let z = zstd(&raw);
    let dev = loopdev(dir.path(), 48 * MIB, 512);

    // A answers 503 to everything of bootsvc's (restarting for ever); B works.
    let (a, b) = (Server::start(), Server::start());
    serve_image(&a, &z, raw.len(), false);
    serve_image(&b, &z, raw.len(), false);
    {
        let mut s = a.state.lock().unwrap();
        (s.fail_metadata, s.fail_events) = (u32::MAX, u32::MAX);
    }
    let list = format!("{},{}", a.url(""), b.url(""));
    let (ok, log) =
        installer(&["install", "--metadata-url", &list, "--mac", MAC, "--disk", dev.path.to_str().unwrap()]);
    assert!(ok, "{log}");
    assert_eq!(requests(&a, "/metadata"), [503], "asked once, then B stays in use");
    assert!(requests(&a, "/events").is_empty() && requests(&a, "/images").is_empty(), "{:?}", a.log());
    let evs = b.events();
    assert_eq!(evs.first().map(|e| e.phase), Some(osie_api::Phase::Metadata));
    assert_eq!(evs.last().map(|e| e.phase), Some(osie_api::Phase::Installed));
    // The console log went along, under the run's id, to its end (flushed before exit); the
    // metadata read named the run too.
    let lines = b.log_lines();
    assert!(lines.iter().any(|l| l.contains("event installed")), "{lines:#?}");
    let run = evs[0].run_id.clone().unwrap();
    assert!(b.state.lock().unwrap().logs.iter().all(|c| c.run_id == run && c.machine.to_string() == MAC));
    let md = b.log().into_iter().find(|l| l.path == "/metadata").unwrap();
    assert_eq!(md.headers.get("x-osie-run"), Some(&run), "{md:?}");
    let note =
        format!("[failover: {} failed (GET {}/metadata: server answered 503 Service Unavailable", a.url(""), a.url(""));
    assert!(evs[0].message.contains(&note), "{}", evs[0].message);
    assert!(evs[1..].iter().all(|e| !e.message.contains("failover")), "the note is sent once");

    // A's metadata names an image A does not have: 404 is an answer, B is not asked for it.
    let (a, b) = (Server::start(), Server::start());
    serve_image(&a, &z, raw.len(), true);
    serve_image(&b, &z, raw.len(), false);
    let list = format!("{},{}", a.url(""), b.url(""));
    let (ok, log) =
        installer(&["install", "--metadata-url", &list, "--mac", MAC, "--disk", dev.path.to_str().unwrap()]);
    assert!(!ok, "{log}");
    assert!(log.contains("404"), "{log}");
    assert_eq!(requests(&a, "/images"), [404]);
    assert!(requests(&b, "/images").is_empty() && requests(&b, "/metadata").is_empty(), "{:?}", b.log());
    let failed = a.events().pop().expect("events went to A");
    assert_eq!(failed.phase, osie_api::Phase::Failed);
    assert!(read_dev(&dev.path, 0, MIB).iter().all(|&x| x == 0), "the first MiB stays blank");
}

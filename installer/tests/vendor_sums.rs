//! A record whose image digest comes from a vendor's signed checksums file, end to end: a
//! real `bootsvc serve` (keyring configured) fetches `SHA512SUMS` and its signature, checks
//! them, and gives the real installer the SHA-512 digest, which the installer checks the
//! image against. A checksums file changed after it was signed is refused by bootsvc
//! (`GET /metadata` → 409): the installer fails with bootsvc's reason in its `failed`
//! event, and the disk is not touched.
//!
//! The vendor's files are kept in bootsvc's own images directory and fetched from there over
//! HTTP, as from a mirror: the path is the one a vendor's URL takes.

mod support;

use osie_testkit::gpg::Gpg;
use osie_testkit::site::config::Admin;
use osie_testkit::site::{self, Dir, Launch, Site};
use support::*;

const BOOTSVC: &str = "192.0.2.1";
const TOKEN: &str = "vendor-sums-token-0123456789abcdef";
/// (MAC, address, checksums file): one machine per case.
const GOOD: (&str, &str, &str) = ("52:54:00:5e:00:01", "192.0.2.21", "SHA512SUMS");
const CHANGED: (&str, &str, &str) = ("52:54:00:5e:00:02", "192.0.2.22", "changed/SHA512SUMS");
const IMAGE: &str = "vendor-cloud-amd64.raw";

fn sha512_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha512};
    Sha512::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn the_installer_checks_the_vendor_digest_and_a_changed_file_is_refused() {
    let test = "the_installer_checks_the_vendor_digest_and_a_changed_file_is_refused";
    if !disk_prereqs(test) || !osie_testkit::require_tools(test, &["gpg", "ip"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = build_image(tmp.path(), 24 * MIB, 512).raw;

    // The vendor: a key, SHA512SUMS in the BSD form Debian's cloud images use, signed.
    let g = Gpg::new();
    g.run(&["--quick-gen-key", "Cloud Team <cloud@example.org>", "ed25519", "sign", "never"]);
    let sums = format!("SHA512 ({IMAGE}) = {}\nSHA512 (other.qcow2) = {}\n", sha512_hex(&img), "0".repeat(128));
    let sig = g.sign(sums.as_bytes(), "cloud@example.org", true, &[]);

    let dir = Dir::temp("osie-vendor-sums-").unwrap();
    for sub in ["tftp", "artifacts", "images/changed", "machines"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    std::fs::write(dir.path().join("artifacts/vmlinuz"), b"kernel").unwrap();
    std::fs::write(dir.path().join("artifacts/initramfs.img"), b"initramfs").unwrap();
    let images = dir.path().join("images");
    std::fs::write(images.join(IMAGE), &img).unwrap();
    std::fs::write(images.join("SHA512SUMS"), &sums).unwrap();
    std::fs::write(images.join("SHA512SUMS.sign"), &sig).unwrap();
    // The image's digest changed after signing (a tampered mirror).
    let changed = sums.replace(&sha512_hex(&img), &sha512_hex(b"another image"));
    std::fs::write(images.join("changed/SHA512SUMS"), changed).unwrap();
    std::fs::write(dir.path().join("vendor-keys.asc"), g.export("cloud@example.org")).unwrap();

    let mut c = site::Config::new("lo", BOOTSVC.parse().unwrap());
    c.dhcp.enabled = Some(false);
    c.tftp.enabled = Some(false);
    c.admin = Some(Admin::with_token(TOKEN));
    c.images_keyring = Some("vendor-keys.asc".into());
    let s = Site::new(Launch::new(site::bootsvc_binary().unwrap()), dir, c).unwrap();
    let base = format!("http://{BOOTSVC}:8080/images");
    for (i, (mac, ip, sums)) in [GOOD, CHANGED].into_iter().enumerate() {
        let record = serde_json::json!({
            "hostname": format!("vendor-{i}"), "macs": [mac], "ip": {"address": ip, "prefix": 24},
            "netboot": {"allow": true},
            "install": {"image": {"url": format!("{base}/{IMAGE}"), "format": "raw",
                                  "checksums_url": format!("{base}/{sums}"),
                                  "signature_url": format!("{base}/SHA512SUMS.sign")}},
            "cloud_init": {"user_data": "#cloud-config\n{}\n"}
        });
        s.machine(&format!("vendor-{i}"), &record.to_string()).unwrap();
    }
    let bridge = s.lan().unwrap();
    s.start().unwrap();

    let install = |(mac, ip, _): (&str, &str, &str)| {
        let host = osie_testkit::Netns::new().unwrap();
        s.ns.veth(&host, Some(&bridge), Some(mac), Some(&format!("{ip}/24"))).unwrap();
        let dev = loopdev(tmp.path(), 32 * MIB, 512);
        let out = host
            .cmd(env!("CARGO_BIN_EXE_installer"))
            .args(["install", "--metadata-url", &format!("http://{BOOTSVC}:8080"), "--mac", mac])
            .args(["--disk", dev.path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("--- installer for {mac} ---\n{log}");
        (out.status.success(), log, dev)
    };

    // Signed and listed: the installer checks the image against the vendor's SHA-512.
    let (ok, log, dev) = install(GOOD);
    assert!(ok, "the install failed:\n{log}");
    let events = stored(&s, GOOD.0);
    let verified = events.iter().find(|(p, _)| p == "image-verified").unwrap_or_else(|| panic!("{events:#?}"));
    assert!(verified.1.starts_with(&format!("sha512 {} ok", sha512_hex(&img))), "{verified:?}");
    assert!(events.iter().any(|(p, _)| p == "installed"), "{events:#?}");
    assert!(read_dev(&dev.path, 0, 440) == img[..440], "the image's boot code is on the disk");

    // Changed after signing: bootsvc refuses; the installer fails with the reason and
    // writes nothing.
    let (ok, log, dev) = install(CHANGED);
    assert!(!ok, "an install with a tampered checksums file succeeded:\n{log}");
    assert!(log.contains("409"), "{log}");
    let events = stored(&s, CHANGED.0);
    let failed = events.iter().find(|(p, _)| p == "failed").unwrap_or_else(|| panic!("no failed event: {events:#?}"));
    assert!(failed.1.contains("bad signature") && failed.1.contains("not what it signed"), "{failed:?}");
    assert!(!failed.1.contains('\n'), "one line, for the console and the status page: {failed:?}");
    assert!(failed.1.contains("changed/SHA512SUMS"), "the failure names the file: {failed:?}");
    assert!(!events.iter().any(|(p, _)| p == "disk-wiped" || p == "image-verified"), "{events:#?}");
    assert!(read_dev(&dev.path, 0, MIB).iter().all(|&b| b == 0), "the refused install touched the disk");
}

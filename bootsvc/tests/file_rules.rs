//! One rule for files: `bootsvc check`, the inventory reload and the running server (TFTP
//! and HTTP) accept exactly the same files, because all of them open files through the same
//! jail (`src/jail.rs`). A link leading out of its root (an operator linking `vmlinuz` to
//! `/boot/…`) fails `check` and the reload with a message naming the file, the root and
//! the fix, instead of passing and then being 404 on every request; a hidden file is
//! refused over TFTP as over HTTP.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{write_tree, Options, Site};
use osie_testkit::{require_root, require_tools, wait_for};

fn check(config: &Path) -> (i32, String) {
    let out =
        Command::new(common::bin()).args(["check", "--config"]).arg(config).env_remove("RUST_LOG").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replace `path` by a symlink to `target`.
fn relink(path: &Path, target: impl AsRef<Path>) {
    let _ = std::fs::remove_file(path);
    symlink(target, path).unwrap();
}

#[test]
fn check_refuses_links_the_server_would_not_follow() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let cfg = write_tree(root, &Options::default());
    // The operator keeps the real files elsewhere and links them in.
    let store = root.join("store");
    std::fs::create_dir(&store).unwrap();
    let files = [
        ("artifacts", "vmlinuz", "vmlinuz-6.1"),
        ("artifacts", "initramfs.img", "initramfs-6.1.img"),
        ("images", "debian-12.raw.zst", "debian-12-v1.raw.zst"),
        ("tftp", "undionly.kpxe", "undionly-v1.kpxe"),
    ];
    for (dir, name, stored) in files {
        std::fs::rename(root.join(dir).join(name), store.join(stored)).unwrap();
        relink(&root.join(dir).join(name), store.join(stored));
    }
    relink(&root.join("artifacts/initramfs.img"), "../store/initramfs-6.1.img");

    let (code, out) = check(&cfg);
    assert_eq!(code, 1, "{out}");
    let line = |prefix: String| {
        out.lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{out}"))
            .to_string()
    };
    let r = root.display();
    let kernel = line(format!("{}: artifacts.kernel: {r}/artifacts/vmlinuz is an absolute symlink", cfg.display()));
    assert!(kernel.contains(&format!("(to {r}/store/vmlinuz-6.1)")), "{kernel}");
    assert!(kernel.contains(&format!("copy the file into {r}/artifacts or use a relative link")), "{kernel}");
    let initrd = line(format!(
        "{}: artifacts.initrd: {r}/artifacts/initramfs.img is a symlink pointing outside {r}/artifacts (to ../store/initramfs-6.1.img)",
        cfg.display()
    ));
    assert!(initrd.contains("every request for it would be refused"), "{initrd}");
    line(format!("{}: tftp.root: {r}/tftp/undionly.kpxe is an absolute symlink", cfg.display()));
    line(format!("{r}/images/debian-12.json: file: {r}/images/debian-12.raw.zst is an absolute symlink"));
    assert_eq!(out.lines().count(), 4, "{out}");

    // Moved into their roots and linked relatively: accepted (and served: see below).
    for (dir, name, stored) in files {
        std::fs::rename(store.join(stored), root.join(dir).join(stored)).unwrap();
        relink(&root.join(dir).join(name), stored);
    }
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "{out}");
}

fn image_manifest(site: &Site, name: &str, file: &str, bytes: &[u8]) {
    use sha2::{Digest, Sha256};
    let m = serde_json::json!({
        "name": name, "file": file, "format": "raw", "size": bytes.len(), "sha256": common::hex(&Sha256::digest(bytes))
    });
    let tmp = site.path(&format!("images/.{name}.tmp"));
    std::fs::write(&tmp, m.to_string()).unwrap();
    std::fs::rename(tmp, site.path(&format!("images/{name}.json"))).unwrap();
}

#[test]
fn the_reload_and_the_server_accept_the_same_files() {
    if !common::prerequisites("the_reload_and_the_server_accept_the_same_files") {
        return;
    }
    let mut site = Site::new(Options::default());
    site.start();
    let bytes = common::pattern(4096 + 7, 9);
    std::fs::write(site.path("far.raw"), &bytes).unwrap();

    // An image whose file is an absolute link out of images_dir: the reload refuses it
    // naming the file, and the server would not serve it either.
    relink(&site.path("images/far.raw"), site.path("far.raw"));
    image_manifest(&site, "far", "far.raw", &bytes);
    wait_for("the refusal", Duration::from_secs(10), || site.logs().contains("inventory reload refused").then_some(()))
        .unwrap();
    let logs = site.logs();
    let refusal = logs.lines().find(|l| l.contains("inventory edit refused")).unwrap();
    assert!(refusal.contains("images/far.json: file: "), "{refusal}");
    assert!(
        refusal.contains(&format!("{} is an absolute symlink", site.path("images/far.raw").display())),
        "{refusal}"
    );
    assert_eq!(site.get("/images/far.raw").status, 404);

    // Linked relatively from inside the directory: accepted, and served byte for byte.
    std::fs::rename(site.path("far.raw"), site.path("images/near-real.raw")).unwrap();
    relink(&site.path("images/far.raw"), "near-real.raw");
    wait_for("the reload", Duration::from_secs(10), || {
        site.logs()
            .lines()
            .any(|l| l.contains("inventory reloaded") && l.contains("images now debian-12, far"))
            .then_some(())
    })
    .unwrap();
    let r = site.get("/images/far.raw");
    assert_eq!(r.status, 200);
    assert!(r.body == bytes);
    site.stop();

    // `serve` checks the artifacts the same way: an absolute kernel link stops it at start.
    std::fs::rename(site.path("artifacts/vmlinuz"), site.path("vmlinuz-6.1")).unwrap();
    relink(&site.path("artifacts/vmlinuz"), site.path("vmlinuz-6.1"));
    let (status, logs) = site.start_fails();
    assert!(!status.success());
    assert!(logs.contains("artifacts.kernel: ") && logs.contains("artifacts/vmlinuz is an absolute symlink"), "{logs}");
}

#[test]
fn hidden_files_are_refused_alike_over_tftp_and_http() {
    let t = "hidden_files_are_refused_alike_over_tftp_and_http";
    if !require_root(t) || !require_tools(t, &["curl", "atftp"]) {
        return;
    }
    let mut site = Site::new(Options::default());
    let (client, srv_if, cli_if) = site.segment(None);
    client.ip(&["addr", "add", "192.0.2.60/24", "dev", &cli_if]).unwrap();
    site.serve_on(&srv_if, true);
    std::fs::write(site.path("tftp/.hidden"), b"dot-file").unwrap();
    std::fs::create_dir(site.path("tftp/.git")).unwrap();
    std::fs::write(site.path("tftp/.git/config"), b"dot-dir").unwrap();
    site.start();

    let tftp = |name: &str| {
        let local = site.path(&osie_testkit::unique("got"));
        let o = client.cmd("atftp").args(["--get", "-r", name, "-l", local.to_str().unwrap(), "192.0.2.1"]).output();
        (o.unwrap().status.success(), std::fs::read(&local).unwrap_or_default())
    };
    let http = |path: &str| {
        let o = client
            .cmd("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{}{path}", common::BASE))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    for name in [".hidden", ".git/config", "/.hidden"] {
        let (ok, got) = tftp(name);
        assert!(!ok && !String::from_utf8_lossy(&got).contains("dot-"), "TFTP served {name}");
    }
    for path in ["/ipxe/.hidden", "/ipxe/.git/config"] {
        assert_eq!(http(path), "404", "HTTP {path}");
    }
    // The same root's ordinary file, both ways.
    let (ok, got) = tftp("undionly.kpxe");
    assert!(ok && got == std::fs::read(site.path("tftp/undionly.kpxe")).unwrap());
    assert_eq!(http("/ipxe/undionly.kpxe"), "200");
    assert_eq!(site.metric("osie_dropped_packets_total{reason=\"tftp-hidden\"}"), 2, "{}", site.get("/metrics").text());
    assert_eq!(site.metric("osie_dropped_packets_total{reason=\"tftp-absolute-path\"}"), 1);
}

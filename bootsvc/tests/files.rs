//! Artifacts, images and the TFTP root over HTTP, fetched with real curl from the real
//! `bootsvc serve`: full bodies, HEAD, single ranges, conditional requests, and the path jail.

mod common;

use std::time::Duration;

use common::{pattern, Options, Site};

#[test]
fn artifacts_with_range_head_and_etag() {
    if !common::prerequisites("artifacts_with_range_head_and_etag") {
        return;
    }
    let mut site = Site::new(Options::default());
    site.start();
    let kernel = pattern(3 * 1024 * 1024 + 777, 1);

    let full = site.get("/artifacts/vmlinuz");
    assert_eq!(full.status, 200, "{}", full.stderr);
    assert!(full.body == kernel, "full body differs ({} bytes)", full.body.len());
    assert_eq!(full.header("content-length").as_deref(), Some(kernel.len().to_string().as_str()));
    assert_eq!(full.header("accept-ranges").as_deref(), Some("bytes"));
    let etag = full.header("etag").expect("ETag");
    let last_modified = full.header("last-modified").expect("Last-Modified");

    let head = site.curl(&["-I"], "/artifacts/vmlinuz");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), full.header("content-length"));
    assert_eq!(head.header("etag").as_deref(), Some(etag.as_str()));
    // On the wire: the head and nothing after it.
    let (raw, _) = site.raw(
        b"HEAD /artifacts/vmlinuz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        Duration::from_secs(5),
    );
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n") && raw.ends_with("\r\n\r\n"), "{raw:?}");
    assert!(raw.to_ascii_lowercase().contains(&format!("content-length: {}\r\n", kernel.len())), "{raw:?}");

    let r = site.curl(&["-r", "300000-599999"], "/artifacts/vmlinuz");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range").as_deref(), Some(format!("bytes 300000-599999/{}", kernel.len()).as_str()));
    assert!(r.body == kernel[300000..600000], "range body differs");

    let r = site.curl(&["-H", "Range: bytes=-100"], "/artifacts/vmlinuz");
    assert_eq!(r.status, 206);
    assert!(r.body == kernel[kernel.len() - 100..]);

    let r = site.curl(&["-H", "Range: bytes=99999999-"], "/artifacts/vmlinuz");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range").as_deref(), Some(format!("bytes */{}", kernel.len()).as_str()));

    let inm = format!("If-None-Match: {etag}");
    let r = site.curl(&["-H", &inm], "/artifacts/vmlinuz");
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let ims = format!("If-Modified-Since: {last_modified}");
    assert_eq!(site.curl(&["-H", &ims], "/artifacts/vmlinuz").status, 304);

    // If-Range: the range only while the validator matches, else the whole (new) file.
    let ir = format!("If-Range: {etag}");
    let r = site.curl(&["-H", &ir, "-r", "0-9"], "/artifacts/vmlinuz");
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = site.curl(&["-H", "If-Range: \"stale\"", "-r", "0-9"], "/artifacts/vmlinuz");
    assert_eq!((r.status, r.body.len()), (200, kernel.len()));

    // A changed file gets a new ETag, so a cached copy is fetched again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(site.path("artifacts/vmlinuz"), b"new kernel").unwrap();
    let r = site.curl(&["-H", &inm], "/artifacts/vmlinuz");
    assert_eq!((r.status, r.text().as_str()), (200, "new kernel"));
    assert_ne!(r.header("etag").as_deref(), Some(etag.as_str()));

    // Images and the TFTP root are served the same way.
    let img = site.get("/images/debian-12.raw.zst");
    assert_eq!((img.status, img.body.len()), (200, 512 * 1024 + 3));
    let r = site.curl(&["-r", "0-99"], "/ipxe/undionly.kpxe");
    assert_eq!(r.status, 206);
    assert!(r.body == pattern(70_000, 3)[..100]);
}

#[test]
fn paths_stay_inside_their_directory() {
    if !common::prerequisites("paths_stay_inside_their_directory") {
        return;
    }
    let mut site = Site::new(Options::default());
    std::os::unix::fs::symlink(site.path("admin.token"), site.path("artifacts/token-link")).unwrap();
    std::fs::write(site.path("artifacts/.hidden"), b"x").unwrap();
    site.start();
    for path in [
        "/artifacts/../admin.token",
        "/artifacts/%2e%2e/admin.token",
        "/artifacts/..%2fadmin.token",
        "/artifacts//etc/passwd",
        "/artifacts/%2Fetc%2Fpasswd",
        "/artifacts/token-link",
        "/artifacts/.hidden",
        "/artifacts/nope",
        "/images/../bootsvc.toml",
        "/ipxe/../admin.token",
    ] {
        let r = site.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(!r.text().contains(common::TOKEN), "{path} leaked the token");
    }
    assert_eq!(site.get("/artifacts/initramfs.img").status, 200);
}

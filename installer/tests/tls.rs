//! Images over HTTPS from a server whose certificate is signed by the operator's own CA
//! (`--ca-cert`), against a real TLS server (`openssl s_server -WWW`); and a server the CA
//! did not sign is refused.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use osie_testkit::{require_tools, wait_for, ChildGuard};
use support::*;

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=osie test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

fn make_leaf(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "leaf.pem",
        ],
    );
}

#[test]
fn https_with_the_operators_ca() {
    if !disk_prereqs("https_with_the_operators_ca") || !require_tools("https_with_the_operators_ca", &["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_ca(dir.path(), "other-ca");
    make_leaf(dir.path());
    let raw: Vec<u8> = (0..6 * MIB as usize).map(|i| (i % 253) as u8).collect();
    let z = zstd(&raw);
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("img.zst"), &z).unwrap();

    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _server = ChildGuard::spawn(
        "openssl s_server",
        Command::new("openssl")
            .current_dir(&www)
            .args(["s_server", "-quiet", "-WWW", "-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(dir.path().join("leaf.pem"))
            .arg("-key")
            .arg(dir.path().join("leaf.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    wait_for("s_server to listen", Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .unwrap();

    let dev = loopdev(dir.path(), 16 * MIB, 512);
    let url = format!("https://127.0.0.1:{port}/img.zst");
    let sha = sha256_hex(&z);
    let ca = dir.path().join("ca.pem").display().to_string();
    let other = dir.path().join("other-ca.pem").display().to_string();
    let args = |ca: &str| {
        vec![
            "--ca-cert".to_string(),
            ca.to_string(),
            "write-image".into(),
            "--url".into(),
            url.clone(),
            "--sha256".into(),
            sha.clone(),
            "--disk".into(),
            dev.path.display().to_string(),
        ]
    };
    let a = args(&other);
    let started = std::time::Instant::now();
    let (ok, log) = installer(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok, "a certificate the given CA did not sign was accepted");
    assert!(started.elapsed() < Duration::from_secs(20), "an untrusted certificate is not retried for minutes");
    assert!(log.to_lowercase().contains("certificate"), "{log}");
    let a = args(&ca);
    let (ok, log) = installer(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{log}");
    assert!(read_dev(&dev.path, 0, raw.len() as u64) == raw);
}

//! bootsvc's TFTP server over real sockets in a namespace pair, fetched from with real
//! clients (curl, atftp), and refusing what it must.

mod net;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bootsvc::metrics::Metrics;
use net::{config, dropped, metric, start_tftp, tftp_root, Running};
use osie_testkit::site::config::Dhcp;
use osie_testkit::{require_root, require_tools, Pair};

struct Setup {
    pair: Pair,
    dir: tempfile::TempDir,
    root: PathBuf,
    metrics: Arc<Metrics>,
    _srv: Running,
}

/// A root with the iPXE binaries, a file outside it and a symlink pointing there.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tftp");
    std::fs::create_dir_all(&root).unwrap();
    for f in ["undionly.kpxe", "ipxe.efi", "snponly.efi"] {
        std::fs::copy(tftp_root().join(f), root.join(f)).unwrap();
    }
    std::fs::write(dir.path().join("secret"), b"outside the root").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
    let pair = Pair::new("192.0.2.1/24").unwrap();
    pair.client.ip(&["addr", "add", "192.0.2.2/24", "dev", &pair.client_if]).unwrap();
    let cfg = Arc::new(config(dir.path(), &pair.server_if, Dhcp::default(), &root));
    let metrics = Arc::new(Metrics::new());
    let srv = start_tftp(&pair.server, cfg, metrics.clone()).unwrap();
    Setup { pair, dir, root, metrics, _srv: srv }
}

fn transfers(m: &Metrics, outcome: &str) -> f64 {
    metric(m, &format!("osie_tftp_transfers_total{{outcome=\"{outcome}\"}}"))
}

fn in_flight(m: &Metrics) -> f64 {
    metric(m, "osie_tftp_transfers_in_flight")
}

/// Wait until the in-flight gauge is back to zero (transfers are counted when they end).
fn settle(m: &Metrics) {
    osie_testkit::wait_for("TFTP transfers to end", Duration::from_secs(10), || (in_flight(m) == 0.0).then_some(()))
        .unwrap();
}

fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} ({} bytes) differs from {} ({} bytes)", a.display(), x.len(), b.display(), y.len());
}

#[test]
fn curl_and_atftp_fetch_byte_identical_files() {
    if !require_root("tftp_fetch") || !require_tools("tftp_fetch", &["curl", "atftp"]) {
        return;
    }
    let s = setup();
    let out = s.dir.path().join("curl.kpxe");
    s.pair
        .client
        .run(
            "curl",
            &[
                "-sS",
                "--max-time",
                "30",
                "--tftp-blksize",
                "1468",
                "-o",
                out.to_str().unwrap(),
                "tftp://192.0.2.1/undionly.kpxe",
            ],
        )
        .unwrap();
    same_bytes(&out, &s.root.join("undionly.kpxe"));

    let out2 = s.dir.path().join("atftp.efi");
    s.pair
        .client
        .run(
            "atftp",
            &["--get", "-r", "ipxe.efi", "-l", out2.to_str().unwrap(), "--option", "blksize 1468", "192.0.2.1"],
        )
        .unwrap();
    same_bytes(&out2, &s.root.join("ipxe.efi"));

    settle(&s.metrics);
    assert_eq!(transfers(&s.metrics, "complete"), 2.0);
    let bytes = std::fs::metadata(&out).unwrap().len() + std::fs::metadata(&out2).unwrap().len();
    assert_eq!(metric(&s.metrics, "osie_tftp_bytes_total"), bytes as f64);
}

#[test]
fn windowsize_is_negotiated_and_used() {
    if !require_root("tftp_windowsize") || !require_tools("tftp_windowsize", &["atftp"]) {
        return;
    }
    let s = setup();
    let out = s.dir.path().join("w.efi");
    let o = s
        .pair
        .client
        .run(
            "atftp",
            &[
                "--trace",
                "--get",
                "-r",
                "ipxe.efi",
                "-l",
                out.to_str().unwrap(),
                "--option",
                "blksize 1428",
                "--option",
                "windowsize 16",
                "192.0.2.1",
            ],
        )
        .unwrap();
    same_bytes(&out, &s.root.join("ipxe.efi"));
    let trace = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(trace.contains("windowsize: 16"), "OACK should grant windowsize 16: {trace}");
    // One ACK per window, not per block.
    let blocks = std::fs::metadata(&out).unwrap().len() / 1428 + 1;
    let acks = trace.lines().filter(|l| l.contains("sent ACK")).count() as u64;
    eprintln!("windowsize 16: {acks} ACKs for {blocks} blocks");
    // Without a window it would be one per block.
    assert!(acks > 0 && acks <= blocks / 8, "{acks} ACKs for {blocks} blocks");
}

#[test]
fn escapes_and_writes_are_refused_counted_and_service_continues() {
    if !require_root("tftp_refusals") || !require_tools("tftp_refusals", &["curl", "atftp"]) {
        return;
    }
    let s = setup();
    let get = |remote: &str| {
        let local = s.dir.path().join(osie_testkit::unique("got"));
        let o = s
            .pair
            .client
            .cmd("atftp")
            .args(["--get", "-r", remote, "-l", local.to_str().unwrap(), "192.0.2.1"])
            .output()
            .unwrap();
        let content = std::fs::read(&local).unwrap_or_default();
        (o.status.success(), content, String::from_utf8_lossy(&o.stderr).to_string())
    };
    for (remote, reason) in [
        ("../secret", "tftp-traversal"),
        ("ipxe/../../secret", "tftp-traversal"),
        ("/etc/passwd", "tftp-absolute-path"),
        ("escape", "tftp-symlink-escape"),
    ] {
        let (ok, content, _) = get(remote);
        assert!(!ok, "{remote} was served");
        assert!(!String::from_utf8_lossy(&content).contains("outside"), "{remote}: leaked");
        assert!(!content.starts_with(b"root:"), "{remote}: leaked");
        assert_eq!(dropped(&s.metrics, reason), if remote.starts_with("ipxe/") { 2.0 } else { 1.0 }, "{remote}");
    }
    // curl too, keeping "../" in the URL.
    let o = s.pair.client.cmd("curl").args(["-sS", "--path-as-is", "tftp://192.0.2.1/../secret"]).output().unwrap();
    assert!(!o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("outside"));
    assert_eq!(dropped(&s.metrics, "tftp-traversal"), 3.0);

    // A write request: refused, nothing created.
    let src = s.dir.path().join("upload");
    std::fs::write(&src, b"payload").unwrap();
    let o = s
        .pair
        .client
        .cmd("atftp")
        .args(["--put", "-l", src.to_str().unwrap(), "-r", "uploaded", "192.0.2.1"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "write accepted");
    assert!(!s.root.join("uploaded").exists());
    assert_eq!(dropped(&s.metrics, "tftp-write"), 1.0);
    assert_eq!(transfers(&s.metrics, "refused"), 6.0);

    // Still serving.
    let (ok, content, err) = get("undionly.kpxe");
    assert!(ok, "{err}");
    assert_eq!(content, std::fs::read(s.root.join("undionly.kpxe")).unwrap());
}

/// Send an RRQ for ipxe.efi with tsize and blksize from a fresh socket in the client
/// namespace; returns the OACK, the transfer's address, and the socket.
fn probe_oack(s: &Setup) -> (Vec<u8>, std::net::SocketAddr, UdpSocket) {
    s.pair
        .client
        .spawn(|| {
            let sock = UdpSocket::bind("192.0.2.2:0")?;
            sock.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut rrq = vec![0, 1];
            for part in ["ipxe.efi", "octet", "tsize", "0", "blksize", "1468"] {
                rrq.extend_from_slice(part.as_bytes());
                rrq.push(0);
            }
            sock.send_to(&rrq, "192.0.2.1:69")?;
            let mut buf = [0u8; 1500];
            let (n, from) = sock.recv_from(&mut buf)?;
            Ok((buf[..n].to_vec(), from, sock))
        })
        .join()
        .unwrap()
        .unwrap()
}

/// The UEFI tsize probe: RRQ with tsize, OACK, then the client sends ERROR and walks away.
/// The transfer ends as soon as the ERROR arrives.
#[test]
fn a_transfer_the_client_aborts_ends_at_once() {
    if !require_root("tftp_abandoned") {
        return;
    }
    let s = setup();
    let size = std::fs::metadata(s.root.join("ipxe.efi")).unwrap().len();
    let (oack, from, sock) = probe_oack(&s);
    assert_eq!(&oack[..2], &[0, 6], "OACK");
    let text = String::from_utf8_lossy(&oack[2..]).to_string();
    assert!(text.contains(&format!("tsize\0{size}\0")), "OACK carries the size: {text:?}");
    assert!(text.contains("blksize\u{0}1468\u{0}"), "{text:?}");
    assert_eq!(in_flight(&s.metrics), 1.0, "the OACK opened a transfer");
    // ERROR 0, to the transfer's own port, as EDK2 does after reading tsize.
    let started = Instant::now();
    let mut err = vec![0, 5, 0, 0];
    err.extend_from_slice(b"tsize probe done\0");
    sock.send_to(&err, from).unwrap();
    osie_testkit::wait_for("the aborted transfer to be freed", Duration::from_secs(8), || {
        (in_flight(&s.metrics) == 0.0).then_some(())
    })
    .unwrap();
    let freed_after = started.elapsed();
    eprintln!("aborted transfer freed after {freed_after:?}");
    assert!(freed_after < Duration::from_secs(1), "{freed_after:?}");
    assert_eq!(transfers(&s.metrics, "aborted"), 1.0);
}

/// A client that goes silent after the OACK: the OACK is sent again `max_send_retries`
/// times, `timeout_secs` apart, then the transfer is dropped (4 s with the defaults).
#[test]
fn a_transfer_the_client_abandons_is_freed_after_the_retries() {
    if !require_root("tftp_silent") {
        return;
    }
    let s = setup();
    let (oack, _, sock) = probe_oack(&s);
    let started = Instant::now();
    assert_eq!(&oack[..2], &[0, 6], "OACK");
    // The retransmitted OACKs arrive about a second apart; nothing is answered.
    sock.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let mut again = 0;
    let mut buf = [0u8; 1500];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        assert_eq!(&buf[..n], &oack[..], "the same OACK, sent again");
        again += 1;
    }
    assert_eq!(again, 3, "max_send_retries = 3");
    osie_testkit::wait_for("the abandoned transfer to be freed", Duration::from_secs(8), || {
        (in_flight(&s.metrics) == 0.0).then_some(())
    })
    .unwrap();
    let freed_after = started.elapsed();
    eprintln!("abandoned transfer freed after {freed_after:?}");
    assert!(freed_after >= Duration::from_secs(3) && freed_after < Duration::from_secs(6), "{freed_after:?}");
    assert_eq!(transfers(&s.metrics, "aborted"), 1.0);
}

/// Raise this process's open-file limit to its hard limit (the flood below holds 2,100
/// sockets open).
fn raise_nofile() {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = l.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
    assert!(l.rlim_cur >= 4096, "open-file hard limit {} is too low for this test", l.rlim_max);
}

/// One host on the segment sends 2,100 read requests from as many ports and never answers
/// (each would hold a transfer for 4 s): it gets `max_transfers_per_client` transfers, the
/// rest are refused and counted, and a machine in another namespace on the same segment
/// gets its file at once with a real client.
#[test]
fn a_host_flooding_abandoned_requests_does_not_lock_out_the_others() {
    let t = "tftp_per_client_cap";
    if !require_root(t) || !require_tools(t, &["atftp"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tftp");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(tftp_root().join("ipxe.efi"), root.join("ipxe.efi")).unwrap();
    let lan = net::lan::Lan::new().unwrap();
    let hostile = osie_testkit::Netns::new().unwrap();
    lan.attach(&hostile, Some("192.0.2.66/24")).unwrap();
    let good = osie_testkit::Netns::new().unwrap();
    lan.attach(&good, Some("192.0.2.77/24")).unwrap();
    let cfg = Arc::new(config(dir.path(), &lan.bridge, Dhcp::default(), &root));
    let cap = cfg.tftp.max_transfers_per_client;
    assert_eq!(cap, 8, "the default");
    let metrics = Arc::new(Metrics::new());
    let _srv = start_tftp(&lan.ns, cfg, metrics.clone()).unwrap();

    const FLOOD: usize = 2100;
    let m = metrics.clone();
    let (socks, answers) = hostile
        .spawn(move || {
            raise_nofile();
            let mut rrq = vec![0, 1];
            for part in ["ipxe.efi", "octet", "tsize", "0", "blksize", "1468"] {
                rrq.extend_from_slice(part.as_bytes());
                rrq.push(0);
            }
            let mut socks = Vec::with_capacity(FLOOD);
            for _ in 0..FLOOD {
                let s = UdpSocket::bind("192.0.2.66:0")?;
                s.send_to(&rrq, "192.0.2.1:69")?;
                socks.push(s);
            }
            osie_testkit::wait_for("the flood to be answered", Duration::from_secs(20), || {
                (dropped(&m, "tftp-busy-client") as usize + cap >= FLOOD).then_some(())
            })?;
            // What each request got: an OACK (a transfer, left unanswered) or an ERROR.
            let mut answers = std::collections::BTreeMap::<String, usize>::new();
            let mut buf = [0u8; 1500];
            for s in &socks {
                s.set_read_timeout(Some(Duration::from_millis(200)))?;
                let what = match s.recv(&mut buf) {
                    Ok(_) if buf[..2] == [0, 6] => "oack".to_string(),
                    Ok(n) if buf[..2] == [0, 5] => String::from_utf8_lossy(&buf[4..n - 1]).into_owned(),
                    Ok(_) => "other".into(),
                    Err(_) => "nothing".into(),
                };
                *answers.entry(what).or_default() += 1;
            }
            Ok((socks, answers))
        })
        .join()
        .unwrap()
        .unwrap();
    eprintln!("the flooding host got: {answers:?}");
    assert_eq!(answers.get("oack"), Some(&cap), "{answers:?}");
    assert_eq!(answers.get("Too many transfers from your address, try again"), Some(&(FLOOD - cap)), "{answers:?}");
    assert_eq!(dropped(&metrics, "tftp-busy-client"), (FLOOD - cap) as f64);
    assert_eq!(dropped(&metrics, "tftp-busy"), 0.0);
    assert_eq!(in_flight(&metrics), cap as f64, "the flooding host's transfers are still open");

    // Meanwhile, another machine.
    let out = dir.path().join("good.efi");
    let started = Instant::now();
    let o = good
        .cmd("atftp")
        .args(["--get", "-r", "ipxe.efi", "-l", out.to_str().unwrap(), "--option", "blksize 1468", "192.0.2.1"])
        .output()
        .unwrap();
    let took = started.elapsed();
    eprintln!("the good client's 850 KB took {took:?}");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    same_bytes(&out, &root.join("ipxe.efi"));
    assert!(took < Duration::from_secs(3), "{took:?}");
    drop(socks);
}

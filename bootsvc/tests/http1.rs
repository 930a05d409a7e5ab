//! bootsvc's own HTTP/1.1 connection loop against real clients and raw requests: files go
//! out with sendfile(2) (seen with strace and counted), byte-exact for full, ranged and
//! HEAD requests and keep-alive sequences (curl, Python's urllib as cloud-init uses it);
//! keep-alive after HEAD and 304, pipelining, HTTP/1.0, `Expect: 100-continue`, chunked
//! request bodies, and the framing a smuggler would try, refused.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{pattern, Options, Site, CLIENTS};
use osie_testkit::wait_for;

const KERNEL: usize = 3 * 1024 * 1024 + 777;
const INITRD: usize = 1024 * 1024 + 5;
const IMAGE: usize = 512 * 1024 + 3;

/// One response read off a connection: status, head (lower-case names), body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Read one response from `s` (bytes already read in `buf`), framed as RFC 9112 says: no
/// body for HEAD, 1xx, 204, 304; else Content-Length, chunked, or until close.
fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Answer {
    let mut chunk = [0u8; 65536];
    let fill = |s: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]| -> usize {
        let n = s.read(chunk).unwrap_or(0);
        buf.extend_from_slice(&chunk[..n]);
        n
    };
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        assert!(fill(s, buf, &mut chunk) > 0, "connection closed inside a head: {:?}", String::from_utf8_lossy(buf));
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut a = Answer { status, head, body: Vec::new() };
    if head_request || status < 200 || status == 204 || status == 304 {
        return a;
    }
    if let Some(n) = a.header("content-length").map(|v| v.parse::<usize>().unwrap()) {
        while buf.len() < n {
            assert!(fill(s, buf, &mut chunk) > 0, "closed inside a body");
        }
        a.body = buf.drain(..n).collect();
    } else if a.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let line_end = loop {
                if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                assert!(fill(s, buf, &mut chunk) > 0, "closed inside a chunk");
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap().trim(), 16).unwrap();
            while buf.len() < line_end + 2 + size + 2 {
                assert!(fill(s, buf, &mut chunk) > 0, "closed inside a chunk");
            }
            a.body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        while fill(s, buf, &mut chunk) > 0 {}
        a.body = std::mem::take(buf);
    }
    a
}

/// Whether the server closed the connection (EOF within `wait`).
fn closed(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    matches!(s.read(&mut [0u8; 1]), Ok(0))
}

fn connect() -> TcpStream {
    let s = TcpStream::connect((common::SERVER, 8080)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn files_go_out_with_sendfile_byte_exact() {
    if !common::prerequisites("files_go_out_with_sendfile_byte_exact")
        || !osie_testkit::require_tools("files_go_out_with_sendfile_byte_exact", &["strace", "python3"])
    {
        return;
    }
    let mut site = Site::new(Options::default());
    site.start();
    let (kernel, initrd, image, boot) = (pattern(KERNEL, 1), pattern(INITRD, 2), pattern(IMAGE, 4), pattern(70_000, 3));

    // Every system call of the server that moves bytes to a socket, while clients download.
    let trace = site.path("strace.txt");
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=sendfile,splice,write,writev,sendto,sendmsg", "-e", "signal=none", "-o"])
        .arg(&trace)
        .args(["-p", &site.pid().to_string()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("strace to attach", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{}/status", site.pid()))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("TracerPid:")).map(|l| !l.ends_with("\t0")))
            .filter(|attached| *attached)
    })
    .unwrap();
    let sent_before = site.metric("osie_http_sendfile_bytes_total");

    // Four files on one connection: curl reuses it (num_connects 1, then 0).
    let urls = ["/artifacts/vmlinuz", "/artifacts/initramfs.img", "/images/debian-12.raw.zst", "/ipxe/undionly.kpxe"];
    let mut args = vec!["-sS".to_string(), "-w".into(), "%{http_code}:%{num_connects} ".into()];
    for (i, u) in urls.iter().enumerate() {
        args.extend([format!("{}{u}", common::BASE), "-o".into(), site.path(&format!("f{i}")).display().to_string()]);
    }
    let out = site.ns.cmd("curl").args(&args).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200:1 200:0 200:0 200:0 ",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, want) in [&kernel, &initrd, &image, &boot].iter().enumerate() {
        assert!(std::fs::read(site.path(&format!("f{i}"))).unwrap() == **want, "{} differs", urls[i]);
    }
    // Ranges, a suffix range, HEAD.
    let r = site.curl(&["-r", "1000000-2999999"], "/artifacts/vmlinuz");
    assert!(r.status == 206 && r.body == kernel[1_000_000..3_000_000], "{}", r.status);
    let r = site.curl(&["-H", "Range: bytes=-70000"], "/images/debian-12.raw.zst");
    assert!(r.status == 206 && r.body == image[IMAGE - 70_000..]);
    let r = site.curl(&["-I"], "/artifacts/initramfs.img");
    assert_eq!((r.status, r.header("content-length")), (200, Some(INITRD.to_string())));
    // cloud-init's client: Python's urllib (HTTP/1.1, Connection: close).
    let py = "import sys, urllib.request\nsys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())";
    let out = site.ns.cmd("python3").args(["-c", py, &format!("{}/artifacts/vmlinuz", common::BASE)]).output().unwrap();
    assert!(out.status.success() && out.stdout == kernel, "urllib: {}", String::from_utf8_lossy(&out.stderr));

    let sent = site.metric("osie_http_sendfile_bytes_total") - sent_before;
    let want = KERNEL + INITRD + IMAGE + 70_000 + 2_000_000 + 70_000 + KERNEL;
    assert_eq!(sent, want as u64, "every body byte went through sendfile");
    // SAFETY: signalling the strace child this test started.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    let _ = strace.wait();
    let t = std::fs::read_to_string(&trace).unwrap();
    let sendfiles = t.lines().filter(|l| l.contains("sendfile(")).count();
    // At least one per GET (four files, two ranges, urllib).
    assert!(sendfiles >= urls.len() + 3, "{sendfiles} sendfile calls:\n{t}");
    // Nothing of a file's size went through a user-space write: the largest is a head or a
    // small answer (/metrics).
    let biggest = t
        .lines()
        .filter(|l| ["write(", "writev(", "sendto(", "sendmsg("].iter().any(|c| l.contains(c)))
        .filter_map(|l| l.rsplit(" = ").next().and_then(|n| n.trim().parse::<i64>().ok()))
        .max()
        .unwrap_or(0);
    assert!(biggest < 64 * 1024, "a write of {biggest} bytes:\n{t}");
}

#[test]
fn keep_alive_pipelining_and_http_1_0() {
    if !common::prerequisites("keep_alive_pipelining_and_http_1_0") {
        return;
    }
    let mut site = Site::new(Options::default());
    site.start();
    let etag = site.curl(&["-I"], "/artifacts/initramfs.img").header("etag").unwrap();
    let kernel = pattern(KERNEL, 1);
    site.ns
        .spawn(move || {
            // Five requests in one write: HEAD, a 304, a 404, a range, then Connection: close.
            let mut s = connect();
            let reqs = format!(
                "HEAD /artifacts/vmlinuz HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET /artifacts/initramfs.img HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n\
                 GET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
                 GET /artifacts/vmlinuz HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n\
                 GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            s.write_all(reqs.as_bytes())?;
            let mut buf = Vec::new();
            let a = read_answer(&mut s, &mut buf, true);
            assert_eq!((a.status, a.header("content-length")), (200, Some(KERNEL.to_string())), "{}", a.head);
            let a = read_answer(&mut s, &mut buf, false);
            assert_eq!(a.status, 304, "{}", a.head);
            assert!(a.header("content-length").is_none() && a.header("etag").is_some(), "{}", a.head);
            let a = read_answer(&mut s, &mut buf, false);
            assert_eq!((a.status, a.body.as_slice()), (404, &b"not found\n"[..]));
            let a = read_answer(&mut s, &mut buf, false);
            assert_eq!((a.status, a.body.as_slice()), (206, &kernel[10..20]));
            let a = read_answer(&mut s, &mut buf, false);
            assert_eq!((a.status, a.body.as_slice()), (200, &b"ok\n"[..]));
            assert_eq!(a.header("connection").as_deref(), Some("close"));
            assert!(buf.is_empty() && closed(&mut s, Duration::from_secs(5)), "closed after Connection: close");

            // HTTP/1.0: closes unless asked to keep alive.
            let mut s = connect();
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")?;
            let mut buf = Vec::new();
            assert_eq!(read_answer(&mut s, &mut buf, false).status, 200);
            assert!(closed(&mut s, Duration::from_secs(5)), "HTTP/1.0 closes by default");
            let mut s = connect();
            for _ in 0..2 {
                s.write_all(b"GET /artifacts/vmlinuz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")?;
                let a = read_answer(&mut s, &mut buf, false);
                assert_eq!(a.header("connection").as_deref(), Some("keep-alive"), "{}", a.head);
                assert!(a.status == 200 && a.body == kernel);
            }
            Ok(())
        })
        .join()
        .unwrap()
        .unwrap();
}

#[test]
fn request_bodies_expect_continue_and_refused_framing() {
    if !common::prerequisites("request_bodies_expect_continue_and_refused_framing") {
        return;
    }
    let mut site = Site::new(Options::default());
    site.machine(
        "n1",
        &format!(r#"{{"hostname":"n1","macs":["52:54:00:00:01:01"],"ip":{{"address":"{}","prefix":24}}}}"#, CLIENTS[0]),
    );
    site.start();
    let from = CLIENTS[0].parse().unwrap();
    let server = std::net::SocketAddrV4::new(common::SERVER.parse().unwrap(), 8080);
    site.ns
        .spawn(move || {
            let event = |seq: u32| format!(r#"{{"machine":"52:54:00:00:01:01","phase":"network","time":"t","run_id":"r","seq":{seq}}}"#);
            // Expect: 100-continue: the interim answer first, the body after it.
            let mut s = osie_testkit::http::connect(from, server, None)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let body = event(0);
            s.write_all(
                format!(
                    "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )?;
            let mut buf = Vec::new();
            let a = read_answer(&mut s, &mut buf, false);
            assert_eq!(a.status, 100, "{}", a.head);
            s.write_all(body.as_bytes())?;
            let a = read_answer(&mut s, &mut buf, false);
            assert_eq!(a.status, 200, "{}: {}", a.head, String::from_utf8_lossy(&a.body));
            // A chunked body, in pieces, with a trailer, on the same connection.
            let body = event(1);
            let (x, y) = body.split_at(10);
            s.write_all(
                format!(
                    "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{x}\r\n",
                    x.len()
                )
                .as_bytes(),
            )?;
            std::thread::sleep(Duration::from_millis(100));
            s.write_all(format!("{:x};ext=1\r\n{y}\r\n0\r\nX-Trailer: t\r\n\r\n", y.len()).as_bytes())?;
            let a = read_answer(&mut s, &mut buf, false);
            assert_eq!(a.status, 200, "{}: {}", a.head, String::from_utf8_lossy(&a.body));
            assert!(String::from_utf8_lossy(&a.body).contains("\"duplicate\":false"));

            // Framing a smuggler would use: 400 and the connection closes.
            for bad in [
                "POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
                "GET /healthz HTTP/1.1\r\n\r\n",
                "POST /events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            ] {
                let mut s = connect();
                s.write_all(bad.as_bytes())?;
                let mut buf = Vec::new();
                let a = read_answer(&mut s, &mut buf, false);
                assert_eq!(a.status, 400, "{bad:?}: {}", a.head);
                assert!(closed(&mut s, Duration::from_secs(5)), "{bad:?}: still open");
            }
            // A request body that never comes: 408 after request_timeout_secs (5).
            let mut s = connect();
            s.write_all(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")?;
            s.set_read_timeout(Some(Duration::from_secs(15)))?;
            let a = read_answer(&mut s, &mut Vec::new(), false);
            assert_eq!(a.status, 408, "{}", a.head);
            Ok(())
        })
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(site.metric("osie_dropped_packets_total{reason=\"http-malformed\"}"), 4);
    assert_eq!(site.metric("osie_dropped_packets_total{reason=\"http-timeout\"}"), 1);
    assert_eq!(site.metric("osie_events_total{kind=\"network\"}"), 2);
}

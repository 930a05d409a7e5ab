//! The admin API is apart from the machines: its own listener (`admin.listen`: the loopback
//! by default, or a Unix socket), nothing under `/admin/` on the machines' listener, the CLI
//! finding it through `--config`; and a source that keeps sending wrong tokens is locked out
//! (429, `Retry-After`) while an operator elsewhere is served.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use common::{Options, Site, TOKEN};
use osie_testkit::http;

const MAC: &str = "52:54:00:00:01:01";

fn record() -> String {
    format!(r#"{{"hostname":"n1","macs":["{MAC}"],"ip":{{"address":"{}","prefix":24}}}}"#, common::CLIENTS[0])
}

#[test]
fn admin_api_on_its_own_listener_found_by_the_cli() {
    if !common::prerequisites("admin_api_on_its_own_listener_found_by_the_cli") {
        return;
    }
    let mut site = Site::new(Options::default());
    site.machine("n1", &record());
    site.start();
    let cfg = site.config.to_str().unwrap().to_string();
    let auth = format!("Authorization: Bearer {TOKEN}");
    // The machines' listener has no admin path, with or without the token.
    for path in ["/admin/machines", &format!("/admin/machines/{MAC}"), &format!("/admin/machines/{MAC}/events")] {
        assert_eq!(site.curl(&["-H", &auth], path).status, 404, "{path}");
    }
    assert_eq!(site.curl(&["-X", "POST", "-H", &auth], &format!("/admin/machines/{MAC}/reinstall")).status, 404);
    assert_eq!(site.metric("osie_http_requests_total{route=\"unmatched\",status=\"404\"}"), 4);
    // The admin listener (127.0.0.1:8081, the default) has it; the CLI finds it in the config.
    assert_eq!(site.admin("GET", "/admin/machines").status, 200);
    assert_eq!(site.admin("GET", "/healthz").status, 404, "the admin listener serves the admin API only");
    let out = site.cli(&["machines", "--config", &cfg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("n1 ")));
    assert!(site.logs().contains("admin=127.0.0.1:8081"), "the start line names the admin listener");
    site.stop();

    // On a Unix socket: only root may connect (mode 0600); the CLI and curl reach it.
    let sock = site.path("admin.sock");
    let text = std::fs::read_to_string(&site.config).unwrap();
    let text = text.replace(
        "token_file = \"admin.token\"",
        &format!("token_file = \"admin.token\"\nlisten = \"{}\"", sock.display()),
    );
    std::fs::write(&site.config, text).unwrap();
    site.start();
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket() && meta.permissions().mode() & 0o777 == 0o600, "{meta:?}");
    let out = site.cli(&["machine", MAC, "show", "--config", &cfg, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = site.cli(&[
        "machines",
        "--url",
        &format!("unix:{}", sock.display()),
        "--token-file",
        site.path("admin.token").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = site.curl_url(&["--unix-socket", sock.to_str().unwrap(), "-H", &auth], "http://localhost/admin/machines");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(site.admin("GET", "/admin/machines").status == 0, "nothing on 127.0.0.1:8081 now");
    // A restart replaces the socket the last run left.
    site.stop();
    site.start();
    assert!(site.cli(&["machines", "--config", &cfg]).status.success());
}

#[test]
fn bulk_reinstall_chooses_machines_by_site_and_label() {
    if !common::prerequisites("bulk_reinstall_chooses_machines_by_site_and_label") {
        return;
    }
    let mut site = Site::new(Options::default());
    let machines = [("n1", Some("fra1"), "r1"), ("n2", Some("fra1"), "r2"), ("n3", None, "r1")];
    let mac = |i: usize| format!("52:54:00:00:02:0{i}");
    for (i, (name, at, rack)) in machines.iter().enumerate() {
        let at = at.map(|s| format!(r#""site":"{s}","#)).unwrap_or_default();
        site.machine(
            name,
            &format!(
                r#"{{"hostname":"{name}",{at}"labels":{{"rack":"{rack}"}},"macs":["{}"],"ip":{{"address":"{}","prefix":24}},
                    "netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#,
                mac(i),
                common::CLIENTS[i]
            ),
        );
    }
    site.start();
    // Each installs (its `installed` clears netboot) …
    for i in 0..3 {
        let ev = format!(
            r#"{{"machine":"{}","phase":"installed","time":"2026-01-01T00:00:00Z","run_id":"r{i}","seq":0}}"#,
            mac(i)
        );
        assert_eq!(site.post_json_as(common::CLIENTS[i], "/events", &ev).status, 200);
    }
    let allowed = || -> Vec<bool> {
        let v: serde_json::Value = serde_json::from_str(&site.admin_cli(&["machines", "--json"]).unwrap()).unwrap();
        let mut by_name: Vec<(String, bool)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["hostname"].as_str().unwrap().to_string(), m["netboot"]["allowed"].as_bool().unwrap()))
            .collect();
        by_name.sort();
        by_name.into_iter().map(|(_, a)| a).collect()
    };
    assert_eq!(allowed(), [false, false, false]);
    // … and is chosen for a reinstall by its labels and site.
    let out = site.admin_cli(&["reinstall", "--label", "rack=r1"]).unwrap();
    assert!(out.starts_with("2 machines with label rack=r1: n1, n3\n"), "{out}");
    assert!(out.contains("2 machines: 2 done, 0 failed"), "{out}");
    assert_eq!(allowed(), [true, false, true]);
    let out = site.admin_cli(&["reinstall", "--site", "fra1", "--label", "rack=r2"]).unwrap();
    assert!(out.starts_with("1 machine with site fra1, label rack=r2: n2\n"), "{out}");
    assert_eq!(allowed(), [true, true, true]);
    let listed = site.admin_cli(&["machines", "--site", "fra1"]).unwrap();
    let names: Vec<&str> = listed.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, ["n1", "n2"], "a record without a site is not fra1's: {listed}");
    // A choice that matches nothing, or is not a choice, fails and says why.
    let e = site.admin_cli(&["reinstall", "--label", "rack=r9"]).unwrap_err().to_string();
    assert!(e.ends_with("no machine matches label rack=r9 (of 3 machines)"), "{e}");
    let e = site.admin_cli(&["reinstall", &mac(0), "--site", "fra1"]).unwrap_err().to_string();
    assert!(e.contains("not both"), "{e}");
    let e = site.admin_cli(&["reinstall"]).unwrap_err().to_string();
    assert!(e.contains("which machines?"), "{e}");
    let e = site.admin_cli(&["reinstall", "--label", "rack"]).unwrap_err().to_string();
    assert!(e.contains("give KEY=VALUE"), "{e}");
}

/// One keep-alive connection from `from`, `n` requests with `auth`: the statuses and the
/// `Retry-After` values seen.
fn burst(from: Ipv4Addr, to: SocketAddrV4, auth: &str, n: usize) -> std::io::Result<(Vec<u16>, Vec<u64>)> {
    let mut s = http::connect(from, to, None)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = format!("GET /admin/machines HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n");
    let (mut statuses, mut retry) = (Vec::new(), Vec::new());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..n {
        s.write_all(req.as_bytes())?;
        // Each answer is small and has a Content-Length.
        let (head_end, len) = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= p + 4 + len {
                    break (p + 4, len);
                }
            }
            let k = s.read(&mut chunk)?;
            if k == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..k]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        statuses.push(head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0));
        if let Some(v) = head.lines().find_map(|l| l.strip_prefix("retry-after: ")) {
            retry.push(v.trim().parse().unwrap_or(0));
        }
        buf.drain(..head_end + len);
    }
    Ok((statuses, retry))
}

#[test]
fn wrong_tokens_lock_their_source_out_not_the_operator() {
    if !common::prerequisites("wrong_tokens_lock_their_source_out_not_the_operator") {
        return;
    }
    // The admin API on a management address, 198.51.100.1; the hostile host on that network
    // in its own namespace.
    let mgmt = Ipv4Addr::new(198, 51, 100, 1);
    let mut site = Site::new(Options { admin_listen: Some(format!("{mgmt}:8081")), ..Default::default() });
    site.machine("n1", &record());
    let (hostile, srv_if, cli_if) = site.segment(None);
    site.ns.ip(&["addr", "add", &format!("{mgmt}/24"), "dev", &srv_if]).unwrap();
    hostile.ip(&["addr", "add", "198.51.100.66/24", "dev", &cli_if]).unwrap();
    site.start();
    let admin = SocketAddrV4::new(mgmt, 8081);

    // 300 wrong tokens in a burst, then the right one, from the hostile host.
    let (statuses, retry) = hostile
        .spawn(move || {
            let from = Ipv4Addr::new(198, 51, 100, 66);
            let (mut st, mut re) = burst(from, admin, "Bearer wrong-token-0123456789abcdef", 300)?;
            let (st2, re2) = burst(from, admin, &format!("Bearer {TOKEN}"), 1)?;
            st.extend(st2);
            re.extend(re2);
            Ok((st, re))
        })
        .join()
        .unwrap()
        .unwrap();
    let count = |code| statuses[..300].iter().filter(|s| **s == code).count();
    let (unauthorized, locked) = (count(401), count(429));
    eprintln!("300 wrong tokens: {unauthorized} × 401, {locked} × 429");
    assert_eq!(unauthorized + locked, 300, "{statuses:?}");
    assert!(unauthorized <= 8 && locked >= 292, "nearly all refused unread: {unauthorized} × 401");
    assert_eq!(statuses[300], 429, "the right token from a locked-out source is refused too");
    assert!(retry.iter().all(|s| (1..=300).contains(s)) && retry.len() == locked + 1, "{retry:?}");

    // The operator, at another source, is served; with the CLI too.
    let ok = site.ns.spawn(move || Ok(burst(mgmt, admin, &format!("Bearer {TOKEN}"), 3)?)).join().unwrap().unwrap();
    assert_eq!(ok.0, [200, 200, 200]);
    let cfg = site.config.to_str().unwrap().to_string();
    let out = site.cli(&["machines", "--config", &cfg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert_eq!(site.metric("osie_dropped_packets_total{reason=\"http-admin-unauthorized\"}"), unauthorized as u64);
    assert_eq!(site.metric("osie_dropped_packets_total{reason=\"http-admin-locked-out\"}"), locked as u64 + 1);
    // Logged once per lock-out, not once per attempt.
    let logs = site.logs();
    let lockouts = logs.matches("wrong tokens from 198.51.100.66; everything from it is refused").count();
    assert!((1..=unauthorized).contains(&lockouts), "{lockouts} lock-out lines:\n{logs}");
    assert!(logs.lines().count() < 100, "one line per attempt?\n{logs}");
}

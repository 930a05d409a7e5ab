//! Hostile HTTP input against the real service: oversized request heads (431), oversized
//! bodies declared or chunked (413), malformed requests, a slow client. Each is refused,
//! counted in /metrics, and the service keeps answering.

mod common;

use std::time::Duration;

use common::{Options, Site, CLIENTS};

#[test]
fn oversized_heads_and_bodies_are_refused_and_counted() {
    if !common::prerequisites("oversized_heads_and_bodies_are_refused_and_counted") {
        return;
    }
    let mut site = Site::new(Options::default());
    site.machine(
        "n1",
        &format!(r#"{{"hostname":"n1","macs":["52:54:00:00:01:01"],"ip":{{"address":"{}","prefix":24}}}}"#, CLIENTS[0]),
    );
    site.start();

    // max_header_bytes is 8192 in the test config.
    let big = format!("X-Padding: {}", "a".repeat(10_000));
    let r = site.curl(&["-H", &big], "/healthz");
    assert_eq!(r.status, 431, "{}", r.stderr);
    let many: Vec<String> = (0..400).map(|i| format!("X-H{i}: v")).collect();
    let mut args = Vec::new();
    for h in &many {
        args.extend(["-H", h.as_str()]);
    }
    assert_eq!(site.curl(&args, "/healthz").status, 431, "too many headers");
    assert_eq!(site.get("/healthz").text(), "ok\n", "still answering");

    // max_body_bytes is 65536: a declared length over it, and a chunked body over it.
    let body = format!(
        r#"{{"machine":"52:54:00:00:01:01","phase":"network","time":"t","message":"{}"}}"#,
        "x".repeat(100_000)
    );
    let file = site.path("big.json");
    std::fs::write(&file, &body).unwrap();
    let at_file = format!("@{}", file.display());
    let r = site.curl(
        &["--interface", CLIENTS[0], "-H", "Content-Type: application/json", "--data-binary", &at_file],
        "/events",
    );
    assert_eq!(r.status, 413, "{}", r.text());
    let r = site.curl(
        &[
            "--interface",
            CLIENTS[0],
            "-H",
            "Content-Type: application/json",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &at_file,
        ],
        "/events",
    );
    assert_eq!(r.status, 413, "chunked: {}", r.text());
    let r = site.admin_curl(
        &["-H", "Content-Type: application/json", "--data-binary", &at_file],
        "/admin/machines/52:54:00:00:01:01/reinstall",
    );
    assert_eq!(r.status, 413, "admin: {}", r.text());
    assert_eq!(site.get("/healthz").status, 200);

    // A small event still goes through.
    let ok = r#"{"machine":"52:54:00:00:01:01","phase":"network","time":"t"}"#;
    assert_eq!(site.post_json_as(CLIENTS[0], "/events", ok).status, 200);

    let metrics = site.get("/metrics").text();
    let count = |line: &str| site.metric(line);
    assert_eq!(count("osie_dropped_packets_total{reason=\"http-header-too-large\"}"), 2, "{metrics}");
    assert_eq!(count("osie_dropped_packets_total{reason=\"http-body-too-large\"}"), 3, "{metrics}");
    assert_eq!(count("osie_http_requests_total{route=\"unparsed\",status=\"431\"}"), 2, "{metrics}");
    assert_eq!(count("osie_http_requests_total{route=\"/events\",status=\"413\"}"), 2, "{metrics}");
}

#[test]
fn malformed_and_slow_requests_do_not_stop_the_service() {
    if !common::prerequisites("malformed_and_slow_requests_do_not_stop_the_service") {
        return;
    }
    let mut site = Site::new(Options::default());
    site.start();
    let (resp, _) = site.raw(b"GARBAGE \x01\x02 HTTP/9.9\r\n\r\n".to_vec(), Duration::from_secs(5));
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp:?}");
    // A client that sends half a head is cut off after request_timeout_secs (5 s here).
    let (resp, took) = site.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec(), Duration::from_secs(30));
    assert!(took < Duration::from_secs(15), "slow client held the connection for {took:?}");
    assert!(!resp.contains("200 OK"), "{resp:?}");
    assert_eq!(site.get("/healthz").status, 200);
    assert_eq!(site.metric("osie_dropped_packets_total{reason=\"http-malformed\"}"), 1);
    assert_eq!(site.metric("osie_dropped_packets_total{reason=\"http-header-timeout\"}"), 1);
}

//! The boot trace end to end over real sockets: a machine on a veth segment asks DHCP
//! (udhcpc), fetches its boot program over TFTP (curl) and asks for a file that is not there
//! (atftp), fetches its script and kernel, and then — the kernel removed from the artifacts —
//! fails to; the admin API and the CLI show every step and say it is stuck at the kernel.
//! The installer's log goes through `POST /log` with its bounds (a full run, an oversized
//! chunk, a claim from another address, control characters) and survives a restart; the
//! phase durations land in `/metrics` as histograms; steps of MACs not in the inventory are
//! counted, not stored.

mod common;

use std::time::Duration;

use common::{Options, Site};
use osie_testkit::netns::Netns;
use osie_testkit::{require_root, require_tools};

const MAC: &str = "02:00:00:00:7e:01";
const IP: &str = "192.0.2.50";

fn post(site: &Site, ns: &Netns, path: &str, json: &str, mac: Option<&str>) -> (u16, String) {
    let f = site.path(&format!("body-{}.json", json.len()));
    std::fs::write(&f, json).unwrap();
    let body = format!("@{}", f.display());
    let h = mac.map(|m| format!("X-Osie-Mac: {m}"));
    let mut args = vec!["-H", "Content-Type: application/json", "--data-binary", &body];
    if let Some(h) = &h {
        args.extend(["-H", h.as_str()]);
    }
    let r = site.curl_in(ns, &args, path);
    (r.status, r.text())
}

fn chunk(seq: u64, lines: Vec<String>) -> String {
    serde_json::json!({"machine": MAC, "run_id": "run0001", "seq": seq, "lines": lines}).to_string()
}

fn event(phase: &str, seq: u64) -> String {
    serde_json::json!({"machine": MAC, "phase": phase, "time": "t", "run_id": "run0001", "seq": seq}).to_string()
}

/// The trace's steps as `kind detail` strings, waiting until `want` steps are there.
fn trace_of(site: &Site, want: usize) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..50 {
        last = site.admin_json(&format!("/admin/machines/{MAC}/trace"), Duration::from_secs(5)).unwrap();
        if last["steps"].as_array().map_or(0, Vec::len) >= want {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("fewer than {want} steps: {last:#}");
}

#[test]
fn every_step_of_a_boot_is_traced_and_the_stuck_one_named() {
    let t = "every_step_of_a_boot_is_traced_and_the_stuck_one_named";
    if !require_root(t) || !require_tools(t, &["curl", "udhcpc", "atftp"]) {
        return;
    }
    let mut site = Site::new(Options::default());
    let (client, srv_if, cli_if) = site.segment(Some(MAC));
    site.serve_on(&srv_if, true);
    site.machine(
        "n",
        &format!(
            r#"{{"hostname":"traced","macs":["{MAC}"],"ip":{{"address":"{IP}","prefix":24}},
                "netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#
        ),
    );
    // The smallest run log allowed, to fill it quickly.
    let text = std::fs::read_to_string(&site.config).unwrap();
    std::fs::write(&site.config, text + "\n[trace]\nlog_run_bytes = 65536\n").unwrap();
    site.start();
    let cfg = site.config.to_str().unwrap().to_string();

    // DHCP as PXE firmware would (vendor class), then TFTP: the boot program, a missing file.
    let dir = tempfile::tempdir().unwrap();
    let env =
        osie_testkit::dhcp::udhcpc(&client, &cli_if, dir.path(), &["-V", "PXEClient:Arch:00000:UNDI:002001"]).unwrap();
    assert_eq!(osie_testkit::dhcp::env_value(&env, "ip").as_deref(), Some(IP), "{env}");
    client.ip(&["addr", "add", &format!("{IP}/24"), "dev", &cli_if]).unwrap();
    let out = dir.path().join("undionly.kpxe");
    client
        .run("curl", &["-sS", "--tftp-blksize", "1432", "-o", out.to_str().unwrap(), "tftp://192.0.2.1/undionly.kpxe"])
        .unwrap();
    let missing =
        client.cmd("atftp").args(["--get", "-r", "nope.efi", "-l", "/dev/null", "192.0.2.1"]).output().unwrap();
    assert!(!missing.status.success());
    // The script and the kernel; then the kernel is gone from the artifacts.
    assert_eq!(site.curl_in(&client, &[], &format!("/boot/{MAC}.ipxe")).status, 200);
    assert_eq!(site.curl_in(&client, &["-o", "/dev/null"], "/artifacts/vmlinuz").status, 200);
    std::fs::remove_file(site.path("artifacts/vmlinuz")).unwrap();
    assert_eq!(site.curl_in(&client, &["-o", "/dev/null"], "/artifacts/vmlinuz").status, 404);

    let v = trace_of(&site, 6);
    let kinds: Vec<String> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let extra = match s["kind"].as_str().unwrap() {
                "dhcp" => format!("{} {}", s["message"].as_str().unwrap(), s["answer"].as_str().unwrap_or("-")),
                "tftp" => format!("{} {}", s["file"].as_str().unwrap(), s["outcome"].as_str().unwrap()),
                "script" => s["script"].as_str().unwrap().to_string(),
                "download" => format!("{} {}", s["artifact"].as_str().unwrap(), s["status"]),
                k => k.to_string(),
            };
            format!("{} {extra}", s["kind"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "dhcp discover offer",
            "dhcp request ack",
            "tftp undionly.kpxe complete",
            "tftp nope.efi refused",
            "script installer",
            "download kernel 200",
            "download kernel 404"
        ],
        "{v:#}"
    );
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps[0]["vendor_class"], "PXEClient:Arch:00000:UNDI:002001");
    assert_eq!(steps[2]["bytes"], 70_000);
    assert!(steps[2]["options"].as_array().unwrap().iter().any(|o| o == "blksize=1432"), "{v:#}");
    assert_eq!(steps[5]["bytes"], 3 * 1024 * 1024 + 777);
    assert_eq!(v["diagnosis"]["health"], "stuck", "{v:#}");
    let cause = v["diagnosis"]["cause"].as_str().unwrap();
    assert!(cause.starts_with("kernel vmlinuz answered HTTP 404"), "{cause}");

    // The CLI says the same.
    let out = site.cli(&["machine", MAC, "trace", "--config", &cfg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with(&format!("traced ({MAC}): stuck at kernel vmlinuz refused")), "{text}");
    assert!(text.contains("likely cause: kernel vmlinuz answered HTTP 404"), "{text}");
    let out = site.cli(&["machines", "--config", &cfg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("traced ") && l.contains("STUCK: kernel vmlinuz")), "{text}");

    // Steps for MACs not in the inventory are counted, not stored.
    let before = site.metric("osie_trace_steps_total{outcome=\"unknown-machine\"}");
    for i in 0..20 {
        site.curl_in(&client, &[], &format!("/boot/02:00:00:00:99:{i:02x}.ipxe"));
    }
    assert_eq!(site.metric("osie_trace_steps_total{outcome=\"unknown-machine\"}"), before + 20);
    assert_eq!(site.metric("osie_trace_steps_total{outcome=\"dropped\"}"), 0);

    // The installer's log: control characters kept harmless, a full run, bad chunks.
    let (s, b) = post(
        &site,
        &client,
        "/log",
        &chunk(0, vec!["disk: sda \x1b[31mred\x1b[0m\tok".into(), "<b>html</b>".into()]),
        Some(MAC),
    );
    assert_eq!((s, b.contains("\"stored\":true")), (200, true), "{b}");
    let (s, b) = post(&site, &client, "/log", &chunk(0, vec!["again".into()]), Some(MAC));
    assert_eq!((s, b.contains("\"duplicate\":true")), (200, true), "a re-sent chunk is stored once: {b}");
    let big = vec!["x".repeat(1000); 30];
    let (s, _) = post(&site, &client, "/log", &chunk(1, big.clone()), Some(MAC));
    assert_eq!(s, 200);
    let (s, b) = post(&site, &client, "/log", &chunk(2, big.clone()), Some(MAC));
    assert_eq!((s, b.contains("\"stored\":true")), (200, true), "{b}");
    let (s, b) = post(&site, &client, "/log", &chunk(3, big), Some(MAC));
    assert_eq!((s, b.contains("\"full\":true")), (200, true), "64 KiB is as much as a run keeps: {b}");
    let (s, b) = post(&site, &client, "/log", &chunk(4, vec!["y".into(); 300]), Some(MAC));
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("300 lines in one chunk"), "{b}");
    let (s, _) = post(&site, &client, "/log", &chunk(5, vec!["z".into()]), Some("02:00:00:00:7e:02"));
    assert_eq!(s, 403, "the header must name the chunk's machine");
    let r = site.post_json_as(common::CLIENTS[1], "/log", &chunk(6, vec!["forged".into()]));
    assert_eq!(r.status, 403, "only the machine's own address: {}", r.text());
    assert_eq!(site.metric("osie_log_chunks_total{outcome=\"stored\"}"), 3);
    assert_eq!(site.metric("osie_log_chunks_total{outcome=\"full\"}"), 1);
    assert_eq!(site.metric("osie_log_chunks_total{outcome=\"refused\"}"), 3);

    // Events: the phase durations in /metrics.
    for (i, p) in ["booted-installer", "image-streaming", "image-verified", "installed"].iter().enumerate() {
        let (s, b) = post(&site, &client, "/events", &event(p, i as u64), Some(MAC));
        assert_eq!(s, 200, "{b}");
    }
    // Derived by the trace's writer as it stores the steps (within a second).
    for phase in ["dhcp-to-script", "script-to-installer", "image", "install-total"] {
        let line = format!("osie_phase_duration_seconds_count{{phase=\"{phase}\"}}");
        osie_testkit::wait_for(&line, Duration::from_secs(5), || (site.metric(&line) == 1).then_some(()))
            .unwrap_or_else(|e| panic!("{e}\n{}", site.get("/metrics").text()));
    }

    // All of it survives a restart (with the kernel back: `serve` checks it is there).
    site.stop();
    std::fs::write(site.path("artifacts/vmlinuz"), common::pattern(1024, 1)).unwrap();
    site.start();
    let v = trace_of(&site, 11);
    assert_eq!(v["diagnosis"]["at"], "installer: installed", "{v:#}");
    let log = site.admin_json(&format!("/admin/machines/{MAC}/log"), Duration::from_secs(5)).unwrap();
    let run = &log["runs"][0];
    assert_eq!(run["run_id"], "run0001");
    assert_eq!(run["refused"], 1);
    assert_eq!(run["lines"][0]["text"], "disk: sda \\u{1b}[31mred\\u{1b}[0m\tok", "{log:#}");
    assert_eq!(run["lines"].as_array().unwrap().len(), 62);
    let out = site.cli(&["machine", MAC, "log", "--config", &cfg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("=== run run0001 ("), "{text}");
    assert!(text.contains("1 chunks refused: the run's log was full") && !text.contains('\x1b'), "{text}");
    site.stop();
}

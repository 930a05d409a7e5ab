//! The harness against the real servers, in smoke mode (tiny inputs, one short run each):
//! bootsvc, dnsmasq, kea-dhcp4, tftpd-hpa and nginx all start from the configurations the
//! suites write, answer the load generators and real clients (the suites check every DHCP
//! address against its reservation and every TFTP client's bytes), and the report renders
//! a table row per tool. Keeps `scripts/bench` from rotting without running it in CI.
//! Items needing the release installer, coreos-installer or QEMU are not part of it.

mod common;

use std::path::PathBuf;

use common::bootsvc;
use osie_bench::suites::{self, Ctx};
use osie_testkit::{require_root, require_tools};

#[test]
fn quick_suites_run_against_every_server_and_report() {
    let t = "bench_smoke";
    if !require_root(t) || !require_tools(t, &["dnsmasq", "kea-dhcp4", "in.tftpd", "nginx", "wrk", "curl", "atftp"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let ctx = Ctx {
        root: osie_testkit::workspace_root(),
        work: out.join("work"),
        out: out.clone(),
        bootsvc: bootsvc(),
        installer: PathBuf::from("/nonexistent"),
        coreos_installer: PathBuf::from("/nonexistent"),
        runs: 1,
        quick: true,
        max_load: None,
        max_wait: std::time::Duration::ZERO,
        only: None,
    };
    let started = std::time::Instant::now();
    let dhcp = suites::run_suite(&ctx, "dhcp", suites::dhcp::run).unwrap();
    let tftp = suites::run_suite(&ctx, "tftp", suites::tftp::run).unwrap();
    let http = suites::run_suite(&ctx, "http", suites::http::run).unwrap();
    eprintln!("smoke suites took {:?}", started.elapsed());

    let tools = |r: &suites::SuiteResult| {
        let mut v: Vec<String> = r.records.iter().map(|x| x.tool.clone()).collect();
        v.dedup();
        v
    };
    assert_eq!(tools(&dhcp), ["bootsvc", "dnsmasq", "kea-dhcp4", "kea-dhcp4 (multi-threaded)"]);
    assert_eq!(tools(&tftp).len(), 3);
    for r in [&dhcp, &tftp, &http] {
        for rec in &r.records {
            assert_eq!(rec.runs.len(), 1, "{} {}", rec.item, rec.tool);
            for (k, v) in &rec.runs[0] {
                assert!(v.is_finite() && *v >= 0.0, "{} {} {}: {k} = {v}", rec.item, rec.case, rec.tool);
            }
            let key = if rec.item == "dhcp" { "exchanges_per_sec" } else { "mb_per_sec" };
            assert!(rec.median(key).unwrap() > 0.0, "{} {} {}", rec.item, rec.case, rec.tool);
            assert!(!rec.commands.is_empty());
        }
    }
    let dest = out.join("BENCHMARKS.md");
    osie_bench::report::write_from(&ctx.root, &out, &dest).unwrap();
    let md = std::fs::read_to_string(&dest).unwrap();
    for needle in [
        "## 2. DHCP",
        "| **bootsvc** |",
        "| kea-dhcp4 (multi-threaded) |",
        "## 3. TFTP",
        "| tftpd-hpa |",
        "## 4. HTTP",
        "| nginx |",
    ] {
        assert!(md.contains(needle), "report lacks {needle:?}:\n{md}");
    }
}

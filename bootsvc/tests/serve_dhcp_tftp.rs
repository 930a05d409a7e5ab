//! The real `bootsvc serve` with DHCP and TFTP on: its wiring binds both on the configured
//! interface, answers a real DHCP client and TFTP client across a veth, and counts in
//! `/metrics` what it served and what it refused.

mod common;
mod net;

use common::{Options, Site};
use osie_testkit::{require_root, require_tools};

const MAC: &str = "02:00:00:00:5e:01";

#[test]
fn serve_answers_dhcp_and_tftp_and_counts_in_metrics() {
    let t = "serve_dhcp_tftp";
    if !require_root(t) || !require_tools(t, &["curl", "udhcpc", "atftp"]) {
        return;
    }
    let mut site = Site::new(Options::default());
    let (client, srv_if, cli_if) = site.segment(Some(MAC));
    site.serve_on(&srv_if, true);
    site.machine(
        "dhcp",
        &format!(
            r#"{{"hostname":"dhcp-node","macs":["{MAC}"],"ip":{{"address":"192.0.2.50","prefix":24,"gateway":"192.0.2.1"}},
                "netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#
        ),
    );
    site.start();

    let dir = tempfile::tempdir().unwrap();
    let env = osie_testkit::dhcp::udhcpc(&client, &cli_if, dir.path(), &["-x", "0x4d:69505845"]).unwrap();
    assert_eq!(osie_testkit::dhcp::env_value(&env, "ip").as_deref(), Some("192.0.2.50"), "{env}\n{}", site.logs());
    assert_eq!(osie_testkit::dhcp::env_value(&env, "hostname").as_deref(), Some("dhcp-node"));
    assert_eq!(
        osie_testkit::dhcp::env_value(&env, "bootfile").as_deref(),
        Some(&*format!("http://192.0.2.1:8080/boot/{MAC}.ipxe"))
    );

    // TFTP from the client's new address.
    client.ip(&["addr", "add", "192.0.2.50/24", "dev", &cli_if]).unwrap();
    let out = dir.path().join("undionly.kpxe");
    client
        .run("curl", &["-sS", "--tftp-blksize", "1468", "-o", out.to_str().unwrap(), "tftp://192.0.2.1/undionly.kpxe"])
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(site.path("tftp/undionly.kpxe")).unwrap());
    let refused =
        client.cmd("atftp").args(["--get", "-r", "../admin.token", "-l", "/dev/null", "192.0.2.1"]).output().unwrap();
    assert!(!refused.status.success());

    assert_eq!(site.metric("osie_dhcp_replies_total{kind=\"ack\"}"), 1, "{}", site.get("/metrics").text());
    osie_testkit::wait_for("the transfer to be counted", std::time::Duration::from_secs(5), || {
        (site.metric("osie_tftp_transfers_total{outcome=\"complete\"}") == 1).then_some(())
    })
    .unwrap();
    assert_eq!(site.metric("osie_dropped_packets_total{reason=\"tftp-traversal\"}"), 1);
    assert!(site.logs().contains("DHCP request from 02:00:00:00:5e:01: ack 192.0.2.50 (ipxe)"), "{}", site.logs());
    site.stop();
}

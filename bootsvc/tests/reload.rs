//! Inventory hot reload in the running service: a good edit is picked up without a restart,
//! a bad edit is refused (the log names file and field) and the last good inventory keeps
//! serving. Logs are JSON here, which also checks `log.format = "json"`.

mod common;

use std::time::Duration;

use common::{Options, Site};
use osie_testkit::wait_for;

const M1: &str = "52:54:00:00:02:01";
const M2: &str = "52:54:00:00:02:02";

fn record(host: &str, mac: &str, ip: &str, allow: bool) -> String {
    format!(
        r#"{{"hostname":"{host}","macs":["{mac}"],"ip":{{"address":"{ip}","prefix":24}},"netboot":{{"allow":{allow}}},
            "install":{{"image":{{"name":"debian-12"}}}}}}"#
    )
}

#[test]
fn good_edits_are_picked_up_and_bad_edits_keep_the_last_good_inventory() {
    if !common::prerequisites("good_edits_are_picked_up_and_bad_edits_keep_the_last_good_inventory") {
        return;
    }
    let mut site = Site::new(Options { log_json: true, ..Default::default() });
    site.machine("n1", &record("n1", M1, "192.0.2.11", true));
    site.start();
    let script = |mac: &str| site.get(&format!("/boot/{mac}.ipxe")).text();
    assert!(script(M1).contains("kernel"));
    assert!(script(M2).contains("no machine with MAC"));

    // A new machine appears.
    site.machine("n2", &record("n2", M2, "192.0.2.12", true));
    wait_for("n2 to be picked up", Duration::from_secs(10), || script(M2).contains("kernel").then_some(())).unwrap();

    // A bad edit (n1 takes n2's MAC, and a field has the wrong type) is refused as a whole.
    site.machine(
        "n1",
        &format!(r#"{{"hostname":"n1","macs":["{M2}"],"ip":{{"address":"192.0.2.11","prefix":24}},"netboot":{{"allow":"no"}}}}"#),
    );
    wait_for("the refusal to be logged", Duration::from_secs(10), || {
        site.logs().contains("inventory reload refused").then_some(())
    })
    .unwrap();
    let logs = site.logs();
    let refusal = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"].as_str().is_some_and(|m| m.starts_with("inventory edit refused")))
        .unwrap_or_else(|| panic!("no JSON refusal line in:\n{logs}"));
    assert!(refusal["file"].as_str().unwrap().ends_with("machines/n1.json"), "{refusal}");
    assert_eq!(refusal["field"], "netboot.allow", "{refusal}");
    assert!(script(M1).contains("kernel"), "n1 still served from the last good inventory");
    assert!(script(M2).contains("kernel"));
    assert!(script(M2).contains("(52:54:00:00:02:02)") && script(M2).contains("installing n2"));

    // Fixing it takes effect: n1 now not allowed to netboot.
    site.machine("n1", &record("n1", M1, "192.0.2.11", false));
    wait_for("the fix to be picked up", Duration::from_secs(10), || {
        script(M1).contains("netboot is not allowed for n1").then_some(())
    })
    .unwrap();
    let reloaded = site
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "inventory reloaded")
        .map(|v| v["changes"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>();
    assert_eq!(
        reloaded,
        ["added n2 (".to_string() + site.path("machines/n2.json").to_str().unwrap() + ")", "changed n1".into()]
    );

    // Removing a file removes the machine.
    std::fs::remove_file(site.path("machines/n2.json")).unwrap();
    wait_for("n2 to go", Duration::from_secs(10), || script(M2).contains("no machine with MAC").then_some(())).unwrap();
}

//! The per-machine routes over real sockets: iPXE scripts for known, unknown and disallowed
//! MACs; metadata, EC2 and NoCloud answered only to the machine's own address; events
//! stored durably across a restart; one-shot install and reinstall through the admin API.

mod common;
mod net;

use common::{Options, Site, CLIENTS};
use osie_api::BootParams;

const M1: &str = "52:54:00:00:01:01";
const M2: &str = "52:54:00:00:01:02";
const M3: &str = "52:54:00:00:01:03";

fn fixed(host: &str, mac: &str, ip: &str, allow: bool) -> String {
    format!(
        r##"{{"hostname":"{host}","macs":["{mac}"],"ip":{{"address":"{ip}","prefix":24,"gateway":"192.0.2.1"}},
            "netboot":{{"allow":{allow}}},"install":{{"image":{{"name":"debian-12"}}}},
            "cloud_init":{{"user_data":"#cloud-config\nhostname: {host}\n"}},
            "ssh_keys":["ssh-ed25519 AAAA{host} ops@{host}"]}}"##
    )
}

/// The installer says its architecture (`X-Osie-Arch`): one on a machine whose record says
/// the other (n1 has no `arch`, so x86_64, and names the x86_64 image; its firmware booted
/// the arm64 installer) gets 409 with the reason, not the image it could not boot. The
/// matching architecture, or an installer that does not say (older ones), gets its metadata.
#[test]
fn metadata_refuses_an_image_of_another_architecture() {
    if !common::prerequisites("metadata_refuses_an_image_of_another_architecture") {
        return;
    }
    let mut site = Site::new(Options::default());
    common::write_arm64_image(site.dir());
    site.machine("n1", &fixed("n1", M1, CLIENTS[0], true));
    let arm = fixed("n2", M2, CLIENTS[1], true)
        .replace(r#""name":"debian-12""#, r#""name":"debian-12-arm64""#)
        .replacen("\"macs\"", "\"arch\":\"aarch64\",\"macs\"", 1);
    site.machine("n2", &arm);
    site.start();
    let md = |ip: &str, mac: &str, arch: Option<&str>| {
        let (m, a) = (format!("X-Osie-Mac: {mac}"), arch.map(|a| format!("X-Osie-Arch: {a}")));
        let mut args = vec!["--interface", ip, "-H", &m];
        if let Some(a) = &a {
            args.extend(["-H", a.as_str()]);
        }
        site.curl(&args, "/metadata")
    };
    for arch in [None, Some("x86_64")] {
        let r = md(CLIENTS[0], M1, arch);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["install"]["image"]["url"].as_str().unwrap().ends_with("/images/debian-12.raw.zst"));
    }
    let r = md(CLIENTS[0], M1, Some("aarch64"));
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        r.text(),
        "install.image: machine n1 runs the aarch64 installer but image \"debian-12\" is x86_64 (\"arch\" in its \
         manifest): the machine would not boot it; give the record the machine's \"arch\" and an image of that \
         architecture\n"
    );
    let r = md(CLIENTS[1], M2, Some("aarch64"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["install"]["image"]["url"].as_str().unwrap().ends_with("/images/debian-12-arm64.raw.zst"));
    let r = md(CLIENTS[1], M2, Some("x86_64"));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("machine n2 runs the x86_64 installer but image \"debian-12-arm64\" is aarch64"));
}

#[test]
fn ipxe_scripts_for_known_unknown_and_disallowed_machines() {
    if !common::prerequisites("ipxe_scripts_for_known_unknown_and_disallowed_machines") {
        return;
    }
    let mut site = Site::new(Options::default());
    site.machine("n1", &fixed("n1", M1, CLIENTS[0], true));
    site.machine("n2", &fixed("n2", M2, CLIENTS[1], false));
    site.machine(
        "n3",
        &format!(
            r#"{{"hostname":"n3","macs":["{M3}"],"ip":{{"address":"{}","prefix":24}},
                "netboot":{{"allow":true,"ipxe_script_url":"http://192.0.2.9/custom.ipxe"}}}}"#,
            CLIENTS[2]
        ),
    );
    site.start();

    let known = site.get(&format!("/boot/{M1}.ipxe"));
    assert_eq!(known.status, 200);
    let s = known.text();
    assert!(s.starts_with("#!ipxe\n"), "{s}");
    let kernel = s.lines().find(|l| l.starts_with("kernel ")).unwrap_or_else(|| panic!("no kernel line:\n{s}"));
    assert!(
        kernel.starts_with("kernel --name vmlinuz http://192.0.2.1:8080/artifacts/vmlinuz initrd=initrd "),
        "{kernel}"
    );
    let params = BootParams::parse(kernel).unwrap();
    assert_eq!((params.url.as_str(), params.mac.to_string().as_str()), ("http://192.0.2.1:8080", M1));
    assert!(kernel.contains(" console=ttyS0,115200n8 "), "{kernel}");
    assert!(s.contains("\ninitrd --name initrd http://192.0.2.1:8080/artifacts/initramfs.img || goto osie_failed\n"));
    // The URLs in the script really serve the artifacts.
    assert_eq!(site.get("/artifacts/initramfs.img").status, 200);
    // Dashed MACs (iPXE's ${mac:hexhyp}) name the same machine.
    assert_eq!(site.get(&format!("/boot/{}.ipxe", M1.replace(':', "-"))).text(), s);

    let unknown = site.get("/boot/52:54:00:ff:ff:ff.ipxe");
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.text().lines().last(), Some("exit"));
    assert!(!unknown.text().contains("kernel"), "{}", unknown.text());

    let disallowed = site.get(&format!("/boot/{M2}.ipxe"));
    assert!(disallowed.text().contains("netboot is not allowed for n2"), "{}", disallowed.text());
    assert_eq!(disallowed.text().lines().last(), Some("exit"));

    let chained = site.get(&format!("/boot/{M3}.ipxe")).text();
    assert!(chained.contains("\nchain --autofree http://192.0.2.9/custom.ipxe || goto osie_failed\n"), "{chained}");

    assert_eq!(site.get("/boot/not-a-mac.ipxe").status, 404);
    assert_eq!(site.get(&format!("/boot/{M1}.txt")).status, 404);
    assert!(site.metric("osie_http_requests_total{route=\"/boot/{*file}\",status=\"200\"}") >= 5);
}

#[test]
fn metadata_only_for_the_machine_itself() {
    let t = "metadata_only_for_the_machine_itself";
    if !common::prerequisites(t) || !osie_testkit::require_tools(t, &["udhcpc"]) {
        return;
    }
    let mut site = Site::new(Options { pool: true, ..Default::default() });
    site.machine("n1", &fixed("n1", M1, CLIENTS[0], true));
    site.machine("n2", &fixed("n2", M2, CLIENTS[1], true));
    // No fixed address: known by bootsvc's pool lease on its NIC (docs/security.md).
    site.machine(
        "n3",
        &format!(r#"{{"hostname":"n3","macs":["{M3}"],"netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#),
    );
    let lan = site.lan();
    site.serve_on(&lan, false);
    site.start();
    let (ip1, ip2, ip3, stranger) = (CLIENTS[0], CLIENTS[1], CLIENTS[2], CLIENTS[3]);

    let md = site.get_as(ip1, Some(M1), "/metadata");
    assert_eq!(md.status, 200, "{}", md.text());
    let md: osie_api::Metadata = serde_json::from_slice(&md.body).unwrap();
    assert_eq!((md.hostname.as_str(), md.mac.to_string().as_str()), ("n1", M1));
    let plan = md.install.expect("install plan");
    assert_eq!(plan.image.url, "http://192.0.2.1:8080/images/debian-12.raw.zst");
    assert_eq!(plan.image.size, Some(512 * 1024 + 3));
    assert_eq!(md.phone_home_url.as_deref(), Some("http://192.0.2.1:8080/phone-home/i-525400000101"));
    assert!(md.cloud_init.user_data.unwrap().contains("hostname: n1"));
    // The image URL it names is served, with the size it claims.
    let img = site.get("/images/debian-12.raw.zst");
    assert_eq!(img.body.len() as u64, plan.image.size.unwrap());

    let forbidden_before = site.metric("osie_dropped_packets_total{reason=\"http-forbidden\"}");
    // n2's address cannot read n1's metadata, nor n1's address n2's; a stranger reads nothing.
    assert_eq!(site.get_as(ip2, Some(M1), "/metadata").status, 403);
    assert_eq!(site.get_as(ip1, Some(M2), "/metadata").status, 403);
    assert_eq!(site.get_as(stranger, Some(M1), "/metadata").status, 403);
    assert_eq!(site.get_as(ip1, Some("52:54:00:ff:ff:ff"), "/metadata").status, 403);
    assert_eq!(site.get_as(ip1, None, "/metadata").status, 400);
    assert_eq!(site.get_as(ip2, Some(M2), "/metadata").json()["hostname"], "n2");

    // EC2 tree: by source address alone.
    let id = site.get_as(ip1, None, "/2009-04-04/meta-data/instance-id");
    assert_eq!((id.status, id.text().as_str()), (200, "i-525400000101"));
    assert_eq!(site.get_as(ip2, None, "/latest/meta-data/hostname").text(), "n2");
    let listing = site.get_as(ip1, None, "/2009-04-04/meta-data/").text();
    assert!(listing.lines().any(|l| l == "public-keys/") && listing.lines().any(|l| l == "local-ipv4"), "{listing}");
    assert_eq!(site.get_as(ip1, None, "/2009-04-04/meta-data/public-keys/").text(), "0=ops@n1");
    assert_eq!(
        site.get_as(ip1, None, "/2009-04-04/meta-data/public-keys/0/openssh-key").text(),
        "ssh-ed25519 AAAAn1 ops@n1"
    );
    assert!(site.get_as(ip1, None, "/2009-04-04/user-data").text().starts_with("#cloud-config"));
    assert_eq!(site.get_as(stranger, None, "/2009-04-04/meta-data/instance-id").status, 403);

    // NoCloud: the MAC in the path must be the caller's.
    let nc = site.get_as(ip1, None, &format!("/nocloud/{M1}/meta-data"));
    assert_eq!(nc.status, 200);
    assert!(nc.text().contains("instance-id: \"i-525400000101\""), "{}", nc.text());
    assert_eq!(site.get_as(ip1, None, &format!("/nocloud/{M1}/network-config")).status, 404);
    assert_eq!(site.get_as(ip2, None, &format!("/nocloud/{M1}/user-data")).status, 403);

    // n3 has no fixed address: unknown until it holds a lease of bootsvc's. Fetching its script
    // changes nothing (anyone who knows the MAC can); its lease, taken by a real DHCP client
    // on its own NIC, makes it known at that address.
    assert_eq!(site.get_as(ip3, Some(M3), "/metadata").status, 403);
    assert!(site.get_as(ip3, None, &format!("/boot/{M3}.ipxe")).text().contains("kernel"));
    assert_eq!(site.get_as(ip3, Some(M3), "/metadata").status, 403, "a script fetch identifies nobody");
    let (n3, n3_if) = site.join(&lan, M3, None);
    let env = osie_testkit::dhcp::udhcpc(&n3, &n3_if, site.dir(), &[]).unwrap();
    let lease = osie_testkit::dhcp::env_value(&env, "ip").unwrap();
    n3.ip(&["addr", "add", &format!("{lease}/24"), "dev", &n3_if]).unwrap();
    let md = site.curl_in(&n3, &["--interface", &lease, "-H", &format!("X-Osie-Mac: {M3}")], "/metadata");
    assert_eq!(md.json()["hostname"], "n3", "{}", md.text());
    assert_eq!(site.get_as(stranger, Some(M3), "/metadata").status, 403);
    // A fetch of n1's script from elsewhere does not make that address n1's.
    site.get_as(stranger, None, &format!("/boot/{M1}.ipxe"));
    assert_eq!(site.get_as(stranger, Some(M1), "/metadata").status, 403);

    let forbidden = site.metric("osie_dropped_packets_total{reason=\"http-forbidden\"}") - forbidden_before;
    assert_eq!(forbidden, 10, "every refusal counted");
}

fn event(mac: &str, phase: &str, seq: u64, extra: &str) -> String {
    format!(
        r#"{{"machine":"{mac}","phase":"{phase}","time":"2026-01-01T00:00:0{seq}Z","run_id":"run-1","seq":{seq}{extra}}}"#
    )
}

#[test]
fn events_persist_and_installed_clears_netboot_until_reinstall() {
    if !common::prerequisites("events_persist_and_installed_clears_netboot_until_reinstall") {
        return;
    }
    let mut site = Site::new(Options::default());
    site.machine("n1", &fixed("n1", M1, CLIENTS[0], true));
    site.machine("n2", &fixed("n2", M2, CLIENTS[1], true));
    site.start();
    let ip1 = CLIENTS[0];

    let r = site.post_json_as(ip1, "/events", &event(M1, "booted-installer", 0, ""));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"stored": true, "duplicate": false}));
    let progress = r#","progress":{"bytes_done":256,"bytes_total":1024},"message":"streaming""#;
    assert_eq!(site.post_json_as(ip1, "/events", &event(M1, "image-streaming", 1, progress)).status, 200);
    // A retry of an acknowledged event is recognised.
    let dup = site.post_json_as(ip1, "/events", &event(M1, "image-streaming", 1, progress));
    assert_eq!(dup.json()["duplicate"], true);
    // Someone else cannot report for n1; a malformed event is refused.
    assert_eq!(site.post_json_as(CLIENTS[1], "/events", &event(M1, "installed", 2, "")).status, 403);
    assert_eq!(site.post_json_as(ip1, "/events", r#"{"machine":"nope"}"#).status, 422);

    let out =
        site.cli(&["machines", "--url", common::ADMIN, "--token-file", site.path("admin.token").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let row = table.lines().find(|l| l.starts_with("n1 ")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("installing") && row.contains("image-streaming") && row.contains("25%"), "{table}");

    assert_eq!(site.post_json_as(ip1, "/events", &event(M1, "installed", 2, "")).status, 200);
    assert_eq!(site.metric("osie_installs_total{outcome=\"installed\"}"), 1);
    assert_eq!(site.metric("osie_events_total{kind=\"image-streaming\"}"), 1, "the duplicate is not counted");

    // Across a restart: state and events are still there, netboot stays cleared.
    site.stop();
    site.start();
    assert!(site.get(&format!("/boot/{M1}.ipxe")).text().contains("is installed"), "one-shot install");
    assert!(site.get(&format!("/boot/{M2}.ipxe")).text().contains("kernel"), "other machines unaffected");
    let dup = site.post_json_as(ip1, "/events", &event(M1, "installed", 2, ""));
    assert_eq!(dup.json()["duplicate"], true, "dedup survives the restart");

    // cloud-init's phone_home from the installed OS records first-boot.
    let r = site.curl(
        &["--interface", ip1, "--data-urlencode", "hostname=n1", "--data-urlencode", "fqdn=n1.example"],
        "/phone-home/i-525400000101",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(site.curl(&["--interface", CLIENTS[1], "-d", "hostname=x"], "/phone-home/i-525400000101").status, 403);

    let cfg = site.config.to_str().unwrap().to_string();
    let out = site.cli(&["machine", M1, "events", "--config", &cfg, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let evs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases: Vec<&str> = evs.as_array().unwrap().iter().map(|e| e["event"]["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["booted-installer", "image-streaming", "installed", "first-boot"]);
    assert_eq!(evs[3]["event"]["message"], "phone home: hostname n1 fqdn n1.example");
    assert_eq!(evs[0]["source"], ip1);

    // Reinstall goes through the admin API and needs the token.
    let wrong = site.path("wrong.token");
    std::fs::write(&wrong, "not-the-token-0123456789").unwrap();
    let out = site.cli(&["machine", M1, "reinstall", "--url", common::ADMIN, "--token-file", wrong.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(site.admin_curl(&[], "/admin/machines").status, 401);
    assert!(site.get(&format!("/boot/{M1}.ipxe")).text().contains("is installed"));
    let out = site.cli(&["machine", M1, "reinstall", "--config", &cfg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("netboot allowed again"));
    assert!(site.get(&format!("/boot/{M1}.ipxe")).text().contains("kernel --name vmlinuz"));
    assert_eq!(site.metric("osie_dropped_packets_total{reason=\"http-admin-unauthorized\"}"), 2);

    let out = site.cli(&["machines", "--config", &cfg, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n1 = v.as_array().unwrap().iter().find(|m| m["hostname"] == "n1").unwrap();
    assert_eq!(n1["state"]["status"], "reinstall-pending");
    assert_eq!(n1["netboot"]["allowed"], true);
    assert!(n1["state"]["first_boot_at"].is_string());
}

/// Deprovisioning through the CLI and the admin API: the metadata asks for an erase (and
/// carries no install plan) until the installer reports `deprovisioned`; then no boot file
/// until a reinstall, which brings the install plan back. A record that forbids netboot is
/// refused with the reason.
#[test]
fn deprovisioning_erases_once_then_no_boot_file_until_reinstall() {
    if !common::prerequisites("deprovisioning_erases_once_then_no_boot_file_until_reinstall") {
        return;
    }
    let mut site = Site::new(Options::default());
    site.machine("n1", &fixed("n1", M1, CLIENTS[0], true));
    site.machine("n2", &fixed("n2", M2, CLIENTS[1], false));
    site.start();
    let ip1 = CLIENTS[0];
    let cfg = site.config.to_str().unwrap().to_string();
    assert_eq!(site.post_json_as(ip1, "/events", &event(M1, "installed", 0, "")).status, 200);
    assert!(site.get(&format!("/boot/{M1}.ipxe")).text().contains("is installed"));

    let out = site.cli(&["machine", M1, "deprovision", "--removable", "--config", &cfg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("n1 (") && said.contains("its next boot erases every disk (removable ones too)"), "{said}");
    assert!(site.get(&format!("/boot/{M1}.ipxe")).text().contains("kernel --name vmlinuz"), "netboot allowed");
    let md = site.get_as(ip1, Some(M1), "/metadata").json();
    assert_eq!(md["erase"], serde_json::json!({"removable": true}), "{md}");
    assert!(md["install"].is_null(), "an erase carries no install plan: {md}");

    let erase = |seq: u64, phase: &str, extra: &str| {
        format!(r#"{{"machine":"{M1}","phase":"{phase}","time":"t","run_id":"run-2","seq":{seq}{extra}}}"#)
    };
    assert_eq!(site.post_json_as(ip1, "/events", &erase(0, "booted-installer", "")).status, 200);
    let report =
        r#","erase":{"path":"/dev/vda","method":"discard","bytes":4294967296,"seconds":0.3,"verified_samples":64}"#;
    assert_eq!(site.post_json_as(ip1, "/events", &erase(1, "disk-erased", report)).status, 200);
    let v = site.admin("GET", &format!("/admin/machines/{M1}")).json();
    assert_eq!(v["state"]["status"], "erasing", "{v}");
    assert_eq!(
        site.post_json_as(ip1, "/events", &erase(2, "deprovisioned", r#","message":"1 disk erased""#)).status,
        200
    );

    let boot = site.get(&format!("/boot/{M1}.ipxe")).text();
    assert!(boot.contains("deprovisioned (disks erased)") && !boot.contains("kernel"), "{boot}");
    let out = site.cli(&["machines", "--config", &cfg]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let row = table.lines().find(|l| l.starts_with("n1 ")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("cleared") && row.contains("deprovisioned"), "{table}");
    let out = site.cli(&["machine", M1, "events", "--config", &cfg, "--json"]);
    let evs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let disk = evs.as_array().unwrap().iter().find(|e| e["event"]["phase"] == "disk-erased").unwrap();
    assert_eq!(disk["event"]["erase"]["method"], "discard", "the report is stored whole: {disk}");
    assert_eq!(disk["event"]["erase"]["bytes"], 4294967296u64);

    let out = site.cli(&["machine", M1, "reinstall", "--config", &cfg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = site.get_as(ip1, Some(M1), "/metadata").json();
    assert!(md["erase"].is_null() && md["install"].is_object(), "{md}");

    let out = site.cli(&["deprovision", M2, "--config", &cfg]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("netboot.allow is false"), "{said}");
}

/// An event with a phase this bootsvc does not know is refused with 400 naming the phase,
/// counted, and not stored; from another machine's address it is refused as any event is.
#[test]
fn events_with_an_unknown_phase_are_refused_not_stored() {
    if !common::prerequisites("events_with_an_unknown_phase_are_refused_not_stored") {
        return;
    }
    let mut site = Site::new(Options::default());
    site.machine("n1", &fixed("n1", M1, CLIENTS[0], true));
    site.start();
    assert_eq!(site.post_json_as(CLIENTS[0], "/events", &event(M1, "booted-installer", 0, "")).status, 200);
    let r = site.post_json_as(CLIENTS[0], "/events", &event(M1, "from-the-future", 1, ""));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().starts_with("unknown event phase \"from-the-future\": not stored; this bootsvc knows"),
        "{}",
        r.text()
    );
    assert_eq!(site.post_json_as(CLIENTS[1], "/events", &event(M1, "from-the-future", 2, "")).status, 403);
    assert_eq!(site.metric("osie_dropped_packets_total{reason=\"http-unknown-phase\"}"), 1);
    assert_eq!(site.metric("osie_events_total{kind=\"unknown\"}"), 0);
    assert!(site.logs().contains(r#"status=400 why="unknown event phase \"from-the-future\""#), "{}", site.logs());

    let cfg = site.config.to_str().unwrap().to_string();
    let out = site.cli(&["machine", M1, "events", "--config", &cfg, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let evs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases: Vec<&str> = evs.as_array().unwrap().iter().map(|e| e["event"]["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["booted-installer"], "only the known event was stored");
}

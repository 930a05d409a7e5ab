//! Power and boot control through real BMCs (`bootsvc/docs/power.md`): the running bootsvc
//! drives sushy-tools' Redfish emulator (TLS with a CA of the test's, basic auth) in front of
//! a libvirt QEMU domain, through `bootsvc machine <mac> power …` and `reinstall --power`;
//! every action lands in the machine's timeline with who asked and what the BMC answered; the
//! password shows up nowhere bootsvc writes or answers. And the failures an operator meets:
//! a wrong password, an unknown CA, an unreachable BMC, one answering garbage or 500, one
//! that never answers; many machines at once with a summary of those that failed. The same
//! domain through IPMI: VirtualBMC, driven by `ipmitool`.

mod common;

use std::time::{Duration, Instant};

use common::{Options, Site};
use osie_testkit::bmc::{self, Bad, Libvirt};
use serde_json::Value;

const PASSWORD: &str = "s3cret-Pa55word";
const MACHINE8: &str = "52:54:00:00:0b:08";
const MACS9: [&str; 2] = ["52:54:00:00:0b:09", "52:54:00:00:0b:0a"];
const BMC_IP: &str = "192.0.2.50";
const BAD_IP: &str = "192.0.2.51";
const MACS: [&str; 7] = [
    "52:54:00:00:0b:01",
    "52:54:00:00:0b:02",
    "52:54:00:00:0b:03",
    "52:54:00:00:0b:04",
    "52:54:00:00:0b:05",
    "52:54:00:00:0b:06",
    "52:54:00:00:0b:07",
];

fn record(name: &str, mac: &str, bmc: Value) -> String {
    serde_json::json!({
        "hostname": name, "macs": [mac], "netboot": {"allow": true},
        "install": {"image": {"name": "debian-12"}}, "bmc": bmc,
    })
    .to_string()
}

/// `bootsvc <args> --config <site>`: exit success, stdout, stderr.
fn cli(site: &Site, args: &[&str]) -> (bool, String, String) {
    let cfg = site.config.to_string_lossy().into_owned();
    let out = site.cli(&[args, &["--config", cfg.as_str()]].concat());
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `bootsvc machine <mac> power <action> --json`: success and the answer.
fn power(site: &Site, mac: &str, action: &str) -> (bool, Value) {
    let (ok, out, err) = cli(site, &["machine", mac, "power", action, "--json"]);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("power {action}: {e}: {out} {err}"));
    (ok, v)
}

#[test]
fn redfish_power_and_boot_through_sushy_tools_and_libvirt() {
    if !bmc::prerequisites("redfish_power_and_boot_through_sushy_tools_and_libvirt", &[]) {
        return;
    }
    let mut site = Site::new(Options::default());
    site.loopback(&[BMC_IP, BAD_IP]).unwrap();
    // A reinstall is five exchanges with a BMC on a busy 2-core machine: room for them.
    site.reconfigure(|c| c.http.caps.request_timeout_secs = Some(60)).unwrap();
    let (ca, other_ca, cert, key) = bmc::certificates(site.dir(), BMC_IP);
    let good = bmc::credentials(site.dir(), "good.json", "admin", PASSWORD);
    let wrong = bmc::credentials(site.dir(), "wrong.json", "admin", "not-the-password");
    // The domain's NIC on a bridge of the namespace (nothing answers its PXE here: DHCP is off).
    let lan = site.lan();
    site.ns.add_tap("pwtap0", &lan).unwrap();
    let lv = Libvirt::start(&site.ns, site.dir(), "osie-m1", (MACS[0], "pwtap0"));
    let _sushy = bmc::sushy(&site.ns, &lv, BMC_IP, 8443, (&cert, &key), "admin", PASSWORD);
    bmc::bad_bmc(&site.ns, BAD_IP, 8000, Bad::Garbage);
    bmc::bad_bmc(&site.ns, BAD_IP, 8001, Bad::Error500);
    bmc::bad_bmc(&site.ns, BAD_IP, 8002, Bad::Silent);
    let sessions = bmc::session_bmc(&site.ns, BAD_IP, 8003, "admin", PASSWORD);

    let redfish = |address: &str, ca: &std::path::Path, creds: &std::path::Path| {
        serde_json::json!({"protocol": "redfish", "address": address, "ca_file": ca, "credentials": creds,
                           "boot_mode": "legacy"})
    };
    let insecure = |address: &str, timeout: u64| {
        serde_json::json!({"protocol": "redfish", "address": address, "insecure": true, "credentials": good,
                           "timeout_secs": timeout})
    };
    let sushy_url = format!("https://{BMC_IP}:8443");
    site.machine("m1", &record("m1", MACS[0], redfish(&sushy_url, &ca, &good)));
    site.machine("m2", &record("m2", MACS[1], redfish(&sushy_url, &ca, &wrong)));
    site.machine("m3", &record("m3", MACS[2], redfish(&sushy_url, &other_ca, &good)));
    site.machine("m4", &record("m4", MACS[3], redfish(&format!("https://{}:9", common::SERVER), &ca, &good)));
    site.machine("m5", &record("m5", MACS[4], insecure(&format!("http://{BAD_IP}:8000"), 5)));
    site.machine("m6", &record("m6", MACS[5], insecure(&format!("http://{BAD_IP}:8001"), 5)));
    site.machine("m7", &record("m7", MACS[6], insecure(&format!("http://{BAD_IP}:8002"), 2)));
    // A machine with a fixed address, to ask for everything a machine is served.
    let mut m8: Value = serde_json::from_str(&record("m8", MACHINE8, redfish(&sushy_url, &ca, &good))).unwrap();
    m8["ip"] = serde_json::json!({"address": common::CLIENTS[0], "prefix": 24});
    site.machine("m8", &m8.to_string());
    site.machine("m9", &record("m9", MACS9[0], insecure(&format!("http://{BAD_IP}:8003"), 5)));
    let wrong_session = serde_json::json!({"protocol": "redfish", "address": format!("http://{BAD_IP}:8003"),
                                           "insecure": true, "credentials": wrong});
    site.machine("m10", &record("m10", MACS9[1], wrong_session));
    let (ok, out, err) = cli(&site, &["check"]);
    assert!(ok, "{out}{err}");
    site.start();

    // Status: the domain is defined, off; the BMC names the system.
    assert_eq!(lv.state(), "shut off");
    let (ok, out, err) = cli(&site, &["machine", MACS[0], "power", "status"]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with(&format!("m1 ({}): power off [Sushy Emulator", MACS[0])), "{out}");

    // On, one-time network boot, cycle, off: each done on the domain.
    let (ok, a) = power(&site, MACS[0], "on");
    assert!(ok && a["report"]["power"] == "off", "{a:#}");
    lv.wait_state("running");
    let (ok, a) = power(&site, MACS[0], "status");
    assert!(ok && a["report"]["power"] == "on", "{a:#}");
    assert_eq!(lv.first_boot(), "hd");
    let (ok, a) = power(&site, MACS[0], "netboot");
    assert!(ok, "{a:#}");
    assert_eq!(lv.first_boot(), "network", "the override is in the domain");
    let (ok, a) = power(&site, MACS[0], "cycle");
    assert!(ok, "{a:#}");
    let steps = a["report"]["steps"].to_string();
    assert!(steps.contains(r#"{\"ResetType\":\"ForceRestart\"}"#), "{steps}");
    lv.wait_state("running");
    let (ok, a) = power(&site, MACS[0], "off");
    assert!(ok, "{a:#}");
    lv.wait_state("shut off");

    // reinstall --power on the machine that is off: netboot allowed, network boot, on.
    let (ok, out, err) = cli(&site, &["machine", MACS[0], "reinstall", "--power"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("reinstall done (power was off)"), "{out}");
    lv.wait_state("running");
    assert_eq!(lv.first_boot(), "network");
    let show: Value = serde_json::from_str(&cli(&site, &["machine", MACS[0], "show", "--json"]).1).unwrap();
    assert_eq!(show["netboot"]["allowed"], true, "{show:#}");

    // The timeline: every action but the status reads, who asked, what was sent and answered.
    let (_, events, _) = cli(&site, &["machine", MACS[0], "events", "--json"]);
    let events: Vec<Value> = serde_json::from_str(&events).unwrap();
    let power_events: Vec<&Value> = events.iter().filter(|e| e["event"]["phase"] == "power").collect();
    let actions: Vec<String> = power_events
        .iter()
        .map(|e| {
            e["event"]["message"].as_str().unwrap().split(": ").nth(1).unwrap().split(' ').next().unwrap().to_string()
        })
        .collect();
    assert_eq!(actions, ["on", "netboot", "cycle", "off", "reinstall"], "{events:#?}");
    let last = &power_events[4]["event"];
    let msg = last["message"].as_str().unwrap();
    assert!(msg.starts_with("asked by root from 127.0.0.1: reinstall via redfish"), "{msg}");
    assert!(msg.contains("PATCH") && msg.contains(r#""BootSourceOverrideEnabled":"Once""#), "{msg}");
    assert!(msg.contains(r#"{"ResetType":"On"} -> 204"#) || msg.contains(r#"{"ResetType":"On"} -> 200"#), "{msg}");
    assert_eq!(last["hardware"]["dmi"]["sys_vendor"], "Sushy Emulator", "the BMC's view of the system");
    assert_eq!(power_events[4]["source"], "127.0.0.1");

    // The failures, each named for what it is.
    let failure = |mac: &str| {
        let t = Instant::now();
        let (ok, a) = power(&site, mac, "status");
        assert!(!ok, "{a:#}");
        (
            a["report"]["error"]["kind"].as_str().unwrap().to_string(),
            a["report"]["error"]["message"].to_string(),
            a,
            t.elapsed(),
        )
    };
    let (kind, msg, _, _) = failure(MACS[1]);
    assert_eq!(kind, "auth", "{msg}");
    assert!(msg.contains("401"), "{msg}");
    let (kind, msg, _, _) = failure(MACS[2]);
    assert_eq!(kind, "tls", "{msg}");
    assert!(msg.contains("UnknownIssuer") && msg.contains("bmc.ca_file"), "{msg}");
    let (kind, msg, a, _) = failure(MACS[3]);
    assert_eq!(kind, "unreachable", "{msg}");
    assert_eq!(a["report"]["steps"].as_array().unwrap().len(), 3, "retried with backoff: {a:#}");
    let (kind, msg, _, _) = failure(MACS[4]);
    assert_eq!(kind, "garbage", "{msg}");
    assert!(msg.contains("Welcome to the BMC"), "{msg}");
    let (kind, msg, a, _) = failure(MACS[5]);
    assert_eq!(kind, "bmc", "{msg}");
    assert!(msg.contains("500") && msg.contains("The BMC is busy"), "{msg}");
    assert_eq!(a["report"]["steps"].as_array().unwrap().len(), 2 + 3, "root, basic auth, 3 tries of Systems: {a:#}");
    let (kind, msg, _, took) = failure(MACS[6]);
    assert_eq!(kind, "timeout", "{msg}");
    assert!(took < Duration::from_secs(30), "bounded: {took:?}");
    // A BMC with sessions: one opened with the credentials, its token on every request, closed
    // at the end; a wrong password is refused at the login.
    let (ok, a) = power(&site, MACS9[0], "status");
    assert!(ok && a["report"]["power"] == "on" && a["report"]["system"]["manufacturer"] == "Session BMC", "{a:#}");
    assert_eq!(
        *sessions.lock().unwrap(),
        [
            "GET /redfish/v1/ none",
            "POST /redfish/v1/SessionService/Sessions none",
            "GET /redfish/v1/Systems token",
            "GET /redfish/v1/Systems/1 token",
            "DELETE /redfish/v1/SessionService/Sessions/1 token",
        ]
    );
    let (ok, a) = power(&site, MACS9[1], "status");
    assert!(!ok && a["report"]["error"]["kind"] == "auth", "{a:#}");
    assert!(a["report"]["error"]["message"].as_str().unwrap().contains("SessionService/Sessions"), "{a:#}");
    assert!(!a.to_string().contains("not-the-password"), "the login's body is not in the report");

    // A failed action is recorded too.
    let (_, events, _) = cli(&site, &["machine", MACS[1], "events", "--json"]);
    assert!(!events.contains("\"power\""), "status reads are not recorded: {events}");
    let (ok, _) = power(&site, MACS[1], "cycle");
    assert!(!ok);
    let (_, events, _) = cli(&site, &["machine", MACS[1], "events", "--json"]);
    assert!(events.contains("FAILED (Auth)"), "{events}");

    // A machine that does not netboot after the power action (nothing answers its DHCP here)
    // is a failure of `--wait`, saying what bootsvc last saw of it.
    let t = Instant::now();
    let (ok, out, err) = cli(&site, &["machine", MACS[0], "reinstall", "--power", "--wait", "6"]);
    assert!(!ok, "{out}{err}");
    assert!(out.contains("reinstall done (power was on)"), "{out}");
    assert!(
        out.contains("FAILED: did not netboot within 6 s after the power action: no event since the power action (the last: power at"),
        "{out}"
    );
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());

    // Many at once: a line per machine, a summary of the failures, exit 1.
    let t = Instant::now();
    let (ok, out, err) = cli(&site, &["reinstall", "--power", "--parallel", "3", MACS[0], MACS[1], MACS[3]]);
    assert!(!ok, "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with('[')).count(), 3, "{out}");
    assert!(out.contains("3 machines: 1 done, 2 failed"), "{out}");
    let failed: Vec<&str> = out.lines().skip_while(|l| *l != "Failed:").skip(1).collect();
    assert!(
        failed.len() == 2 && failed.iter().any(|l| l.contains("m2 (")) && failed.iter().any(|l| l.contains("m4 (")),
        "{out}"
    );
    eprintln!("bulk reinstall of 3 took {:?}", t.elapsed());

    // The password is nowhere bootsvc writes or answers; the record's path to it is not a secret.
    let (_, machines, _) = cli(&site, &["machines", "--json"]);
    let (_, events, _) = cli(&site, &["machine", MACS[0], "events", "--json"]);
    let admin = site.admin("GET", "/admin/machines").text();
    for (what, text) in [("log", site.logs()), ("machines", machines), ("events", events), ("admin", admin)] {
        assert!(!text.contains(PASSWORD), "the password is in the {what}");
    }
    // What a machine is served says nothing of its BMC: not the password, not the file.
    let from = common::CLIENTS[0];
    let nocloud = format!("/nocloud/{MACHINE8}");
    let served = [
        ("/metadata", site.get_as(from, Some(MACHINE8), "/metadata")),
        ("script", site.get_as(from, None, &format!("/boot/{MACHINE8}.ipxe"))),
        ("ec2 meta-data", site.get_as(from, None, "/latest/meta-data/")),
        ("ec2 user-data", site.get_as(from, None, "/latest/user-data")),
        ("nocloud meta-data", site.get_as(from, None, &format!("{nocloud}/meta-data"))),
        ("nocloud vendor-data", site.get_as(from, None, &format!("{nocloud}/vendor-data"))),
    ];
    assert_eq!(served[0].1.status, 200, "{}", served[0].1.text());
    for (what, r) in served {
        let t = r.text();
        assert!(!t.contains(PASSWORD) && !t.contains("bmc-credentials") && !t.contains("8443"), "{what}: {t}");
    }
    drop(lv);
}

#[test]
fn ipmi_power_and_boot_through_virtualbmc_and_libvirt() {
    if !bmc::prerequisites("ipmi_power_and_boot_through_virtualbmc_and_libvirt", &["ipmitool"]) {
        return;
    }
    let mut site = Site::new(Options::default());
    site.loopback(&[BMC_IP]).unwrap();
    site.reconfigure(|c| c.http.caps.request_timeout_secs = Some(60)).unwrap();
    let good = bmc::credentials(site.dir(), "good.json", "admin", PASSWORD);
    let wrong = bmc::credentials(site.dir(), "wrong.json", "admin", "not-the-password");
    let lan = site.lan();
    site.ns.add_tap("pwtap0", &lan).unwrap();
    let lv = Libvirt::start(&site.ns, site.dir(), "osie-m1", (MACS[0], "pwtap0"));
    let _vbmc = bmc::virtualbmc(&site.ns, &lv, BMC_IP, 6230, "admin", PASSWORD);
    // VirtualBMC answers a power off only once libvirt has stopped QEMU: seconds, under TCG.
    let ipmi = |address: String, creds: &std::path::Path, timeout: u64| {
        serde_json::json!({"protocol": "ipmi", "address": address, "credentials": creds, "boot_mode": "legacy",
                           "timeout_secs": timeout})
    };
    site.machine("m1", &record("m1", MACS[0], ipmi(format!("{BMC_IP}:6230"), &good, 10)));
    site.machine("m2", &record("m2", MACS[1], ipmi(format!("{BMC_IP}:6230"), &wrong, 10)));
    site.machine("m3", &record("m3", MACS[2], ipmi(format!("{BMC_IP}:6299"), &good, 2)));
    site.start();

    let (ok, a) = power(&site, MACS[0], "status");
    assert!(ok && a["report"]["power"] == "off", "{a:#}");
    let (ok, a) = power(&site, MACS[0], "on");
    assert!(ok, "{a:#}");
    lv.wait_state("running");
    let (ok, a) = power(&site, MACS[0], "cycle");
    assert!(ok && a["report"]["power"] == "on", "{a:#}");
    // VirtualBMC refuses a power cycle: a hard reset instead, both in the report.
    let steps = a["report"]["steps"].to_string();
    assert!(steps.contains("ipmitool chassis power cycle") && steps.contains("ipmitool chassis power reset"), "{a:#}");
    lv.wait_state("running");
    let (ok, a) = power(&site, MACS[0], "off");
    assert!(ok, "{a:#}");
    lv.wait_state("shut off");

    // reinstall --power: next boot from the network, then on (it was off).
    assert_eq!(lv.first_boot(), "hd");
    let (ok, out, err) = cli(&site, &["machine", MACS[0], "reinstall", "--power"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("reinstall done (power was off)"), "{out}");
    lv.wait_state("running");
    assert_eq!(lv.first_boot(), "network");
    let (_, events, _) = cli(&site, &["machine", MACS[0], "events", "--json"]);
    assert!(
        events.contains("ipmitool chassis bootdev pxe -> Set Boot Device to pxe")
            && events.contains("ipmitool chassis power on -> Chassis Power Control: Up/On"),
        "{events}"
    );

    let (ok, a) = power(&site, MACS[1], "status");
    assert!(!ok && a["report"]["error"]["kind"] == "auth", "{a:#}");
    let t = Instant::now();
    let (ok, a) = power(&site, MACS[2], "status");
    assert!(!ok && a["report"]["error"]["kind"] == "unreachable", "{a:#}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert!(!site.logs().contains(PASSWORD));
    drop(lv);
}

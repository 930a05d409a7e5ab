//! Security properties of the real `bootsvc serve`, over real sockets in a namespace:
//!
//! - a machine's metadata, user-data, keys and NoCloud seed go to that machine's address
//!   only, and only that address may post its events or phone home (every route, every
//!   caller: the machine itself, another machine, an unknown address);
//! - every admin operation needs the exact bearer token, and is off without a token file;
//! - no secret (user-data, SSH keys, the admin token, a wrong token tried) appears in
//!   bootsvc's logs at any level, in the iPXE script or on the kernel command line.
//!
//! Machines without a fixed address, and a hostile host on the machines' own LAN, are in
//! `tests/identity.rs` (the model: `docs/security.md`). TFTP's jail is tested in
//! `tests/tftp.rs` and `src/jail.rs`, the HTTP file jail in
//! `tests/files.rs` and `src/http/files.rs`; the privilege drop in `tests/privileges.rs`.

mod common;

use common::{Options, Site, CLIENTS, TOKEN};

const MACS: [&str; 2] = ["52:54:00:00:0a:01", "52:54:00:00:0a:02"];
const STRANGER: &str = CLIENTS[3];

/// Secrets of machine `i`: its user-data and its SSH key material.
fn secret(i: usize) -> String {
    format!("userdata-secret-{i}-c0ffee")
}
fn key(i: usize) -> String {
    format!("AAAAC3NzaC1lZDI1NTE5key{i}secret")
}

fn record(i: usize) -> String {
    format!(
        r##"{{"hostname":"sec{i}","macs":["{mac}"],"ip":{{"address":"{ip}","prefix":24,"gateway":"192.0.2.1"}},
            "netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}},
            "cloud_init":{{"user_data":"#cloud-config\npassword: {s}\n","vendor_data":"v-{s}","network_config":"n-{s}"}},
            "ssh_keys":["ssh-ed25519 {k} ops@sec{i}"]}}"##,
        mac = MACS[i],
        ip = CLIENTS[i],
        s = secret(i),
        k = key(i)
    )
}

fn site(opts: Options) -> Site {
    let mut site = Site::new(opts);
    for i in 0..2 {
        site.machine(&format!("sec{i}"), &record(i));
    }
    site.start();
    site
}

fn event(mac: &str, seq: u64) -> String {
    format!(r#"{{"machine":"{mac}","phase":"metadata","time":"2026-01-01T00:00:00Z","run_id":"r","seq":{seq}}}"#)
}

#[test]
fn data_and_events_only_for_their_own_machine() {
    if !common::prerequisites("data_and_events_only_for_their_own_machine") {
        return;
    }
    let site = site(Options::default());
    let forbidden_before = site.metric("osie_dropped_packets_total{reason=\"http-forbidden\"}");
    let mut refusals = 0;
    let mut seq = 0;
    // Callers: each machine, and an address no machine has.
    for (caller, from) in [(Some(0), CLIENTS[0]), (Some(1), CLIENTS[1]), (None, STRANGER)] {
        for target in 0..2 {
            let own = caller == Some(target);
            let mac = MACS[target];
            let must = |status: u16, what: &str, body: &str| {
                if own {
                    assert_eq!(status, 200, "{from} reading its own {what}: {body}");
                } else {
                    assert_eq!(status, 403, "{from} reading machine {target}'s {what}: {body}");
                    assert!(!body.contains(&secret(target)) && !body.contains(&key(target)), "{what} leaked");
                }
            };
            let r = site.get_as(from, Some(mac), "/metadata");
            must(r.status, "metadata", &r.text());
            if own {
                assert!(r.text().contains(&secret(target)) && r.text().contains(&key(target)), "{}", r.text());
            }
            refusals += usize::from(!own);
            for doc in ["user-data", "meta-data", "vendor-data", "network-config"] {
                let r = site.get_as(from, None, &format!("/nocloud/{mac}/{doc}"));
                must(r.status, doc, &r.text());
                refusals += usize::from(!own);
            }
            // Claiming the target's MAC in the header does not help the EC2 tree either.
            for path in ["/2009-04-04/user-data", "/latest/meta-data/public-keys/0/openssh-key"] {
                let r = site.get_as(from, Some(mac), path);
                let body = r.text();
                assert!(
                    !(!own && (body.contains(&secret(target)) || body.contains(&key(target)))),
                    "{from} got machine {target}'s {path}"
                );
                if caller.is_none() {
                    assert_eq!(r.status, 403);
                    refusals += 1;
                }
            }
            // Events: the machine's own address only, and the header must agree.
            let r = site.post_json_as(from, "/events", &event(mac, seq));
            seq += 1;
            must(r.status, "events", &r.text());
            refusals += usize::from(!own);
            let r = site.curl(
                &[
                    "--interface",
                    from,
                    "-H",
                    "Content-Type: application/json",
                    "-H",
                    &format!("X-Osie-Mac: {}", MACS[1 - target]),
                    "--data-binary",
                    &event(mac, 1000 + seq),
                ],
                "/events",
            );
            assert_eq!(r.status, 403, "a MAC header naming another machine: {}", r.text());
            refusals += 1;
            let r = site
                .curl(&["--interface", from, "-d", "hostname=x"], &format!("/phone-home/i-{}", mac.replace(':', "")));
            must(r.status, "phone-home", &r.text());
            refusals += usize::from(!own);
        }
        // The EC2 tree answers a machine about itself, and an unknown address not at all.
        let r = site.get_as(from, None, "/2009-04-04/user-data");
        match caller {
            Some(i) => assert!(r.status == 200 && r.text().contains(&secret(i)), "{from}: {}", r.text()),
            None => {
                assert_eq!(r.status, 403);
                refusals += 1;
            }
        }
    }
    // Unknown MACs and unknown sources are refused like the rest.
    let r = site.post_json_as(STRANGER, "/events", &event("52:54:00:00:0a:99", 0));
    assert_eq!(r.status, 403, "{}", r.text());
    let r = site.post_json_as(CLIENTS[0], "/events", &event("52:54:00:00:0a:99", 0));
    assert_eq!(r.status, 403, "{}", r.text());
    refusals += 2;
    let forbidden = site.metric("osie_dropped_packets_total{reason=\"http-forbidden\"}") - forbidden_before;
    assert_eq!(forbidden as usize, refusals, "every refusal is counted");

    // What was stored came from each machine's own address.
    let cfg = site.config.to_str().unwrap().to_string();
    for (i, mac) in MACS.iter().enumerate() {
        let out = site.cli(&["machine", mac, "events", "--config", &cfg, "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let evs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let evs = evs.as_array().unwrap();
        assert_eq!(evs.len(), 2, "one event and one phone-home per machine: {evs:?}");
        assert!(evs.iter().all(|e| e["source"] == CLIENTS[i]), "{evs:?}");
    }
}

#[test]
fn admin_operations_need_the_token() {
    if !common::prerequisites("admin_operations_need_the_token") {
        return;
    }
    let site = site(Options::default());
    let mac = MACS[0];
    // Install machine 0 so a reinstall would change something.
    let installed = format!(r#"{{"machine":"{mac}","phase":"installed","time":"t","run_id":"r","seq":0}}"#);
    assert_eq!(site.post_json_as(CLIENTS[0], "/events", &installed).status, 200);
    let routes: [(&str, String); 4] = [
        ("GET", "/admin/machines".into()),
        ("GET", format!("/admin/machines/{mac}")),
        ("GET", format!("/admin/machines/{mac}/events")),
        ("POST", format!("/admin/machines/{mac}/reinstall")),
    ];
    let near_misses = [
        String::new(),
        "Bearer ".into(),
        "Bearer wrong-token-0123456789abcdef".into(),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Bearer {TOKEN}x"),
        format!("Bearer x{TOKEN}"),
        format!("Basic {TOKEN}"),
        format!("bearer{TOKEN}"),
        TOKEN.to_string(),
    ];
    // Each attempt from its own loopback address, so the failed-token back-off (tested in
    // admin.rs) never answers for the token check.
    let mut refused = 0;
    for (method, path) in &routes {
        for auth in near_misses.iter().map(|a| Some(a.as_str())).chain([None]) {
            refused += 1;
            let from = format!("127.0.1.{refused}");
            let (h, query);
            let mut args = vec!["--interface", from.as_str(), "-X", method];
            let target = match auth {
                Some(auth) => {
                    h = format!("Authorization: {auth}");
                    if !auth.is_empty() {
                        args.extend(["-H", h.as_str()]);
                    }
                    path.as_str()
                }
                // A token in the query string is not a token.
                None => {
                    query = format!("{path}?token={TOKEN}");
                    query.as_str()
                }
            };
            let r = site.admin_curl(&args, target);
            assert_eq!(r.status, 401, "{method} {target} with {auth:?}: {}", r.text());
            assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
        }
    }
    assert!(site.get(&format!("/boot/{mac}.ipxe")).text().contains("is installed"), "no reinstall happened");
    assert_eq!(site.metric("osie_dropped_packets_total{reason=\"http-admin-unauthorized\"}"), refused);
    let auth = format!("Authorization: Bearer {TOKEN}");
    for (method, path) in &routes {
        // Not on the machines' listener, token or not: an unknown path there.
        assert_eq!(
            site.curl(&["-X", method, "-H", &auth], path).status,
            404,
            "{method} {path} on the machines' listener"
        );
        let r = site.admin(method, path);
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    }
    assert!(site.get(&format!("/boot/{mac}.ipxe")).text().contains("kernel --name vmlinuz"), "reinstalled");

    // Without a token file the admin API is off: no admin listener, and 404 on the machines'.
    let off = site_without_admin();
    for (method, path) in &routes {
        assert_eq!(off.curl(&["-X", method, "-H", &auth], path).status, 404, "{method} {path} with the admin API off");
        assert_eq!(off.admin(method, path).status, 0, "nothing listens on the admin address");
    }
}

fn site_without_admin() -> Site {
    site(Options { no_admin: true, ..Default::default() })
}

#[test]
fn no_secret_in_logs_scripts_or_the_kernel_command_line() {
    if !common::prerequisites("no_secret_in_logs_scripts_or_the_kernel_command_line") {
        return;
    }
    // Everything bootsvc and its libraries log, at every level, as JSON and as text.
    for log_json in [true, false] {
        let mut site = site(Options { log_json, rust_log: Some("trace"), ..Default::default() });
        let wrong = "wrong-token-tried-0123456789";
        let (mac, ip) = (MACS[0], CLIENTS[0]);
        let script = site.get_as(ip, None, &format!("/boot/{mac}.ipxe")).text();
        assert!(script.contains("kernel --name vmlinuz"), "{script}");
        assert_eq!(site.get_as(ip, Some(mac), "/metadata").status, 200);
        assert_eq!(site.get_as(ip, None, "/2009-04-04/user-data").status, 200);
        assert_eq!(site.get_as(ip, None, "/latest/meta-data/public-keys/0/openssh-key").status, 200);
        for doc in ["user-data", "meta-data", "vendor-data", "network-config"] {
            assert_eq!(site.get_as(ip, None, &format!("/nocloud/{mac}/{doc}")).status, 200);
        }
        // Refused reads of the other machine's data are logged too: without its data.
        assert_eq!(site.get_as(ip, Some(MACS[1]), "/metadata").status, 403);
        assert_eq!(site.post_json_as(ip, "/events", &event(mac, 0)).status, 200);
        let failed = format!(
            r#"{{"machine":"{mac}","phase":"failed","time":"t","run_id":"r","seq":1,"message":"disk error","error":["writing","EIO"]}}"#
        );
        assert_eq!(site.post_json_as(ip, "/events", &failed).status, 200);
        for auth in [format!("Bearer {TOKEN}"), format!("Bearer {wrong}")] {
            site.admin_curl(&["-H", &format!("Authorization: {auth}")], "/admin/machines");
            site.admin_curl(
                &["-X", "POST", "-H", &format!("Authorization: {auth}")],
                &format!("/admin/machines/{mac}/reinstall"),
            );
        }
        let cfg = site.config.to_str().unwrap().to_string();
        assert!(site.cli(&["machines", "--config", &cfg]).status.success());
        site.stop();

        let logs = site.logs();
        assert!(logs.contains("DEBUG") && logs.contains("started processing request"), "debug logging is on:\n{logs}");
        assert!(logs.contains("metadata served"), "the reads were logged");
        let mut secrets = vec![TOKEN.to_string(), wrong.to_string()];
        for i in 0..2 {
            secrets.extend([secret(i), key(i)]);
        }
        for s in &secrets {
            for (what, text) in [("the log", &logs), ("the iPXE script", &script)] {
                if let Some(at) = text.find(s.as_str()) {
                    let line = text[..at].rsplit('\n').next().unwrap_or_default();
                    panic!("{s:?} appears in {what}: …{line}{s}…");
                }
            }
        }
        // The kernel command line (world-readable on the machine) carries only the installer's
        // console, bootsvc's URL and the MAC.
        let kernel = script.lines().find(|l| l.starts_with("kernel ")).unwrap();
        let args: Vec<&str> = kernel.split_whitespace().skip(4).take_while(|w| *w != "||").collect();
        assert_eq!(
            args,
            ["initrd=initrd", "console=ttyS0,115200n8", "osie.url=http://192.0.2.1:8080", &format!("osie.mac={mac}")]
        );
    }
}

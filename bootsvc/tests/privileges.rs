//! bootsvc gives up root after binding its ports: the real `bootsvc serve`, started as root,
//! is read through `/proc/<pid>/task/*/status` (every thread: capabilities are per thread)
//! while it serves DHCP, TFTP and HTTP.

mod common;
mod net;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{Options, Site, CLIENTS};
use osie_testkit::{require_root, require_tools};

const MAC: &str = "02:00:00:00:5f:01";

/// `key:` of every thread's status, e.g. `Uid:` → ["0\t0\t0\t0", …].
fn per_thread(pid: u32, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap_or_default();
        if let Some(v) = status.lines().find_map(|l| l.strip_prefix(key)) {
            out.push(v.trim().to_string());
        }
    }
    assert!(!out.is_empty(), "no {key} for {pid}");
    out
}

fn all_equal(pid: u32, key: &str, want: &str) {
    let got = per_thread(pid, key);
    assert!(got.iter().all(|v| v == want), "{key} {got:?}, want {want:?} on every thread");
}

fn uid_of(name: &str) -> u32 {
    nix::unistd::User::from_name(name).unwrap().unwrap().uid.as_raw()
}

/// Let other users into the site's tree (temp dirs are 0700).
fn open_up(site: &Site) {
    let mut p = site.path("");
    loop {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode | 0o755)).unwrap();
        if p.parent().is_none_or(|x| x == std::path::Path::new("/tmp")) {
            break;
        }
        p = p.parent().unwrap().to_path_buf();
    }
}

#[test]
fn switches_to_the_configured_user_after_binding() {
    let t = "switches_to_the_configured_user_after_binding";
    if !require_root(t) || !require_tools(t, &["curl", "udhcpc"]) {
        return;
    }
    let mut site = Site::new(Options { user: Some("nobody"), ..Default::default() });
    open_up(&site);
    // DHCP and TFTP on (ports 67, 69) on a veth to a client namespace.
    let (client, srv_if, cli_if) = site.segment(Some(MAC));
    site.serve_on(&srv_if, true);
    site.machine(
        "m",
        &format!(
            r#"{{"hostname":"priv","macs":["{MAC}"],"ip":{{"address":"192.0.2.50","prefix":24,"gateway":"192.0.2.1"}},
                "netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#
        ),
    );
    assert!(!site.path("state").exists());
    site.start();

    let nobody = uid_of("nobody");
    let gid = nix::unistd::User::from_name("nobody").unwrap().unwrap().gid.as_raw();
    let pid = site.pid();
    all_equal(pid, "Uid:", &format!("{nobody}\t{nobody}\t{nobody}\t{nobody}"));
    all_equal(pid, "Gid:", &format!("{gid}\t{gid}\t{gid}\t{gid}"));
    all_equal(pid, "Groups:", &gid.to_string());
    for caps in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:", "CapBnd:"] {
        all_equal(pid, caps, "0000000000000000");
    }
    all_equal(pid, "NoNewPrivs:", "1");
    assert!(per_thread(pid, "Uid:").len() > 2, "the runtime's threads are there and were checked");
    // The state directory bootsvc created belongs to that user.
    assert_eq!(std::fs::metadata(site.path("state")).unwrap().uid(), nobody);

    // And it still serves everything: DHCP, TFTP, HTTP, events written to the state store.
    let dir = tempfile::tempdir().unwrap();
    let env = osie_testkit::dhcp::udhcpc(&client, &cli_if, dir.path(), &["-x", "0x4d:69505845"]).unwrap();
    assert_eq!(osie_testkit::dhcp::env_value(&env, "ip").as_deref(), Some("192.0.2.50"), "{env}\n{}", site.logs());
    client.ip(&["addr", "add", "192.0.2.50/24", "dev", &cli_if]).unwrap();
    let out = dir.path().join("undionly.kpxe");
    client
        .run("curl", &["-sS", "-o", out.to_str().unwrap(), "tftp://192.0.2.1/undionly.kpxe"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", site.logs()));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(site.path("tftp/undionly.kpxe")).unwrap());
    let ev = format!(r#"{{"machine":"{MAC}","phase":"metadata","time":"t","run_id":"r","seq":0}}"#);
    let r = client
        .run(
            "curl",
            &["-sS", "-H", "Content-Type: application/json", "--data-binary", &ev, "http://192.0.2.1:8080/events"],
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), r#"{"stored":true,"duplicate":false}"#, "{}", site.logs());
    assert!(site.logs().contains(&format!("runs_as=user nobody (uid {nobody}")), "{}", site.logs());
    site.stop();
}

#[test]
fn without_a_user_stays_uid_0_with_no_capabilities() {
    if !common::prerequisites("without_a_user_stays_uid_0_with_no_capabilities") {
        return;
    }
    let mut site = Site::new(Options::default());
    site.machine(
        "m",
        &format!(r#"{{"hostname":"p0","macs":["{MAC}"],"ip":{{"address":"{}","prefix":24}}}}"#, CLIENTS[0]),
    );
    site.start();
    let pid = site.pid();
    all_equal(pid, "Uid:", "0\t0\t0\t0");
    for caps in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:", "CapBnd:"] {
        all_equal(pid, caps, "0000000000000000");
    }
    all_equal(pid, "NoNewPrivs:", "1");
    let ev = format!(r#"{{"machine":"{MAC}","phase":"metadata","time":"t","run_id":"r","seq":0}}"#);
    assert_eq!(site.post_json_as(CLIENTS[0], "/events", &ev).status, 200, "{}", site.logs());
    site.stop();
}

#[test]
fn refuses_to_start_when_the_user_cannot_write_the_state_dir() {
    if !common::prerequisites("refuses_to_start_when_the_user_cannot_write_the_state_dir") {
        return;
    }
    let mut site = Site::new(Options { user: Some("nobody"), ..Default::default() });
    open_up(&site);
    // A state directory left by a run as root: root's, 0755.
    std::fs::create_dir(site.path("state")).unwrap();
    let (status, log) = site.start_fails();
    assert!(!status.success());
    assert!(
        log.contains("state.dir") && log.contains("is not writable by user nobody") && log.contains("chown -R nobody"),
        "{log}"
    );
    // Given to the user, it starts.
    let nobody = nix::unistd::Uid::from_raw(uid_of("nobody"));
    nix::unistd::chown(&site.path("state"), Some(nobody), None).unwrap();
    site.start();
    site.stop();
}

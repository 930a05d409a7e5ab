//! The shim/GRUB chain's configurations over real sockets (`docs/secure-boot.md`): the real
//! `bootsvc serve` on a LAN that a machine and a hostile neighbour join from namespaces of
//! their own, fetching with real clients (atftp over TFTP, as Debian's signed GRUB does, and
//! curl over HTTP).
//!
//! The machine (a fixed address) gets its installer configuration and the installer's files
//! over TFTP; the neighbour asking for the machine's configuration gets, over TFTP and HTTP,
//! byte for byte what an unknown MAC gets, and the refusal shows on the machine; after the
//! machine's `installed` event its configuration sends it to its disk (one-shot).

mod common;

use common::{Options, Site};
use osie_testkit::{require_root, require_tools, Netns};

const MACHINE: &str = "02:00:00:00:5b:01";
const MACHINE_IP: &str = "192.0.2.31";
const NEIGHBOUR: &str = "02:00:00:00:5b:0e";
const NEIGHBOUR_IP: &str = "192.0.2.67";
const UNKNOWN: &str = "02:00:00:00:5b:99";

fn record() -> String {
    format!(
        r#"{{"hostname":"sb1","macs":["{MACHINE}"],"ip":{{"address":"{MACHINE_IP}","prefix":24}},
            "netboot":{{"allow":true,"uefi_chain":"shim-grub","kernel_args":"osie.debug"}},
            "install":{{"image":{{"name":"debian-12"}}}}}}"#
    )
}

/// `name` over TFTP from the server, fetched by atftp in `ns` (`None`: refused).
fn tftp(ns: &Netns, dir: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let out = dir.join(format!("got-{}", name.replace('/', "_")));
    let _ = std::fs::remove_file(&out);
    let ok = ns.run("atftp", &["--get", "-r", name, "-l", out.to_str().unwrap(), "192.0.2.1"]).is_ok();
    ok.then(|| std::fs::read(&out).unwrap())
}

fn text(b: Option<Vec<u8>>, what: &str) -> String {
    String::from_utf8(b.unwrap_or_else(|| panic!("{what}: refused"))).unwrap()
}

/// What an unknown MAC is told, for `mac`.
fn unknown_config(mac: &str) -> String {
    format!("echo 'osie: no machine with MAC {mac} in the inventory, booting from local disk'\nexit\n")
}

#[test]
fn grub_configs_over_tftp_and_http_follow_the_identification_and_one_shot_rules() {
    let t = "grub_configs_over_tftp_and_http_follow_the_identification_and_one_shot_rules";
    if !require_root(t) || !require_tools(t, &["curl", "atftp"]) {
        return;
    }
    let mut site = Site::new(Options::default());
    // The chain's programs, as scripts/setup puts them: `check` wants them before a record
    // may name the chain.
    for f in ["shimx64.efi", "grubx64.efi"] {
        std::fs::write(site.dir().join("tftp").join(f), format!("{f} stand-in")).unwrap();
    }
    let lan = site.lan();
    site.serve_on(&lan, true);
    site.machine("sb1", &record());
    site.start();
    let (machine, machine_if) = site.join(&lan, MACHINE, Some(&format!("{MACHINE_IP}/24")));
    let (neighbour, neighbour_if) = site.join(&lan, NEIGHBOUR, Some(&format!("{NEIGHBOUR_IP}/24")));
    let dir = site.dir().to_path_buf();
    let own = format!("boot/{MACHINE}.grub");

    // What GRUB reads first: the same for everyone, over either protocol.
    let entry = text(tftp(&neighbour, &dir, "grub/grub.cfg"), "grub/grub.cfg");
    assert!(entry.contains("\nconfigfile /boot/${net_default_mac}.grub\n"), "{entry}");
    assert_eq!(site.curl_in(&neighbour, &["--interface", &neighbour_if], "/grub/grub.cfg").text(), entry);

    // The machine: its installer, over TFTP and HTTP alike.
    let config = text(tftp(&machine, &dir, &own), &own);
    let linux = config.lines().find(|l| l.starts_with("if linux ")).unwrap_or_else(|| panic!("{config}"));
    assert!(linux.starts_with("if linux '/artifacts/vmlinuz' 'console=ttyS0,115200n8' 'osie.debug' "), "{linux}");
    assert!(linux.contains(&format!("'osie.mac={MACHINE}'")), "{linux}");
    assert!(config.contains("  if initrd '/artifacts/initramfs.img'; then\n"), "{config}");
    let by_http = site.curl_in(&machine, &["--interface", &machine_if], &format!("/{own}"));
    assert_eq!((by_http.status, by_http.text()), (200, config.clone()));
    // And the installer's files over TFTP, as GRUB loads them; nothing else of artifacts.dir.
    let kernel = tftp(&machine, &dir, "artifacts/vmlinuz").expect("artifacts/vmlinuz over TFTP");
    assert!(kernel == std::fs::read(dir.join("artifacts/vmlinuz")).unwrap(), "artifacts/vmlinuz differs");
    assert!(tftp(&machine, &dir, "artifacts/initramfs.img").is_some());
    assert!(tftp(&machine, &dir, "artifacts/../tftp/shimx64.efi").is_none());

    // The neighbour asking for the machine's: what an unknown MAC gets, over both.
    let stolen = text(tftp(&neighbour, &dir, &own), "the neighbour's TFTP request");
    assert_eq!(stolen, unknown_config(MACHINE));
    let stolen = site.curl_in(&neighbour, &["--interface", &neighbour_if], &format!("/{own}"));
    assert_eq!((stolen.status, stolen.text()), (200, unknown_config(MACHINE)));
    let unknown = text(tftp(&neighbour, &dir, &format!("boot/{UNKNOWN}.grub")), "unknown MAC");
    assert_eq!(unknown, unknown_config(UNKNOWN));
    // The operator sees the refused claims on the machine.
    let cfg = site.config.to_str().unwrap().to_string();
    let show = site.cli(&["machine", MACHINE, "show", "--config", &cfg, "--json"]);
    let view: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(view["netboot"]["uefi_chain"], "shim-grub");
    let refused = view["identity"]["refused"].as_array().unwrap();
    assert!(refused.iter().any(|c| c["address"] == NEIGHBOUR_IP && c["route"] == "grub"), "{refused:?}");

    // One-shot: once installed, the machine's own configuration sends it to its disk.
    let installed =
        format!(r#"{{"machine":"{MACHINE}","phase":"installed","time":"2026-01-01T00:00:00Z","run_id":"r","seq":0}}"#);
    let args =
        ["--interface", machine_if.as_str(), "-H", "Content-Type: application/json", "--data-binary", &installed];
    assert_eq!(site.curl_in(&machine, &args, "/events").status, 200);
    let after = text(tftp(&machine, &dir, &own), "after installed");
    assert!(after.contains("is installed, netboot was cleared") && after.ends_with("\nexit\n"), "{after}");
    assert!(!after.contains("linux"), "{after}");
}

//! The shim/GRUB chain's configurations over real sockets (`docs/secure-boot.md`): the real
//! `bootsvc serve` on a LAN that a machine and a hostile neighbour join from namespaces of
//! their own, fetching with real clients (atftp over TFTP, as Debian's signed GRUB does, and
//! curl over HTTP).
//!
//! The machine (a fixed address) gets its installer configuration and the installer's files
//! over TFTP; the neighbour asking for the machine's configuration gets, over TFTP and HTTP,
//! byte for byte what an unknown MAC gets, and the refusal shows on the machine; after the
//! machine's `installed` event its configuration sends it to its disk (one-shot).
//!
//! Architectures (`docs/arm64.md`): an x86_64 and an aarch64 machine each fetch, over TFTP
//! and HTTP, the GRUB configuration and iPXE script of both architectures' paths, then the
//! kernel and initramfs those name: every path gets its own architecture's files, byte for
//! byte, and never the other's, whatever the record says. Both fetch the arm64 GRUB of UEFI
//! HTTP boot (`/ipxe/grubaa64-http.efi`) over HTTP, byte for byte.

mod common;

use common::{pattern, Options, Site};
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
    assert!(entry.contains("\nelse\n  configfile /boot/${net_default_mac}.grub\nfi\n"), "{entry}");
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
    // Shim booted over IPv6 asks for GRUB as `/grubx64.efi`: the root's; no other absolute
    // name is re-rooted.
    assert_eq!(tftp(&machine, &dir, "/grubx64.efi").as_deref(), Some(&b"grubx64.efi stand-in"[..]));
    assert!(tftp(&machine, &dir, "/shimx64.efi").is_none());

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

const X86: &str = "02:00:00:00:5c:01";
const X86_IP: &str = "192.0.2.41";
const ARM: &str = "02:00:00:00:5c:02";
const ARM_IP: &str = "192.0.2.42";

#[test]
fn each_architecture_gets_only_its_own_kernel_and_initramfs_over_tftp_and_http() {
    let t = "each_architecture_gets_only_its_own_kernel_and_initramfs_over_tftp_and_http";
    if !require_root(t) || !require_tools(t, &["curl", "atftp"]) {
        return;
    }
    let mut site = Site::new(Options::default());
    // The arm64 files beside the x86 ones (as scripts/build lays out build/boot), with bytes
    // of their own.
    let art = site.dir().join("artifacts");
    std::fs::create_dir_all(art.join("arm64")).unwrap();
    std::fs::write(art.join("arm64/vmlinuz"), pattern(2 * 1024 * 1024 + 333, 7)).unwrap();
    std::fs::write(art.join("arm64/initramfs.img"), pattern(512 * 1024 + 9, 8)).unwrap();
    let files = |arch: &str| -> [(String, Vec<u8>); 2] {
        let sub = if arch == "arm64" { "arm64/" } else { "" };
        ["vmlinuz", "initramfs.img"].map(|f| {
            let name = format!("artifacts/{sub}{f}");
            let bytes = std::fs::read(site.dir().join(&name)).unwrap();
            (name, bytes)
        })
    };
    let (x86_files, arm_files) = (files("x86_64"), files("arm64"));
    assert_ne!(x86_files[0].1, arm_files[0].1);
    // The arm64 GRUB of UEFI HTTP boot (DHCP arch 19 gets its URL), in the TFTP root that
    // bootsvc serves under /ipxe/.
    let http_grub = pattern(640 * 1024 + 5, 9);
    std::fs::write(site.dir().join("tftp/grubaa64-http.efi"), &http_grub).unwrap();
    let lan = site.lan();
    site.serve_on(&lan, true);
    // The x86_64 machine names the site's (x86_64) image; the arm64 one an image by URL (a
    // named image of another architecture is refused at start).
    let arm_image = format!(r#"{{"url":"http://192.0.2.9/arm64.raw.zst","sha256":"{}"}}"#, "ab".repeat(32));
    for (name, mac, ip, arch, image) in [
        ("x1", X86, X86_IP, "x86_64", r#"{"name":"debian-12"}"#.to_string()),
        ("a1", ARM, ARM_IP, "aarch64", arm_image),
    ] {
        site.machine(
            name,
            &format!(
                r#"{{"hostname":"{name}","macs":["{mac}"],"arch":"{arch}","ip":{{"address":"{ip}","prefix":24}},
                    "netboot":{{"allow":true}},"install":{{"image":{image}}}}}"#
            ),
        );
    }
    site.start();
    let dir = site.dir().to_path_buf();
    for (mac, ip) in [(X86, X86_IP), (ARM, ARM_IP)] {
        let (ns, nif) = site.join(&lan, mac, Some(&format!("{ip}/24")));
        let http = |path: &str| {
            let r = site.curl_in(&ns, &["--interface", &nif], path);
            assert_eq!(r.status, 200, "{mac}: GET {path}");
            r.body
        };
        // UEFI HTTP boot's arm64 GRUB, as the firmware fetches it.
        assert!(http("/ipxe/grubaa64-http.efi") == http_grub, "{mac}: /ipxe/grubaa64-http.efi");
        // Each architecture's paths: the GRUB configuration (the path its GRUB's entry picks
        // by $grub_cpu) and the iPXE script (the path DHCP hands an iPXE of that architecture).
        for (sub, own, other) in [("", &x86_files, &arm_files), ("arm64/", &arm_files, &x86_files)] {
            let what = format!("{mac} through boot/{sub}");
            let grub_name = format!("boot/{sub}{mac}.grub");
            let config = text(tftp(&ns, &dir, &grub_name), &grub_name);
            assert_eq!(String::from_utf8(http(&format!("/{grub_name}"))).unwrap(), config, "{what}");
            let script = String::from_utf8(http(&format!("/boot/{sub}{mac}.ipxe"))).unwrap();
            for (name, bytes) in own.iter() {
                assert!(config.contains(&format!("'/{name}'")), "{what}: GRUB does not name {name}:\n{config}");
                assert!(script.contains(&format!("/{name} ")), "{what}: iPXE does not fetch {name}:\n{script}");
                // The file that path names, over TFTP (as GRUB loads it after UEFI PXE) and
                // HTTP (as iPXE, and the arm64 GRUB after UEFI HTTP boot, load it).
                assert!(tftp(&ns, &dir, name).as_ref() == Some(bytes), "{what}: {name} over TFTP");
                assert!(http(&format!("/{name}")) == *bytes, "{what}: {name} over HTTP");
            }
            for (name, _) in other.iter() {
                assert!(!config.contains(&format!("/{name}'")), "{what}: GRUB names {name}:\n{config}");
                assert!(!script.contains(&format!("/{name} ")), "{what}: iPXE fetches {name}:\n{script}");
            }
            assert!(config.ends_with(&format!("configfile /{grub_name}\n")), "{what}: {config}");
        }
    }
}

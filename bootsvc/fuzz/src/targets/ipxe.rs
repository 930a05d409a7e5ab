//! iPXE script rendering with hostile values: the fuzzer picks the hostname, instance id,
//! kernel arguments (the machine's and the config's), the base URL, the kernel and initrd
//! names, the script URL, the Tinkerbell name and annotations, and whether the machine is
//! known, allowed or installed. The record goes through the real loader (native JSON or
//! Tinkerbell `Hardware`), the real validation, and `/boot/<mac>.ipxe`'s choice.
//!
//! Property ([`check_script`]): read the way iPXE reads it, every script has exactly the
//! commands, separators, labels and arguments its kind promises; values never add or change
//! a command, never bring a `${…}` expansion, and the installer's command line still parses
//! to bootsvc's URL and the machine's MAC. A record and config that validation accepts never
//! fail to render.
use crate::{check_script, config, entry, images, Expect};
use arbitrary::{Arbitrary, Unstructured};
use bootsvc::http::boot::choose;
use bootsvc::inventory::model::Arch;
use bootsvc::inventory::validate;
use bootsvc::netboot::Via;
use bootsvc::problem::Problems;
use bootsvc::state::MachineState;
use osie_api::MacAddr;
use serde_json::json;

#[derive(Debug, Arbitrary)]
pub struct Input {
    tinkerbell: bool,
    known: bool,
    cleared: bool,
    allow: bool,
    mac: [u8; 6],
    hostname: String,
    instance_id: Option<String>,
    kernel_args: Option<String>,
    script_url: Option<String>,
    custom_script: Option<String>,
    image_url: Option<String>,
    cfg_kernel_args: Option<String>,
    public_url: Option<String>,
    kernel: Option<String>,
    initrd: Option<String>,
}

/// The bytes as libFuzzer's typed targets read them (`arbitrary_take_rest`).
pub fn run(data: &[u8]) {
    if let Ok(i) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        input(i);
    }
}

pub fn input(i: Input) {
    let mut cfg = config();
    if let Some(a) = &i.cfg_kernel_args {
        cfg.artifacts.kernel_args = a.clone();
    }
    if let Some(u) = &i.public_url {
        // As `Config::load` leaves it.
        cfg.http.public_url = u.trim_end_matches('/').to_string();
    }
    if let Some(k) = &i.kernel {
        cfg.artifacts.kernel = k.clone();
    }
    if let Some(k) = &i.initrd {
        cfg.artifacts.initrd = k.clone();
    }
    let mut cfg_ok = bootsvc::checks::base_url(&cfg.http.public_url).is_ok()
        && bootsvc::ipxe::split_args(&cfg.artifacts.kernel_args).is_ok();
    for name in [&cfg.artifacts.kernel, &cfg.artifacts.initrd] {
        cfg_ok &= bootsvc::checks::file_name(name).is_ok();
    }

    // A unicast MAC (validation refuses multicast ones).
    let mut octets = i.mac;
    octets[0] &= 0xfe;
    let mac = MacAddr::new(octets);
    let image = match &i.image_url {
        Some(u) => json!({"url": u, "sha256": "ab".repeat(32)}),
        None => json!({"name": "debian-12"}),
    };
    let doc = if i.tinkerbell {
        let mut ipxe = serde_json::Map::new();
        if let Some(u) = &i.script_url {
            ipxe.insert("url".into(), json!(u));
        }
        if let Some(c) = &i.custom_script {
            ipxe.insert("contents".into(), json!(c));
        }
        json!({
            "apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware",
            "metadata": {"name": i.hostname, "annotations": {"osie/image": "debian-12"}},
            "spec": {
                "interfaces": [{
                    "dhcp": {"mac": mac.to_string(), "ip": {"address": "192.0.2.20", "netmask": "255.255.255.0"}},
                    "netboot": {"allowPXE": i.allow, "ipxe": ipxe}
                }],
                "metadata": {"instance": {"id": i.instance_id}}
            }
        })
    } else {
        json!({
            "hostname": i.hostname, "instance_id": i.instance_id, "macs": [mac.to_string()],
            "ip": {"address": "192.0.2.20", "prefix": 24},
            "netboot": {"allow": i.allow, "kernel_args": i.kernel_args, "ipxe_script_url": i.script_url,
                        "ipxe_script": i.custom_script},
            "install": {"image": image}
        })
    };
    let Some(e) = entry(&doc.to_string()) else { return };
    let mut p = Problems::default();
    validate::machine(&e, &cfg, &images(), &mut p);
    let state = MachineState { netboot_cleared: i.cleared, ..Default::default() };
    let known = i.known.then_some(&e);
    let choice = choose(&cfg, known, &state, mac, Arch::X86_64, Via::V4);
    let m = &e.machine;
    let want = Expect {
        cfg: &cfg,
        mac,
        machine_args: m.netboot.kernel_args.as_deref(),
        script_url: m.netboot.ipxe_script_url.as_deref(),
        valid: cfg_ok && p.is_empty(),
    };
    check_script(&choice, &want);
    let expected_kind = if !i.known {
        "unknown"
    } else if !m.netboot.allow || i.cleared {
        "local-boot"
    } else if m.netboot.ipxe_script.is_some() {
        "custom"
    } else if m.netboot.ipxe_script_url.is_some() {
        "chain"
    } else {
        "installer"
    };
    if choice.kind != "error" {
        assert_eq!(choice.kind, expected_kind);
    }

    // The renderers on their own, with values no validation has seen.
    let args: Vec<String> = [&i.kernel_args, &i.cfg_kernel_args].into_iter().flatten().cloned().collect();
    let installer = bootsvc::ipxe::Installer {
        kernel_url: i.public_url.as_deref().unwrap_or("http://192.0.2.1/k"),
        initrd_url: i.script_url.as_deref().unwrap_or("http://192.0.2.1/i"),
        fallbacks: &[],
        args: &args,
        banner: &i.hostname,
    };
    if let Ok(s) = bootsvc::ipxe::installer(&installer) {
        let cmds = bootsvc::ipxe::reader::commands(&s);
        assert_eq!(cmds.len(), 12, "{s:?}");
        assert_eq!(cmds[2].tokens[3], installer.kernel_url);
        assert_eq!(&cmds[2].tokens[5..], &args[..], "{s:?}");
        assert_eq!(cmds[4].tokens[3], installer.initrd_url);
    }
    if let Ok(s) = bootsvc::ipxe::chain(installer.initrd_url, &i.hostname) {
        let cmds = bootsvc::ipxe::reader::commands(&s);
        assert_eq!(cmds.len(), 7, "{s:?}");
        assert_eq!(cmds[1].tokens, ["chain", "--autofree", installer.initrd_url]);
    }
    let names = bootsvc::ipxe::reader::names(&bootsvc::ipxe::local_boot(&i.hostname));
    assert_eq!(names, ["echo", "iseq", "sanboot", "exit"]);
}

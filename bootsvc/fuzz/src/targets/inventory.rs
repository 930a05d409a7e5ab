//! Inventory and config parsing: a machine record file (native or Tinkerbell `Hardware`, one
//! object or a list) through parsing, per-record and cross-record validation, and then
//! everything bootsvc derives from an accepted record; or a `bootsvc.toml` through parsing
//! and validation.
//!
//! Input: byte 0 even → the rest is an inventory file; odd → a config file.
//!
//! Properties: nothing panics; problems name a field; a record that validation accepts
//! renders its iPXE script (checked against iPXE's reading of it, [`check_script`]), its
//! metadata, NoCloud meta-data and EC2 tree without failing; its NoCloud meta-data YAML has
//! exactly the three keys (plus `public-keys`) and nothing injected.
use std::path::Path;

use crate::{check_script, config, entries, images, Expect};
use bootsvc::http::boot::choose;
use bootsvc::inventory::model::Arch;
use bootsvc::inventory::{validate, Snapshot};
use bootsvc::netboot::Via;
use bootsvc::problem::Problems;
use bootsvc::state::MachineState;

pub fn run(data: &[u8]) {
    let [which, text @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    if which % 2 == 1 {
        if let Ok(cfg) = bootsvc::config::Config::parse(text, Path::new("bootsvc.toml")) {
            // Relative paths stay relative to the fuzzer's directory: checks only stat them.
            let _ = cfg.validate();
        }
        return;
    }
    let cfg = config();
    let images = images();
    let (list, mut problems) = entries(text);
    for e in &list {
        let mut p = Problems::default();
        validate::machine(e, &cfg, &images, &mut p);
        for x in p.iter() {
            assert!(!x.what.is_empty(), "a problem without a description");
        }
        let valid = p.is_empty();
        problems.0.extend(p.0);
        let m = &e.machine;
        let Some(mac) = m.boot_mac() else {
            assert!(!valid, "a record without a MAC passed validation");
            continue;
        };
        let choice = choose(&cfg, Some(e), &MachineState::default(), mac, Arch::X86_64, Via::V4);
        let want = Expect {
            cfg: &cfg,
            mac,
            machine_args: m.netboot.kernel_args.as_deref(),
            script_url: m.netboot.ipxe_script_url.as_deref(),
            valid,
        };
        check_script(&choice, &want);
        // No vendor checksums file is fetched here: a plan that needs one does not resolve.
        let md = bootsvc::metadata::for_installer(m, mac, &images, &cfg.http.public_url, None, None);
        let vendor = m.install.as_ref().is_some_and(|i| i.image.checksums_url.is_some());
        let json = serde_json::to_string(&md).expect("metadata serializes");
        let back: osie_api::Metadata = serde_json::from_str(&json).expect("metadata parses back");
        assert_eq!(back, md);
        if valid {
            assert!(m.install.is_none() || vendor || md.install.is_some(), "a valid install plan did not resolve");
            if m.cloud_init.meta_data.is_none() {
                check_meta_data(&bootsvc::metadata::nocloud_meta_data(m), m);
            }
        }
        for path in
            ["", "instance-id", "hostname", "public-keys", "public-keys/0", "public-keys/0/openssh-key", "x/y/z"]
        {
            let _ = bootsvc::metadata::ec2_meta_data(m, "192.0.2.9".parse().expect("ip"), path).body();
        }
    }
    validate::across(&list, &mut problems);
    if problems.is_empty() {
        let snap = Snapshot::new(list, images);
        for e in snap.entries() {
            for mac in &e.machine.macs {
                assert!(snap.by_mac(mac).is_some());
            }
        }
    }
}

/// Generated NoCloud meta-data: `key: "json string"` lines, then the keys as a list. Every
/// line must be one of those, so no value can add a key.
fn check_meta_data(md: &str, m: &bootsvc::inventory::Machine) {
    let mut keys = Vec::new();
    for line in md.lines() {
        if let Some(item) = line.strip_prefix("  - ") {
            let k: String = serde_json::from_str(item).unwrap_or_else(|e| panic!("list item {item:?}: {e}"));
            assert!(m.ssh_keys.contains(&k), "{k:?} is not one of the record's keys");
            continue;
        }
        let (k, v) = line.split_once(": ").unwrap_or((line.trim_end_matches(':'), ""));
        keys.push(k.to_string());
        if !v.is_empty() {
            let _: String = serde_json::from_str(v).unwrap_or_else(|e| panic!("value of {k}: {v:?}: {e}"));
        }
    }
    let mut want = vec!["instance-id", "local-hostname", "hostname"];
    if !m.ssh_keys.is_empty() {
        want.push("public-keys");
    }
    assert_eq!(keys, want, "meta-data keys: {md:?}");
}

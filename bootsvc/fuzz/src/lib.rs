//! Fixtures and oracles shared by the fuzz targets in `fuzz_targets/`.
//!
//! - [`config`], [`images`], [`entry`]: a fixed service config and image catalog, and a
//!   machine record built from JSON the way the inventory loader builds it;
//! - [`world_record`]: a machine of the identity targets' small worlds;
//! - [`FuzzBackend`]: a [`Backend`] whose answer is a pure function of the MAC, so every MAC
//!   the fuzzer invents is one of a few kinds of machine;
//! - [`check_script`]: the iPXE oracle: a rendered script, read the way iPXE reads it
//!   ([`bootsvc::ipxe::reader`]), has exactly the commands its kind promises;
//! - [`targets`]: one module per fuzz target, `run(bytes)`, called by `fuzz_targets/*.rs`
//!   under libFuzzer and by `tests/corpus.rs`, which replays the kept corpus on stable Rust.

pub mod targets {
    pub mod api_json;
    pub mod dhcp;
    pub mod dhcp6;
    pub mod identity;
    pub mod identity6;
    pub mod inventory;
    pub mod ipxe;
    pub mod qcow2;
    pub mod ra;
    pub mod tftp;
}

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use bootsvc::config::Config;
use bootsvc::http::boot::Choice;
use bootsvc::inventory::images::{ImageManifest, Images, ManifestFormat};
use bootsvc::inventory::model::{Arch, Ip6Config, IpConfig, Machine, Netboot};
use bootsvc::inventory::{Backend, Entry, Snapshot};
use bootsvc::ipxe::reader;
use bootsvc::problem::Problems;
use osie_api::{BootParams, MacAddr};

/// The service config every target starts from (`public_url` without a trailing slash, as
/// `Config::load` leaves it).
pub const CONFIG: &str = r#"
[listen]
interface = "br0"
address = "192.0.2.1"

[dhcp]
pool = { start = "192.0.2.100", end = "192.0.2.110", prefix = 24, gateway = "192.0.2.1", dns = ["192.0.2.1"] }

[tftp]
root = "tftp"

[http]
listen = "192.0.2.1:8080"
public_url = "http://192.0.2.1:8080"

[artifacts]
dir = "artifacts"
images_dir = "images"
kernel_args = "console=ttyS0,115200n8"

[state]
dir = "state"

[inventory]
dir = "machines"
"#;

pub fn config() -> Config {
    Config::parse(CONFIG, Path::new("bootsvc.toml")).expect("the fuzz config parses")
}

/// One image, `debian-12`.
pub fn images() -> Images {
    let m = ImageManifest {
        name: "debian-12".into(),
        file: "debian-12.raw.zst".into(),
        format: ManifestFormat::Zstd,
        arch: Default::default(),
        size: 10,
        raw_size: Some(100),
        sha256: Some("ab".repeat(32)),
        checksums_url: None,
        signature_url: None,
        checksum_of: Default::default(),
        digest: None,
    };
    [("debian-12".to_string(), m)].into()
}

/// The records in `json` (a file `m.json`), and the problems parsing found.
pub fn entries(json: &str) -> (Vec<Entry>, Problems) {
    let mut p = Problems::default();
    let e = bootsvc::inventory::load::parse_file(Path::new("m.json"), json, &mut p);
    (e, p)
}

/// The first record of `json`, if it parses.
pub fn entry(json: &str) -> Option<Entry> {
    entries(json).0.into_iter().next()
}

/// An identity target's world as the service holds it: machine `m<i>` has its NICs and,
/// when given, its fixed address as `"<field>":{"address":…,"prefix":<prefix>}` (`ip` or
/// `ip6`).
pub fn world_snapshot<A: std::fmt::Display>(
    machines: &[(Vec<MacAddr>, Option<A>)],
    field: &str,
    prefix: u8,
) -> Snapshot {
    let entries = machines
        .iter()
        .enumerate()
        .map(|(i, (macs, fixed))| {
            let macs: Vec<String> = macs.iter().map(|m| format!("\"{m}\"")).collect();
            let fixed = fixed
                .as_ref()
                .map(|a| format!(r#","{field}":{{"address":"{a}","prefix":{prefix}}}"#))
                .unwrap_or_default();
            let json = format!(r#"{{"hostname":"m{i}","macs":[{}]{fixed}}}"#, macs.join(","));
            entry(&json).unwrap_or_else(|| panic!("the fuzz world's record does not parse: {json}"))
        })
        .collect();
    Snapshot::new(entries, Default::default())
}

/// Machines by the last byte of their MAC (`mac[5] % 4`): 0 unknown, 1 fixed address
/// `192.0.2.<mac[5]>` allowed to netboot, 2 pool address allowed, 3 fixed address not
/// allowed. An odd `mac[4]` makes it an arm64 machine.
pub struct FuzzBackend;

impl FuzzBackend {
    pub fn kind(mac: &MacAddr) -> u8 {
        mac.octets()[5] % 4
    }

    pub fn fixed_ip(mac: &MacAddr) -> Option<Ipv4Addr> {
        matches!(Self::kind(mac), 1 | 3).then(|| Ipv4Addr::new(192, 0, 2, mac.octets()[5]))
    }

    pub fn machine(mac: &MacAddr) -> Option<Machine> {
        let kind = Self::kind(mac);
        if kind == 0 {
            return None;
        }
        let o = mac.octets();
        Some(Machine {
            hostname: format!("m{:02x}{:02x}", o[4], o[5]),
            instance_id: None,
            macs: vec![*mac],
            ip: Self::fixed_ip(mac).map(|address| IpConfig {
                address,
                prefix: 24,
                gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
                dns: vec![],
            }),
            // Fixed machines have an IPv6 address too (DHCPv6's only kind).
            ip6: Self::fixed_ip(mac).map(|_| Ip6Config {
                address: std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, u16::from(o[4]), u16::from(o[5])),
                prefix: 64,
            }),
            arch: if o[4] % 2 == 1 { Arch::Aarch64 } else { Arch::X86_64 },
            netboot: Netboot { allow: kind != 3, ..Default::default() },
            install: None,
            cloud_init: Default::default(),
            ssh_keys: vec![],
            site: None,
            labels: Default::default(),
            bmc: None,
        })
    }
}

impl Backend for FuzzBackend {
    fn by_mac(&self, mac: &MacAddr) -> Option<Arc<Machine>> {
        Self::machine(mac).map(Arc::new)
    }

    fn by_ip(&self, ip: Ipv4Addr) -> Option<Arc<Machine>> {
        // Fixed addresses 192.0.2.x belong to the machine 52:54:00:00:00:x.
        let o = ip.octets();
        if o[..3] != [192, 0, 2] {
            return None;
        }
        let mac = MacAddr::from_slice(&[0x52, 0x54, 0, 0, 0, o[3]])?;
        (Self::fixed_ip(&mac) == Some(ip)).then(|| Self::by_mac(self, &mac)).flatten()
    }

    fn netboot_allowed(&self, mac: &MacAddr) -> bool {
        Self::machine(mac).is_some_and(|m| m.netboot.allow)
    }
}

/// What a machine's script must look like, given what went into it.
pub struct Expect<'a> {
    pub cfg: &'a Config,
    pub mac: MacAddr,
    /// The machine's own `netboot.kernel_args`.
    pub machine_args: Option<&'a str>,
    pub script_url: Option<&'a str>,
    /// Config and record passed validation: rendering must not fail.
    pub valid: bool,
}

/// Hold `choice` against how iPXE reads it. Panics (a fuzz finding) when a script has a
/// command, separator, label or argument its kind does not promise, or any `${`.
pub fn check_script(choice: &Choice, want: &Expect<'_>) {
    let s = &choice.script;
    assert!(s.starts_with("#!ipxe\n"), "no magic line: {s:?}");
    if choice.kind == "custom" {
        // The operator's own program, served as written.
        return;
    }
    // The one expansion osie writes: the local boot script's `${platform}` test.
    let local = matches!(choice.kind, "unknown" | "local-boot" | "error");
    assert_eq!(
        s.matches("${").count(),
        usize::from(local),
        "a setting expansion got into a {} script: {s:?}",
        choice.kind
    );
    if local {
        assert!(s.contains("iseq ${platform} pcbios "), "{} script without its platform test: {s:?}", choice.kind);
    }
    assert!(
        s.bytes().all(|b| b == b'\n' || (b' '..=b'~').contains(&b)),
        "a control or non-ASCII byte in a {} script: {s:?}",
        choice.kind
    );
    let cmds = reader::commands(s);
    let names: Vec<String> = cmds.iter().map(reader::Command::name).collect();
    let seps: Vec<Option<&str>> = cmds.iter().map(|c| c.then).collect();
    let shape: (&[&str], &[Option<&str>]) = match choice.kind {
        "unknown" | "local-boot" | "error" => {
            (&["echo", "iseq", "sanboot", "exit"], &[None, Some("&&"), Some("||"), None])
        }
        "chain" => (
            &["echo", "chain", "goto", "exit", ":osie_failed", "echo", "exit"],
            &[None, Some("||"), None, None, None, None, None],
        ),
        "installer" => (
            &[
                "echo",
                ":osie_retry",
                "kernel",
                "goto",
                "initrd",
                "goto",
                "boot",
                "goto",
                ":osie_failed",
                "echo",
                "sleep",
                "goto",
            ],
            &[None, None, Some("||"), None, Some("||"), None, Some("||"), None, None, None, None, None],
        ),
        k => panic!("unexpected script kind {k:?}"),
    };
    assert_eq!(names, shape.0, "{} script has other commands: {s:?}", choice.kind);
    assert_eq!(seps, shape.1, "{} script has other separators: {s:?}", choice.kind);
    // Banners: `echo osie: …`, every word from the harmless set.
    for c in cmds.iter().filter(|c| c.tokens.first().map(String::as_str) == Some("echo")) {
        assert_eq!(c.tokens[1], "osie:", "{s:?}");
        for w in &c.tokens[2..] {
            assert!(w.chars().all(|ch| ch.is_ascii_alphanumeric() || ".,:/()_+=@-".contains(ch)), "echo word {w:?}");
        }
    }
    let cfg = want.cfg;
    let base = &cfg.http.public_url;
    match choice.kind {
        "error" => assert!(!want.valid, "a valid record failed to render: {:?}", choice.why),
        "chain" => {
            let url = want.script_url.expect("a chain script without a script URL");
            assert_eq!(cmds[1].tokens, ["chain", "--autofree", url], "{s:?}");
            assert_eq!(cmds[2].tokens, ["goto", "osie_failed"]);
        }
        "installer" => {
            let mut args = vec![
                "kernel".to_string(),
                "--name".into(),
                "vmlinuz".into(),
                format!("{base}/artifacts/{}", cfg.artifacts.kernel),
                "initrd=initrd".into(),
            ];
            let words = |a: &str| a.split(' ').filter(|w| !w.is_empty()).map(String::from).collect::<Vec<_>>();
            args.extend(words(&cfg.artifacts.kernel_args));
            args.extend(words(want.machine_args.unwrap_or_default()));
            args.push(format!("osie.url={base}"));
            args.push(format!("osie.mac={}", want.mac));
            assert_eq!(cmds[2].tokens, args, "kernel command differs: {s:?}");
            let initrd = ["initrd", "--name", "initrd", &format!("{base}/artifacts/{}", cfg.artifacts.initrd)];
            assert_eq!(cmds[4].tokens, initrd, "{s:?}");
            assert_eq!(cmds[6].tokens, ["boot"]);
            for (i, label) in [(3, "osie_failed"), (5, "osie_failed"), (7, "osie_failed"), (11, "osie_retry")] {
                assert_eq!(cmds[i].tokens, ["goto", label], "{s:?}");
            }
            assert_eq!(cmds[10].tokens, ["sleep", "10"]);
            // What the installer will read from /proc/cmdline: bootsvc's URL and the MAC, whatever
            // the operator's arguments said.
            let cmdline = cmds[2].tokens[4..].join(" ");
            let p = BootParams::parse(&cmdline)
                .unwrap_or_else(|e| panic!("the installer cannot parse its command line {cmdline:?}: {e}"));
            assert_eq!((p.url.as_str(), p.mac), (base.trim_end_matches('/'), want.mac), "{cmdline}");
        }
        _ => {}
    }
}

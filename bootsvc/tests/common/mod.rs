//! bootsvc's test site: the test kit's [`osie_testkit::site::Site`] with this crate's
//! fixtures. A network namespace with bootsvc's address (192.0.2.1) and a few machine
//! addresses on its loopback, a temp directory with config, artifacts, an image, machines and
//! state, and the real `bootsvc serve` binary running in the namespace with DHCP and TFTP off.
//! Clients are real `curl` processes in the same namespace, bound to a machine's address with
//! `--interface`.
//!
//! [`Site`] derefs to the kit's site and adds the calls tests make bare: the ones that can
//! fail panic with the reason here, and `start`/`stop` take `&mut self` as a running server
//! is a change of the site.
#![allow(dead_code)]

pub mod dhcp6;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use osie_testkit::site::config::{Admin, DhcpMode, HttpCaps, Log, LogFormat, Pool};
use osie_testkit::site::{self, Dir, Launch};
use osie_testkit::Netns;
use sha2::{Digest, Sha256};

pub const SERVER: &str = "192.0.2.1";
pub const BASE: &str = "http://192.0.2.1:8080";
/// The admin API: its own listener, on the namespace's loopback (the default `admin.listen`).
pub const ADMIN: &str = "http://127.0.0.1:8081";
pub const TOKEN: &str = "test-token-0123456789abcdef";
/// The status page's read-only token, with [`Options::read_only`].
pub const RO_TOKEN: &str = "read-only-token-0123456789abcdef";
/// Addresses on the namespace's loopback besides the server's: machines call from these.
pub const CLIENTS: [&str; 4] = ["192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14"];

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bootsvc")
}

/// `true` when this test can run (root, curl); otherwise it was skipped with a message.
pub fn prerequisites(test: &str) -> bool {
    osie_testkit::require_root(test) && osie_testkit::require_tools(test, &["curl", "ip"])
}

/// How the generated site differs from the default.
#[derive(Default)]
pub struct Options {
    pub log_json: bool,
    pub pool: bool,
    /// `[dhcp] mode = "proxy"` (beside a site DHCP server).
    pub proxy: bool,
    /// No `[admin]` section: the admin API is off.
    pub no_admin: bool,
    /// `RUST_LOG` for the server (default: unset, so `log.level = "info"`).
    pub rust_log: Option<&'static str>,
    /// `[security] user`.
    pub user: Option<&'static str>,
    /// `[http]` caps beyond the site's own (`max_connections`…).
    pub http: HttpCaps,
    /// `admin.listen` (default: unset, so `127.0.0.1:8081`).
    pub admin_listen: Option<String>,
    /// `admin.read_only_token_file` holding [`RO_TOKEN`].
    pub read_only: bool,
}

/// The site's `bootsvc.toml`: DHCP and TFTP off, small HTTP limits, artifacts, images and
/// machines beside it.
pub fn config(opts: &Options) -> site::Config {
    let mut c = site::Config::new("lo", SERVER.parse().unwrap());
    c.dhcp.enabled = Some(false);
    c.dhcp.mode = opts.proxy.then_some(DhcpMode::Proxy);
    c.dhcp.pool = opts.pool.then(|| Pool {
        start: "192.0.2.100".parse().unwrap(),
        end: "192.0.2.199".parse().unwrap(),
        prefix: 24,
        gateway: Some(SERVER.parse().unwrap()),
    });
    c.tftp.enabled = Some(false);
    c.http.public_url = format!("{BASE}/");
    c.http.caps = HttpCaps {
        max_body_bytes: Some(65536),
        max_header_bytes: Some(8192),
        request_timeout_secs: Some(5),
        ..opts.http.clone()
    };
    c.artifacts.kernel_args = Some("console=ttyS0,115200n8".into());
    c.admin = (!opts.no_admin).then(|| Admin {
        listen: opts.admin_listen.clone(),
        read_only_token: opts.read_only.then(|| RO_TOKEN.to_string()),
        ..Admin::with_token(TOKEN)
    });
    c.log =
        Log { format: Some(if opts.log_json { LogFormat::Json } else { LogFormat::Text }), level: Some("info".into()) };
    c.user = opts.user.map(str::to_string);
    c
}

/// Fixture files only (no namespace): for `bootsvc check` tests. The config's path.
pub fn write_tree(root: &Path, opts: &Options) -> PathBuf {
    write_fixtures(root);
    config(opts).write(root).unwrap()
}

/// Artifacts, an image and its manifest, an empty `machines/`.
fn write_fixtures(root: &Path) {
    for sub in ["tftp", "artifacts", "images", "machines"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    // Artifacts big enough to need several 256 KiB chunks, not a multiple of them.
    std::fs::write(root.join("artifacts/vmlinuz"), pattern(3 * 1024 * 1024 + 777, 1)).unwrap();
    std::fs::write(root.join("artifacts/initramfs.img"), pattern(1024 * 1024 + 5, 2)).unwrap();
    std::fs::write(root.join("tftp/undionly.kpxe"), pattern(70_000, 3)).unwrap();
    let image = pattern(512 * 1024 + 3, 4);
    std::fs::write(root.join("images/debian-12.raw.zst"), &image).unwrap();
    let manifest = serde_json::json!({
        "name": "debian-12", "file": "debian-12.raw.zst", "format": "zstd", "size": image.len(),
        "raw_size": 4 * 1024 * 1024, "sha256": hex(&Sha256::digest(&image)), "checksum_of": "compressed"
    });
    std::fs::write(root.join("images/debian-12.json"), manifest.to_string()).unwrap();
}

/// The arm64 image beside the x86_64 one, as `images/build --arch arm64` names it:
/// `debian-12-arm64`, its manifest saying `"arch": "aarch64"`.
pub fn write_arm64_image(root: &Path) {
    let image = pattern(64 * 1024 + 7, 5);
    std::fs::write(root.join("images/debian-12-arm64.raw.zst"), &image).unwrap();
    let manifest = serde_json::json!({
        "name": "debian-12-arm64", "file": "debian-12-arm64.raw.zst", "format": "zstd", "arch": "aarch64",
        "size": image.len(), "sha256": hex(&Sha256::digest(&image)), "checksum_of": "compressed"
    });
    std::fs::write(root.join("images/debian-12-arm64.json"), manifest.to_string()).unwrap();
}

pub struct Site(site::Site);

impl Deref for Site {
    type Target = site::Site;
    fn deref(&self) -> &site::Site {
        &self.0
    }
}

impl Site {
    pub fn new(opts: Options) -> Site {
        let dir = Dir::temp("osie-bootsvc-").unwrap();
        write_fixtures(dir.path());
        let launch = Launch {
            rust_log: opts.rust_log.map(str::to_string),
            ready_within: Duration::from_secs(20),
            ..Launch::new(bin())
        };
        let site = site::Site::new(launch, dir, config(&opts)).unwrap();
        site.loopback(&[&[SERVER][..], &CLIENTS[..]].concat()).unwrap();
        Site(site)
    }

    pub fn start(&mut self) {
        self.0.start().unwrap_or_else(|e| panic!("{e:#}"));
    }

    pub fn start_fails(&mut self) -> (std::process::ExitStatus, String) {
        self.0.start_fails().unwrap()
    }

    pub fn stop(&mut self) {
        self.0.stop_within(Duration::from_secs(10)).unwrap_or_else(|e| panic!("bootsvc did not exit cleanly: {e:#}"));
    }

    pub fn kill9(&mut self) {
        self.0.kill9();
    }

    /// The PID of the running server.
    pub fn pid(&self) -> u32 {
        self.0.pid().expect("bootsvc is running")
    }

    pub fn serve_on(&self, iface: &str, tftp: bool) {
        self.0.serve_on(iface, tftp).unwrap();
    }

    pub fn machine(&self, name: &str, json: &str) {
        self.0.machine(name, json).unwrap();
    }

    pub fn segment(&self, mac: Option<&str>) -> (Netns, String, String) {
        self.0.segment(mac).unwrap()
    }

    pub fn shared_segment(&self, macs: &[Option<&str>]) -> (String, Vec<(Netns, String)>) {
        self.0.shared_segment(macs).unwrap()
    }

    pub fn lan(&self) -> String {
        self.0.lan().unwrap()
    }

    pub fn join(&self, bridge: &str, mac: &str, cidr: Option<&str>) -> (Netns, String) {
        self.0.join(bridge, Some(mac), cidr).unwrap()
    }

    pub fn raw(&self, request: Vec<u8>, read_timeout: Duration) -> (String, Duration) {
        self.0.raw(request, read_timeout).unwrap()
    }

    /// Run the CLI in the namespace (to reach the server), as given.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.0.cli(args).unwrap()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- bootsvc log ----\n{}", self.logs());
        }
    }
}

/// Deterministic, non-repeating-looking bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Run a command outside any namespace.
pub fn run(cmd: &mut std::process::Command) -> Output {
    cmd.output().unwrap()
}

/// Wait until `iface` in `ns` has a link-local address that is no longer tentative (DAD
/// done): before that nothing can be sent from it.
pub fn link_local_ready(ns: &Netns, iface: &str) {
    osie_testkit::wait_for(&format!("a usable link-local address on {iface}"), Duration::from_secs(10), || {
        let out = ns.run("ip", &["-6", "addr", "show", "dev", iface, "scope", "link"]).ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (text.contains("fe80::") && !text.contains("tentative")).then_some(())
    })
    .unwrap();
}

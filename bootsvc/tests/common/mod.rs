//! A test site: a network namespace with bootsvc's address (192.0.2.1) and a few machine
//! addresses on its loopback, a temp directory with config, artifacts, an image,
//! machines and state, and the real `bootsvc serve` binary running in the namespace with
//! DHCP and TFTP off. Clients are real `curl` processes in the same namespace, bound to a
//! machine's address with `--interface`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use osie_testkit::{unique, wait_for, ChildGuard, Netns};
use sha2::{Digest, Sha256};

pub const SERVER: &str = "192.0.2.1";
pub const BASE: &str = "http://192.0.2.1:8080";
/// The admin API: its own listener, on the namespace's loopback (the default `admin.listen`).
pub const ADMIN: &str = "http://127.0.0.1:8081";
pub const TOKEN: &str = "test-token-0123456789abcdef";
/// Addresses on the dummy interface besides the server's: machines call from these.
pub const CLIENTS: [&str; 4] = ["192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14"];

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bootsvc")
}

/// `true` when this test can run (root, curl); otherwise it was skipped with a message.
pub fn prerequisites(test: &str) -> bool {
    osie_testkit::require_root(test) && osie_testkit::require_tools(test, &["curl", "ip"])
}

pub struct Site {
    pub dir: tempfile::TempDir,
    pub ns: Netns,
    pub config: PathBuf,
    server: Option<ChildGuard>,
    log: PathBuf,
    rust_log: Option<&'static str>,
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
    /// TOML appended to the config (whole sections, e.g. `[security]`).
    pub extra: String,
    /// Lines added to the `[http]` section (`max_connections = 8`…).
    pub http: String,
    /// `admin.listen` (default: unset, so `127.0.0.1:8081`).
    pub admin_listen: Option<String>,
}

/// Fixture files only (no namespace): for `bootsvc check` tests.
pub fn write_tree(root: &Path, opts: &Options) -> PathBuf {
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
    std::fs::write(root.join("admin.token"), format!("{TOKEN}\n")).unwrap();
    // bootsvc refuses a token file others may read.
    let owner_only = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    std::fs::set_permissions(root.join("admin.token"), owner_only).unwrap();
    let pool = if opts.pool {
        "pool = { start = \"192.0.2.100\", end = \"192.0.2.199\", prefix = 24, gateway = \"192.0.2.1\" }\n"
    } else {
        ""
    };
    let pool = if opts.proxy { format!("mode = \"proxy\"\n{pool}") } else { pool.to_string() };
    let format = if opts.log_json { "json" } else { "text" };
    let admin = match (&opts.admin_listen, opts.no_admin) {
        (_, true) => String::new(),
        (None, false) => "[admin]\ntoken_file = \"admin.token\"\n".to_string(),
        (Some(l), false) => format!("[admin]\ntoken_file = \"admin.token\"\nlisten = \"{l}\"\n"),
    };
    let http = &opts.http;
    let extra = &opts.extra;
    let cfg = format!(
        r#"[listen]
interface = "lo"
address = "{SERVER}"

[dhcp]
enabled = false
{pool}
[tftp]
enabled = false
root = "tftp"

[http]
listen = "{SERVER}:8080"
public_url = "{BASE}/"
max_body_bytes = 65536
max_header_bytes = 8192
request_timeout_secs = 5
{http}

[artifacts]
dir = "artifacts"
images_dir = "images"
kernel_args = "console=ttyS0,115200n8"

[state]
dir = "state"

[inventory]
dir = "machines"

{admin}
[log]
format = "{format}"
level = "info"

{extra}
"#
    );
    let path = root.join("bootsvc.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

impl Site {
    pub fn new(opts: Options) -> Site {
        let dir = tempfile::Builder::new().prefix("osie-bootsvc-").tempdir().unwrap();
        let config = write_tree(dir.path(), &opts);
        let ns = Netns::new().unwrap();
        // The namespace's own loopback carries every address (the kernel here has no dummy
        // interfaces); traffic between them never leaves the namespace.
        for a in std::iter::once(SERVER).chain(CLIENTS) {
            ns.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]).unwrap();
        }
        let log = dir.path().join(format!("{}.log", unique("bootsvc")));
        Site { dir, ns, config, server: None, log, rust_log: opts.rust_log }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A machine's segment: a veth from the site's namespace (its end 192.0.2.1/24) to a new
    /// client namespace, both ends up, the client's end with `mac` when given. Returns the
    /// client namespace and the server's and client's interface names.
    pub fn segment(&self, mac: Option<&str>) -> (Netns, String, String) {
        let client = Netns::new().unwrap();
        let (srv_if, cli_if) = (unique("sv"), unique("cv"));
        self.ns.ip(&["link", "add", &srv_if, "type", "veth", "peer", "name", &cli_if, "netns", client.name()]).unwrap();
        self.ns.ip(&["addr", "add", "192.0.2.1/24", "dev", &srv_if]).unwrap();
        self.ns.ip(&["link", "set", &srv_if, "up"]).unwrap();
        if let Some(mac) = mac {
            client.ip(&["link", "set", &cli_if, "address", mac]).unwrap();
        }
        client.ip(&["link", "set", &cli_if, "up"]).unwrap();
        (client, srv_if, cli_if)
    }

    /// One segment for several client namespaces (a hostile host beside a machine): a
    /// [`Site::lan`] and a host on it per entry of `macs` (with that MAC when given). Returns
    /// the bridge's name (serve on it) and each client's namespace and interface, all up.
    pub fn shared_segment(&self, macs: &[Option<&str>]) -> (String, Vec<(Netns, String)>) {
        let bridge = self.lan();
        let clients = macs.iter().map(|mac| self.join_any(&bridge, *mac, None)).collect();
        (bridge, clients)
    }

    /// A provisioning LAN: a bridge in the site's namespace with bootsvc's address
    /// (192.0.2.1/24), which machines' namespaces join with [`Site::join`]. Its name.
    pub fn lan(&self) -> String {
        let br = unique("sb");
        self.ns.add_bridge(&br, "192.0.2.1/24").unwrap();
        // A bridge takes the lowest MAC of its ports unless given one: as ports join, its MAC
        // would change under the clients' ARP caches.
        self.ns.ip(&["link", "set", &br, "address", "02:00:00:00:01:01"]).unwrap();
        br
    }

    /// A new namespace on `bridge` (a host on the LAN) whose interface has `mac`, and
    /// `cidr` when given. The namespace and its interface's name.
    pub fn join(&self, bridge: &str, mac: &str, cidr: Option<&str>) -> (Netns, String) {
        self.join_any(bridge, Some(mac), cidr)
    }

    fn join_any(&self, bridge: &str, mac: Option<&str>, cidr: Option<&str>) -> (Netns, String) {
        let host = Netns::new().unwrap();
        let (here, there) = (unique("lb"), unique("lx"));
        self.ns.ip(&["link", "add", &here, "type", "veth", "peer", "name", &there, "netns", host.name()]).unwrap();
        self.ns.ip(&["link", "set", &here, "master", bridge]).unwrap();
        self.ns.ip(&["link", "set", &here, "up"]).unwrap();
        if let Some(mac) = mac {
            host.ip(&["link", "set", &there, "address", mac]).unwrap();
        }
        if let Some(c) = cidr {
            host.ip(&["addr", "add", c, "dev", &there]).unwrap();
        }
        host.ip(&["link", "set", &there, "up"]).unwrap();
        (host, there)
    }

    /// Serve DHCP on `iface` (instead of `lo`), and TFTP too when `tftp`.
    pub fn serve_on(&self, iface: &str, tftp: bool) {
        let cfg = std::fs::read_to_string(&self.config).unwrap();
        let cfg = cfg.replace("interface = \"lo\"", &format!("interface = \"{iface}\""));
        // [dhcp]'s `enabled` comes first in the generated config, [tftp]'s second.
        let cfg = if tftp {
            cfg.replace("enabled = false", "enabled = true")
        } else {
            cfg.replacen("enabled = false", "enabled = true", 1)
        };
        std::fs::write(&self.config, cfg).unwrap();
    }

    /// Write `machines/<name>.json`.
    pub fn machine(&self, name: &str, json: &str) {
        // Write then rename: the reload poll never sees half a file.
        let tmp = self.path(&format!("machines/.{name}.json.tmp"));
        std::fs::write(&tmp, json).unwrap();
        std::fs::rename(&tmp, self.path(&format!("machines/{name}.json"))).unwrap();
    }

    fn serve_cmd(&self) -> Command {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = self.ns.cmd(bin());
        cmd.args(["serve", "--config"]).arg(&self.config).env_remove("RUST_LOG").stdout(Stdio::null()).stderr(log);
        if let Some(l) = self.rust_log {
            cmd.env("RUST_LOG", l);
        }
        cmd
    }

    /// Run `bootsvc serve` expecting it to refuse to start: its exit status and log.
    pub fn start_fails(&mut self) -> (std::process::ExitStatus, String) {
        let mut cmd = self.serve_cmd();
        let mut child = ChildGuard::spawn("bootsvc serve", &mut cmd).unwrap();
        let status = wait_for("bootsvc to exit", Duration::from_secs(20), || child.child.try_wait().ok().flatten())
            .unwrap_or_else(|e| panic!("{e}:\n{}", self.logs()));
        (status, self.logs())
    }

    /// The PID of the running server.
    pub fn pid(&self) -> u32 {
        self.server.as_ref().expect("bootsvc is running").pid()
    }

    /// Start `bootsvc serve` in the namespace and wait until it answers.
    pub fn start(&mut self) {
        let mut cmd = self.serve_cmd();
        let mut child = ChildGuard::spawn("bootsvc serve", &mut cmd).unwrap();
        let ok = wait_for("bootsvc to answer /healthz", Duration::from_secs(20), || {
            if child.check_running().is_err() {
                return Some(false);
            }
            (self.get("/healthz").status == 200).then_some(true)
        })
        .unwrap();
        assert!(ok, "bootsvc exited early:\n{}", self.logs());
        self.server = Some(child);
    }

    /// SIGKILL the server (no chance to flush or finish anything) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.signal(libc::SIGKILL);
            let _ = s.child.wait();
        }
    }

    /// SIGTERM the server and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.signal(libc::SIGTERM);
            let status = wait_for("bootsvc to exit", Duration::from_secs(10), || s.child.try_wait().ok().flatten());
            assert!(status.unwrap().success(), "bootsvc did not exit cleanly:\n{}", self.logs());
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `curl` in the namespace: `args` go before the URL (`--interface`, `-H`, `-X`…).
    pub fn curl(&self, args: &[&str], path: &str) -> Resp {
        self.curl_url_in(&self.ns, args, &format!("{BASE}{path}"))
    }

    /// `curl` in another namespace (a host on the site's LAN).
    pub fn curl_in(&self, ns: &Netns, args: &[&str], path: &str) -> Resp {
        self.curl_url_in(ns, args, &format!("{BASE}{path}"))
    }

    /// `curl` in the namespace for a whole URL.
    pub fn curl_url(&self, args: &[&str], url: &str) -> Resp {
        self.curl_url_in(&self.ns, args, url)
    }

    fn curl_url_in(&self, ns: &Netns, args: &[&str], url: &str) -> Resp {
        let id = unique("c");
        let hdr = self.path(&format!("{id}.hdr"));
        let body = self.path(&format!("{id}.body"));
        let out: Output = ns
            .cmd("curl")
            .args(["-sS", "--path-as-is", "--max-time", "20", "-D"])
            .arg(&hdr)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(url)
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        let headers = std::fs::read_to_string(&hdr).unwrap_or_default();
        let body_bytes = std::fs::read(&body).unwrap_or_default();
        let _ = std::fs::remove_file(&hdr);
        let _ = std::fs::remove_file(&body);
        Resp { status, headers, body: body_bytes, stderr: String::from_utf8_lossy(&out.stderr).into() }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.curl(&[], path)
    }

    /// `curl` against the admin API's listener ([`ADMIN`]) with `args` (`-H`, `-X`…).
    pub fn admin_curl(&self, args: &[&str], path: &str) -> Resp {
        self.curl_url(args, &format!("{ADMIN}{path}"))
    }

    /// `curl` against the admin API with the right token.
    pub fn admin(&self, method: &str, path: &str) -> Resp {
        self.admin_curl(&["-X", method, "-H", &format!("Authorization: Bearer {TOKEN}")], path)
    }

    /// GET from a machine's address, optionally naming its MAC.
    pub fn get_as(&self, from: &str, mac: Option<&str>, path: &str) -> Resp {
        let h = mac.map(|m| format!("X-Osie-Mac: {m}"));
        let mut args = vec!["--interface", from];
        if let Some(h) = &h {
            args.extend(["-H", h.as_str()]);
        }
        self.curl(&args, path)
    }

    /// POST JSON from a machine's address.
    pub fn post_json_as(&self, from: &str, path: &str, json: &str) -> Resp {
        self.curl(&["--interface", from, "-H", "Content-Type: application/json", "--data-binary", json], path)
    }

    /// The value of a Prometheus counter line starting with `prefix` (0 when absent).
    pub fn metric(&self, prefix: &str) -> u64 {
        let m = self.get("/metrics");
        m.text()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Raw TCP from inside the namespace, for requests curl will not send: writes `request`,
    /// reads until the server closes (or `read_timeout`), returns what came back and how long
    /// it took.
    pub fn raw(&self, request: Vec<u8>, read_timeout: Duration) -> (String, Duration) {
        use std::io::{Read, Write};
        let h = self.ns.spawn(move || {
            let mut s = std::net::TcpStream::connect((SERVER, 8080))?;
            s.set_read_timeout(Some(read_timeout))?;
            let start = std::time::Instant::now();
            s.write_all(&request)?;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            Ok((String::from_utf8_lossy(&out).into_owned(), start.elapsed()))
        });
        h.join().unwrap().unwrap()
    }

    /// Run the CLI (outside the namespace's network? no: inside, to reach the server).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.ns.cmd(bin()).args(args).env_remove("BOOTSVC_CONFIG").output().unwrap()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- bootsvc log ----\n{}", self.logs());
        }
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
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
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

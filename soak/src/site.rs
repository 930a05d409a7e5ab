//! The server side of the soak: a namespace with a bridge (198.51.100.1/24) the machines'
//! namespaces join, bootsvc serving the soak image and one record per install, and a
//! supervisor that can SIGKILL bootsvc and start it again at any moment.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use osie_testkit::{unique, wait_for, ChildGuard, Netns};

use crate::image::Image;

pub const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Where machines believe bootsvc is: their own proxy listens there (`proxy.rs`).
pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const PORT: u16 = 8080;
/// The admin API: its own listener, the default `admin.listen` (the namespace's loopback).
pub const ADMIN: &str = "127.0.0.1:8081";
pub const TOKEN: &str = "soak-admin-token-0123456789abcdef";

/// Machine `i`'s MAC and address.
pub fn mac(i: usize) -> String {
    format!("02:50:00:00:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff)
}

pub fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 10 + (i % 240) as u8)
}

/// A marker only machine `i`'s user-data holds (checked in its seed).
pub fn user_data(i: usize) -> String {
    format!("#cloud-config\n# soak machine {i}\nhostname: soak{i}\n")
}

pub struct Site {
    pub ns: Netns,
    pub bridge: String,
    pub dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    server: Mutex<Option<ChildGuard>>,
}

impl Site {
    /// The namespace, the tree (config, image, `machines` records for installs
    /// `0..machines`) and bootsvc started.
    pub fn new(dir: &Path, bootsvc: &Path, image: &Image, machines: usize) -> Result<Site> {
        if machines > 240 {
            bail!("at most 240 machines (one 198.51.100.0/24 address each); run several soaks for more");
        }
        let ns = Netns::new()?;
        let bridge = unique("sb");
        ns.add_bridge(&bridge, &format!("{BRIDGE_ADDR}/24"))?;
        // A bridge takes the lowest MAC of its ports unless given one: as machines' veths come
        // and go, its MAC would change under the machines' ARP caches and their packets to
        // bootsvc would go nowhere for half a minute.
        ns.ip(&["link", "set", &bridge, "address", "02:50:ff:00:00:01"])?;
        for sub in ["tftp", "artifacts", "images", "machines"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // The artifacts must exist for the config to validate; the installs never use them.
        std::fs::write(dir.join("artifacts/vmlinuz"), b"not a kernel")?;
        std::fs::write(dir.join("artifacts/initramfs.img"), b"not an initramfs")?;
        std::fs::copy(&image.zst, dir.join("images/soak.raw.zst"))?;
        image.write_manifest(&dir.join("images"))?;
        std::fs::write(dir.join("admin.token"), TOKEN)?;
        // bootsvc refuses a token file others may read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("admin.token"), std::fs::Permissions::from_mode(0o600))?;
        for i in 0..machines {
            let rec = serde_json::json!({
                "hostname": format!("soak{i}"), "macs": [mac(i)],
                "ip": {"address": addr(i).to_string(), "prefix": 24},
                "netboot": {"allow": true}, "install": {"image": {"name": "soak"}},
                "cloud_init": {"user_data": user_data(i)},
                "ssh_keys": [format!("ssh-ed25519 AAAAsoak{i} soak@{i}")],
            });
            std::fs::write(dir.join(format!("machines/soak{i}.json")), rec.to_string())?;
        }
        let config = dir.join("bootsvc.toml");
        std::fs::write(
            &config,
            format!(
                r#"[listen]
interface = "{bridge}"
address = "{BRIDGE_ADDR}"

[dhcp]
enabled = false

[tftp]
enabled = false
root = "tftp"

[http]
listen = "0.0.0.0:{PORT}"
public_url = "http://{PUBLIC}:{PORT}"

[artifacts]
dir = "artifacts"
images_dir = "images"

[state]
dir = "state"

[inventory]
dir = "machines"

[admin]
token_file = "admin.token"

[log]
level = "info"
"#
            ),
        )?;
        let site = Site {
            ns,
            bridge,
            dir: dir.to_path_buf(),
            config,
            log: dir.join("bootsvc.log"),
            bin: bootsvc.to_path_buf(),
            server: Mutex::new(None),
        };
        site.start()?;
        Ok(site)
    }

    /// Start bootsvc and wait until it answers.
    pub fn start(&self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = self.ns.cmd(&self.bin);
        cmd.args(["serve", "--config"]).arg(&self.config).env_remove("RUST_LOG").stdout(Stdio::null()).stderr(log);
        let mut child = ChildGuard::spawn("bootsvc serve", &mut cmd)?;
        let started = Instant::now();
        loop {
            if let Some(st) = child.child.try_wait()? {
                bail!("bootsvc exited at start with {st}; see {}", self.log.display());
            }
            if self.get("/healthz").is_ok_and(|(s, _)| s == 200) {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("bootsvc did not answer within 30 s; see {}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(())
    }

    /// SIGKILL bootsvc (nothing flushed, nothing finished) and reap it.
    pub fn kill9(&self) {
        if let Some(mut s) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            s.signal(libc::SIGKILL);
            let _ = s.child.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.server.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// SIGTERM and wait.
    pub fn stop(&self) -> Result<()> {
        if let Some(mut s) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            s.signal(libc::SIGTERM);
            let st = wait_for("bootsvc to exit", Duration::from_secs(20), || s.child.try_wait().ok().flatten())?;
            if !st.success() {
                bail!("bootsvc exited with {st} on SIGTERM");
            }
        }
        Ok(())
    }

    /// GET `path` from inside the namespace with the admin token: status and body. `/admin/…`
    /// goes to the admin API's listener, the rest to the machines'.
    pub fn get(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        let base = if path.starts_with("/admin/") { ADMIN.to_string() } else { format!("{BRIDGE_ADDR}:{PORT}") };
        let out = self
            .ns
            .cmd("curl")
            .args(["-s", "--max-time", "20", "-H", &format!("Authorization: Bearer {TOKEN}"), "-w", "\n%{http_code}"])
            .arg(format!("http://{base}{path}"))
            .output()
            .context("running curl")?;
        let text = out.stdout;
        let nl = text.iter().rposition(|b| *b == b'\n').context("curl printed no status")?;
        let status = String::from_utf8_lossy(&text[nl + 1..]).trim().parse().unwrap_or(0);
        Ok((status, text[..nl].to_vec()))
    }

    /// GET and parse JSON, waiting through a restart of bootsvc.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.get(path) {
                Ok((200, body)) => {
                    return serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
                }
                Ok((s, body)) if Instant::now() > deadline => {
                    bail!("GET {path}: {s}: {}", String::from_utf8_lossy(&body))
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// A veth from the bridge into `other`; its name there.
    pub fn attach(&self, other: &Netns) -> Result<(String, String)> {
        let (here, there) = (unique("sh"), unique("sm"));
        self.ns.ip(&["link", "add", &here, "type", "veth", "peer", "name", &there, "netns", other.name()])?;
        self.ns.ip(&["link", "set", &here, "master", &self.bridge])?;
        self.ns.ip(&["link", "set", &here, "up"])?;
        other.ip(&["link", "set", &there, "up"])?;
        Ok((here, there))
    }

    /// Rate-limit the link's download direction (the bridge side's egress) with tbf: the
    /// kernel here has no netem, tbf is what it has.
    pub fn slow_link(&self, here: &str, mbit: u64) -> Result<()> {
        let rate = format!("{mbit}mbit");
        let out = self
            .ns
            .cmd("tc")
            .args(["qdisc", "add", "dev", here, "root", "tbf", "rate", &rate, "burst", "64kb", "latency", "200ms"])
            .output()?;
        if !out.status.success() {
            bail!("tc tbf on {here}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Run a command, error with its stderr unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let out = cmd.output().with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

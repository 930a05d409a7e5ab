//! A bootsvc site for tests: a network namespace, a directory holding `bootsvc.toml` (written
//! from a [`Config`]) and the tree it names, and the real `bootsvc serve` running in the
//! namespace, started from the binary the caller names (the kit does not depend on bootsvc:
//! bootsvc's tests pass `env!("CARGO_BIN_EXE_bootsvc")`, the other harnesses the binary cargo
//! built).
//!
//! - Addresses: on the namespace's `lo` ([`Site::loopback`]: clients and server in one
//!   namespace) or on a bridge ([`Site::bridge`], [`Site::lan`]) that hosts join with their own
//!   MAC ([`Site::join`], [`Site::attach`]); [`Site::segment`] is a host on a veth of its own.
//! - The server: [`Site::start`] waits until `/healthz` answers, [`Site::kill9`],
//!   [`Site::stop`]; its stderr goes to `bootsvc.log` in the directory ([`Site::logs`]).
//! - Talking to it: `curl` in the namespace ([`Site::get`], [`Site::get_as`], [`Site::admin`]…),
//!   the CLI ([`Site::cli`], [`Site::admin_cli`]), machine records in the inventory
//!   ([`Site::machine`]).
//!
//! Dropping the site kills bootsvc (SIGKILL), then the namespace goes with everything still
//! in it, then the directory when it was a temporary one.

pub mod config;
pub mod curl;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use config::Config;
pub use curl::Resp;

use crate::{unique, wait_for, ChildGuard, Netns};

/// The admin API's listener when `admin.listen` is not set.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:8081";

/// Where the site's files live.
pub enum Dir {
    /// Removed with the site.
    Temp(tempfile::TempDir),
    /// Kept (a harness that leaves its run's files for inspection).
    Kept(PathBuf),
}

impl Dir {
    /// A fresh temporary directory named `<prefix>…`.
    pub fn temp(prefix: &str) -> Result<Dir> {
        let d = tempfile::Builder::new().prefix(prefix).tempdir().context("creating the site's directory")?;
        Ok(Dir::Temp(d))
    }

    pub fn path(&self) -> &Path {
        match self {
            Dir::Temp(d) => d.path(),
            Dir::Kept(p) => p,
        }
    }
}

/// How `bootsvc serve` is started.
#[derive(Debug, Clone)]
pub struct Launch {
    pub bin: PathBuf,
    /// `RUST_LOG` for the server; unset otherwise (so `log.level` applies).
    pub rust_log: Option<String>,
    /// How long [`Site::start`] waits for `/healthz`.
    pub ready_within: Duration,
    /// Applied to the command before it starts (a process group, a parent-death signal).
    pub prepare: Option<fn(&mut Command) -> &mut Command>,
}

impl Launch {
    pub fn new(bin: impl Into<PathBuf>) -> Launch {
        Launch { bin: bin.into(), rust_log: None, ready_within: Duration::from_secs(30), prepare: None }
    }
}

pub struct Site {
    // Field order is drop order: the server, then the namespace, then the directory.
    server: Mutex<Option<ChildGuard>>,
    pub ns: Netns,
    /// `bootsvc.toml`.
    pub config: PathBuf,
    settings: Mutex<Config>,
    launch: Launch,
    log: PathBuf,
    dir: Dir,
}

impl Site {
    /// A new namespace (with `lo` up and nothing else) and `config` written into `dir`. The
    /// tree the config names (artifacts, images, records) is the caller's; bootsvc is not
    /// started.
    pub fn new(launch: Launch, dir: Dir, config: Config) -> Result<Site> {
        // bootsvc makes its state directory, but the inventory must be there.
        let inventory = dir.path().join(&config.inventory_dir);
        std::fs::create_dir_all(&inventory).with_context(|| format!("creating {}", inventory.display()))?;
        let path = config.write(dir.path())?;
        let ns = Netns::new()?;
        Ok(Site {
            server: Mutex::new(None),
            ns,
            config: path,
            settings: Mutex::new(config),
            launch,
            log: dir.path().join("bootsvc.log"),
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path in the site's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir().join(rel)
    }

    /// What the config says now.
    pub fn settings(&self) -> Config {
        self.settings_lock().clone()
    }

    fn settings_lock(&self) -> MutexGuard<'_, Config> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the config and write it again (the next start reads it).
    pub fn reconfigure(&self, change: impl FnOnce(&mut Config)) -> Result<()> {
        let mut c = self.settings_lock();
        change(&mut c);
        c.write(self.dir.path())?;
        Ok(())
    }

    /// Serve DHCP on `iface` (instead of the configured interface), and TFTP too when `tftp`.
    pub fn serve_on(&self, iface: &str, tftp: bool) -> Result<()> {
        self.reconfigure(|c| {
            c.interface = iface.to_string();
            c.dhcp.enabled = Some(true);
            if tftp {
                c.tftp.enabled = Some(true);
            }
        })
    }

    // ---- addresses and hosts ----

    /// Put each address (a /32) on the namespace's `lo`: the server's and its clients', all in
    /// one namespace, traffic between them never leaving it.
    pub fn loopback(&self, addrs: &[&str]) -> Result<()> {
        for a in addrs {
            self.ns.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"])?;
        }
        Ok(())
    }

    /// A bridge `name` in the namespace with `cidr`, up; with `mac` its MAC is fixed (a bridge
    /// otherwise takes the lowest MAC of its ports, which changes under the clients' ARP
    /// caches as ports come and go).
    pub fn bridge(&self, name: &str, cidr: &str, mac: Option<&str>) -> Result<()> {
        self.ns.add_bridge(name, cidr)?;
        if let Some(mac) = mac {
            self.ns.ip(&["link", "set", name, "address", mac])?;
        }
        Ok(())
    }

    /// A provisioning LAN: a new bridge with bootsvc's address (/24) and a fixed MAC, which
    /// hosts join with [`Site::join`]. Its name.
    pub fn lan(&self) -> Result<String> {
        let br = unique("sb");
        let address = self.settings_lock().address;
        self.bridge(&br, &format!("{address}/24"), Some("02:00:00:00:01:01"))?;
        Ok(br)
    }

    /// A new namespace on `bridge` (a host on the LAN) whose interface has `mac`, and `cidr`
    /// when given. The namespace and its interface's name.
    pub fn join(&self, bridge: &str, mac: Option<&str>, cidr: Option<&str>) -> Result<(Netns, String)> {
        let host = Netns::new()?;
        let (_, there) = self.ns.veth(&host, Some(bridge), mac, cidr)?;
        Ok((host, there))
    }

    /// An existing namespace joins `bridge`; the veth's ends (here, there).
    pub fn attach(&self, bridge: &str, other: &Netns, cidr: Option<&str>) -> Result<(String, String)> {
        self.ns.veth(other, Some(bridge), None, cidr)
    }

    /// Several hosts on one segment (a hostile host beside a machine): a [`Site::lan`] and a
    /// host on it per entry of `macs` (with that MAC when given). The bridge's name and each
    /// host's namespace and interface.
    pub fn shared_segment(&self, macs: &[Option<&str>]) -> Result<(String, Vec<(Netns, String)>)> {
        let bridge = self.lan()?;
        let hosts = macs.iter().map(|mac| self.join(&bridge, *mac, None)).collect::<Result<_>>()?;
        Ok((bridge, hosts))
    }

    /// A machine's own segment: a veth from the site's namespace (its end with bootsvc's
    /// address, /24) to a new namespace, the far end with `mac` when given. The namespace
    /// and the site's and the host's interface names.
    pub fn segment(&self, mac: Option<&str>) -> Result<(Netns, String, String)> {
        let host = Netns::new()?;
        let (here, there) = self.ns.veth(&host, None, mac, None)?;
        let address = self.settings_lock().address;
        self.ns.ip(&["addr", "add", &format!("{address}/24"), "dev", &here])?;
        Ok((host, here, there))
    }

    // ---- the inventory ----

    /// Write the machine record `<inventory>/<name>.json` (through a rename: the reload poll
    /// never sees half a file).
    pub fn machine(&self, name: &str, json: &str) -> Result<()> {
        let inventory = self.dir().join(&self.settings_lock().inventory_dir);
        let tmp = inventory.join(format!(".{name}.json.tmp"));
        std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, inventory.join(format!("{name}.json")))
            .with_context(|| format!("moving the record {name} into {}", inventory.display()))
    }

    // ---- the server ----

    fn serve_cmd(&self) -> Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = self.ns.cmd(&self.launch.bin);
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .env_remove("BOOTSVC_CONFIG")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(l) = &self.launch.rust_log {
            cmd.env("RUST_LOG", l);
        }
        if let Some(prepare) = self.launch.prepare {
            prepare(&mut cmd);
        }
        Ok(cmd)
    }

    fn server(&self) -> MutexGuard<'_, Option<ChildGuard>> {
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start `bootsvc serve` and wait until `/healthz` answers; an error (with the end of its
    /// log) when it exits or does not answer in time.
    pub fn start(&self) -> Result<()> {
        let mut child = ChildGuard::spawn("bootsvc serve", &mut self.serve_cmd()?)?;
        let ready = wait_for("bootsvc to answer /healthz", self.launch.ready_within, || {
            if let Err(e) = child.check_running() {
                return Some(Err(e));
            }
            (self.get("/healthz").status == 200).then_some(Ok(()))
        });
        if let Err(e) = ready.and_then(|r| r) {
            bail!("bootsvc did not start: {e:#}; the end of {}:\n{}", self.log.display(), tail(&self.logs(), 20));
        }
        *self.server() = Some(child);
        Ok(())
    }

    /// Run `bootsvc serve` expecting it to refuse to start: its exit status (within 20 s) and
    /// log.
    pub fn start_fails(&self) -> Result<(ExitStatus, String)> {
        let mut child = ChildGuard::spawn("bootsvc serve", &mut self.serve_cmd()?)?;
        let status = wait_for("bootsvc to exit", Duration::from_secs(20), || child.child.try_wait().ok().flatten())
            .with_context(|| format!("bootsvc kept running; its log:\n{}", self.logs()))?;
        Ok((status, self.logs()))
    }

    pub fn running(&self) -> bool {
        self.server().is_some()
    }

    /// The server's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server().as_ref().map(|s| s.pid())
    }

    /// An error when the server is not running, or has exited, with the end of its log.
    pub fn check_running(&self) -> Result<()> {
        match self.server().as_mut() {
            Some(s) => s.check_running().with_context(|| tail(&self.logs(), 20)),
            None => bail!("bootsvc is not running"),
        }
    }

    /// SIGKILL the server (no chance to flush or finish anything) and reap it.
    pub fn kill9(&self) {
        if let Some(mut s) = self.server().take() {
            s.signal(libc::SIGKILL);
            let _ = s.child.wait();
        }
    }

    /// SIGTERM the server and wait up to 20 s for a clean exit.
    pub fn stop(&self) -> Result<()> {
        self.stop_within(Duration::from_secs(20))
    }

    /// SIGTERM the server and wait up to `limit`; an error unless it exits 0 in time.
    pub fn stop_within(&self, limit: Duration) -> Result<()> {
        let Some(mut s) = self.server().take() else { return Ok(()) };
        s.signal(libc::SIGTERM);
        let status = wait_for("bootsvc to exit", limit, || s.child.try_wait().ok().flatten())?;
        if !status.success() {
            bail!("bootsvc exited with {status} on SIGTERM; the end of its log:\n{}", tail(&self.logs(), 20));
        }
        Ok(())
    }

    /// Everything the server wrote to stderr, over every start.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    // ---- talking to it ----

    /// `http://<address>:<port>`, the machines' listener as seen from the namespace.
    pub fn base_url(&self) -> String {
        let c = self.settings_lock();
        format!("http://{}:{}", c.address, c.http.listen.port())
    }

    /// The admin API's listener: an address, or a Unix socket's path (`/…`).
    fn admin_listen(&self) -> String {
        let c = self.settings_lock();
        c.admin.as_ref().and_then(|a| a.listen.clone()).unwrap_or_else(|| DEFAULT_ADMIN.into())
    }

    fn token(&self) -> String {
        self.settings_lock().admin.as_ref().map(|a| a.token.clone()).unwrap_or_default()
    }

    /// `curl` in the namespace: `args` go before the URL (`--interface`, `-H`, `-X`…).
    pub fn curl(&self, args: &[&str], path: &str) -> Resp {
        self.curl_url_in(&self.ns, args, &format!("{}{path}", self.base_url()))
    }

    /// `curl` in another namespace (a host on the site's LAN).
    pub fn curl_in(&self, ns: &Netns, args: &[&str], path: &str) -> Resp {
        self.curl_url_in(ns, args, &format!("{}{path}", self.base_url()))
    }

    /// `curl` in the namespace for a whole URL.
    pub fn curl_url(&self, args: &[&str], url: &str) -> Resp {
        self.curl_url_in(&self.ns, args, url)
    }

    fn curl_url_in(&self, ns: &Netns, args: &[&str], url: &str) -> Resp {
        curl::curl(ns, self.dir(), args, url)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.curl(&[], path)
    }

    /// GET from a machine's address, optionally naming its MAC (`X-Osie-Mac`).
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

    /// `curl` against the admin API's listener with `args` (`-H`, `-X`…), no token.
    pub fn admin_curl(&self, args: &[&str], path: &str) -> Resp {
        let listen = self.admin_listen();
        if listen.starts_with('/') {
            let args = [&["--unix-socket", listen.as_str()], args].concat();
            return self.curl_url(&args, &format!("http://localhost{path}"));
        }
        self.curl_url(args, &format!("http://{listen}{path}"))
    }

    /// `curl` against the admin API with the site's token.
    pub fn admin(&self, method: &str, path: &str) -> Resp {
        self.admin_curl(&["-X", method, "-H", &format!("Authorization: Bearer {}", self.token())], path)
    }

    /// GET an admin path as JSON, waiting up to `limit` through a restart of the server.
    pub fn admin_json(&self, path: &str, limit: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.admin("GET", path);
            if r.status == 200 {
                return serde_json::from_slice(&r.body).with_context(|| format!("GET {path}: not JSON"));
            }
            if Instant::now() > deadline {
                bail!("GET {path}: {} {}{}", r.status, r.text(), r.stderr.trim());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The value of the Prometheus sample line starting with `prefix` (0 when absent).
    pub fn metric(&self, prefix: &str) -> u64 {
        self.get("/metrics")
            .text()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Raw TCP from inside the namespace, for requests curl will not send: writes `request`
    /// to the machines' listener, reads until the server closes (or `read_timeout`); what came
    /// back and how long it took.
    pub fn raw(&self, request: Vec<u8>, read_timeout: Duration) -> Result<(String, Duration)> {
        use std::io::{Read, Write};
        let to = {
            let c = self.settings_lock();
            (c.address, c.http.listen.port())
        };
        let h = self.ns.spawn(move || {
            let mut s = std::net::TcpStream::connect(to)?;
            s.set_read_timeout(Some(read_timeout))?;
            let start = Instant::now();
            s.write_all(&request)?;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            Ok((String::from_utf8_lossy(&out).into_owned(), start.elapsed()))
        });
        h.join().map_err(|_| anyhow::anyhow!("the raw client's thread panicked"))?
    }

    /// `bootsvc <args>` in the namespace, as given (no `--config` added).
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        self.ns
            .cmd(&self.launch.bin)
            .args(args)
            .env_remove("BOOTSVC_CONFIG")
            .env_remove("BOOTSVC_URL")
            .output()
            .with_context(|| format!("running bootsvc {}", args.join(" ")))
    }

    /// `bootsvc <args> --config <the site's>` (the admin CLI finds the API there): its
    /// stdout, or an error with its stderr.
    pub fn admin_cli(&self, args: &[&str]) -> Result<String> {
        let config = self.config.to_string_lossy().into_owned();
        let out = self.cli(&[args, &["--config", config.as_str()]].concat())?;
        if !out.status.success() {
            bail!("bootsvc {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// bootsvc's binary for a harness outside bootsvc (which cannot name it with
/// `CARGO_BIN_EXE_bootsvc`): `OSIE_BOOTSVC` when set, else this workspace's debug build, made
/// with `cargo build -p bootsvc` first (nothing is done when it is up to date).
pub fn bootsvc_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("OSIE_BOOTSVC") {
        return Ok(PathBuf::from(p));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "-q", "-p", "bootsvc", "--bin", "bootsvc"])
        .status()
        .context("running cargo build -p bootsvc")?;
    if !st.success() {
        bail!("cargo build -p bootsvc failed: {st}");
    }
    // A test runs from target/<profile>/deps/: its binaries are one level up.
    let exe = std::env::current_exe().context("finding this executable")?;
    let p = exe.parent().and_then(Path::parent).map(|d| d.join("bootsvc")).unwrap_or_default();
    if !p.is_file() {
        bail!("{} missing after cargo build -p bootsvc", p.display());
    }
    Ok(p)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

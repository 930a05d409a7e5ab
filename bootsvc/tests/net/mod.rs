//! Shared by the DHCP and TFTP tests (the HTTP side's tests use `common/`): a small
//! in-memory `Backend` (a real implementation of the trait over a Vec, not a stand-in for a
//! network peer), configs, and in-process servers running inside a test's namespace.
#![allow(dead_code)]

pub mod lan;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bootsvc::config::Config;
use bootsvc::dhcp::DhcpServer;
use bootsvc::inventory::{Backend, Entry, Inventory, Machine, Snapshot, Source};
use bootsvc::metrics::Metrics;
use bootsvc::storage::{EmbeddedStorage, Storage};
use bootsvc::tftp::TftpServer;
use osie_api::MacAddr;
use osie_testkit::site::{self, config::Dhcp};
use osie_testkit::Netns;

#[derive(Default)]
pub struct MapBackend {
    pub machines: Vec<Arc<Machine>>,
    /// MACs whose netboot was cleared (as after a finished install).
    pub denied: Mutex<HashSet<MacAddr>>,
}

impl MapBackend {
    pub fn new(machines: Vec<Machine>) -> MapBackend {
        MapBackend { machines: machines.into_iter().map(Arc::new).collect(), denied: Mutex::default() }
    }
}

impl Backend for MapBackend {
    fn by_mac(&self, mac: &MacAddr) -> Option<Arc<Machine>> {
        self.machines.iter().find(|m| m.macs.contains(mac)).cloned()
    }
    fn by_ip(&self, ip: Ipv4Addr) -> Option<Arc<Machine>> {
        self.machines.iter().find(|m| m.ip.as_ref().is_some_and(|c| c.address == ip)).cloned()
    }
    fn netboot_allowed(&self, mac: &MacAddr) -> bool {
        self.by_mac(mac).is_some_and(|m| m.netboot.allow) && !self.denied.lock().unwrap().contains(mac)
    }
}

/// A machine record as an operator writes it. `ip`: `Some("192.0.2.10/24")` or pool.
pub fn machine(hostname: &str, mac: &str, ip: Option<&str>, allow: bool) -> Machine {
    let mut v = serde_json::json!({
        "hostname": hostname,
        "macs": [mac],
        "netboot": { "allow": allow },
    });
    if let Some(ip) = ip {
        let (addr, prefix) = ip.split_once('/').unwrap();
        v["ip"] = serde_json::json!({
            "address": addr, "prefix": prefix.parse::<u8>().unwrap(),
            "gateway": "192.0.2.254", "dns": ["192.0.2.53", "198.51.100.53"],
        });
    }
    serde_json::from_value(v).unwrap()
}

pub const SERVER_IP: &str = "192.0.2.1";
pub const PUBLIC_URL: &str = "http://192.0.2.1:8080";

/// A config for a server on `iface` with address 192.0.2.1, as the test kit writes
/// `bootsvc.toml`: `dhcp` as given (mode, pool…) with 10-minute leases, TFTP from
/// `tftp_root`, everything else in `dir`.
pub fn config(dir: &Path, iface: &str, dhcp: Dhcp, tftp_root: &Path) -> Config {
    let mut c = site::Config::new(iface, SERVER_IP.parse().unwrap());
    c.dhcp = Dhcp { lease_secs: Some(600), ..dhcp };
    c.tftp.root = tftp_root.to_path_buf();
    c.http.public_url = format!("{PUBLIC_URL}/");
    c.artifacts.dir = dir.to_path_buf();
    c.artifacts.images_dir = dir.to_path_buf();
    c.state_dir = dir.join("state");
    c.inventory_dir = dir.join("inventory");
    toml::from_str(&c.render()).unwrap()
}

/// The iPXE binaries `scripts/setup` puts in build/tftp.
pub fn tftp_root() -> PathBuf {
    let p = osie_testkit::workspace_root().join("build/tftp");
    assert!(p.join("undionly.kpxe").is_file(), "{} has no undionly.kpxe: run scripts/setup", p.display());
    p
}

/// A server running on its own thread inside a namespace, stopped on drop.
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    /// The DHCP server's storage (machines, leases), to look into.
    pub storage: Option<Arc<dyn Storage>>,
}

impl Running {
    /// Stop and wait; errors if the server had failed.
    pub fn stop(mut self) -> Result<()> {
        self.stop.take();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => anyhow::bail!("server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum Which {
    Dhcp(Vec<Machine>),
    Tftp,
}

/// Server logs go to the test's output (shown with `--nocapture` or on failure).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_test_writer()
        .try_init();
}

fn start(ns: &Netns, cfg: Arc<Config>, metrics: Arc<Metrics>, which: Which) -> Result<Running> {
    init_logs();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Option<Arc<dyn Storage>>, String>>();
    let thread = ns.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let serve: std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>>>> = match which {
                Which::Dhcp(machines) => match storage(&cfg, machines)
                    .and_then(|st| DhcpServer::bind(cfg, Arc::clone(&st), metrics).map(|s| (s, st)))
                {
                    Ok((s, st)) => {
                        let _ = ready_tx.send(Ok(Some(st)));
                        Box::pin(s.run())
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                },
                Which::Tftp => match TftpServer::bind(cfg, metrics) {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(None));
                        Box::pin(s.run())
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                },
            };
            tokio::select! {
                r = serve => r,
                _ = stop_rx => Ok(()),
            }
        })
    });
    let storage = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("server did not report readiness")?
        .map_err(|e| anyhow::anyhow!("server failed to bind: {e}"))?;
    Ok(Running { stop: Some(stop_tx), thread: Some(thread), storage })
}

/// The embedded storage a real `bootsvc serve` opens for `cfg`, with `machines` as its
/// inventory.
fn storage(cfg: &Config, machines: Vec<Machine>) -> Result<Arc<dyn Storage>> {
    let entries = machines
        .into_iter()
        .map(|m| Entry { machine: Arc::new(m), source: Source::native(Path::new("test-inventory.json")) })
        .collect();
    let inventory = Arc::new(Inventory::new(Snapshot::new(entries, Default::default())));
    Ok(Arc::new(EmbeddedStorage::open(cfg, inventory)?))
}

/// The real DHCP server for `machines`, in `ns`, with the storage `bootsvc serve` would open.
pub fn start_dhcp(ns: &Netns, cfg: Arc<Config>, machines: Vec<Machine>, metrics: Arc<Metrics>) -> Result<Running> {
    start(ns, cfg, metrics, Which::Dhcp(machines))
}

pub fn start_tftp(ns: &Netns, cfg: Arc<Config>, metrics: Arc<Metrics>) -> Result<Running> {
    start(ns, cfg, metrics, Which::Tftp)
}

/// The value of one sample in the Prometheus exposition, e.g.
/// `osie_dhcp_replies_total{kind="offer"}`; 0 when absent.
pub fn metric(m: &Metrics, sample: &str) -> f64 {
    m.render()
        .lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

pub fn dropped(m: &Metrics, reason: &str) -> f64 {
    metric(m, &format!("osie_dropped_packets_total{{reason=\"{reason}\"}}"))
}

pub fn replies(m: &Metrics, kind: &str) -> f64 {
    metric(m, &format!("osie_dhcp_replies_total{{kind=\"{kind}\"}}"))
}

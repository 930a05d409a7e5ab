//! A lab: one provisioning network and the real `bootsvc serve` on it, a thin layer over the
//! test kit's site (`osie_testkit::site`: namespace, config, process).
//!
//! A network namespace holds a bridge (`br0`, 192.0.2.1/24) and one tap per machine; bootsvc
//! runs inside it with a generated `bootsvc.toml`: DHCP in reservation mode on the bridge
//! (or, with [`Dhcp::ProxyBesideSite`], in proxy mode beside a site DHCP server: dnsmasq in
//! a namespace of its own joined to the bridge, handing out addresses only),
//! TFTP from `build/tftp`, the installer's kernel and initramfs from `build/boot`, images
//! from `build/images`, state and inventory in the lab's own directory, JSON logs to
//! `bootsvc.log`. The harness talks to it the way an operator does: machine records written
//! into the inventory directory, events and state read with `bootsvc machine …` (the admin
//! API). [`Lab::start_fleet`] makes a second instance beside it on one PostgreSQL
//! (`crate::fleet`); the harness then reads both logs and asks whichever is still running.
//!
//! Everything lives in a temporary directory that goes away with the lab. When the lab is
//! dropped during a panic, or after [`Lab::failed`] (or always, with `OSIE_KEEP_ARTIFACTS=1`),
//! the logs (bootsvc's, every machine's
//! serial console and QEMU's) and each machine's events are first copied to
//! `qemu-tests/artifacts/<scenario>/`. The namespace is deleted with every process still in
//! it (QEMU, bootsvc), whatever happened.

use std::cell::Cell;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bootsvc::http::admin::MachineView;
use bootsvc::state::StoredEvent;
use osie_testkit::site::config::{Admin, DhcpMode, Log, LogFormat};
use osie_testkit::site::{self, Dir, Launch, Site};
use osie_testkit::{unique, wait_for, workspace_root, ChildGuard, Netns};

use crate::bootlog;
use crate::fleet::Fleet;
use crate::inputs::Inputs;
use crate::record::Record;
use crate::signals;

/// bootsvc's address on the lab network.
pub const SERVER: &str = "192.0.2.1";
/// The site DHCP server's address, in a [`Dhcp::ProxyBesideSite`] lab.
pub const SITE_DHCP: &str = "192.0.2.5";
pub const BRIDGE: &str = "br0";
pub const PUBLIC_URL: &str = "http://192.0.2.1:8080";
/// bootsvc's address on an [`Dhcp::Ipv6Only`] lab's bridge, and its base URL there.
pub const SERVER6: &str = "2001:db8::1";
pub const PUBLIC_URL6: &str = "http://[2001:db8::1]:8080";

/// Who hands out addresses on the lab's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dhcp {
    /// bootsvc, in reservation mode: records have fixed addresses.
    #[default]
    Reservation,
    /// A site DHCP server (dnsmasq, 192.0.2.5, addresses 192.0.2.150–199, nothing about
    /// booting) in its own namespace on the bridge; bootsvc in proxy mode gives boot
    /// information only. Records have no fixed address.
    ProxyBesideSite,
    /// No IPv4 on the bridge: bootsvc's DHCPv6 (records' `ip6`, boot file URLs), router
    /// advertisements (M and O flags, SLAAC prefix 2001:db8::/64), TFTP and HTTP on
    /// 2001:db8::1; DHCPv4 off. (bootsvc's `listen.address` 192.0.2.1 is on the namespace's
    /// loopback only: its IPv4 TFTP socket needs an address, no machine reaches it.)
    Ipv6Only,
}

/// The site DHCP server of a [`Dhcp::ProxyBesideSite`] lab.
struct SiteDhcp {
    // Field order: dnsmasq goes before its namespace.
    _dnsmasq: ChildGuard,
    _ns: Netns,
}

pub struct Lab {
    /// A second instance and the database both use ([`Lab::start_fleet`]); dropped first.
    pub fleet: Option<Fleet>,
    pub scenario: String,
    pub inputs: Inputs,
    pub dhcp: Dhcp,
    /// The namespace, bootsvc's config and tree, bootsvc itself (the test kit's site).
    pub site: Site,
    taps: Cell<u32>,
    macs: std::cell::RefCell<Vec<String>>,
    failed: Cell<bool>,
    site_dhcp: Option<SiteDhcp>,
}

impl Lab {
    /// Make the network, write the config and start bootsvc (reservation mode); ready when
    /// its admin API answers.
    pub fn start(scenario: &str, inputs: &Inputs) -> Result<Lab> {
        Lab::start_with(scenario, inputs, Dhcp::Reservation)
    }

    /// The same, with `dhcp` saying who hands out addresses.
    pub fn start_with(scenario: &str, inputs: &Inputs, dhcp: Dhcp) -> Result<Lab> {
        let dir = Dir::temp(&format!("osie-e2e-{scenario}-"))?;
        let launch = Launch { prepare: Some(signals::guard_child), ..Launch::new(&inputs.bootsvc) };
        let site = Site::new(launch, dir, config(inputs, dhcp))?;
        if dhcp == Dhcp::Ipv6Only {
            ipv6_only(&site)?;
        } else {
            site.bridge(BRIDGE, &format!("{SERVER}/24"), None)?;
        }
        let mut lab = Lab {
            fleet: None,
            scenario: scenario.to_string(),
            inputs: inputs.clone(),
            dhcp,
            site,
            taps: Cell::new(0),
            macs: Default::default(),
            failed: Cell::new(false),
            site_dhcp: None,
        };
        if dhcp == Dhcp::ProxyBesideSite {
            lab.site_dhcp = Some(lab.start_site_dhcp()?);
        }
        lab.start_bootsvc()?;
        Ok(lab)
    }

    /// Two instances on one PostgreSQL (`crate::fleet`): A (this lab's site, 192.0.2.1) and
    /// B (192.0.2.2), both in reservation mode on the bridge, each naming the other in
    /// `[http] peers`; `records` imported into the database first (`bootsvc db import`).
    /// Started, both answering their admin API. `None` when PostgreSQL is not installed
    /// (skipped, or failed under `OSIE_REQUIRE_ALL=1`).
    pub fn start_fleet(scenario: &str, inputs: &Inputs, records: &[Record]) -> Result<Option<Lab>> {
        let dir = Dir::temp(&format!("osie-e2e-{scenario}-"))?;
        let mut c = config(inputs, Dhcp::Reservation);
        let Some(fleet) = Fleet::new(scenario, &inputs.bootsvc, &c, dir.path())? else { return Ok(None) };
        c.database = Some(Fleet::database(&fleet.pg));
        c.http.peers = vec![crate::fleet::PEER_URL.into()];
        fleet.peer.reconfigure(|b| b.database = c.database.clone())?;
        let launch = Launch { prepare: Some(signals::guard_child), ..Launch::new(&inputs.bootsvc) };
        let site = Site::new(launch, dir, c)?;
        site.bridge(BRIDGE, &format!("{SERVER}/24"), None)?;
        let (_, there) = site.attach(BRIDGE, &fleet.peer.ns, Some(&format!("{}/24", crate::fleet::PEER)))?;
        fleet.peer.serve_on(&there, true)?;
        Fleet::import(&site, records, SERVER)?;
        let lab = Lab {
            fleet: Some(fleet),
            scenario: scenario.to_string(),
            inputs: inputs.clone(),
            dhcp: Dhcp::Reservation,
            site,
            taps: Cell::new(0),
            macs: std::cell::RefCell::new(records.iter().map(|r| r.mac.clone()).collect()),
            failed: Cell::new(false),
            site_dhcp: None,
        };
        lab.start_bootsvc()?;
        if let Some(f) = &lab.fleet {
            if let Err(e) = f.start_peer() {
                lab.failed.set(true);
                return Err(e);
            }
        }
        Ok(Some(lab))
    }

    /// The fleet of a [`Lab::start_fleet`] lab.
    pub fn fleet(&self) -> Result<&Fleet> {
        self.fleet.as_ref().context("not a fleet lab (Lab::start_fleet)")
    }

    /// The lab's instances: A (its own site), then B in a fleet lab.
    pub fn instances(&self) -> Vec<&Site> {
        std::iter::once(&self.site).chain(self.fleet.as_ref().map(|f| &f.peer)).collect()
    }

    /// SIGKILL instance `i` (0: A, 1: B) on purpose: the lab carries on with the other.
    pub fn kill9(&self, i: usize) -> Result<()> {
        self.fleet()?.kill9(&self.site, i);
        Ok(())
    }

    /// The instance the admin CLI talks to: A, or the one still running in a fleet lab.
    fn admin_site(&self) -> Result<&Site> {
        match &self.fleet {
            Some(f) => f.admin(&self.site),
            None => Ok(&self.site),
        }
    }

    /// dnsmasq in a namespace of its own, joined to the bridge by a veth, as a site's DHCP
    /// server: addresses 192.0.2.150–199 for an hour, no boot options, no DNS. Its log
    /// (`--log-dhcp`) and leases are kept with the lab's logs.
    fn start_site_dhcp(&self) -> Result<SiteDhcp> {
        let ns = Netns::new()?;
        let (_, there) = self.site.attach(BRIDGE, &ns, Some(&format!("{SITE_DHCP}/24")))?;
        let log = self.dir().join("dnsmasq.log");
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = ns.cmd("dnsmasq");
        cmd.args(["--no-daemon", "--conf-file=/dev/null", "--port=0", "--bind-interfaces", "--log-dhcp"])
            .arg(format!("--interface={there}"))
            .arg("--dhcp-range=192.0.2.150,192.0.2.199,255.255.255.0,1h")
            .arg(format!("--dhcp-leasefile={}", self.dir().join("dnsmasq-leases.txt").display()))
            .arg(format!("--pid-file={}", self.dir().join("dnsmasq.pid").display()))
            .stdout(Stdio::null())
            .stderr(out);
        let dnsmasq = ChildGuard::spawn("dnsmasq (site DHCP)", signals::guard_child(&mut cmd))?;
        wait_for("dnsmasq to serve DHCP", Duration::from_secs(10), || {
            std::fs::read_to_string(&log).ok().filter(|l| l.contains("DHCP, IP range")).map(|_| ())
        })
        .with_context(|| format!("dnsmasq log:\n{}", std::fs::read_to_string(&log).unwrap_or_default()))?;
        Ok(SiteDhcp { _dnsmasq: dnsmasq, _ns: ns })
    }

    /// Start bootsvc; ready when the admin API answers the CLI too.
    /// Serve the artifacts from a copy in the lab's directory (`artifacts/`), which a test
    /// may change (the build's own are shared and read-only); restarts bootsvc. The copy's
    /// directory.
    pub fn own_artifacts(&self) -> Result<PathBuf> {
        let dir = self.subdir("artifacts")?;
        for f in ["vmlinuz", "initramfs.img"] {
            std::fs::copy(self.inputs.boot.join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
        }
        self.site.stop()?;
        self.site.reconfigure(|c| c.artifacts.dir = dir.clone())?;
        self.start_bootsvc()?;
        Ok(dir)
    }

    fn start_bootsvc(&self) -> Result<()> {
        let ready = self.site.start().and_then(|()| {
            wait_for("bootsvc's admin API", Duration::from_secs(30), || self.cli(&["machines", "--json"]).ok())
        });
        if let Err(e) = ready {
            self.failed.set(true);
            bail!("bootsvc did not start: {e:#}\n{}", crate::console::tail(&self.log_text(), 20))
        }
        Ok(())
    }

    /// The lab's directory.
    pub fn dir(&self) -> &Path {
        self.site.dir()
    }

    /// bootsvc's log (JSON lines).
    pub fn log(&self) -> &Path {
        self.site.log_path()
    }

    /// An error when bootsvc is no longer running, with the end of its log.
    pub fn check_bootsvc(&self) -> Result<()> {
        match &self.fleet {
            Some(f) => f.check_running(&self.site),
            None => self.site.check_running(),
        }
    }

    /// Run `bootsvc <args> --config <lab config>` in the namespace; its stdout, or an
    /// error with its stderr.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        self.admin_site()?.admin_cli(args)
    }

    /// Put a machine record into the inventory and wait until bootsvc serves it (the
    /// inventory is polled every second). Not in a fleet lab (its records are imported at
    /// start).
    pub fn add(&self, rec: &Record) -> Result<()> {
        self.add_as(rec, &rec.to_json(SERVER))
    }

    /// Add `rec` to the inventory as the document `doc` (its native record, or Tinkerbell's
    /// `Hardware` with its `Template` and `Workflow`: [`Record::tinkerbell`]); wait until
    /// bootsvc serves it.
    pub fn add_as(&self, rec: &Record, doc: &serde_json::Value) -> Result<()> {
        if self.fleet.is_some() {
            bail!("a fleet lab's records are in the database: pass them to Lab::start_fleet");
        }
        let name = format!("{}.json", rec.hostname);
        self.site.machine(&rec.hostname, &serde_json::to_string_pretty(doc)?)?;
        self.macs.borrow_mut().push(rec.mac.clone());
        wait_for(&format!("bootsvc to load {name}"), Duration::from_secs(20), || self.machine(&rec.mac).ok())
            .with_context(|| format!("bootsvc log:\n{}", crate::console::tail(&self.log_text(), 10)))?;
        Ok(())
    }

    /// The machine as the admin API shows it (record summary, netboot, state).
    pub fn machine(&self, mac: &str) -> Result<MachineView> {
        let out = self.cli(&["machine", mac, "show", "--json"])?;
        serde_json::from_str(&out).context("bootsvc machine show: undecodable JSON")
    }

    /// Every stored event of the machine, oldest first.
    pub fn events(&self, mac: &str) -> Result<Vec<StoredEvent>> {
        let out = self.cli(&["machine", mac, "events", "--json", "--limit", "100000"])?;
        serde_json::from_str(&out).context("bootsvc machine events: undecodable JSON")
    }

    /// The machine's boot trace and its diagnosis (`bootsvc machine <mac> trace --json`).
    pub fn trace(&self, mac: &str) -> Result<bootsvc::trace::TraceView> {
        let out = self.cli(&["machine", mac, "trace", "--json"])?;
        serde_json::from_str(&out).context("bootsvc machine trace: undecodable JSON")
    }

    /// Keep the machine's boot trace in the scenario's artifacts (`trace-<mac>.json`, the
    /// form of `bootsvc/tests/fixtures/trace/`); the path.
    pub fn keep_trace(&self, mac: &str) -> Result<PathBuf> {
        let v = self.trace(mac)?;
        let dir = self.kept_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let p = dir.join(format!("trace-{}.json", mac.replace(':', "")));
        std::fs::write(&p, serde_json::to_string_pretty(&v)?).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }

    /// What bootsvc's log says so far (every instance's, in a fleet lab).
    pub fn log_entries(&self) -> Vec<bootlog::Entry> {
        self.instances().into_iter().flat_map(|s| bootlog::read(s.log_path())).collect()
    }

    pub fn log_text(&self) -> String {
        self.instances().into_iter().map(|s| s.logs()).collect::<Vec<_>>().join("\n")
    }

    /// A new tap on the bridge, for one machine.
    pub fn add_tap(&self) -> Result<String> {
        let n = self.taps.get();
        self.taps.set(n + 1);
        let tap = format!("tap{n}");
        self.site.ns.add_tap(&tap, BRIDGE)?;
        Ok(tap)
    }

    /// A fresh directory inside the lab (a machine's disk, serial log, firmware variables).
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir().join(name);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// Where the logs are kept when the scenario fails.
    pub fn kept_dir(&self) -> PathBuf {
        workspace_root().join("qemu-tests/artifacts").join(&self.scenario)
    }

    /// Mark the scenario failed: the logs are kept when the lab goes away.
    pub fn failed(&self) {
        self.failed.set(true);
    }

    /// Copy logs, events and the bootsvc config to [`Lab::kept_dir`] now.
    pub fn keep_logs(&self) -> PathBuf {
        let dest = self.kept_dir();
        let _ = std::fs::remove_dir_all(&dest);
        let _ = std::fs::create_dir_all(&dest);
        copy_logs(self.dir(), self.dir(), &dest);
        let _ = std::fs::copy(&self.site.config, dest.join("bootsvc.toml"));
        if let Some(f) = &self.fleet {
            let _ = std::fs::copy(&f.peer.config, dest.join("b-bootsvc.toml"));
            let _ = std::fs::write(dest.join("postgresql.log"), f.pg.log());
        }
        for mac in self.macs.borrow().iter() {
            if let Ok(out) = self.cli(&["machine", mac, "events", "--json", "--limit", "100000"]) {
                let _ = std::fs::write(dest.join(format!("events-{}.json", mac.replace(':', "-"))), out);
            }
        }
        dest
    }

    /// The address machine `n` (1-based) of this lab gets: 192.0.2.(20+n).
    pub fn address(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, 20 + n)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let keep = std::env::var_os("OSIE_KEEP_ARTIFACTS").is_some_and(|v| v == "1");
        if keep || self.failed.get() || std::thread::panicking() {
            let dest = self.keep_logs();
            eprintln!("{}: logs kept in {}", self.scenario, dest.display());
        }
        if let Some(f) = &self.fleet {
            let _ = f.peer.stop_within(Duration::from_secs(5));
        }
        let _ = self.site.stop_within(Duration::from_secs(5));
        // The namespace (and what still runs in it) and the directory go with `site`, after
        // this.
    }
}

/// `*.log` and `*.txt` files under `dir`, to `dest` with their relative path flattened
/// (`m1/serial.log` → `m1-serial.log`).
fn copy_logs(root: &Path, dir: &Path, dest: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_logs(root, &p, dest);
        } else if p.extension().is_some_and(|x| x == "log" || x == "txt") {
            let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().replace('/', "-");
            let _ = std::fs::copy(&p, dest.join(rel));
        }
    }
}

/// bootsvc on the bridge: DHCP in `dhcp`'s mode with hour-long leases, TFTP, the kernel and
/// initramfs and the images from the build, state and inventory in the lab's directory, the
/// admin API on (a fresh token), JSON logs.
fn config(inputs: &Inputs, dhcp: Dhcp) -> site::Config {
    let mut c = site::Config::new(BRIDGE, SERVER.parse().expect("SERVER is an address"));
    c.dhcp.mode = Some(match dhcp {
        Dhcp::Reservation | Dhcp::Ipv6Only => DhcpMode::Reservation,
        Dhcp::ProxyBesideSite => DhcpMode::Proxy,
    });
    if dhcp == Dhcp::Ipv6Only {
        c.dhcp.enabled = Some(false);
    }
    c.dhcp.lease_secs = Some(3600);
    c.tftp.root = inputs.tftp.clone();
    c.http.public_url = PUBLIC_URL.into();
    c.artifacts.dir = inputs.boot.clone();
    c.artifacts.images_dir = inputs.images.clone();
    c.admin = Some(Admin::with_token(&unique("osie-e2e-admin-token-")));
    c.log = Log { format: Some(LogFormat::Json), level: Some("info".into()) };
    c
}

/// An [`Dhcp::Ipv6Only`] lab's network and bootsvc settings: the bridge with 2001:db8::1/64
/// only (no duplicate address detection: usable as soon as a tap brings it up), 192.0.2.1 on
/// the loopback, and the IPv6 sections appended to the config the kit wrote.
fn ipv6_only(site: &Site) -> Result<()> {
    site.ns.ip(&["link", "add", BRIDGE, "type", "bridge", "forward_delay", "0"])?;
    site.ns.ip(&["-6", "addr", "add", &format!("{SERVER6}/64"), "dev", BRIDGE, "nodad"])?;
    site.ns.ip(&["link", "set", BRIDGE, "up"])?;
    site.loopback(&[SERVER])?;
    let text = std::fs::read_to_string(&site.config).with_context(|| format!("reading {}", site.config.display()))?;
    let listen = format!("listen = \"{SERVER}:8080\"");
    if !text.contains(&listen) {
        bail!("{}: no `{listen}` to make IPv6", site.config.display());
    }
    let text = text.replace(&listen, "listen = \"[::]:8080\"")
        + &format!(
            "\n[dhcp6]\nenabled = true\naddress = \"{SERVER6}\"\n\n\
             [router_advertisements]\nmode = \"on\"\nmanaged = true\nprefix = \"2001:db8::/64\"\n"
        );
    std::fs::write(&site.config, text).with_context(|| format!("writing {}", site.config.display()))
}

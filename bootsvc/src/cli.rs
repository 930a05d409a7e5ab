//! Command line: `serve`, `check`, `db …`, `machines`, `sites`, `machine <mac> …`, `reinstall MAC…`,
//! `deprovision MAC…`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::admin_client::{self, Client};
use crate::config::Config;
use crate::inventory::Snapshot;
use crate::power_cmd;
use crate::problem::Problems;
use crate::storage::pg;

/// osie's netboot service: DHCP, TFTP and HTTP (iPXE scripts, kernel and initramfs, OS
/// images, installer metadata, events) for the machines in an inventory directory.
///
/// A machine listed in the inventory with netboot allowed PXE-boots into the osie installer,
/// which writes its OS image, reports back, and the machine boots from disk from then on
/// (one-shot install) until `bootsvc machine <mac> reinstall`.
#[derive(Debug, Parser)]
#[command(name = "bootsvc", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (binds HTTP, and DHCP and TFTP when enabled; usually needs root).
    Serve {
        /// The service's configuration (bootsvc/docs/config.md explains every field).
        #[arg(long, short, env = "BOOTSVC_CONFIG")]
        config: PathBuf,
    },
    /// Validate the configuration, the inventory and the image manifests without starting.
    ///
    /// Prints every problem as `<file>: <field>: <what is wrong>` and exits 1, or prints a
    /// one-line summary and exits 0.
    Check {
        #[arg(long, short, env = "BOOTSVC_CONFIG")]
        config: PathBuf,
    },
    /// List machines with their netboot permission, install status, phase, progress, last
    /// event and diagnosis (where the boot trace says it is; when stuck, the likely cause),
    /// through the admin API of the running service.
    Machines {
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        conn: Connect,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The sites of the shared database (`[database]`), each with its number of machines;
    /// `*` marks the answering instance's site (through the admin API).
    Sites {
        #[command(flatten)]
        conn: Connect,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The PostgreSQL database of `[database]`: schema migrations, importing and exporting
    /// machine records.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Allow netboot again on many machines at once; with --power, also boot each from the
    /// network once and power-cycle it through its BMC (through the admin API).
    Reinstall {
        /// The machines' MAC addresses (or choose them with --site and --label).
        macs: Vec<String>,
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        bulk: Bulk,
        #[command(flatten)]
        conn: Connect,
    },
    /// Erase every disk of many machines at once: each one's next netboot runs the installer
    /// in erase mode, which reports each disk and powers off; then no boot file until a
    /// reinstall (bootsvc/docs/deprovision.md). With --power, also boot each from the network
    /// once and power-cycle it through its BMC (through the admin API).
    Deprovision {
        /// The machines' MAC addresses (or choose them with --site and --label).
        macs: Vec<String>,
        #[command(flatten)]
        select: Select,
        /// Erase removable disks (USB sticks, SD cards) too.
        #[arg(long)]
        removable: bool,
        #[command(flatten)]
        bulk: Bulk,
        #[command(flatten)]
        conn: Connect,
    },
    /// Act on one machine (through the admin API).
    Machine {
        /// The machine's MAC address (any of its NICs).
        mac: String,
        #[command(subcommand)]
        action: MachineAction,
        #[command(flatten)]
        conn: Connect,
    },
}

#[derive(Debug, Subcommand)]
pub enum MachineAction {
    /// Allow netboot again after an install: the next boot reinstalls the machine.
    Reinstall {
        /// And boot it now: one-time network boot and power cycle (or on) through its BMC.
        #[arg(long)]
        power: bool,
        /// With --power: then wait up to this many seconds for the machine to netboot (its
        /// installer's first event), and fail saying what was last seen if it does not.
        #[arg(long, requires = "power", value_name = "SECS")]
        wait: Option<u64>,
    },
    /// Erase every disk: the next netboot runs the installer in erase mode (NVMe sanitize or
    /// format, discard that reads back zeros, else zero writes; read-only disks and disks in
    /// use never), which reports each disk and powers off. Then no boot file until
    /// `reinstall` (bootsvc/docs/deprovision.md).
    Deprovision {
        /// Erase removable disks (USB sticks, SD cards) too.
        #[arg(long)]
        removable: bool,
        /// And boot it now: one-time network boot and power cycle (or on) through its BMC.
        #[arg(long)]
        power: bool,
        /// With --power: then wait up to this many seconds for the machine to netboot (its
        /// installer's first event), and fail saying what was last seen if it does not.
        #[arg(long, requires = "power", value_name = "SECS")]
        wait: Option<u64>,
    },
    /// Power and boot control through the machine's BMC (its record's `bmc`).
    Power {
        /// status (power state and the system's identity), on, off (hard), shutdown (ask the
        /// OS), cycle (off and on; only on when off), netboot (network boot next time, once).
        #[arg(value_parser = ["status", "on", "off", "shutdown", "cycle", "netboot"])]
        action: String,
        #[arg(long)]
        json: bool,
    },
    /// Show the machine's record summary and state.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// The machine's stored events, oldest first.
    Events {
        /// At most this many (the newest).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// The machine's boot trace (DHCP, TFTP, script, downloads, metadata, events), oldest
    /// first, and where it is: when stuck, the likely cause (bootsvc/docs/trace.md).
    Trace {
        /// At most this many steps (the newest).
        #[arg(long, default_value_t = 500)]
        limit: usize,
        /// The admin API's JSON (`TraceView`), e.g. to keep as a test fixture.
        #[arg(long)]
        json: bool,
    },
    /// The installer's console log as it sent it, whole, per run (the last few runs are
    /// kept, even after the machine rebooted).
    Log {
        /// Only the run whose id starts with this.
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Apply the schema migrations this bootsvc has (`serve` refuses any other version).
    Migrate {
        #[command(flatten)]
        db: DbConfig,
    },
    /// Load a directory of machine records (native or Tinkerbell `Hardware`, as an
    /// inventory directory holds) into the database, validated as `bootsvc check` does; a
    /// file with a problem is not imported. A record replaces the machine with its first MAC.
    Import {
        dir: PathBuf,
        #[command(flatten)]
        db: DbConfig,
    },
    /// Write every machine in the database as `<hostname>.json` into a new or empty
    /// directory (which `import` reads back).
    Export {
        dir: PathBuf,
        #[command(flatten)]
        db: DbConfig,
    },
}

/// The config whose `[database]` a `db` command works on.
#[derive(Debug, Clone, Args)]
pub struct DbConfig {
    #[arg(long, short, env = "BOOTSVC_CONFIG")]
    pub config: PathBuf,
}

/// How the CLI reaches the admin API.
#[derive(Debug, Clone, Args)]
pub struct Connect {
    /// The service's config file: the admin API is reached on admin.listen with the token
    /// from admin.token_file.
    #[arg(long, short, env = "BOOTSVC_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Or: the admin API's URL (http://host:port of admin.listen, or unix:/path of its
    /// socket); wins over --config.
    #[arg(long, env = "BOOTSVC_URL", global = true)]
    pub url: Option<String>,
    /// With --url: the file holding the admin bearer token (or, with --config, instead of
    /// admin.token_file).
    #[arg(long, env = "BOOTSVC_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

/// How a bulk command (`reinstall`, `deprovision`) goes about it.
#[derive(Debug, Args)]
pub struct Bulk {
    /// Through each machine's BMC: one-time network boot, then power cycle (or on).
    #[arg(long)]
    pub power: bool,
    /// Machines done at the same time.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// With --power: then wait up to this many seconds for each machine to netboot (its
    /// installer's first event); one that does not is a failure.
    #[arg(long, requires = "power", value_name = "SECS")]
    pub wait: Option<u64>,
}

/// Machines chosen by their record's `site` and `labels` rather than by MAC.
#[derive(Debug, Args)]
pub struct Select {
    /// Only the machines whose record names this site (`site`; records without one are not
    /// chosen).
    #[arg(long)]
    pub site: Option<String>,
    /// Only the machines with this label (`KEY=VALUE`; repeated: all of them).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
}

impl Select {
    fn selector(&self) -> Result<power_cmd::Selector> {
        power_cmd::Selector::parse(self.site.as_deref(), &self.labels)
    }
}

impl Connect {
    fn client(&self) -> Result<Client> {
        Client::new(self.config.as_deref(), self.url.as_deref(), self.token_file.as_deref())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bootsvc: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = Config::load(&config).map_err(|p| anyhow::anyhow!("the configuration has problems:\n{p}"))?;
            crate::logging::init(cfg.log.format, &cfg.log.level)?;
            crate::serve::serve(cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => Ok(check(&config)),
        Command::Db { action } => db(action),
        Command::Machines { select, conn, json } => {
            let selector = select.selector()?;
            let mut v = runtime()?.block_on(async { conn.client()?.machines().await })?;
            v.retain(|m| selector.matches(m));
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}{}", admin_client::machines_table(&v), admin_client::refused_claims(&v));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sites { conn, json } => {
            let v = runtime()?.block_on(async { conn.client()?.sites().await })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", admin_client::sites_table(&v));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reinstall { macs, select, bulk: b, conn } => {
            bulk(power_cmd::Intent::Reinstall, macs, &select, &b, &conn)
        }
        Command::Deprovision { macs, select, removable, bulk: b, conn } => {
            bulk(power_cmd::Intent::Deprovision { removable }, macs, &select, &b, &conn)
        }
        Command::Machine { mac, action, conn } => {
            let client = conn.client()?;
            let rt = runtime()?;
            match action {
                MachineAction::Reinstall { power, wait } => {
                    return one(&rt, &client, &mac, power_cmd::Intent::Reinstall, power, wait);
                }
                MachineAction::Deprovision { removable, power, wait } => {
                    return one(&rt, &client, &mac, power_cmd::Intent::Deprovision { removable }, power, wait);
                }
                MachineAction::Power { action, json } => {
                    let a = match action.as_str() {
                        "status" => rt.block_on(client.power_status(&mac))?,
                        _ => rt.block_on(client.power(&mac, &action, &power_cmd::who()))?,
                    };
                    if json {
                        println!("{}", serde_json::to_string_pretty(&a)?);
                    } else {
                        println!("{}", power_cmd::answer_line(&a));
                    }
                    if a.report.error.is_some() {
                        return Ok(ExitCode::FAILURE);
                    }
                }
                MachineAction::Show { json } => {
                    let m = rt.block_on(client.machine(&mac))?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&m)?);
                    } else {
                        print!("{}", admin_client::machine_detail(&m));
                    }
                }
                MachineAction::Events { limit, json } => {
                    let v = rt.block_on(client.events(&mac, limit))?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        print!("{}", admin_client::events_table(&v));
                    }
                }
                MachineAction::Trace { limit, json } => {
                    let v = rt.block_on(client.trace(&mac, limit))?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        print!("{}", crate::trace::render::trace_text(&v));
                    }
                }
                MachineAction::Log { run, json } => {
                    let v = rt.block_on(client.log(&mac))?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        print!("{}", crate::trace::render::log_text(&v, run.as_deref()));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `bootsvc reinstall|deprovision`: the machines named by MAC or chosen by site and labels.
fn bulk(intent: power_cmd::Intent, macs: Vec<String>, select: &Select, b: &Bulk, conn: &Connect) -> Result<ExitCode> {
    let (selector, client, rt) = (select.selector()?, conn.client()?, runtime()?);
    let macs = match (macs.is_empty(), selector.is_empty()) {
        (false, true) => macs,
        (true, false) => {
            let chosen = rt.block_on(power_cmd::choose(&client, &selector))?;
            println!("{}", chosen.line);
            chosen.macs
        }
        (false, false) => bail!("name the machines by MAC or choose them with --site/--label, not both"),
        (true, true) => bail!("which machines? give their MACs, or choose them with --site and/or --label"),
    };
    rt.block_on(power_cmd::bulk(&client, intent, &macs, b.parallel, b.power, b.wait))
}

/// `bootsvc machine <mac> reinstall|deprovision [--power [--wait SECS]]`.
fn one(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    mac: &str,
    intent: power_cmd::Intent,
    power: bool,
    wait: Option<u64>,
) -> Result<ExitCode> {
    if !power {
        let m = rt.block_on(intent.ask(client, mac))?;
        println!("{} ({mac}): {}", m.hostname, intent.done());
        return Ok(ExitCode::SUCCESS);
    }
    let a = rt.block_on(intent.ask_power(client, mac, &power_cmd::who()))?;
    println!("{}", power_cmd::answer_line(&a));
    if a.report.error.is_some() {
        return Ok(ExitCode::FAILURE);
    }
    if let Some(secs) = wait {
        match rt.block_on(power_cmd::wait_netboot(client, mac, secs)) {
            Ok(p) => println!("{} ({mac}): netbooted: the installer is at {p}", a.hostname),
            Err(e) => {
                println!("{} ({mac}): FAILED: {e}", a.hostname);
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bootsvc db …`.
fn db(action: DbAction) -> Result<ExitCode> {
    let (DbAction::Migrate { db } | DbAction::Import { db, .. } | DbAction::Export { db, .. }) = &action;
    let path = &db.config;
    let cfg = Config::load(path).map_err(|p| anyhow::anyhow!("the configuration has problems:\n{p}"))?;
    if cfg.database.is_none() {
        anyhow::bail!("{}: has no [database] section (bootsvc/docs/config.md)", path.display());
    }
    match action {
        DbAction::Migrate { .. } => println!("{}", pg::cli::migrate(&cfg)?),
        DbAction::Import { dir, .. } => {
            let r = pg::cli::import(&cfg, &dir)?;
            for p in r.image_problems.iter() {
                eprintln!("warning: {p}");
            }
            for p in r.problems.iter() {
                println!("{p}");
            }
            println!(
                "imported {} machine{} ({} new, {} replaced) from {} file{}{}",
                r.added + r.replaced,
                if r.added + r.replaced == 1 { "" } else { "s" },
                r.added,
                r.replaced,
                r.files,
                if r.files == 1 { "" } else { "s" },
                match r.refused.len() {
                    0 => String::new(),
                    n => format!("; {n} file{} with problems not imported", if n == 1 { "" } else { "s" }),
                }
            );
            if !r.problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        DbAction::Export { dir, .. } => {
            let n = pg::cli::export(&cfg, &dir)?;
            println!("exported {n} machine{} to {}", if n == 1 { "" } else { "s" }, dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bootsvc check`: every problem of config, inventory and image manifests.
fn check(path: &Path) -> ExitCode {
    let (problems, summary) = check_all(path);
    if problems.is_empty() {
        println!("{summary}");
        return ExitCode::SUCCESS;
    }
    for p in problems.iter() {
        println!("{p}");
    }
    eprintln!("bootsvc check: {} problem{}", problems.len(), if problems.len() == 1 { "" } else { "s" });
    ExitCode::FAILURE
}

/// Records whose digest comes from a vendor's checksums file: fetched and verified as the
/// metadata request will, so `check` shows the refusal an install would meet.
fn check_vendor_sums(cfg: &Config, snap: &Snapshot) -> Vec<crate::problem::Problem> {
    let wanted: Vec<_> = snap
        .entries()
        .iter()
        .filter_map(|e| {
            let img = &e.machine.install.as_ref()?.image;
            Some((e.source.clone(), img.url.clone()?, img.checksums_url.clone()?, img.signature_url.clone()))
        })
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    // An unreadable keyring is already a problem of `images.keyring`.
    let sums = crate::vendor_sums::VendorSums::new(cfg.keyring().ok().flatten());
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return vec![crate::problem::Problem::new(&cfg.source, "", format!("starting the async runtime: {e}"))]
        }
    };
    rt.block_on(async {
        let mut out = Vec::new();
        for (src, url, sums_url, sig) in wanted {
            if let Err(e) = sums.digest(&url, &sums_url, sig.as_deref()).await {
                out.push(crate::problem::Problem::new(
                    &src.file,
                    src.field("install.image.checksums_url"),
                    e.to_string(),
                ));
            }
        }
        out
    })
}

/// The problems, and the summary line when there are none.
pub fn check_all(path: &Path) -> (Problems, String) {
    let cfg = match Config::load_unchecked(path) {
        Ok(c) => c,
        Err(p) => return (Problems(vec![p]), String::new()),
    };
    let mut problems = cfg.validate();
    if cfg.database.is_some() && cfg.inventory.is_none() {
        // The machines are in the database (validated on their way in, by `db import`).
        let mut p = Problems::default();
        let images = crate::inventory::images::load_configured(&cfg, &mut p);
        problems.0.extend(p.0);
        let summary = format!(
            "ok: {}: machines in the database, {} image{}",
            cfg.source.display(),
            images.len(),
            if images.len() == 1 { "" } else { "s" }
        );
        return (problems, summary);
    }
    // The inventory is checked even when the config has problems, as long as its
    // directories are there: one run shows everything to fix.
    if cfg.inventory.as_ref().is_some_and(|i| i.dir.is_dir()) && cfg.artifacts.images_dir.is_dir() {
        match Snapshot::load(&cfg) {
            Ok(snap) => {
                problems.0.extend(check_vendor_sums(&cfg, &snap));
                let allowed = snap.entries().iter().filter(|e| e.machine.netboot.allow).count();
                let summary = format!(
                    "ok: {}: {} machine{} ({allowed} may netboot), {} image{}",
                    cfg.source.display(),
                    snap.len(),
                    if snap.len() == 1 { "" } else { "s" },
                    snap.images.len(),
                    if snap.images.len() == 1 { "" } else { "s" },
                );
                return (problems, summary);
            }
            Err(p) => problems.0.extend(p),
        }
    }
    (problems, String::new())
}

//! `bootsvc serve`: bind every socket, give up root, then build everything and run.
//!
//! Binding comes first and all at once (HTTP, `http.listen6`, the admin API's listener, DHCP 67/4011,
//! DHCPv6 547, TFTP 69 (and on `dhcp6.address`), the raw ICMPv6 socket for router advertisements), while the process is still root and has a single thread; the soft limit of open
//! files is raised to the hard limit (the HTTP connection caps bound connections, not the
//! descriptor limit); then the admin token (which may stay readable by root only) is read
//! and privileges are dropped ([`crate::privileges`]): capabilities are per
//! thread, so this must happen before the async runtime starts its workers. Everything
//! after that (the state store, the inventory, every request) runs unprivileged. A port
//! conflict stops the service before it answers anything.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::task::JoinSet;

use crate::config::{AdminListen, Config};
use crate::dhcp::{self, DhcpServer};
use crate::dhcp6::{self, Dhcp6Server};
use crate::http::{self, App, Listener};
use crate::identity;
use crate::inventory::{watch, Inventory, Snapshot};
use crate::metrics::Metrics;
use crate::privileges::{self, Identity};
use crate::ra::{self, RaServer};
use crate::storage::{EmbeddedStorage, PgStorage, Storage};
use crate::tftp::{self, TftpServer};
use crate::tracer::Tracer;

/// How often the inventory directories are polled for changes.
pub const RELOAD_INTERVAL: Duration = watch::INTERVAL;
/// Threads for blocking work at most.
const BLOCKING_THREADS: usize = 32;

/// Sockets bound as root, before the drop.
struct Bound {
    /// `http.listen`, then `http.listen6` when set.
    http: Vec<Listener>,
    /// The admin API's listener; `None` when the admin API is off (no token file).
    admin: Option<Listener>,
    dhcp: Option<dhcp::server::Sockets>,
    dhcp6: Option<dhcp6::server::Bound>,
    tftp: Option<tftp::Sockets>,
    ra: Option<ra::RaSocket>,
    admin_token: Option<String>,
    /// `images.keyring`, parsed (read before privileges are dropped).
    keyring: Option<Arc<crate::signature::Keyring>>,
    /// The status page's read-only token (`admin.read_only_token_file`).
    read_only_token: Option<String>,
    /// `[database]`'s URL (its file may be root's alone).
    database_url: Option<String>,
}

/// Bind, drop privileges, then serve until SIGTERM/SIGINT. Call from a plain thread (it
/// starts the async runtime itself, after the drop).
pub fn serve(cfg: Config) -> Result<()> {
    let cfg = Arc::new(cfg);
    let bound = Bound {
        http: std::iter::once(cfg.http.listen)
            .chain(cfg.http.listen6)
            .map(|a| Listener::tcp(a, "HTTP"))
            .collect::<Result<_>>()?,
        admin: match (&cfg.admin.token_file, &cfg.admin.listen) {
            (None, _) => None,
            (Some(_), AdminListen::Tcp(a)) => Some(Listener::tcp(*a, "the admin API")?),
            (Some(_), AdminListen::Unix(p)) => Some(Listener::unix(p, "the admin API")?),
        },
        dhcp: dhcp::server::bind_sockets(&cfg).context("starting DHCP")?,
        dhcp6: dhcp6::server::bind_socket(&cfg).context("starting DHCPv6")?,
        tftp: tftp::bind_socket(&cfg).context("starting TFTP")?,
        ra: ra::bind_socket(&cfg).context("starting router advertisements")?,
        admin_token: cfg.admin_token()?,
        keyring: cfg.keyring()?,
        read_only_token: cfg.read_only_token()?,
        database_url: cfg.database_url()?,
    };
    let fds = http::raise_fd_limit()?;
    crate::config::fits_fd_limit(cfg.http.max_connections, fds).map_err(|e| anyhow!("http.max_connections: {e}"))?;
    privileges::prepare_state_dir(&cfg.state.dir, &cfg.security)?;
    let who = privileges::drop_privileges(&cfg.security).context("dropping privileges")?;
    privileges::check_state_dir(&cfg.state.dir, &who)?;
    // Blocking work (opening files, the state store) is short; a crowd of requests queues for
    // a few threads instead of starting hundreds, each with its stack and allocator arena.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(cfg, bound, who))
}

/// The storage `cfg` names: PostgreSQL with `[database]`, else the embedded store (and the
/// inventory directory, with the task that reloads it).
async fn open_storage(
    cfg: &Arc<Config>,
    database_url: Option<String>,
) -> Result<(Arc<dyn Storage>, Option<Arc<Inventory>>)> {
    if let Some(url) = database_url {
        let c = Arc::clone(cfg);
        let pg = tokio::task::spawn_blocking(move || PgStorage::open(c, &url))
            .await
            .map_err(|e| anyhow!("opening the database: {e}"))??;
        let snap = pg.snapshot();
        tracing::info!(machines = snap.len(), images = snap.images.len(), storage = %pg.describe(), "inventory loaded");
        return Ok((Arc::new(pg), None));
    }
    let snapshot =
        Snapshot::load(cfg).map_err(|p| anyhow!("the inventory has problems (bootsvc check lists them):\n{p}"))?;
    tracing::info!(
        machines = snapshot.len(),
        images = snapshot.images.len(),
        dir = %cfg.inventory.as_ref().map(|i| i.dir.display().to_string()).unwrap_or_default(),
        "inventory loaded"
    );
    let inventory = Arc::new(Inventory::new(snapshot));
    let storage = Arc::new(EmbeddedStorage::open(cfg, Arc::clone(&inventory))?);
    Ok((storage, Some(inventory)))
}

async fn run(cfg: Arc<Config>, bound: Bound, who: Identity) -> Result<()> {
    let (storage, inventory) = open_storage(&cfg, bound.database_url).await?;
    let metrics = Arc::new(if storage.health().is_some() { Metrics::with_database() } else { Metrics::new() });
    let tracer = Tracer::start(&cfg.trace, Arc::clone(&storage), Arc::clone(&metrics))
        .context("starting the boot trace's writer")?;
    let app = Arc::new(App {
        cfg: Arc::clone(&cfg),
        storage: Arc::clone(&storage),
        identity: Arc::new(identity::Identity::new(cfg.dhcp.mode)),
        metrics: Arc::clone(&metrics),
        ui: http::ui::Ui::new(&cfg, bound.admin_token.clone(), bound.read_only_token),
        admin_token: bound.admin_token,
        tracer: Some(Arc::clone(&tracer)),
        vendor_sums: crate::vendor_sums::VendorSums::new(bound.keyring),
    });

    let http = http::machines_servers(&app, bound.http);
    let http_addr = http.iter().map(|s| s.describe()).collect::<Vec<_>>().join(",");
    let admin = bound.admin.map(|l| http::admin_server(&app, l));
    let admin_addr = admin.as_ref().map_or_else(|| "off".to_string(), |a| a.describe());
    let dhcp = cfg.dhcp.enabled.then(|| {
        DhcpServer::new(&cfg, Arc::clone(&storage), Arc::clone(&metrics), bound.dhcp).with_tracer(Arc::clone(&tracer))
    });
    let dhcp6 = bound.dhcp6.map(|b| Dhcp6Server::new(b, Arc::clone(&storage), Arc::clone(&metrics)));
    let tftp = if cfg.tftp.enabled {
        let grub =
            tftp::generated::Generated::new(Arc::clone(&cfg), Arc::clone(&app.storage), Arc::clone(&app.identity))
                .context("starting TFTP: the shim/GRUB chain's files")?;
        let t = TftpServer::new(Arc::clone(&cfg), Arc::clone(&metrics), bound.tftp).context("starting TFTP")?;
        Some(t.with_tracer(Arc::clone(&tracer)).with_generated(grub))
    } else {
        None
    };
    let ra = bound.ra.map(|s| RaServer::new(&cfg, Arc::clone(&metrics), Some(s)));
    tracing::info!(
        http = %http_addr,
        public_url = %cfg.http.public_url,
        public_url6 = %cfg.public_url6().unwrap_or_else(|| "-".into()),
        peers = %cfg.http.peers.join(","),
        dhcp = if cfg.dhcp.enabled { "on" } else { "off" },
        dhcp6 = if dhcp6.is_some() { "on" } else { "off" },
        tftp = if cfg.tftp.enabled { "on" } else { "off" },
        router_advertisements = if ra.is_some() { "on" } else { "off" },
        admin = %admin_addr,
        storage = %storage.describe(),
        runs_as = %who,
        "bootsvc ready"
    );

    let mut tasks = JoinSet::new();
    for h in http {
        tasks.spawn(async move { h.run().await.context("HTTP server") });
    }
    if let Some(a) = admin {
        tasks.spawn(async move { a.run().await.context("admin API server") });
    }
    if let Some(d) = dhcp {
        tasks.spawn(async move { d.run().await.context("DHCP server") });
    }
    if let Some(d) = dhcp6 {
        tasks.spawn(async move { d.run().await.context("DHCPv6 server") });
    }
    if let Some(t) = tftp {
        tasks.spawn(async move { t.run().await.context("TFTP server") });
    }
    if let Some(r) = ra {
        tasks.spawn(async move { r.run().await.context("router advertisements") });
    }
    if let Some(inv) = inventory {
        let c = Arc::clone(&cfg);
        tasks.spawn(async move {
            watch::watch(c, inv, RELOAD_INTERVAL).await;
            Ok(())
        });
    }

    let outcome = tokio::select! {
        done = tasks.join_next() => match done {
            Some(Ok(Err(e))) => Err(e),
            Some(Ok(Ok(()))) => bail!("a service stopped unexpectedly"),
            Some(Err(e)) => bail!("a service task failed: {e}"),
            None => Ok(()),
        },
        sig = shutdown_signal() => {
            tracing::info!(signal = sig, "shutting down");
            Ok(())
        }
    };
    // The trace steps still queued, then what is written behind (the DHCP REQUESTs seen,
    // the trace's last commits), on the way out.
    if !tracer.flush(Duration::from_secs(2)) {
        tracing::warn!("boot trace: steps still queued at shutdown were not stored");
    }
    if let Err(e) = storage.flush() {
        tracing::warn!("saving DHCP requests seen: {e:#}");
    }
    outcome
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the default disposition still ends the process.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

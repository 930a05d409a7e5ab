//! `bootsvc serve`: build everything from the config, bind every socket, then run.
//!
//! Binding comes first and all at once (HTTP, DHCP 67/4011, TFTP 69) so that a later step
//! can drop root privileges between binding and serving, and so a port conflict stops the
//! service before it answers anything.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::dhcp::DhcpServer;
use crate::http::{App, HttpServer};
use crate::inventory::{watch, Backend, Inventory, InventoryBackend, Snapshot};
use crate::metrics::Metrics;
use crate::state::Store;
use crate::tftp::TftpServer;

/// How often the inventory directories are polled for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

pub async fn serve(cfg: Config) -> Result<()> {
    let cfg = Arc::new(cfg);
    let store = Arc::new(Store::open(&cfg.state.dir)?);
    let snapshot =
        Snapshot::load(&cfg).map_err(|p| anyhow!("the inventory has problems (bootsvc check lists them):\n{p}"))?;
    tracing::info!(
        machines = snapshot.len(),
        images = snapshot.images.len(),
        dir = %cfg.inventory.dir.display(),
        "inventory loaded"
    );
    let inventory = Arc::new(Inventory::new(snapshot));
    let backend = Arc::new(InventoryBackend::new(Arc::clone(&inventory), Arc::clone(&store)));
    let metrics = Arc::new(Metrics::new());
    let app = Arc::new(App {
        cfg: Arc::clone(&cfg),
        backend: Arc::clone(&backend),
        metrics: Arc::clone(&metrics),
        admin_token: cfg.admin_token()?,
    });

    // Bind everything, then run.
    let http = HttpServer::bind(app)?;
    let http_addr = http.local_addr()?;
    let dhcp = if cfg.dhcp.enabled {
        let as_backend: Arc<dyn Backend> = Arc::clone(&backend) as Arc<dyn Backend>;
        let d = DhcpServer::bind(Arc::clone(&cfg), as_backend, Arc::clone(&metrics)).context("starting DHCP")?;
        backend.set_leases(d.leases());
        Some(d)
    } else {
        None
    };
    let tftp = if cfg.tftp.enabled {
        Some(TftpServer::bind(Arc::clone(&cfg), Arc::clone(&metrics)).context("starting TFTP")?)
    } else {
        None
    };
    tracing::info!(
        http = %http_addr,
        public_url = %cfg.http.public_url,
        dhcp = if cfg.dhcp.enabled { "on" } else { "off" },
        tftp = if cfg.tftp.enabled { "on" } else { "off" },
        admin = if cfg.admin.token_file.is_some() { "on" } else { "off" },
        state = %store.path().display(),
        "bootsvc ready"
    );

    let mut tasks = JoinSet::new();
    tasks.spawn(async move { http.run().await.context("HTTP server") });
    if let Some(d) = dhcp {
        tasks.spawn(async move { d.run().await.context("DHCP server") });
    }
    if let Some(t) = tftp {
        tasks.spawn(async move { t.run().await.context("TFTP server") });
    }
    let (c, inv) = (Arc::clone(&cfg), Arc::clone(&inventory));
    tasks.spawn(async move {
        watch::watch(c, inv, RELOAD_INTERVAL).await;
        Ok(())
    });

    tokio::select! {
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
    }
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

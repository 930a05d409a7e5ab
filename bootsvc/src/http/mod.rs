//! HTTP service: iPXE scripts, artifacts, metadata, events, admin API, health, metrics.
//!
//! One module per group of routes; [`router`] puts them together with the limits every
//! request goes through (body size, timeouts, metrics), and [`HttpServer`] is the accept
//! loop: hyper's HTTP/1 connection builder directly (not `axum::serve`) so request-head
//! limits can be set and a refused head (431) can be counted.
//!
//! | route | what |
//! |---|---|
//! | `GET /boot/{mac}.ipxe` | the machine's iPXE script ([`boot`]) |
//! | `GET /artifacts/{file}`, `/images/{file}`, `/ipxe/{file}` | kernel + initramfs, OS images, the TFTP root ([`files`]) |
//! | `GET /metadata` | installer metadata, `X-Osie-Mac` + source address ([`metadata`]) |
//! | `GET /{2009-04-04,latest}/meta-data/…`, `…/user-data` | EC2-compatible tree for the caller |
//! | `GET /nocloud/{mac}/{meta-data,user-data,vendor-data,network-config}` | NoCloud seed |
//! | `POST /events` | installer events, stored before the answer ([`events`]) |
//! | `POST /phone-home/{instance_id}` | cloud-init `phone_home` from the installed OS |
//! | `GET /admin/machines[/{mac}[/events]]`, `POST /admin/machines/{mac}/reinstall` | admin API, bearer token ([`admin`]) |
//! | `GET /healthz`, `GET /metrics` | liveness, Prometheus ([`observe`]) |

pub mod admin;
pub mod boot;
pub mod events;
pub mod files;
pub mod identify;
pub mod metadata;
pub mod observe;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// Everything the handlers share.
pub struct App {
    pub cfg: Arc<Config>,
    /// Machines, their state and events, leases (`crate::storage`).
    pub storage: Arc<dyn Storage>,
    /// Which machine is calling (`crate::identity`).
    pub identity: Identity,
    pub metrics: Arc<Metrics>,
    /// Bearer token of the admin API; `None` turns the admin API off.
    pub admin_token: Option<String>,
}

pub type AppState = Arc<App>;

/// The EC2 API versions served (cloud-init asks for 2009-04-04; `latest` is its alias).
const EC2_VERSIONS: [&str; 2] = ["2009-04-04", "latest"];

pub fn router(app: AppState) -> Router {
    let mut r = Router::new()
        .route("/boot/{file}", get(boot::script))
        .route("/artifacts/{*path}", get(files::artifact))
        .route("/images/{*path}", get(files::image))
        .route("/ipxe/{*path}", get(files::tftp_root))
        .route(osie_api::paths::METADATA, get(metadata::installer))
        .route("/nocloud/{mac}/{doc}", get(metadata::nocloud))
        .route(osie_api::paths::EVENTS, post(events::post))
        .route("/phone-home/{instance_id}", post(events::phone_home))
        .route("/admin/machines", get(admin::list))
        .route("/admin/machines/{mac}", get(admin::one))
        .route("/admin/machines/{mac}/events", get(admin::events))
        .route("/admin/machines/{mac}/reinstall", post(admin::reinstall))
        .route("/healthz", get(observe::healthz))
        .route("/metrics", get(observe::metrics));
    for v in EC2_VERSIONS {
        r = r
            .route(&format!("/{v}"), get(metadata::ec2_version))
            .route(&format!("/{v}/"), get(metadata::ec2_version))
            .route(&format!("/{v}/meta-data"), get(metadata::ec2_root))
            .route(&format!("/{v}/meta-data/"), get(metadata::ec2_root))
            .route(&format!("/{v}/meta-data/{{*path}}"), get(metadata::ec2_path))
            .route(&format!("/{v}/user-data"), get(metadata::ec2_user_data));
    }
    let timeout = Duration::from_secs(app.cfg.http.request_timeout_secs);
    let max_body = app.cfg.http.max_body_bytes;
    r.fallback(observe::not_found)
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), observe::count))
        .with_state(app)
}

/// The bound HTTP listener, ready to serve.
pub struct HttpServer {
    listener: std::net::TcpListener,
    router: Router,
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
}

/// Bind `addr` (a plain socket: no async runtime needed, so it can be bound before the
/// runtime starts and privileges are dropped).
pub fn bind_listener(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let std = std::net::TcpListener::bind(addr).with_context(|| format!("binding HTTP on {addr}"))?;
    std.set_nonblocking(true).context("setting the HTTP listener non-blocking")?;
    Ok(std)
}

impl HttpServer {
    /// Bind `http.listen`.
    pub fn bind(app: AppState) -> Result<HttpServer> {
        let listener = bind_listener(app.cfg.http.listen)?;
        Ok(HttpServer::new(app, listener))
    }

    /// Serve `app` on a listener bound earlier ([`bind_listener`]).
    pub fn new(app: AppState, listener: std::net::TcpListener) -> HttpServer {
        let cfg = Arc::clone(&app.cfg);
        let metrics = Arc::clone(&app.metrics);
        HttpServer { listener, router: router(app), cfg, metrics }
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Accept and serve connections until the task is dropped.
    pub async fn run(self) -> Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener).context("registering the HTTP listener")?;
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(self.cfg.http.request_timeout_secs))
            .max_header_size(self.cfg.http.max_header_bytes)
            .keep_alive(true);
        let builder = Arc::new(builder);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let svc = self.router.clone().map_request(move |mut req: axum::extract::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
            let builder = Arc::clone(&builder);
            let metrics = Arc::clone(&self.metrics);
            tokio::spawn(async move {
                let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
                if let Err(e) = conn.await {
                    observe::connection_error(&metrics, peer, &e);
                }
            });
        }
    }
}

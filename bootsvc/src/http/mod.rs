//! HTTP service: iPXE scripts, artifacts, metadata, events, health, metrics for the
//! machines; the admin API on a listener of its own.
//!
//! One module per group of routes; [`machines_router`] and [`admin_router`] put them together
//! with the limits every request goes through (body size, timeouts, metrics). The sockets are
//! bootsvc's own: [`server`] accepts under the connection caps, [`conn`] runs each HTTP/1.1
//! connection ([`wire`]: the protocol as pure functions) and calls the router for every
//! request, then writes the answer itself, file bodies with `sendfile(2)`.
//!
//! Machines' listener (`http.listen`):
//!
//! | route | what |
//! |---|---|
//! | `GET /boot/{mac}.ipxe`, `/boot/arm64/{mac}.ipxe` | the machine's iPXE script for an iPXE of that architecture ([`boot`]) |
//! | `GET /boot/[arm64/]{mac}.grub`, `GET /grub/grub.cfg` | GRUB's configurations, as over TFTP (`netboot::grub`) |
//! | `GET /artifacts/{file}`, `/images/{file}`, `/ipxe/{file}` | kernel + initramfs, OS images, the TFTP root ([`files`]) |
//! | `GET /metadata` | installer metadata, `X-Osie-Mac` + source address ([`metadata`]) |
//! | `GET /{2009-04-04,latest}/meta-data/…`, `…/user-data` | EC2-compatible tree for the caller |
//! | `GET /nocloud/{mac}/{meta-data,user-data,vendor-data,network-config}` | NoCloud seed |
//! | `POST /events` | installer events, stored before the answer ([`events`]) |
//! | `POST /log` | the installer's console log, in chunks ([`log`]) |
//! | `POST /phone-home/{instance_id}` | cloud-init `phone_home` from the installed OS |
//! | `GET /healthz`, `GET /metrics` | liveness, Prometheus ([`observe`]) |
//!
//! Admin listener (`admin.listen`), bearer token and failed-token back-off ([`admin`],
//! [`backoff`]): `GET /admin/machines[/{mac}[/events|/trace|/log]]`, `POST /admin/machines/{mac}/reinstall`,
//! `POST /admin/machines/{mac}/deprovision`, and the records themselves: `POST /admin/machines`, `PUT`/`DELETE /admin/machines/{mac}`.
//! BMC power and boot control ([`power`]): `GET …/{mac}/power`, `POST …/{mac}/power/{action}`,
//! `POST …/{mac}/reinstall/power`, `POST …/{mac}/deprovision/power`.
//!
//! The status page ([`ui`]) is on the admin listener too, under `/ui/`, behind a login of its
//! own (a session cookie, not the bearer token).

pub mod admin;
pub mod backoff;
pub mod boot;
pub mod conn;
pub mod events;
pub mod files;
pub mod identify;
pub mod log;
pub mod metadata;
pub mod observe;
pub mod power;
pub mod server;
pub mod ui;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::storage::Storage;

pub use server::{raise_fd_limit, Caps, HttpServer, Listener};

/// Everything the handlers share.
pub struct App {
    pub cfg: Arc<Config>,
    /// Machines, their state and events, leases (`crate::storage`).
    pub storage: Arc<dyn Storage>,
    /// Which machine is calling (`crate::identity`).
    pub identity: Arc<Identity>,
    pub metrics: Arc<Metrics>,
    /// Bearer token of the admin API; `None` turns the admin API off.
    pub admin_token: Option<String>,
    /// The status page: sessions, live streams (`ui`).
    pub ui: ui::Ui,
    /// The boot trace's recorder (`None`: nothing recorded).
    pub tracer: crate::tracer::MaybeTracer,
    /// Vendor checksum files, verified once per URL (`crate::vendor_sums`).
    pub vendor_sums: crate::vendor_sums::VendorSums,
}

pub type AppState = Arc<App>;

/// The EC2 API versions served (cloud-init asks for 2009-04-04; `latest` is its alias).
const EC2_VERSIONS: [&str; 2] = ["2009-04-04", "latest"];

/// The machines' routes (no `/admin/…`: those answer 404 here, as any unknown path).
pub fn machines_router(app: AppState) -> Router {
    let mut r = Router::new()
        .route("/boot/{*file}", get(boot::script))
        .route("/grub/grub.cfg", get(boot::grub_entry))
        .route("/artifacts/{*path}", get(files::artifact))
        .route("/images/{*path}", get(files::image))
        .route("/ipxe/{*path}", get(files::tftp_root))
        .route(osie_api::paths::METADATA, get(metadata::installer))
        .route("/nocloud/{mac}/{doc}", get(metadata::nocloud))
        .route(osie_api::paths::EVENTS, post(events::post))
        .route(osie_api::paths::LOG, post(log::post))
        .route("/phone-home/{instance_id}", post(events::phone_home))
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
    with_limits(r, app)
}

/// The admin API's routes, each behind [`admin::guard`] (back-off, then the token).
pub fn admin_router(app: AppState) -> Router {
    let guard = Arc::new(admin::Guard { app: Arc::clone(&app), backoff: Arc::clone(&app.ui.backoff) });
    let r = Router::new()
        .route("/admin/machines", get(admin::list).post(admin::add))
        .route("/admin/sites", get(admin::sites))
        .route("/admin/machines/{mac}", get(admin::one).put(admin::replace).delete(admin::remove))
        .route("/admin/machines/{mac}/events", get(admin::events))
        .route("/admin/machines/{mac}/trace", get(admin::trace))
        .route("/admin/machines/{mac}/log", get(admin::log))
        .route("/admin/machines/{mac}/reinstall", post(admin::reinstall))
        .route("/admin/machines/{mac}/reinstall/power", post(power::reinstall))
        .route("/admin/machines/{mac}/deprovision", post(admin::deprovision))
        .route("/admin/machines/{mac}/deprovision/power", post(power::deprovision))
        .route("/admin/machines/{mac}/power", get(power::status))
        .route("/admin/machines/{mac}/power/{action}", post(power::act))
        .route_layer(axum::middleware::from_fn_with_state(guard, admin::guard))
        .merge(ui::router(&app));
    with_limits(r, app)
}

/// The limits and the bookkeeping every request of either listener goes through.
fn with_limits(r: Router<AppState>, app: AppState) -> Router {
    let timeout = Duration::from_secs(app.cfg.http.request_timeout_secs);
    let max_body = app.cfg.http.max_body_bytes;
    r.fallback(observe::not_found)
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), observe::count))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), ui::poke_after_writes))
        .with_state(app)
}

/// The connection limits of `http.*`, for both listeners.
pub fn conn_limits(cfg: &Config) -> conn::Limits {
    let h = &cfg.http;
    conn::Limits {
        max_head: h.max_header_bytes,
        max_body: h.max_body_bytes,
        request_timeout: Duration::from_secs(h.request_timeout_secs),
        idle_timeout: Duration::from_secs(h.idle_timeout_secs),
        write_timeout: Duration::from_secs(h.write_timeout_secs),
    }
}

/// The machines' servers, one per listener (`http.listen`, and `http.listen6` when set),
/// bound earlier as root; they share one set of connection caps.
pub fn machines_servers(app: &AppState, listeners: Vec<Listener>) -> Vec<HttpServer> {
    let h = &app.cfg.http;
    let caps = Caps::new(h.max_connections, h.max_connections_per_source);
    let router = machines_router(Arc::clone(app));
    listeners
        .into_iter()
        .map(|l| {
            let (r, c) = (router.clone(), Arc::clone(&caps));
            HttpServer::new("HTTP", l, r, conn_limits(&app.cfg), c, Arc::clone(&app.metrics))
        })
        .collect()
}

/// The admin API's server on `listener`.
pub fn admin_server(app: &AppState, listener: Listener) -> HttpServer {
    let caps = Caps::new(crate::config::Admin::MAX_CONNECTIONS, crate::config::Admin::MAX_PER_SOURCE);
    HttpServer::new(
        "admin",
        listener,
        admin_router(Arc::clone(app)),
        conn_limits(&app.cfg),
        caps,
        Arc::clone(&app.metrics),
    )
}

//! The status page, `/ui/` on the admin listener only (never the machines' listener): every
//! machine with its state, phase, progress and last step, a machine's install timeline, error
//! chain, reinstall and power buttons, the phase timing of the last installs, updated live.
//! HTML, CSS and JavaScript are in the binary (`assets/`, hand-written, no external asset);
//! the page builds its DOM with `textContent` only, so whatever a machine sent shows as text.
//! How to open it, the tokens and what each part shows: `bootsvc/docs/ui.md`.
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /ui/` | session | the page (401 with the login form without a session) |
//! | `GET /ui/login`, `POST /ui/login` | anyone | the login form; a token in, a session cookie out ([`session`]) |
//! | `GET /ui/app.js`, `/ui/app.css` | anyone | the page's code (no data) |
//! | `GET /ui/api/session`, `POST /ui/api/logout` | session | the role and CSRF token; logout |
//! | `GET /ui/api/machines[/{mac}[/events\|/trace\|/log]]`, `GET /ui/api/timing` | session | JSON (the trace and log: `bootsvc/docs/trace.md`) |
//! | `GET /ui/api/stream` | session | server-sent events ([`live`]) |
//! | `GET /ui/api/machines/{mac}/power` | session | the BMC's power state |
//! | `POST /ui/api/machines/{mac}/reinstall[/power]`, `…/power/{action}` | admin session + `X-Osie-Csrf` | actions, as the admin API's |
//!
//! Without a session every `/ui/api/` route answers 401; an action without the session's
//! CSRF token, or from a read-only session, 403. Wrong tokens at the login count in the same
//! back-off as the admin API's bearer tokens ([`super::backoff`]).

pub mod live;
pub mod session;
pub mod timing;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::admin::{self, AdminError, MachineView};
use super::backoff::{Backoff, Verdict};
use super::power;
use super::{App, AppState};
use crate::config::Config;
use crate::storage::state_key;
use live::{Live, Seen};
use session::{Role, Session, Sessions, Tokens};

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The header an action carries its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-osie-csrf";
/// Installs the timing covers at most.
const MAX_TIMING: usize = 200;

/// The status page's state, in [`App`].
pub struct Ui {
    pub sessions: Sessions,
    pub live: Arc<Live>,
    /// Failed tokens per source, shared with the admin API's bearer check.
    pub backoff: Arc<Backoff>,
}

impl Ui {
    /// Sessions kept under `state.dir` (those the tokens still grant).
    pub fn new(cfg: &Config, admin_token: Option<String>, read_only_token: Option<String>) -> Ui {
        let tokens = Tokens { admin: admin_token, read_only: read_only_token };
        let file = Some(cfg.state.dir.join(session::FILE));
        Ui {
            sessions: Sessions::open(tokens, cfg.admin.session_secs, file, unix_now()),
            live: Arc::new(Live::default()),
            backoff: Arc::new(Backoff::default()),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A machine as the page shows it: the admin API's view, and whether it has a BMC.
#[derive(Debug, Clone, Serialize)]
pub struct PageMachine {
    #[serde(flatten)]
    pub view: MachineView,
    pub bmc: bool,
}

fn machines(app: &AppState) -> Vec<PageMachine> {
    app.storage
        .snapshot()
        .entries()
        .iter()
        .map(|e| PageMachine { view: admin::view(app, e), bmc: e.machine.bmc.is_some() })
        .collect()
}

/// The `/ui/` routes (merged into the admin listener's router, outside the bearer guard).
pub fn router(app: &AppState) -> Router<AppState> {
    let read = Router::new()
        .route("/ui/api/session", get(session_info))
        .route("/ui/api/machines", get(list))
        .route("/ui/api/machines/{mac}", get(one))
        .route("/ui/api/machines/{mac}/events", get(admin::events))
        .route("/ui/api/machines/{mac}/trace", get(admin::trace))
        .route("/ui/api/machines/{mac}/log", get(admin::log))
        .route("/ui/api/machines/{mac}/power", get(power::status))
        .route("/ui/api/timing", get(timing))
        .route("/ui/api/stream", get(stream))
        .route_layer(middleware::from_fn_with_state(Arc::clone(app), require_session));
    let act = Router::new()
        .route("/ui/api/logout", post(logout))
        .route("/ui/api/machines/{mac}/reinstall", post(reinstall))
        .route("/ui/api/machines/{mac}/reinstall/power", post(reinstall_power))
        .route("/ui/api/machines/{mac}/power/{action}", post(power_act))
        .route_layer(middleware::from_fn(require_csrf))
        .route_layer(middleware::from_fn_with_state(Arc::clone(app), require_session));
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .merge(read)
        .merge(act)
        .layer(middleware::from_fn(page_headers))
}

/// Every `/ui/` answer: no framing by other sites, no guessing of types, no referrer, only
/// this page's own scripts and styles, nothing cached (it holds the fleet's state).
async fn page_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (k, v) in set {
        h.insert(k, HeaderValue::from_static(v));
    }
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    r
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// The login page with a fixed message (never anything from the request).
fn login_html(status: StatusCode, msg: &str) -> Response {
    html(status, LOGIN.replace("<!--MESSAGE-->", msg))
}

fn json_error(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// The session of a request's cookie, if live.
fn session_of(app: &AppState, req: &Request) -> Option<Session> {
    let cookies = req.headers().get_all(header::COOKIE);
    let now = unix_now();
    cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(session::cookie_value)
        .find_map(|id| app.ui.sessions.find(id, now))
}

async fn require_session(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    match session_of(&app, &req) {
        Some(s) => {
            req.extensions_mut().insert(s);
            next.run(req).await
        }
        None => {
            app.metrics.drop_reason("http-ui-no-session");
            json_error(StatusCode::UNAUTHORIZED, "log in first (/ui/login)")
        }
    }
}

/// After [`require_session`]: an admin session, and its CSRF token in [`CSRF_HEADER`].
async fn require_csrf(req: Request, next: Next) -> Response {
    let Some(s) = req.extensions().get::<Session>().cloned() else {
        return json_error(StatusCode::UNAUTHORIZED, "log in first (/ui/login)");
    };
    let given = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if given.is_empty() || !session::same(given, &s.csrf) {
        tracing::warn!(path = %req.uri().path(), "status page: an action without its session's CSRF token refused");
        return json_error(StatusCode::FORBIDDEN, "missing or wrong CSRF token: reload the page");
    }
    if s.role != Role::Admin && req.uri().path() != "/ui/api/logout" {
        return json_error(StatusCode::FORBIDDEN, "a read-only session cannot act: log in with the admin token");
    }
    next.run(req).await
}

async fn index(State(app): State<AppState>, req: Request) -> Response {
    match session_of(&app, &req) {
        Some(_) => html(StatusCode::OK, INDEX.to_string()),
        None => login_html(StatusCode::UNAUTHORIZED, ""),
    }
}

async fn login_page() -> Response {
    login_html(StatusCode::OK, "")
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(app): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(f): Form<LoginForm>,
) -> Response {
    let src = peer.map(|p| p.0 .0.ip());
    let now = Instant::now();
    if let Verdict::LockedOut(left) = app.ui.backoff.check(src, now) {
        app.metrics.drop_reason("http-admin-locked-out");
        let mut r = login_html(StatusCode::TOO_MANY_REQUESTS, "Too many wrong tokens: wait, then try again.");
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    let Some(role) = app.ui.sessions.tokens().role_of(&f.token) else {
        app.metrics.drop_reason("http-admin-unauthorized");
        let who = src.map_or_else(|| "the admin socket".to_string(), |ip| ip.to_string());
        tracing::warn!(source = %who, "status page: login with a wrong token refused");
        let _ = app.ui.backoff.failed(src, now);
        return login_html(StatusCode::UNAUTHORIZED, "Wrong token.");
    };
    app.ui.backoff.succeeded(src);
    let sessions = Arc::clone(&app);
    let opened = tokio::task::spawn_blocking(move || sessions.ui.sessions.login(role, unix_now())).await;
    let (id, s) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "status page: a session could not be kept");
            return login_html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bootsvc could not keep the session (its log says why).",
            );
        }
        Err(e) => return login_html(StatusCode::INTERNAL_SERVER_ERROR, &format!("login failed: {e}")),
    };
    tracing::info!(role = role.as_str(), "status page: logged in");
    let max_age = s.expires.saturating_sub(unix_now());
    // No `Secure`: the admin listener speaks plain HTTP (reach it through a tunnel, docs/ui.md).
    let cookie = format!("{}={id}; Path=/ui/; HttpOnly; SameSite=Strict; Max-Age={max_age}", session::COOKIE);
    let mut r = Redirect::to("/ui/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Serialize)]
struct SessionInfo {
    role: Role,
    csrf: String,
    expires: u64,
    /// Whether the admin API's power routes are built in (BMC buttons).
    power: bool,
}

async fn session_info(Extension(s): Extension<Session>) -> Json<SessionInfo> {
    Json(SessionInfo { role: s.role, csrf: s.csrf, expires: s.expires, power: true })
}

async fn logout(State(app): State<AppState>, Extension(s): Extension<Session>) -> Response {
    let a = Arc::clone(&app);
    let _ = tokio::task::spawn_blocking(move || a.ui.sessions.end(&s)).await;
    let cookie = format!("{}=; Path=/ui/; HttpOnly; SameSite=Strict; Max-Age=0", session::COOKIE);
    ([(header::SET_COOKIE, cookie)], Json(serde_json::json!({ "logged_out": true }))).into_response()
}

async fn list(State(app): State<AppState>) -> Json<Vec<PageMachine>> {
    Json(machines(&app))
}

async fn one(State(app): State<AppState>, Path(mac): Path<String>) -> Result<Json<PageMachine>, AdminError> {
    let e = admin::find(&app, &mac)?;
    Ok(Json(PageMachine { view: admin::view(&app, &e), bmc: e.machine.bmc.is_some() }))
}

async fn reinstall(state: State<AppState>, mac: Path<String>) -> Result<Json<MachineView>, AdminError> {
    admin::reinstall(state, mac).await
}

fn by_page() -> Query<power::Who> {
    Query(power::Who { by: Some("status page".into()) })
}

async fn reinstall_power(
    state: State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    mac: Path<String>,
) -> Result<Response, AdminError> {
    power::reinstall(state, peer, mac, by_page()).await
}

async fn power_act(
    state: State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    p: Path<(String, String)>,
) -> Result<Response, AdminError> {
    power::act(state, peer, p, by_page()).await
}

#[derive(Deserialize)]
struct TimingQuery {
    #[serde(default = "default_last")]
    last: usize,
}

fn default_last() -> usize {
    20
}

/// The phase timing of the last `last` installs: the machines installed most recently, the
/// last install of each ([`timing`]).
async fn timing(State(app): State<AppState>, Query(q): Query<TimingQuery>) -> Result<Json<timing::Timing>, AdminError> {
    let n = q.last.clamp(1, MAX_TIMING);
    let snap = app.storage.snapshot();
    let mut done: Vec<(String, String, osie_api::MacAddr)> = snap
        .entries()
        .iter()
        .filter_map(|e| {
            let key = state_key(&e.machine)?;
            let at = app.storage.state(&key).installed_at?;
            Some((at, e.machine.hostname.clone(), key))
        })
        .collect();
    done.sort_by(|a, b| b.0.cmp(&a.0));
    done.truncate(n);
    let storage = Arc::clone(&app.storage);
    let installs = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for (_, host, key) in done {
            let evs = storage.events(&key, 2000)?;
            out.extend(timing::last_install(&host, &evs));
        }
        anyhow::Ok(out)
    })
    .await
    .map_err(|e| AdminError::Internal(e.to_string()))?
    .map_err(|e| AdminError::Internal(format!("reading events for the timing: {e:#}")))?;
    Ok(Json(timing::spread(installs)))
}

/// What the live watcher looks at: every machine's page JSON.
fn watcher(app: &AppState) -> impl Fn() -> Vec<Seen> + Send + 'static {
    let weak: Weak<App> = Arc::downgrade(app);
    move || {
        let Some(app) = weak.upgrade() else { return Vec::new() };
        machines(&app)
            .into_iter()
            .filter_map(|m| {
                let mac = *m.view.macs.first()?;
                Some(Seen { mac, json: serde_json::to_string(&m).ok()? })
            })
            .collect()
    }
}

/// `GET /ui/api/stream`: server-sent events ([`live`]); ends when the session does.
async fn stream(State(app): State<AppState>, Extension(s): Extension<Session>) -> Response {
    app.ui.live.start(watcher(&app));
    // Subscribed before the list is taken: a change in between is sent twice, never lost.
    let Some(sub) = app.ui.live.subscribe() else {
        app.metrics.drop_reason("http-ui-too-many-streams");
        let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, "too many open status pages");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        return r;
    };
    let all = serde_json::to_string(&machines(&app)).unwrap_or_else(|_| "[]".into());
    let mut first = b"retry: 2000\n\n".to_vec();
    first.extend_from_slice(&live::sse("machines", &all));
    let mut tick = tokio::time::interval(live::PING);
    tick.reset();
    let state = (Some(Bytes::from(first)), sub, tick, Arc::downgrade(&app), s);
    let body = futures_util::stream::unfold(state, |(first, mut sub, mut tick, app, s)| async move {
        if let Some(f) = first {
            return Some((Ok::<Bytes, std::convert::Infallible>(f), (None, sub, tick, app, s)));
        }
        tokio::select! {
            m = sub.rx.recv() => m.map(|b| (Ok(b), (None, sub, tick, app, s))),
            _ = tick.tick() => {
                let live = app.upgrade().is_some_and(|a| a.ui.sessions.still(&s, unix_now()));
                live.then(|| (Ok(Bytes::from_static(b": ping\n\n")), (None, sub, tick, app, s)))
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Middleware of both listeners: a change that went through (an event, a reinstall, a power
/// action, a record) pokes the live watcher. Never waits.
pub async fn poke_after_writes(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let r = next.run(req).await;
    if write && r.status().is_success() {
        app.ui.live.poke();
    }
    r
}

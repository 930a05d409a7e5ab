//! The admin API, served on its own listener (`admin.listen`: loopback or a Unix socket by
//! default, never the machines' listener), behind a bearer token (`Authorization: Bearer
//! <token>`, the contents of `admin.token_file`, compared in constant time). 401 without the
//! right token; after a few wrong tokens from one source, 429 with `Retry-After` for a
//! growing period, whatever that source sends ([`super::backoff`]). Every route goes through
//! [`guard`] first.
//!
//! - `GET /admin/machines`: every machine with its state ([`MachineView`]);
//! - `GET /admin/machines/{mac}`, `GET /admin/machines/{mac}/events?limit=N`;
//! - `GET /admin/machines/{mac}/trace?limit=N` (the boot trace and its diagnosis),
//!   `GET /admin/machines/{mac}/log` (the installer's log): `bootsvc/docs/trace.md`;
//! - `POST /admin/machines/{mac}/reinstall`: allow netboot again after an install;
//! - `POST /admin/machines/{mac}/deprovision[?removable=true]`: erase the disks on the next
//!   netboot, then no boot file until a reinstall (bootsvc/docs/deprovision.md);
//! - `POST /admin/machines` (a record: add a machine), `PUT /admin/machines/{mac}` (a record:
//!   replace the machine that has `mac`), `DELETE /admin/machines/{mac}`. A record is one
//!   native record or Tinkerbell `Hardware` object, validated as `bootsvc check` validates
//!   the inventory (problems answered 400, `request: <field>: <what>`), then stored through
//!   the storage (a file in the inventory directory, or the database).
//! - the power routes, `…/{mac}/power[/{action}]`, `…/{mac}/reinstall/power` and
//!   `…/{mac}/deprovision/power` ([`super::power`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use osie_api::MacAddr;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::backoff::{Backoff, Verdict};
use super::AppState;
use crate::config::UefiChain;
use crate::identity::IdentityView;
use crate::inventory::load::parse_file;
use crate::inventory::{validate, Entry};
use crate::problem::Problems;
use crate::state::{MachineState, StoredEvent};
use crate::storage::{netboot_allowed, state_key, ChangeError, SiteCount};
use crate::trace::diagnose::diagnose;
use crate::trace::{Diagnosis, LogView, TraceView};

/// One machine as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineView {
    pub hostname: String,
    pub instance_id: String,
    pub macs: Vec<MacAddr>,
    /// Fixed address as `addr/prefix`, if any.
    #[serde(default)]
    pub ip: Option<String>,
    /// The inventory file (and list item) the record comes from.
    pub source: String,
    /// The record's `site` and `labels` (what `bootsvc reinstall --site/--label` select by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    pub netboot: NetbootView,
    pub state: MachineState,
    /// Addresses bootsvc knows for the machine, and addresses that claimed it and were
    /// refused (`crate::identity`).
    #[serde(default)]
    pub identity: IdentityView,
    /// Where the machine is, from its boot trace (`crate::trace::diagnose`); `None` when
    /// the trace could not be read.
    #[serde(default)]
    pub diagnosis: Option<Diagnosis>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetbootView {
    /// The record's `netboot.allow`.
    pub allow: bool,
    /// Cleared by a finished install.
    pub cleared: bool,
    /// What DHCP and `/boot` act on: `allow && !cleared`.
    pub allowed: bool,
    /// The boot chain it gets as a UEFI machine: its record's `netboot.uefi_chain`, else the
    /// site's `boot.uefi_chain`.
    #[serde(default)]
    pub uefi_chain: UefiChain,
}

pub(super) fn view(app: &AppState, e: &Entry) -> MachineView {
    let m = &e.machine;
    let state = app.storage.state_of(m);
    MachineView {
        hostname: m.hostname.clone(),
        instance_id: m.instance_id(),
        macs: m.macs.clone(),
        ip: m.ip.as_ref().map(|i| format!("{}/{}", i.address, i.prefix)),
        source: e.source.describe(),
        site: m.site.clone(),
        labels: m.labels.clone(),
        netboot: NetbootView {
            allow: m.netboot.allow,
            cleared: state.netboot_cleared,
            allowed: netboot_allowed(m, &state),
            uefi_chain: m.uefi_chain(app.cfg.boot.uefi_chain),
        },
        state,
        identity: app.identity.view(&*app.storage, m),
        diagnosis: None,
    }
}

/// Steps read for a machine's diagnosis in lists (the rules look at the last attempt).
const DIAGNOSIS_STEPS: usize = 100;

/// `views` with their diagnosis, read from storage (blocking: off the async threads).
async fn diagnosed(app: &AppState, mut views: Vec<MachineView>) -> Vec<MachineView> {
    let storage = Arc::clone(&app.storage);
    let t = app.cfg.trace.thresholds();
    let keys: Vec<Option<MacAddr>> = views.iter().map(|v| v.macs.first().copied()).collect();
    let got = tokio::task::spawn_blocking(move || {
        let now = crate::trace::now_ms();
        keys.into_iter()
            .map(|k| {
                let k = k?;
                match storage.steps(&k, DIAGNOSIS_STEPS) {
                    Ok(steps) => Some(diagnose(&steps, now, &t)),
                    Err(e) => {
                        tracing::warn!(mac = %k, error = %format!("{e:#}"), "reading the boot trace failed");
                        None
                    }
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (v, d) in views.iter_mut().zip(got) {
        v.diagnosis = d;
    }
    views
}

/// Constant-time comparison: both sides hashed to fixed length, then compared without an
/// early exit, so neither the token's content nor its length shows in the timing.
fn token_ok(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an admin request was not done.
#[derive(Debug)]
pub enum AdminError {
    Off,
    Unauthorized,
    BadRequest(String),
    NotFound(String),
    Conflict(String),
    Internal(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match self {
            AdminError::Off => {
                (StatusCode::FORBIDDEN, "the admin API is off: set admin.token_file\n".to_string()).into_response()
            }
            AdminError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a valid bearer token is required\n")
                    .into_response()
            }
            AdminError::BadRequest(m) => (StatusCode::BAD_REQUEST, m + "\n").into_response(),
            AdminError::NotFound(m) => (StatusCode::NOT_FOUND, m + "\n").into_response(),
            AdminError::Conflict(m) => (StatusCode::CONFLICT, m + "\n").into_response(),
            AdminError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m + "\n").into_response(),
        }
    }
}

fn authorize(app: &AppState, h: &HeaderMap) -> Result<(), AdminError> {
    let Some(expected) = &app.admin_token else { return Err(AdminError::Off) };
    let given = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if token_ok(t.trim(), expected) => Ok(()),
        _ => Err(AdminError::Unauthorized),
    }
}

/// What [`guard`] keeps: the app and the back-off state of every source.
pub struct Guard {
    pub app: AppState,
    pub backoff: Arc<Backoff>,
}

/// Middleware of every admin route: the back-off first (a locked-out source is refused
/// unread), then the token.
pub async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let src = peer.map(|p| p.ip());
    let who = peer.map_or_else(|| "the admin socket".to_string(), |p| p.ip().to_string());
    let now = Instant::now();
    if let Verdict::LockedOut(left) = g.backoff.check(src, now) {
        g.app.metrics.drop_reason("http-admin-locked-out");
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let msg = format!("too many wrong tokens from {who}: try again in {secs} s\n");
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, secs.to_string())], msg).into_response();
    }
    match authorize(&g.app, req.headers()) {
        Ok(()) => {
            g.backoff.succeeded(src);
            next.run(req).await
        }
        Err(AdminError::Unauthorized) => {
            g.app.metrics.drop_reason("http-admin-unauthorized");
            match g.backoff.failed(src, now) {
                Some(l) => tracing::warn!(
                    source = %who,
                    failures = l.failures,
                    lockout_secs = l.period.as_secs(),
                    refused_in_last_lockout = l.refused_before,
                    "admin: {} wrong tokens from {who}; everything from it is refused (429) for {} s",
                    l.failures,
                    l.period.as_secs()
                ),
                None => tracing::warn!(source = %who, "admin request without a valid token refused"),
            }
            AdminError::Unauthorized.into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub(super) fn find(app: &AppState, mac: &str) -> Result<Entry, AdminError> {
    let mac: MacAddr = mac.parse().map_err(|_| AdminError::BadRequest(format!("{mac:?} is not a MAC address")))?;
    app.storage
        .snapshot()
        .by_mac(&mac)
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("no machine with MAC {mac} in the inventory")))
}

/// Run blocking store work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> Result<T, AdminError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(AdminError::Internal(format!("{e:#}"))),
        Err(e) => Err(AdminError::Internal(e.to_string())),
    }
}

/// The sites of the shared database (404 without one).
pub async fn sites(State(app): State<AppState>) -> Result<Json<Vec<SiteCount>>, AdminError> {
    let storage = Arc::clone(&app.storage);
    match blocking(move || storage.sites()).await? {
        Some(v) => Ok(Json(v)),
        None => Err(AdminError::NotFound("no shared database: this instance serves every machine".into())),
    }
}

pub async fn list(State(app): State<AppState>) -> Result<Json<Vec<MachineView>>, AdminError> {
    let snap = app.storage.snapshot();
    let views = snap.entries().iter().map(|e| view(&app, e)).collect();
    Ok(Json(diagnosed(&app, views).await))
}

pub async fn one(State(app): State<AppState>, Path(mac): Path<String>) -> Result<Json<MachineView>, AdminError> {
    let e = find(&app, &mac)?;
    let v = diagnosed(&app, vec![view(&app, &e)]).await;
    Ok(Json(v.into_iter().next().ok_or_else(|| AdminError::Internal("no view".into()))?))
}

#[derive(Debug, Deserialize)]
pub struct TraceQuery {
    #[serde(default = "default_trace_limit")]
    pub limit: usize,
}

fn default_trace_limit() -> usize {
    500
}

/// `GET /admin/machines/{mac}/trace`: the boot trace and its diagnosis.
pub async fn trace(
    State(app): State<AppState>,
    Path(mac): Path<String>,
    Query(q): Query<TraceQuery>,
) -> Result<Json<TraceView>, AdminError> {
    let e = find(&app, &mac)?;
    let key = state_key(&e.machine).ok_or_else(|| AdminError::Internal("machine has no MAC".into()))?;
    let storage = Arc::clone(&app.storage);
    let limit = q.limit.clamp(1, 100_000);
    let steps = blocking(move || storage.steps(&key, limit)).await?;
    let now_ms = crate::trace::now_ms();
    let diagnosis = diagnose(&steps, now_ms, &app.cfg.trace.thresholds());
    Ok(Json(TraceView { hostname: e.machine.hostname.clone(), mac: key, now_ms, steps, diagnosis }))
}

/// `GET /admin/machines/{mac}/log`: the installer's log kept, per run.
pub async fn log(State(app): State<AppState>, Path(mac): Path<String>) -> Result<Json<LogView>, AdminError> {
    let e = find(&app, &mac)?;
    let key = state_key(&e.machine).ok_or_else(|| AdminError::Internal("machine has no MAC".into()))?;
    let storage = Arc::clone(&app.storage);
    Ok(Json(blocking(move || storage.log(&key)).await?))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    100
}

pub async fn events(
    State(app): State<AppState>,
    Path(mac): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<StoredEvent>>, AdminError> {
    let e = find(&app, &mac)?;
    let Some(key) = state_key(&e.machine) else { return Ok(Json(Vec::new())) };
    let storage = Arc::clone(&app.storage);
    Ok(Json(blocking(move || storage.events(&key, q.limit.min(10_000))).await?))
}

pub async fn reinstall(State(app): State<AppState>, Path(mac): Path<String>) -> Result<Json<MachineView>, AdminError> {
    let (e, key) = netbootable(&app, &mac)?;
    let storage = Arc::clone(&app.storage);
    let now = crate::state::now();
    blocking(move || storage.reinstall(key, &now)).await?;
    tracing::info!(mac = %key, host = %e.machine.hostname, "reinstall requested: netboot allowed again");
    Ok(Json(view(&app, &e)))
}

#[derive(Debug, Default, Deserialize)]
pub struct DeprovisionQuery {
    /// Erase removable disks too.
    #[serde(default)]
    pub removable: bool,
}

pub async fn deprovision(
    State(app): State<AppState>,
    Path(mac): Path<String>,
    Query(q): Query<DeprovisionQuery>,
) -> Result<Json<MachineView>, AdminError> {
    let (e, key) = netbootable(&app, &mac)?;
    let storage = Arc::clone(&app.storage);
    let now = crate::state::now();
    blocking(move || storage.deprovision(key, &now, q.removable)).await?;
    tracing::warn!(mac = %key, host = %e.machine.hostname, removable = q.removable,
        "deprovisioning requested: the next netboot erases every disk");
    Ok(Json(view(&app, &e)))
}

/// The machine `mac` names and its state key, when its record lets it netboot (an erase or
/// a reinstall needs the machine to netboot).
fn netbootable(app: &AppState, mac: &str) -> Result<(Entry, MacAddr), AdminError> {
    let e = find(app, mac)?;
    if !e.machine.netboot.allow {
        return Err(AdminError::Conflict(format!(
            "{}: netboot.allow is false in {}; set it to true there to let the machine netboot",
            e.machine.hostname,
            e.source.describe()
        )));
    }
    let key = state_key(&e.machine).ok_or_else(|| AdminError::Internal("machine has no MAC".into()))?;
    Ok((e, key))
}

/// The one record in a request body, checked as a change to the current machines.
fn record(app: &AppState, body: &[u8], replacing: Option<&MacAddr>) -> Result<Entry, AdminError> {
    let text = std::str::from_utf8(body).map_err(|_| AdminError::BadRequest("the body is not UTF-8 text".into()))?;
    let mut problems = Problems::default();
    let mut entries = parse_file(std::path::Path::new("request"), text, &mut problems);
    if !problems.is_empty() {
        return Err(AdminError::BadRequest(problems.to_string().trim_end().to_string()));
    }
    if entries.len() != 1 {
        return Err(AdminError::BadRequest(format!("one machine per request; the body holds {}", entries.len())));
    }
    let e = entries.remove(0);
    let snap = app.storage.snapshot();
    let problems = validate::change(snap.entries(), &e, replacing, &app.cfg, &snap.images);
    if !problems.is_empty() {
        return Err(AdminError::BadRequest(problems.to_string().trim_end().to_string()));
    }
    Ok(e)
}

fn change_error(e: ChangeError) -> AdminError {
    match e {
        ChangeError::Conflict(m) => AdminError::Conflict(m),
        ChangeError::Failed(e) => AdminError::Internal(format!("{e:#}")),
    }
}

/// Store `e` (replacing the machine with `replacing`) and answer with its view.
async fn put(app: AppState, e: Entry, replacing: Option<MacAddr>) -> Result<Json<MachineView>, AdminError> {
    let storage = Arc::clone(&app.storage);
    let m = Arc::clone(&e.machine);
    let stored = tokio::task::spawn_blocking(move || storage.put_machine(&m, replacing.as_ref(), "admin API"))
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    stored.map_err(change_error)?;
    let mac = e.machine.boot_mac().ok_or_else(|| AdminError::Internal("machine has no MAC".into()))?;
    let now = app
        .storage
        .snapshot()
        .by_mac(&mac)
        .cloned()
        .ok_or_else(|| AdminError::Internal("stored, but not read back".into()))?;
    tracing::info!(host = %now.machine.hostname, mac = %mac, source = %now.source.describe(), replaced = ?replacing, "machine record stored through the admin API");
    Ok(Json(view(&app, &now)))
}

pub async fn add(State(app): State<AppState>, body: Bytes) -> Result<(StatusCode, Json<MachineView>), AdminError> {
    let e = record(&app, &body, None)?;
    Ok((StatusCode::CREATED, put(app, e, None).await?))
}

pub async fn replace(
    State(app): State<AppState>,
    Path(mac): Path<String>,
    body: Bytes,
) -> Result<Json<MachineView>, AdminError> {
    let old = find(&app, &mac)?;
    let key = old.machine.boot_mac().ok_or_else(|| AdminError::Internal("machine has no MAC".into()))?;
    let e = record(&app, &body, Some(&key))?;
    put(app, e, Some(key)).await
}

/// What `DELETE /admin/machines/{mac}` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Removed {
    pub hostname: String,
    pub macs: Vec<MacAddr>,
}

pub async fn remove(State(app): State<AppState>, Path(mac): Path<String>) -> Result<Json<Removed>, AdminError> {
    let e = find(&app, &mac)?;
    let key = e.machine.boot_mac().ok_or_else(|| AdminError::Internal("machine has no MAC".into()))?;
    let storage = Arc::clone(&app.storage);
    let gone = tokio::task::spawn_blocking(move || storage.remove_machine(&key))
        .await
        .map_err(|e| AdminError::Internal(e.to_string()))?
        .map_err(change_error)?;
    if gone.is_none() {
        return Err(AdminError::NotFound(format!("no machine with MAC {key} (removed meanwhile)")));
    }
    tracing::info!(host = %e.machine.hostname, mac = %key, "machine record removed through the admin API");
    Ok(Json(Removed { hostname: e.machine.hostname.clone(), macs: e.machine.macs.clone() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(token_ok("0123456789abcdef", "0123456789abcdef"));
        assert!(!token_ok("0123456789abcdeg", "0123456789abcdef"));
        assert!(!token_ok("", "0123456789abcdef"));
        assert!(!token_ok("0123456789abcdef0", "0123456789abcdef"));
    }
}

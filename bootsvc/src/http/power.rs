//! The admin API's power routes: the serving bootsvc drives the BMC (it alone holds the
//! credentials files) and records every action in the machine's event timeline as a
//! `power` event: who asked (`by`, the admin client's address), what was sent, what the BMC
//! answered, and the system's identity as the BMC gives it (in the event's `hardware.dmi`).
//!
//! - `GET /admin/machines/{mac}/power`: power state and identity (a read: not recorded);
//! - `POST /admin/machines/{mac}/power/{action}?by=<name>`: `on`, `off`, `shutdown`,
//!   `cycle`, `netboot` (one-time network boot);
//! - `POST /admin/machines/{mac}/reinstall/power?by=<name>`: allow netboot (as
//!   `/reinstall`), then a one-time network boot and a power cycle (or on).
//! - `POST /admin/machines/{mac}/deprovision/power?by=<name>[&removable=true]`: ask for the
//!   erase (as `/deprovision`), then the same one-time network boot and power cycle.
//!
//! The answer is a [`PowerAnswer`]: 200 when the BMC did it, else 502 (the BMC failed or
//! refused), 504 (no answer in time), 409 (no `bmc` in the record, or an action already
//! running on the machine) or 500 (bootsvc's side: the credentials file), with the same
//! body. An action runs to its end and is recorded even if the client goes away.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use osie_api::hardware::{Dmi, Hardware};
use osie_api::{Event, MacAddr, Phase};
use serde::{Deserialize, Serialize};

use super::admin::{self, AdminError};
use super::AppState;
use crate::inventory::Entry;
use crate::power::{self, Action, ErrorKind, Report};
use crate::storage::state_key;

/// What a power route answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerAnswer {
    pub hostname: String,
    pub mac: MacAddr,
    pub report: Report,
}

#[derive(Debug, Default, Deserialize)]
pub struct Who {
    /// Who asked, as the client says (the CLI sends the login name).
    #[serde(default)]
    pub by: Option<String>,
}

/// Machines with an action running: one at a time per machine (two operators cycling the
/// same machine would reset it in the middle of its boot).
static BUSY: Mutex<Vec<MacAddr>> = Mutex::new(Vec::new());

struct Running(MacAddr);

impl Running {
    fn start(mac: MacAddr) -> Option<Running> {
        let mut b = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        if b.contains(&mac) {
            return None;
        }
        b.push(mac);
        Some(Running(mac))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        BUSY.lock().unwrap_or_else(|e| e.into_inner()).retain(|m| *m != self.0);
    }
}

pub async fn status(State(app): State<AppState>, Path(mac): Path<String>) -> Result<Response, AdminError> {
    let e = admin::find(&app, &mac)?;
    run(app, e, Action::Status, None).await
}

pub async fn act(
    State(app): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path((mac, action)): Path<(String, String)>,
    Query(who): Query<Who>,
) -> Result<Response, AdminError> {
    let e = admin::find(&app, &mac)?;
    let action = match Action::parse(&action) {
        Some(a) if a.changes() && !matches!(a, Action::Reinstall | Action::Deprovision) => a,
        _ => {
            return Err(AdminError::BadRequest(format!(
            "{action:?} is not a power action: on, off, shutdown, cycle, netboot (reinstall: POST …/reinstall/power)"
        )))
        }
    };
    run(app, e, action, Some(asker(&who, peer.map(|p| p.0 .0))?)).await
}

pub async fn reinstall(
    State(app): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(mac): Path<String>,
    Query(who): Query<Who>,
) -> Result<Response, AdminError> {
    let asked = asker(&who, peer.map(|p| p.0 .0))?;
    let e = admin::find(&app, &mac)?;
    if e.machine.bmc.is_none() {
        return Err(no_bmc(&e));
    }
    // Netboot allowed first: the machine's next boot must find its script.
    let _allowed = admin::reinstall(State(Arc::clone(&app)), Path(mac)).await?;
    run(app, e, Action::Reinstall, Some(asked)).await
}

pub async fn deprovision(
    State(app): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Path(mac): Path<String>,
    Query(who): Query<Who>,
    Query(opts): Query<admin::DeprovisionQuery>,
) -> Result<Response, AdminError> {
    let asked = asker(&who, peer.map(|p| p.0 .0))?;
    let e = admin::find(&app, &mac)?;
    if e.machine.bmc.is_none() {
        return Err(no_bmc(&e));
    }
    // The erase asked for first: the machine's next boot must find it.
    let _asked = admin::deprovision(State(Arc::clone(&app)), Path(mac), Query(opts)).await?;
    run(app, e, Action::Deprovision, Some(asked)).await
}

/// `alice from 127.0.0.1`, from the client's word and the connection.
fn asker(who: &Who, peer: Option<SocketAddr>) -> Result<(String, Option<IpAddr>), AdminError> {
    let by = who.by.as_deref().unwrap_or("").trim();
    if by.chars().count() > 64 || by.chars().any(|c| c.is_control()) {
        return Err(AdminError::BadRequest("by: at most 64 printable characters".into()));
    }
    let by = if by.is_empty() { "someone" } else { by };
    // No peer address: the admin Unix socket.
    let ip = peer.map(|p| p.ip()).filter(|ip| !ip.is_unspecified());
    let text = match ip {
        Some(ip) => format!("{by} from {ip}"),
        None => format!("{by} from the admin socket"),
    };
    Ok((text, ip))
}

fn no_bmc(e: &Entry) -> AdminError {
    AdminError::Conflict(format!(
        "{}: no bmc in {}: add one to control its power (bootsvc/docs/power.md)",
        e.machine.hostname,
        e.source.describe()
    ))
}

/// Run the action on its own task (it finishes and is recorded even if the client leaves),
/// then answer.
async fn run(
    app: AppState,
    e: Entry,
    action: Action,
    asked: Option<(String, Option<IpAddr>)>,
) -> Result<Response, AdminError> {
    let Some(bmc) = e.machine.bmc.clone() else { return Err(no_bmc(&e)) };
    let key = state_key(&e.machine).ok_or_else(|| AdminError::Internal("machine has no MAC".into()))?;
    let running = match action.changes() {
        true => Some(Running::start(key).ok_or_else(|| {
            AdminError::Conflict(format!("{}: a power action is already running on it", e.machine.hostname))
        })?),
        false => None,
    };
    // Inside the request's own timeout, so the answer still gets out.
    let total = Duration::from_secs(app.cfg.http.request_timeout_secs.saturating_sub(2).max(3));
    let host = e.machine.hostname.clone();
    let task = tokio::spawn(async move {
        let _running = running;
        let report = power::perform(&bmc, action, total).await;
        if let Some((by, ip)) = asked {
            record(&app, key, &host, &by, ip, &report).await;
        }
        report
    });
    let report = task.await.map_err(|e| AdminError::Internal(format!("the power action stopped: {e}")))?;
    let status = match report.error.as_ref().map(|e| e.kind) {
        None => StatusCode::OK,
        Some(ErrorKind::Config) => StatusCode::INTERNAL_SERVER_ERROR,
        Some(ErrorKind::Timeout) => StatusCode::GATEWAY_TIMEOUT,
        Some(_) => StatusCode::BAD_GATEWAY,
    };
    Ok((status, Json(PowerAnswer { hostname: e.machine.hostname.clone(), mac: key, report })).into_response())
}

/// Into the machine's timeline, durably; a storage failure is logged (the action is done
/// either way, and the operator has the answer).
async fn record(app: &AppState, key: MacAddr, host: &str, by: &str, ip: Option<IpAddr>, report: &Report) {
    let now = crate::state::now();
    let s = &report.system;
    let dmi = Dmi {
        sys_vendor: s.manufacturer.clone(),
        product_name: s.model.clone(),
        product_serial: s.serial.clone(),
        product_uuid: s.uuid.clone(),
        bios_version: s.bios_version.clone(),
        ..Default::default()
    };
    let ev = Event {
        machine: key,
        phase: Phase::Power,
        progress: None,
        message: format!("asked by {by}: {}", report.summary()),
        time: now.clone(),
        run_id: None,
        seq: None,
        error: report.error.iter().map(|e| e.message.clone()).collect(),
        hardware: (dmi != Dmi::default()).then(|| Hardware { dmi, ..Default::default() }),
        erase: None,
    };
    let source = ip.map(crate::netaddr::unmap);
    let storage = Arc::clone(&app.storage);
    let stored = tokio::task::spawn_blocking(move || storage.record_event(key, &ev, source, &now)).await;
    let outcome = report.error.as_ref().map_or("done".to_string(), |e| format!("failed: {}", e.message));
    match stored {
        Ok(Ok(_)) => tracing::info!(mac = %key, host, by, action = report.action.as_str(), outcome, "power action"),
        Ok(Err(e)) => {
            tracing::error!(mac = %key, host, error = %format!("{e:#}"), "power action done but not recorded")
        }
        Err(e) => tracing::error!(mac = %key, host, error = %e, "power action done but not recorded"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_asked() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let (t, ip) = asker(&Who { by: Some("alice".into()) }, Some(peer)).unwrap();
        assert_eq!((t.as_str(), ip), ("alice from 127.0.0.1", Some("127.0.0.1".parse().unwrap())));
        let (t, _) = asker(&Who::default(), None).unwrap();
        assert_eq!(t, "someone from the admin socket");
        assert!(asker(&Who { by: Some("a\nb".into()) }, Some(peer)).is_err());
    }

    #[test]
    fn one_action_per_machine() {
        let mac: MacAddr = "52:54:00:00:00:42".parse().unwrap();
        let a = Running::start(mac).unwrap();
        assert!(Running::start(mac).is_none());
        drop(a);
        assert!(Running::start(mac).is_some());
    }
}

//! `POST /events` from the installer, and `POST /phone-home/{instance_id}` from cloud-init in
//! the installed OS (recorded as `first-boot`). An event is accepted only from its machine's
//! address, and answered 200 only once it is durable in the state store; a storage failure
//! answers 503 so the sender retries. An event whose phase this bootsvc does not know is
//! refused (400, naming the phase), not stored: the api crate still reads such a phase (as
//! `Phase::Unknown`, for the installer's sake), bootsvc does not accept it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use osie_api::{Event, EventAck, Phase};

use super::identify::{self, Caller, Refused};
use super::AppState;
use crate::state::Recorded;
use crate::storage::state_key;
use crate::trace::{EventStep, Step};

pub async fn post(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    // The phase as sent: `Event` keeps only `Unknown` of a phase it does not know.
    let phase = body.get("phase").and_then(|p| p.as_str()).map(str::to_owned);
    let ev: Event = match serde_json::from_value(body) {
        Ok(ev) => ev,
        // As axum's `Json<Event>` answers a body of the wrong shape.
        Err(e) => {
            let msg = format!("Failed to deserialize the JSON body into the target type: {e}\n");
            return (StatusCode::UNPROCESSABLE_ENTITY, msg).into_response();
        }
    };
    let caller = identify::mac_header(&h).and_then(|claimed| match claimed {
        Some(m) if m != ev.machine => Err(Refused {
            status: StatusCode::FORBIDDEN,
            reason: "http-forbidden",
            message: format!("{} {m} differs from the event's machine {}", osie_api::MAC_HEADER, ev.machine),
            detail: None,
            warn: true,
        }),
        _ => identify::by_mac(&app, ev.machine, peer, "/events"),
    });
    let caller = match caller {
        Ok(c) => c,
        Err(r) => return r.respond(&app, "/events", peer),
    };
    if let Err(r) = known_phase(&ev, phase.as_deref()) {
        return r.respond(&app, "/events", peer);
    }
    store(&app, &caller, ev).await
}

/// An event's phase must be one this bootsvc knows and a machine may send (`sent`: the
/// phase as it came); `power` is bootsvc's own record of a BMC action.
fn known_phase(ev: &Event, sent: Option<&str>) -> Result<(), Refused> {
    if Phase::ALL.contains(&ev.phase) {
        return Ok(());
    }
    let known: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
    let what =
        if Phase::SERVICE.contains(&ev.phase) { "event phase bootsvc records itself" } else { "unknown event phase" };
    Err(Refused {
        status: StatusCode::BAD_REQUEST,
        reason: "http-unknown-phase",
        message: format!(
            "{what} {:?}: not stored; this bootsvc knows {}",
            sent.unwrap_or("unknown").chars().take(64).collect::<String>(),
            known.join(", ")
        ),
        detail: None,
        warn: true,
    })
}

/// Store durably, count, log, answer.
async fn store(app: &AppState, caller: &Caller, ev: Event) -> Response {
    let Some(key) = state_key(&caller.entry.machine) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "machine has no MAC\n").into_response();
    };
    let st = Arc::clone(&app.storage);
    let source = Some(caller.ip);
    let now = crate::state::now();
    let ev2 = ev.clone();
    let rec = tokio::task::spawn_blocking(move || st.record_event(key, &ev2, source, &now)).await;
    let rec: Recorded = match rec {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(mac = %caller.mac, error = %format!("{e:#}"), "storing an event failed");
            return (StatusCode::SERVICE_UNAVAILABLE, "could not store the event, retry\n").into_response();
        }
        Err(e) => {
            tracing::error!(mac = %caller.mac, error = %e, "storing an event failed");
            return (StatusCode::SERVICE_UNAVAILABLE, "could not store the event, retry\n").into_response();
        }
    };
    let host = &caller.entry.machine.hostname;
    if let (Some(t), false) = (&app.tracer, rec.duplicate) {
        let step = Step::Event(EventStep {
            phase: ev.phase.as_str().to_string(),
            percent: ev.progress.as_ref().and_then(|p| p.percent()),
            message: crate::trace::clean(&ev.message, crate::trace::MAX_TEXT),
        });
        let run = ev.run_id.as_deref().map(|r| crate::trace::clean(r, 64));
        t.step(caller.mac, Some(caller.ip), run, step);
    }
    if rec.duplicate {
        tracing::debug!(mac = %caller.mac, host, phase = %ev.phase, "duplicate event acknowledged");
    } else {
        app.metrics.event(ev.phase.as_str());
        if ev.phase.is_terminal() {
            app.metrics.install(ev.phase.as_str());
        }
        let percent = ev.progress.as_ref().and_then(|p| p.percent()).map(|p| format!("{p:.0}%"));
        match ev.phase {
            Phase::Failed => tracing::warn!(
                mac = %caller.mac, host, error = ?ev.error, message = %ev.message, "install failed"
            ),
            Phase::Installed => tracing::info!(
                mac = %caller.mac, host, "installed; netboot cleared until `bootsvc machine {} reinstall`", caller.mac
            ),
            _ => tracing::info!(
                mac = %caller.mac, host, phase = %ev.phase, progress = percent.as_deref().unwrap_or("-"),
                message = %ev.message, from = %caller.ip, matched = %caller.how, "event"
            ),
        }
    }
    Json(EventAck { stored: true, duplicate: rec.duplicate }).into_response()
}

/// cloud-init's `phone_home` module posts `instance_id`, `hostname`, `fqdn` and host keys,
/// form-encoded.
pub async fn phone_home(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(instance_id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let caller = match identify::by_instance(&app, &instance_id, peer, "/phone-home/{instance_id}") {
        Ok(c) => c,
        Err(r) => return r.respond(&app, "/phone-home/{instance_id}", peer),
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("-").chars().take(255).collect::<String>();
    let ev = Event {
        machine: caller.mac,
        phase: Phase::FirstBoot,
        progress: None,
        message: format!("phone home: hostname {} fqdn {}", field("hostname"), field("fqdn")),
        time: crate::state::now(),
        run_id: None,
        seq: None,
        error: Vec::new(),
        hardware: None,
        erase: None,
    };
    let resp = store(&app, &caller, ev).await;
    if resp.status().is_success() {
        (StatusCode::OK, "recorded first boot\n").into_response()
    } else {
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(phase: &str) -> (Event, Option<String>) {
        let v = serde_json::json!({"machine": "52:54:00:00:00:01", "phase": phase, "time": "t"});
        let sent = v["phase"].as_str().map(str::to_owned);
        (serde_json::from_value(v).unwrap(), sent)
    }

    #[test]
    fn only_known_phases_are_accepted() {
        for p in Phase::ALL {
            let (ev, sent) = event(p.as_str());
            assert!(known_phase(&ev, sent.as_deref()).is_ok(), "{p}");
        }
        let (ev, sent) = event("from-the-future");
        assert_eq!(ev.phase, Phase::Unknown, "the api crate still reads it");
        let r = known_phase(&ev, sent.as_deref()).unwrap_err();
        assert_eq!((r.status, r.reason), (StatusCode::BAD_REQUEST, "http-unknown-phase"));
        assert!(r.message.starts_with("unknown event phase \"from-the-future\": not stored"), "{}", r.message);
        assert!(r.message.contains("booted-installer, network,"), "{}", r.message);
        let (ev, sent) = event("power");
        assert!(known_phase(&ev, sent.as_deref()).is_err(), "bootsvc records power actions itself");
        let (ev, sent) = event("unknown");
        assert!(known_phase(&ev, sent.as_deref()).is_err(), "\"unknown\" is no phase either");
        let (ev, sent) = event(&"x".repeat(500));
        assert!(known_phase(&ev, sent.as_deref()).unwrap_err().message.len() < 350, "quoted, not echoed whole");
    }
}

//! `POST /log`: a chunk of the installer's console log (`osie_api::log::LogChunk`),
//! identified as `POST /events` is (the machine's own address; `X-Osie-Mac`, when sent,
//! must name the chunk's machine: `bootsvc/docs/security.md`), checked
//! (`crate::trace::log::check`: 400 for a chunk over the limits or a bad `run_id`), cleaned
//! of control characters and stored within the bounds of `[trace]` before the answer
//! (`LogAck`; `full` once the run's log is full). Every outcome is counted
//! (`osie_log_chunks_total`). `bootsvc/docs/trace.md` has the bounds.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use osie_api::log::{LogAck, LogChunk};

use super::identify::{self, Refused};
use super::AppState;
use crate::storage::{state_key, LogOutcome};
use crate::trace::log;

pub async fn post(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let chunk: LogChunk = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            app.metrics.log_chunk("refused");
            let msg = format!("Failed to deserialize the JSON body into the target type: {e}\n");
            return (StatusCode::UNPROCESSABLE_ENTITY, msg).into_response();
        }
    };
    let caller = identify::mac_header(&h).and_then(|claimed| match claimed {
        Some(m) if m != chunk.machine => Err(Refused {
            status: StatusCode::FORBIDDEN,
            reason: "http-forbidden",
            message: format!("{} {m} differs from the log's machine {}", osie_api::MAC_HEADER, chunk.machine),
            detail: None,
            warn: true,
        }),
        _ => identify::by_mac(&app, chunk.machine, peer, osie_api::paths::LOG),
    });
    let caller = match caller {
        Ok(c) => c,
        Err(r) => {
            app.metrics.log_chunk("refused");
            return r.respond(&app, osie_api::paths::LOG, peer);
        }
    };
    if let Err(why) = log::check(&chunk) {
        app.metrics.log_chunk("refused");
        app.metrics.drop_reason("http-log-refused");
        tracing::warn!(mac = %caller.mac, from = %caller.ip, "installer log chunk refused: {why}");
        return (StatusCode::BAD_REQUEST, format!("log chunk refused: {why}\n")).into_response();
    }
    let Some(key) = state_key(&caller.entry.machine) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "machine has no MAC\n").into_response();
    };
    let stored = log::stored(&chunk, crate::trace::now_ms());
    let bounds = app.cfg.trace.log_bounds();
    let storage = Arc::clone(&app.storage);
    let r = tokio::task::spawn_blocking(move || storage.record_log(key, &stored, &bounds)).await;
    let outcome = match r {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            app.metrics.log_chunk("failed");
            tracing::error!(mac = %caller.mac, error = %format!("{e:#}"), "storing an installer log chunk failed");
            return (StatusCode::SERVICE_UNAVAILABLE, "could not store the log chunk, retry\n").into_response();
        }
        Err(e) => {
            app.metrics.log_chunk("failed");
            tracing::error!(mac = %caller.mac, error = %e, "storing an installer log chunk failed");
            return (StatusCode::SERVICE_UNAVAILABLE, "could not store the log chunk, retry\n").into_response();
        }
    };
    let ack = match outcome {
        LogOutcome::Stored => LogAck { stored: true, duplicate: false, full: false },
        LogOutcome::Duplicate => LogAck { stored: true, duplicate: true, full: false },
        LogOutcome::Full => LogAck { stored: false, duplicate: false, full: true },
    };
    app.metrics.log_chunk(match outcome {
        LogOutcome::Stored => "stored",
        LogOutcome::Duplicate => "duplicate",
        LogOutcome::Full => "full",
    });
    if outcome == LogOutcome::Full {
        tracing::debug!(mac = %caller.mac, run = %chunk.run_id, "installer log full for this run: chunk not kept");
    }
    Json(ack).into_response()
}

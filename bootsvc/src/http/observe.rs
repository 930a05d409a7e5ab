//! Watching the HTTP side: requests counted by route template and status, refusals counted
//! by reason, `/healthz`, `/metrics`, and request heads the connection loop refused (too
//! large or malformed: they never reach a route).

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::wire::HeadError;
use super::AppState;
use crate::metrics::Metrics;

/// Middleware: count every request under its route template (`/boot/{*file}`, not the MAC).
pub async fn count(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let resp = next.run(req).await;
    let status = resp.status();
    app.metrics.http_request(route.as_deref().unwrap_or("unmatched"), status.as_u16());
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => app.metrics.drop_reason("http-body-too-large"),
        StatusCode::REQUEST_TIMEOUT => app.metrics.drop_reason("http-timeout"),
        _ => {}
    }
    resp
}

/// A request head refused by the connection loop (it never reaches a route): counted, and
/// logged, before the loop answers and closes.
pub fn refused_head(metrics: &Metrics, peer: &str, e: &HeadError) {
    let status = e.status().as_u16();
    metrics.http_request("unparsed", status);
    if *e == HeadError::TooLarge {
        metrics.drop_reason("http-header-too-large");
        tracing::info!(%peer, "refused a request head larger than http.max_header_bytes ({status})");
    } else {
        metrics.drop_reason("http-malformed");
        tracing::info!(%peer, error = %e, "refused a malformed request ({status})");
    }
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    if let Some(h) = app.storage.health() {
        app.metrics.database(h);
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.render())
        .into_response()
}

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

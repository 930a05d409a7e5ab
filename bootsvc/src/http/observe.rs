//! Watching the HTTP side: requests counted by route template and status, refusals counted
//! by reason, `/healthz`, `/metrics`, and errors of whole connections (a request head too
//! large or too slow never reaches a route).

use std::net::SocketAddr;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::Metrics;

/// Middleware: count every request under its route template (`/boot/{file}`, not the MAC).
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

/// A connection ended with an error: count the ones that are refusals.
pub fn connection_error(metrics: &Metrics, peer: SocketAddr, e: &hyper::Error) {
    if e.is_parse_too_large() {
        // hyper has already answered 431 and closed the connection.
        metrics.drop_reason("http-header-too-large");
        metrics.http_request("unparsed", 431);
        tracing::info!(%peer, "refused a request head larger than http.max_header_bytes (431)");
    } else if e.is_timeout() {
        metrics.drop_reason("http-header-timeout");
        tracing::debug!(%peer, "closed a connection that did not send its request head in time");
    } else if e.is_parse() {
        metrics.drop_reason("http-malformed");
        metrics.http_request("unparsed", 400);
        tracing::info!(%peer, error = %e, "refused a malformed request");
    } else {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.metrics.render())
        .into_response()
}

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

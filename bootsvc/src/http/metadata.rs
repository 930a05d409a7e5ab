//! Read paths for a machine's own data: `/metadata` for the installer, the EC2-compatible
//! tree and the NoCloud documents for cloud-init. Each answers only the calling machine
//! ([`super::identify`]); the documents are built by [`crate::metadata`].

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use osie_api::MacAddr;

use super::identify::{self, Refused};
use super::AppState;
use crate::metadata as md;

/// `GET /metadata`: the installer's [`osie_api::Metadata`], for the MAC in `X-Osie-Mac`.
pub async fn installer(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
) -> Response {
    let caller = match identify::mac_header(&h).and_then(|mac| {
        let mac = mac.ok_or_else(|| Refused {
            status: StatusCode::BAD_REQUEST,
            reason: "http-bad-request",
            message: format!("{} is required", osie_api::MAC_HEADER),
            detail: None,
            warn: true,
        })?;
        identify::by_mac(&app, mac, peer, "/metadata")
    }) {
        Ok(c) => c,
        Err(r) => return r.respond(&app, "/metadata", peer),
    };
    let snap = app.storage.snapshot();
    let m = &caller.entry.machine;
    let meta = md::for_installer(m, caller.mac, &snap.images, &app.cfg.http.public_url);
    tracing::info!(
        mac = %caller.mac, host = %m.hostname, ip = %caller.ip, matched = %caller.how,
        plan = meta.install.is_some(), "metadata served"
    );
    Json(meta).into_response()
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// `GET /<version>/`: what EC2 lists there.
pub async fn ec2_version(State(app): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    match identify::by_source(&app, peer, "/{version}/") {
        Ok(_) => text("meta-data\nuser-data".into()),
        Err(r) => r.respond(&app, "/{version}/", peer),
    }
}

pub async fn ec2_root(State(app): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    ec2(&app, peer, "").await
}

pub async fn ec2_path(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(path): Path<String>,
) -> Response {
    ec2(&app, peer, &path).await
}

async fn ec2(app: &AppState, peer: SocketAddr, path: &str) -> Response {
    let c = match identify::by_source(app, peer, "/{version}/meta-data") {
        Ok(c) => c,
        Err(r) => return r.respond(app, "/{version}/meta-data", peer),
    };
    match md::ec2_meta_data(&c.entry.machine, c.ip, path).body() {
        Some(b) => text(b),
        None => not_found(),
    }
}

pub async fn ec2_user_data(State(app): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    let c = match identify::by_source(&app, peer, "/{version}/user-data") {
        Ok(c) => c,
        Err(r) => return r.respond(&app, "/{version}/user-data", peer),
    };
    match &c.entry.machine.cloud_init.user_data {
        Some(u) => text(u.clone()),
        // As EC2 does when an instance has no user-data.
        None => not_found(),
    }
}

/// `GET /nocloud/{mac}/{doc}`: cloud-init's NoCloud seed (`seedfrom=…/nocloud/<mac>/`).
pub async fn nocloud(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((mac, doc)): Path<(String, String)>,
) -> Response {
    let Ok(mac) = mac.parse::<MacAddr>() else { return not_found() };
    let c = match identify::by_mac(&app, mac, peer, "/nocloud/{mac}/{doc}") {
        Ok(c) => c,
        Err(r) => return r.respond(&app, "/nocloud/{mac}/{doc}", peer),
    };
    let ci = &c.entry.machine.cloud_init;
    match doc.as_str() {
        "meta-data" => text(md::nocloud_meta_data(&c.entry.machine)),
        // cloud-init fails the datasource when user-data is missing; empty is "nothing to do".
        "user-data" => text(ci.user_data.clone().unwrap_or_default()),
        "vendor-data" => text(ci.vendor_data.clone().unwrap_or_default()),
        // Absent network-config: cloud-init keeps its default (DHCP).
        "network-config" => ci.network_config.clone().map_or_else(not_found, text),
        _ => not_found(),
    }
}

//! Read paths for a machine's own data: `/metadata` for the installer, the EC2-compatible
//! tree and the NoCloud documents for cloud-init. Each answers only the calling machine
//! ([`super::identify`]); the documents are built by [`crate::metadata`].

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use osie_api::MacAddr;

use super::identify::{self, Caller, Refused};
use super::AppState;
use crate::inventory::checksums::Digest;
use crate::inventory::model::Machine;
use crate::metadata as md;
use crate::trace::{MetadataStep, Step};
use crate::vendor_sums::SumsError;

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
    // A deprovisioning asked for: erase, and no image to look up.
    let erase = app.storage.state_of(m).deprovision.map(|d| osie_api::ErasePlan { removable: d.removable });
    // An installer that says its architecture (older ones do not) gets no image of another
    // (an erase writes none).
    let arch = h.get(osie_api::ARCH_HEADER).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Some(why) = arch.filter(|_| erase.is_none()).and_then(|a| md::wrong_arch(m, &snap.images, &a)) {
        // 409, as for a refused checksum: the installer reports it as its failure, and no
        // retry fixes it.
        tracing::warn!(mac = %caller.mac, host = %m.hostname, error = %why, "metadata refused: image architecture");
        return (StatusCode::CONFLICT, format!("install.image: {why}\n")).into_response();
    }
    let vendor = match if erase.is_some() { Ok(None) } else { vendor_digest(&app, m).await } {
        Ok(d) => d,
        Err(e) => {
            // Refused here, where the installer asks: it reports the reason as its failure
            // (409: no retry fixes it; 502: the vendor's server may come back).
            let status = match e {
                SumsError::Refused(_) => StatusCode::CONFLICT,
                SumsError::Unreachable(_) => StatusCode::BAD_GATEWAY,
            };
            tracing::warn!(mac = %caller.mac, host = %m.hostname, error = %e, "metadata refused: image checksum");
            return (status, format!("install.image: {e}\n")).into_response();
        }
    };
    let base = crate::netboot::own_url(&app.cfg, crate::netboot::Via::of(peer));
    let meta = md::for_installer(m, caller.mac, &snap.images, &base, vendor.as_ref(), erase);
    tracing::info!(
        mac = %caller.mac, host = %m.hostname, ip = %caller.ip, matched = %caller.how,
        plan = meta.install.is_some(), erase = meta.erase.is_some(), "metadata served"
    );
    let run = h.get(osie_api::RUN_HEADER).and_then(|v| v.to_str().ok()).map(|r| crate::trace::clean(r, 64));
    note(&app, &caller, osie_api::paths::METADATA, run);
    Json(meta).into_response()
}

/// The digest of the machine's image from its vendor's checksums file, when the record gives
/// one (`install.image.checksums_url`).
async fn vendor_digest(app: &AppState, m: &Machine) -> Result<Option<Digest>, SumsError> {
    let Some(img) = m.install.as_ref().map(|i| &i.image) else { return Ok(None) };
    let (Some(url), Some(sums)) = (&img.url, &img.checksums_url) else { return Ok(None) };
    app.vendor_sums.digest(url, sums, img.signature_url.as_deref()).await.map(Some)
}

/// The read, in the machine's boot trace.
fn note(app: &AppState, c: &Caller, path: &str, run_id: Option<String>) {
    if let Some(t) = &app.tracer {
        let step =
            Step::Metadata(MetadataStep { path: crate::trace::clean(path, crate::trace::MAX_TEXT), status: 200 });
        t.step(c.mac, Some(c.ip), run_id, step);
    }
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
    note(app, &c, &format!("/latest/meta-data/{path}"), None);
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
    note(&app, &c, "/latest/user-data", None);
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
    note(&app, &c, &format!("/nocloud/{mac}/{doc}"), None);
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

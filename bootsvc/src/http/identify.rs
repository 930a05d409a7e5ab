//! Which machine is calling. Metadata, events and the cloud-init trees answer a machine only
//! about itself: the MAC it claims (`X-Osie-Mac`, an event's `machine`, a NoCloud path) must
//! belong to a known machine whose address is the request's source address (its fixed
//! address, a lease of ours on one of its MACs, or — for machines without a fixed address —
//! the address that fetched its iPXE script). Anything else is refused with 403 and counted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use osie_api::MacAddr;

use super::App;
use crate::inventory::backend::Matched;
use crate::inventory::Entry;

/// A caller matched to its machine.
#[derive(Debug, Clone)]
pub struct Caller {
    pub entry: Entry,
    /// The NIC the caller named.
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub how: Matched,
}

/// A refused request: status, a short reason for the metrics, a message for the client.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl Refused {
    fn forbidden(message: impl Into<String>) -> Refused {
        Refused { status: StatusCode::FORBIDDEN, reason: "http-forbidden", message: message.into() }
    }

    /// Count, log and answer.
    pub fn respond(self, app: &App, route: &str, peer: SocketAddr) -> Response {
        app.metrics.drop_reason(self.reason);
        tracing::warn!(%peer, route, status = self.status.as_u16(), why = %self.message, "request refused");
        (self.status, format!("{}\n", self.message)).into_response()
    }
}

/// The IPv4 source address (IPv4-mapped IPv6 included).
pub fn source_ipv4(peer: SocketAddr) -> Option<Ipv4Addr> {
    match peer.ip() {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

/// The MAC in `X-Osie-Mac`, if present: `Err` when present but not a MAC.
pub fn mac_header(headers: &HeaderMap) -> Result<Option<MacAddr>, Refused> {
    let Some(v) = headers.get(osie_api::MAC_HEADER) else { return Ok(None) };
    let bad = || Refused {
        status: StatusCode::BAD_REQUEST,
        reason: "http-bad-request",
        message: format!("{} is not a MAC address", osie_api::MAC_HEADER),
    };
    let s = v.to_str().map_err(|_| bad())?;
    s.parse().map(Some).map_err(|_| bad())
}

/// The machine owning `mac`, if `peer` is its address.
pub fn by_mac(app: &App, mac: MacAddr, peer: SocketAddr) -> Result<Caller, Refused> {
    let ip = source_ipv4(peer).ok_or_else(|| Refused::forbidden("only IPv4 callers are identified"))?;
    let snap = app.backend.snapshot();
    // One message for "unknown MAC" and "wrong address": no probing for which MACs exist.
    let refuse = || Refused::forbidden(format!("{ip} is not the address of machine {mac}"));
    let entry = snap.by_mac(&mac).ok_or_else(refuse)?;
    let how = app.backend.matches(entry, ip).ok_or_else(refuse)?;
    Ok(Caller { entry: entry.clone(), mac, ip, how })
}

/// The machine whose address `peer` is, for callers that do not name a MAC.
pub fn by_source(app: &App, peer: SocketAddr) -> Result<Caller, Refused> {
    let ip = source_ipv4(peer).ok_or_else(|| Refused::forbidden("only IPv4 callers are identified"))?;
    let snap = app.backend.snapshot();
    let entry = app
        .backend
        .entry_by_source(&snap, ip)
        .ok_or_else(|| Refused::forbidden(format!("{ip} is not a known machine")))?;
    let how = app.backend.matches(&entry, ip).unwrap_or(Matched::FixedIp);
    let mac = entry.machine.boot_mac().ok_or_else(|| Refused::forbidden("machine has no MAC"))?;
    Ok(Caller { entry, mac, ip, how })
}

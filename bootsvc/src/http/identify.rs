//! Which machine is calling. Metadata, events and the cloud-init trees answer a machine only
//! about itself: the machine it claims (`X-Osie-Mac`, an event's `machine`, a NoCloud path,
//! a phone-home's instance id), or for callers that name none the machine its address
//! belongs to, must be the one the identity decision ([`crate::identity`]) binds the
//! request's source address to: for an IPv4 source (or IPv4-mapped, on a dual-stack
//! listener) its fixed address, lease, DHCP request or ARP entry; for an IPv6 source its
//! record's `ip6`, or its NDP entry (with the EUI-64 it was formed from, when it was). Anything else is refused with 403, counted, and shown to the
//! operator on the claimed machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use osie_api::MacAddr;

use super::App;
use crate::identity::{unmap, Refusal, Sources};
use crate::inventory::{Entry, Snapshot};

/// A caller matched to its machine.
#[derive(Debug, Clone)]
pub struct Caller {
    pub entry: Entry,
    /// The NIC the caller named (the boot NIC when it named none).
    pub mac: MacAddr,
    /// The source address (IPv4-mapped IPv6 as IPv4).
    pub ip: IpAddr,
    pub how: Sources,
}

/// A refused request: status, a short reason for the metrics, a message for the client.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
    /// What the log says instead of the message (the client is not told which machines
    /// exist or what bootsvc knows about them).
    pub detail: Option<String>,
    /// Log at warning level (false: a repeat, logged at debug; see `identity::refused`).
    pub warn: bool,
}

/// What every refused claim tells the client: the same for unknown machines and wrong
/// addresses, so nobody can probe which MACs exist.
const HINT: &str = "a machine without a fixed address is known only by bootsvc's DHCP lease, its own DHCP request \
                    or its neighbour entry, never by a script fetch; give it a fixed address in its record";

impl Refused {
    fn forbidden(message: impl Into<String>) -> Refused {
        Refused {
            status: StatusCode::FORBIDDEN,
            reason: "http-forbidden",
            message: message.into(),
            detail: None,
            warn: true,
        }
    }

    /// Count, log and answer.
    pub fn respond(self, app: &App, route: &str, peer: SocketAddr) -> Response {
        app.metrics.drop_reason(self.reason);
        let why = self.detail.as_deref().unwrap_or(&self.message);
        if self.warn {
            tracing::warn!(%peer, route, status = self.status.as_u16(), why, "request refused");
        } else {
            tracing::debug!(%peer, route, status = self.status.as_u16(), why, "request refused (repeat)");
        }
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

/// The caller's address, IPv4-mapped IPv6 as IPv4.
fn source(peer: SocketAddr) -> IpAddr {
    unmap(peer.ip())
}

/// The MAC in `X-Osie-Mac`, if present: `Err` when present but not a MAC.
pub fn mac_header(headers: &HeaderMap) -> Result<Option<MacAddr>, Refused> {
    let Some(v) = headers.get(osie_api::MAC_HEADER) else { return Ok(None) };
    let bad = || Refused {
        status: StatusCode::BAD_REQUEST,
        reason: "http-bad-request",
        message: format!("{} is not a MAC address", osie_api::MAC_HEADER),
        detail: None,
        warn: true,
    };
    let s = v.to_str().map_err(|_| bad())?;
    s.parse().map(Some).map_err(|_| bad())
}

/// `ip` claims `entry`'s machine on `route`: the decision, and a refusal noted on the machine.
fn claim(
    app: &App,
    snap: &Snapshot,
    entry: &Entry,
    ip: IpAddr,
    route: &str,
    refused: Refused,
) -> Result<Sources, Refused> {
    app.identity
        .check(&*app.storage, snap, &entry.machine, ip)
        .map_err(|why| refuse_claim(app, entry, ip, route, &why, refused))
}

fn refuse_claim(app: &App, entry: &Entry, ip: IpAddr, route: &str, why: &Refusal, refused: Refused) -> Refused {
    let warn = app.identity.refused(&entry.machine, ip, route, why);
    let m = &entry.machine;
    let mac = m.boot_mac().map(|m| m.to_string()).unwrap_or_default();
    Refused { detail: Some(format!("{ip} claims {} ({mac}): refused: {why}", m.hostname)), warn, ..refused }
}

/// The machine owning `mac`, if `peer` is its address.
pub fn by_mac(app: &App, mac: MacAddr, peer: SocketAddr, route: &str) -> Result<Caller, Refused> {
    let ip = source(peer);
    let snap = app.storage.snapshot();
    let refused = || Refused::forbidden(format!("{ip} is not the address of machine {mac} ({HINT})"));
    let entry = snap.by_mac(&mac).ok_or_else(refused)?;
    let how = claim(app, &snap, entry, ip, route, refused())?;
    Ok(Caller { entry: entry.clone(), mac, ip, how })
}

/// The machine whose cloud-init instance id is `id`, if `peer` is its address.
pub fn by_instance(app: &App, id: &str, peer: SocketAddr, route: &str) -> Result<Caller, Refused> {
    let ip = source(peer);
    let snap = app.storage.snapshot();
    let refused = || Refused::forbidden(format!("{ip} is not the address of instance {id} ({HINT})"));
    let entry = snap.by_instance_id(id).ok_or_else(refused)?;
    let how = claim(app, &snap, entry, ip, route, refused())?;
    let mac = entry.machine.boot_mac().ok_or_else(|| Refused::forbidden("machine has no MAC"))?;
    Ok(Caller { entry: entry.clone(), mac, ip, how })
}

/// The machine whose address `peer` is, for callers that do not name one (the EC2 tree).
pub fn by_source(app: &App, peer: SocketAddr, route: &str) -> Result<Caller, Refused> {
    let ip = source(peer);
    let snap = app.storage.snapshot();
    let refused = || Refused::forbidden(format!("{ip} is not a known machine ({HINT})"));
    let (entry, how) = match app.identity.by_source(&*app.storage, &snap, ip) {
        Ok(found) => found,
        Err(Some((entry, why))) => return Err(refuse_claim(app, &entry, ip, route, &why, refused())),
        Err(None) => return Err(refused()),
    };
    let mac = entry.machine.boot_mac().ok_or_else(|| Refused::forbidden("machine has no MAC"))?;
    Ok(Caller { entry, mac, ip, how })
}

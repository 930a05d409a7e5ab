//! Request in, reply out: what bootsvc answers to one DHCP request, and why.
//!
//! Pure apart from the lease store (pool machines): no sockets, no clock (the caller passes
//! `now`). Every call returns a [`Decision`] that the server logs as one line and counts.
//!
//! Reservation mode (a full DHCP server for the inventory): DISCOVER → OFFER, REQUEST →
//! ACK or NAK, INFORM → ACK without an address, RELEASE and DECLINE update the pool. Unknown
//! MACs get nothing; a known machine whose netboot is not allowed still gets its address
//! (it then boots from disk) but no boot file.
//!
//! Proxy mode (beside a site DHCP server): only PXE, HTTP-boot and iPXE clients that may
//! netboot are answered, with boot information only (`yiaddr` 0, option 60 `PXEClient`,
//! option 43 discovery control for BIOS). Requests on port 4011 (UEFI's and iPXE's
//! ProxyDHCP request) get an ACK with the same boot information, in either mode.
//!
//! Here each decision (who is answered, which boot file, what each message type gets) says
//! what its reply holds, as a `Plan`; `build` (`reply/build.rs`) writes every reply the same
//! way.

mod build;

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{Message, MessageType};
use osie_api::MacAddr;

use super::classify::{self, BootFile, Class, Client};
use super::request::Request;
use crate::config::{Config, DhcpMode, Pool, UefiChain};
use crate::inventory::{Backend, Machine};
use crate::storage::LeasePool;
use build::{build, Address, Boot, Plan};

/// Replies are padded to this size: some BOOTP-era clients and relays drop shorter ones.
pub const MIN_REPLY_LEN: usize = 300;
/// Option 43 for BIOS PXE in proxy mode: sub-option 6 (discovery control) = 8, "use the
/// boot file in this offer, no boot server discovery, no menu".
pub const PXE_DISCOVERY_CONTROL: [u8; 4] = [6, 1, 8, 255];
/// Option 175 (iPXE's encapsulated options) in an offer with an address to iPXE:
/// sub-option 176 `no-pxedhcp` = 1. iPXE otherwise keeps collecting offers for 3 s after the
/// first, waiting for a ProxyDHCP offer that reservation mode never sends
/// (`bootsvc/docs/dhcp.md`, "No idle waits").
pub const IPXE_NO_PXEDHCP: [u8; 3] = [176, 1, 1];
/// Why a known netboot client gets no boot file when its record does not allow netboot.
pub const NOT_ALLOWED: &str = "netboot not allowed";

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

/// What reply building needs from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub server_ip: Ipv4Addr,
    pub mode: DhcpMode,
    pub lease_secs: u32,
    /// `http.public_url` without a trailing slash.
    pub public_url: String,
    pub pool: Option<Pool>,
    /// `boot.uefi_chain`: the site's chain for UEFI machines whose record names none.
    pub uefi_chain: UefiChain,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        Settings {
            server_ip: cfg.listen.address,
            mode: cfg.dhcp.mode,
            lease_secs: cfg.dhcp.lease_secs,
            public_url: cfg.http.public_url.trim_end_matches('/').to_string(),
            pool: cfg.dhcp.pool.clone(),
            uefi_chain: cfg.boot.uefi_chain,
        }
    }
}

/// Which socket a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// UDP 67, broadcast or relayed.
    Dhcp,
    /// UDP 4011 (PXE boot server / ProxyDHCP request), with the sender's address: the reply
    /// goes back there.
    Pxe(SocketAddrV4),
}

pub struct Ctx<'a> {
    pub settings: &'a Settings,
    pub backend: &'a dyn Backend,
    pub leases: &'a dyn LeasePool,
    /// Unix seconds.
    pub now: u64,
}

/// The outcome of one request, with everything the decision log line says.
#[derive(Debug)]
pub struct Decision {
    pub mac: MacAddr,
    pub msg_type: MessageType,
    pub client: Client,
    /// Firmware class (with the machine's arch hint when the machine is known).
    pub class: Class,
    pub hostname: Option<String>,
    pub boot_file: Option<BootFile>,
    /// Why there is no boot file, when there is none.
    pub no_boot: Option<&'static str>,
    /// Instead of no boot file: one bootsvc refuses at once, so UEFI firmware that must not
    /// netboot goes on to its next boot option instead of waiting out its DHCP retries
    /// ([`Class::decline_file`]).
    pub decline: Option<BootFile>,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub enum Outcome {
    Reply(Reply),
    /// Nothing sent. `reason` is the metrics label, `why` the log text.
    Ignore {
        reason: &'static str,
        why: String,
    },
    /// Handled, nothing to send (RELEASE, DECLINE).
    Done(String),
}

#[derive(Debug)]
pub struct Reply {
    /// `offer`, `ack`, `nak`, `inform-ack`, `proxy-offer`, `proxy-ack`: the metrics label.
    pub kind: &'static str,
    pub msg: Message,
    pub dest: SocketAddrV4,
    /// The request's option 82, echoed byte for byte as the last option (RFC 3046 2.2).
    /// Kept out of `msg`: dhcproto would re-encode it (or, as an unknown option, twice).
    pub relay_agent: Option<Vec<u8>>,
}

impl Decision {
    /// What goes into the reply as the boot file: the machine's, else the one that
    /// declines.
    pub fn offered_boot_file(&self) -> Option<&BootFile> {
        self.boot_file.as_ref().or(self.decline.as_ref())
    }
}

/// Decide what to answer to `req`.
pub fn respond(req: &Request, via: Via, ctx: &Ctx<'_>) -> Decision {
    let client = classify::client(req.mac, &req.options);
    let machine = ctx.backend.by_mac(&req.mac);
    let class = client.class(machine.as_ref().map(|m| m.arch));
    let mut d = Decision {
        mac: req.mac,
        msg_type: req.msg_type,
        client,
        class,
        hostname: machine.as_ref().map(|m| m.hostname.clone()),
        boot_file: None,
        no_boot: None,
        decline: None,
        outcome: Outcome::Done(String::new()),
    };
    if let Some(not_ours) = set_aside(req, via, &d, ctx) {
        d.outcome = not_ours;
        return d;
    }
    let Some(machine) = machine else {
        d.outcome = ignore("dhcp-unknown-mac", "MAC not in the inventory");
        return d;
    };
    match boot_file(req, &d, &machine, ctx) {
        Ok(b) => d.boot_file = Some(b),
        Err(why) => {
            d.no_boot = Some(why);
            if why == NOT_ALLOWED {
                d.decline = d.class.decline_file(&req.mac, &ctx.settings.public_url);
            }
        }
    }
    d.outcome = match via {
        Via::Pxe(src) => pxe_port(req, src, &d, ctx),
        Via::Dhcp => match ctx.settings.mode {
            DhcpMode::Proxy => proxy(req, &d, ctx),
            DhcpMode::Reservation => reservation(req, &machine, &d, ctx),
        },
    };
    d
}

/// Requests not answered whoever sent them: a `giaddr` no reply may go to; in proxy mode,
/// the site server's traffic.
fn set_aside(req: &Request, via: Via, d: &Decision, ctx: &Ctx<'_>) -> Option<Outcome> {
    // The reply would go to giaddr: only to a relay agent's address.
    if let Some(why) = req.relay_problem(ctx.settings.server_ip) {
        return Some(ignore("dhcp-bad-giaddr", why));
    }
    // Proxy mode shares the segment with a site server: its other traffic is not ours to
    // judge (and not worth an info line per OS client).
    if via == Via::Dhcp && ctx.settings.mode == DhcpMode::Proxy {
        if req.msg_type != MessageType::Discover {
            return Some(ignore(
                "dhcp-proxy-not-discover",
                "proxy mode answers DISCOVER on 67; the rest is the site server's",
            ));
        }
        if !is_netboot_client(d) {
            return Some(ignore("dhcp-not-pxe", "not a PXE, HTTP-boot or iPXE client"));
        }
    }
    None
}

/// The boot file, if this machine may netboot now and this request comes from boot
/// firmware (an OS's own DHCP client, the installer's or the installed system's, gets its
/// address and no boot file to misread); else why not.
fn boot_file(req: &Request, d: &Decision, machine: &Machine, ctx: &Ctx<'_>) -> Result<BootFile, &'static str> {
    if !is_netboot_client(d) {
        Err("not a netboot client (no PXE or HTTP vendor class, no option 93, not iPXE)")
    } else if !ctx.backend.netboot_allowed(&req.mac) {
        Err(NOT_ALLOWED)
    } else {
        let chain = machine.uefi_chain(ctx.settings.uefi_chain);
        d.class
            .boot_file(&req.mac, &ctx.settings.public_url, d.client.arch, chain)
            .ok_or("no boot file for this architecture")
    }
}

fn ignore(reason: &'static str, why: impl Into<String>) -> Outcome {
    Outcome::Ignore { reason, why: why.into() }
}

/// Boot firmware says what it is: PXE and UEFI HTTP boot send their vendor class (option
/// 60), iPXE its user class; some firmware sends only its architecture (option 93).
fn is_netboot_client(d: &Decision) -> bool {
    d.client.ipxe
        || d.client.vendor != classify::Vendor::Other
        || d.client.arch_source == classify::ArchSource::Option93
}

/// Proxy mode, port 67: a boot-information-only offer to a PXE client's DISCOVER (other
/// messages and clients were set aside in [`respond`]).
fn proxy(req: &Request, d: &Decision, ctx: &Ctx<'_>) -> Outcome {
    if d.offered_boot_file().is_none() {
        return no_boot_file(d);
    }
    build(req, d, ctx, Plan::new("proxy-offer", MessageType::Offer, Address::None, Boot::Proxy, req))
}

/// Port 4011, either mode: the PXE/iPXE client already has an address and asks for its boot
/// file.
fn pxe_port(req: &Request, src: SocketAddrV4, d: &Decision, ctx: &Ctx<'_>) -> Outcome {
    if !matches!(req.msg_type, MessageType::Request | MessageType::Inform) {
        return ignore("dhcp-pxe-not-request", "port 4011 answers REQUEST and INFORM");
    }
    if d.offered_boot_file().is_none() {
        return no_boot_file(d);
    }
    // Back where it came from; broadcast to that port while the sender has no address.
    let dest = if src.ip().is_unspecified() { SocketAddrV4::new(Ipv4Addr::BROADCAST, src.port()) } else { src };
    build(req, d, ctx, Plan { dest, ..Plan::new("proxy-ack", MessageType::Ack, Address::None, Boot::Proxy, req) })
}

fn no_boot_file(d: &Decision) -> Outcome {
    ignore("dhcp-no-boot-file", d.no_boot.unwrap_or("no boot file"))
}

/// Reservation mode, port 67.
fn reservation(req: &Request, machine: &Machine, d: &Decision, ctx: &Ctx<'_>) -> Outcome {
    match req.msg_type {
        MessageType::Discover => discover(req, machine, d, ctx),
        MessageType::Request => request(req, machine, d, ctx),
        MessageType::Inform => inform(req, machine, d, ctx),
        MessageType::Release => release(req, ctx),
        MessageType::Decline => decline(req, machine, ctx),
        other => ignore("dhcp-unexpected-type", format!("{other:?} is not a client message")),
    }
}

/// DISCOVER: offer the machine's fixed address, else one from the pool (held for it a
/// while).
fn discover(req: &Request, machine: &Machine, d: &Decision, ctx: &Ctx<'_>) -> Outcome {
    let addr = match &machine.ip {
        Some(ip) => fixed(ip),
        None => match ctx.leases.offer(&req.mac, req.requested_ip, ctx.now, &|ip| taken(req, ctx, ip)) {
            Ok(Some(ip)) => pooled(ctx, ip),
            Ok(None) => return no_address(ctx),
            Err(e) => return ignore("dhcp-lease-store", format!("no pool address offered: {e:#}")),
        },
    };
    build(req, d, ctx, Plan::new("offer", MessageType::Offer, Address::Lease(addr), Boot::WithAddress, req))
}

/// REQUEST: nothing when the client chose another server; an ACK for the address it names
/// when that is the machine's (its fixed address, or a pool address the lease store binds
/// to it, on disk first); a NAK otherwise.
fn request(req: &Request, machine: &Machine, d: &Decision, ctx: &Ctx<'_>) -> Outcome {
    if let Some(sid) = req.server_id.filter(|&sid| sid != ctx.settings.server_ip) {
        ctx.leases.forget_offer(&req.mac);
        return ignore("dhcp-other-server", format!("client chose server {sid}"));
    }
    let Some(wanted) = requested_address(req) else {
        return ignore("dhcp-malformed", "REQUEST names no address (no option 50, no ciaddr)");
    };
    let addr = match &machine.ip {
        Some(ip) if ip.address == wanted => fixed(ip),
        Some(ip) => return nak(req, d, ctx, format!("requested {wanted}, reserved {}", ip.address)),
        None if ctx.leases.has_pool() => {
            match ctx.leases.ack(&req.mac, wanted, ctx.now, ctx.settings.lease_secs, &|ip| taken(req, ctx, ip)) {
                Ok(true) => pooled(ctx, wanted),
                Ok(false) => return nak(req, d, ctx, format!("requested {wanted}, not available to this machine")),
                Err(e) => return ignore("dhcp-lease-store", format!("{e:#}")),
            }
        }
        None => return no_address(ctx),
    };
    build(req, d, ctx, Plan::new("ack", MessageType::Ack, Address::Lease(addr), Boot::WithAddress, req))
}

/// SELECTING and INIT-REBOOT name the address in option 50; RENEWING and REBINDING in
/// ciaddr.
fn requested_address(req: &Request) -> Option<Ipv4Addr> {
    req.requested_ip.or(Some(req.ciaddr()).filter(|ip| !ip.is_unspecified()))
}

/// INFORM: the configuration for the address the client already has; no lease.
fn inform(req: &Request, machine: &Machine, d: &Decision, ctx: &Ctx<'_>) -> Outcome {
    let addr = match &machine.ip {
        Some(c) => fixed(c),
        None => pooled(ctx, req.ciaddr()),
    };
    build(req, d, ctx, Plan::new("inform-ack", MessageType::Ack, Address::Configure(addr), Boot::WithAddress, req))
}

/// RELEASE: the pool lease ends now (a fixed address has none).
fn release(req: &Request, ctx: &Ctx<'_>) -> Outcome {
    let ip = req.ciaddr();
    match ctx.leases.release(&req.mac, ip, ctx.now) {
        Ok(true) => Outcome::Done(format!("released pool lease {ip}")),
        Ok(false) => Outcome::Done(format!("release of {ip}: no pool lease held")),
        Err(e) => ignore("dhcp-lease-store", format!("{e:#}")),
    }
}

/// DECLINE: another host uses the address; a pool address is held back for a while.
fn decline(req: &Request, machine: &Machine, ctx: &Ctx<'_>) -> Outcome {
    let Some(ip) = req.requested_ip else {
        return ignore("dhcp-malformed", "DECLINE without option 50");
    };
    if machine.ip.as_ref().is_some_and(|c| c.address == ip) {
        return Outcome::Done(format!("DECLINE of reserved {ip}: another host uses this machine's address"));
    }
    match ctx.leases.decline(&req.mac, ip, ctx.now) {
        Ok(true) => Outcome::Done(format!("pool address {ip} declined, held back")),
        Ok(false) => Outcome::Done(format!("DECLINE of {ip}: not a pool address")),
        Err(e) => ignore("dhcp-lease-store", format!("{e:#}")),
    }
}

fn nak(req: &Request, d: &Decision, ctx: &Ctx<'_>, why: String) -> Outcome {
    let plan = Plan::new("nak", MessageType::Nak, Address::None, Boot::None, req);
    build(req, d, ctx, Plan { message: Some(why), ..plan })
}

fn no_address(ctx: &Ctx<'_>) -> Outcome {
    if ctx.leases.has_pool() {
        ignore("dhcp-pool-exhausted", "no free address in dhcp.pool")
    } else {
        ignore("dhcp-no-address", "machine has no fixed address and dhcp.pool is not configured")
    }
}

/// Whether a pool address belongs to something else: this server, or another machine's
/// fixed address. Called by the lease store with its lock held: fixed addresses only,
/// never the leases.
fn taken(req: &Request, ctx: &Ctx<'_>, ip: Ipv4Addr) -> bool {
    ip == ctx.settings.server_ip || ctx.backend.by_fixed_ip(ip).is_some_and(|m| !m.macs.contains(&req.mac))
}

/// Addressing handed to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Assigned {
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
}

fn fixed(ip: &crate::inventory::model::IpConfig) -> Assigned {
    Assigned { ip: ip.address, prefix: ip.prefix, gateway: ip.gateway, dns: ip.dns.clone() }
}

fn pooled(ctx: &Ctx<'_>, ip: Ipv4Addr) -> Assigned {
    let pool = ctx.settings.pool.as_ref();
    Assigned {
        ip,
        prefix: pool.map_or(24, |p| p.prefix),
        gateway: pool.and_then(|p| p.gateway),
        dns: pool.map(|p| p.dns.clone()).unwrap_or_default(),
    }
}

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

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode};
use dhcproto::{Encodable, Encoder};
use osie_api::MacAddr;

use super::classify::{self, BootFile, Class, Client};
use super::request::{code, Request};
use crate::config::{Config, DhcpMode, Pool};
use crate::inventory::{Backend, Machine};
use crate::storage::LeasePool;

/// Replies are padded to this size: some BOOTP-era clients and relays drop shorter ones.
pub const MIN_REPLY_LEN: usize = 300;
/// Option 43 for BIOS PXE in proxy mode: sub-option 6 (discovery control) = 8, "use the
/// boot file in this offer, no boot server discovery, no menu".
pub const PXE_DISCOVERY_CONTROL: [u8; 4] = [6, 1, 8, 255];

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
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        Settings {
            server_ip: cfg.listen.address,
            mode: cfg.dhcp.mode,
            lease_secs: cfg.dhcp.lease_secs,
            public_url: cfg.http.public_url.trim_end_matches('/').to_string(),
            pool: cfg.dhcp.pool.clone(),
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

impl Reply {
    fn new(kind: &'static str, msg: Message, dest: SocketAddrV4, req: &Request) -> Reply {
        Reply { kind, msg, dest, relay_agent: req.options.get(code::RELAY_AGENT).map(<[u8]>::to_vec) }
    }

    /// The UDP payload: dhcproto's encoding, option 82 before END, padded with zeros to
    /// [`MIN_REPLY_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, dhcproto::error::EncodeError> {
        let mut buf = Vec::with_capacity(512);
        self.msg.encode(&mut Encoder::new(&mut buf))?;
        if let Some(ra) = &self.relay_agent {
            // The options always end with END (the message type is always set).
            if buf.last() == Some(&code::END) {
                buf.pop();
            }
            for chunk in ra.chunks(255) {
                buf.push(code::RELAY_AGENT);
                buf.push(chunk.len() as u8);
                buf.extend_from_slice(chunk);
            }
            if ra.is_empty() {
                buf.extend_from_slice(&[code::RELAY_AGENT, 0]);
            }
            buf.push(code::END);
        }
        if buf.len() < MIN_REPLY_LEN {
            buf.resize(MIN_REPLY_LEN, 0);
        }
        Ok(buf)
    }
}

/// Addressing handed to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Assigned {
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
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
        outcome: Outcome::Done(String::new()),
    };
    // The reply would go to giaddr: only to a relay agent's address.
    if let Some(why) = req.relay_problem(ctx.settings.server_ip) {
        d.outcome = ignore("dhcp-bad-giaddr", why);
        return d;
    }
    // Proxy mode shares the segment with a site server: its other traffic is not ours to
    // judge (and not worth an info line per OS client).
    if via == Via::Dhcp && ctx.settings.mode == DhcpMode::Proxy {
        if req.msg_type != MessageType::Discover {
            d.outcome =
                ignore("dhcp-proxy-not-discover", "proxy mode answers DISCOVER on 67; the rest is the site server's");
            return d;
        }
        if !is_netboot_client(&d) {
            d.outcome = ignore("dhcp-not-pxe", "not a PXE, HTTP-boot or iPXE client");
            return d;
        }
    }
    let Some(machine) = machine else {
        d.outcome = ignore("dhcp-unknown-mac", "MAC not in the inventory");
        return d;
    };
    // Boot file, if this machine may netboot now and this request comes from boot firmware:
    // an OS's own DHCP client (the installer's, the installed system's) gets its address and
    // no boot file to misread.
    if !is_netboot_client(&d) {
        d.no_boot = Some("not a netboot client (no PXE or HTTP vendor class, no option 93, not iPXE)");
    } else if !ctx.backend.netboot_allowed(&req.mac) {
        d.no_boot = Some("netboot not allowed");
    } else {
        match class.boot_file(&req.mac, &ctx.settings.public_url) {
            Some(b) => d.boot_file = Some(b),
            None => d.no_boot = Some("no boot file for this architecture"),
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
    let Some(boot) = &d.boot_file else {
        return ignore("dhcp-no-boot-file", d.no_boot.unwrap_or("no boot file"));
    };
    let mut msg = base(req, MessageType::Offer, ctx.settings.server_ip);
    add_boot(&mut msg, req, d.class, boot, true, ctx.settings.server_ip);
    Outcome::Reply(Reply::new("proxy-offer", msg, dest_for(req, false), req))
}

/// Port 4011, either mode: the PXE/iPXE client already has an address and asks for its boot
/// file.
fn pxe_port(req: &Request, src: SocketAddrV4, d: &Decision, ctx: &Ctx<'_>) -> Outcome {
    if !matches!(req.msg_type, MessageType::Request | MessageType::Inform) {
        return ignore("dhcp-pxe-not-request", "port 4011 answers REQUEST and INFORM");
    }
    let Some(boot) = &d.boot_file else {
        return ignore("dhcp-no-boot-file", d.no_boot.unwrap_or("no boot file"));
    };
    let mut msg = base(req, MessageType::Ack, ctx.settings.server_ip);
    msg.set_ciaddr(req.ciaddr());
    add_boot(&mut msg, req, d.class, boot, true, ctx.settings.server_ip);
    let dest = if src.ip().is_unspecified() { SocketAddrV4::new(Ipv4Addr::BROADCAST, src.port()) } else { src };
    Outcome::Reply(Reply::new("proxy-ack", msg, dest, req))
}

/// Reservation mode, port 67.
fn reservation(req: &Request, machine: &Machine, d: &Decision, ctx: &Ctx<'_>) -> Outcome {
    let me = ctx.settings.server_ip;
    // Called by the lease store with its lock held: fixed addresses only, never the leases.
    let taken =
        |ip: Ipv4Addr| -> bool { ip == me || ctx.backend.by_fixed_ip(ip).is_some_and(|m| !m.macs.contains(&req.mac)) };
    match req.msg_type {
        MessageType::Discover => {
            let addr = match &machine.ip {
                Some(ip) => fixed(ip),
                None => {
                    let Some(ip) = ctx.leases.offer(&req.mac, req.requested_ip, ctx.now, &taken) else {
                        return no_address(ctx);
                    };
                    pooled(ctx, ip)
                }
            };
            Outcome::Reply(offer_or_ack(req, MessageType::Offer, "offer", &addr, d, ctx))
        }
        MessageType::Request => {
            if let Some(sid) = req.server_id {
                if sid != me {
                    ctx.leases.forget_offer(&req.mac);
                    return ignore("dhcp-other-server", format!("client chose server {sid}"));
                }
            }
            // SELECTING and INIT-REBOOT name the address in option 50; RENEWING and
            // REBINDING in ciaddr.
            let wanted = match (req.requested_ip, req.ciaddr()) {
                (Some(ip), _) => ip,
                (None, ip) if !ip.is_unspecified() => ip,
                _ => return ignore("dhcp-malformed", "REQUEST names no address (no option 50, no ciaddr)"),
            };
            let addr = match &machine.ip {
                Some(ip) if ip.address == wanted => fixed(ip),
                Some(ip) => return nak(req, ctx, format!("requested {wanted}, reserved {}", ip.address)),
                None if ctx.leases.has_pool() => {
                    match ctx.leases.ack(&req.mac, wanted, ctx.now, ctx.settings.lease_secs, &taken) {
                        Ok(true) => pooled(ctx, wanted),
                        Ok(false) => {
                            return nak(req, ctx, format!("requested {wanted}, not available to this machine"))
                        }
                        Err(e) => return ignore("dhcp-lease-store", format!("{e:#}")),
                    }
                }
                None => return no_address(ctx),
            };
            Outcome::Reply(offer_or_ack(req, MessageType::Ack, "ack", &addr, d, ctx))
        }
        MessageType::Inform => {
            let ip = req.ciaddr();
            let addr = match &machine.ip {
                Some(c) => fixed(c),
                None => pooled(ctx, ip),
            };
            let mut msg = base(req, MessageType::Ack, me);
            msg.set_ciaddr(ip);
            add_config(&mut msg, &addr, machine);
            if let Some(boot) = &d.boot_file {
                add_boot(&mut msg, req, d.class, boot, false, me);
            }
            let dest = if !req.giaddr().is_unspecified() {
                SocketAddrV4::new(req.giaddr(), SERVER_PORT)
            } else if !ip.is_unspecified() {
                SocketAddrV4::new(ip, CLIENT_PORT)
            } else {
                SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
            };
            Outcome::Reply(Reply::new("inform-ack", msg, dest, req))
        }
        MessageType::Release => {
            let ip = req.ciaddr();
            match ctx.leases.release(&req.mac, ip, ctx.now) {
                Ok(true) => Outcome::Done(format!("released pool lease {ip}")),
                Ok(false) => Outcome::Done(format!("release of {ip}: no pool lease held")),
                Err(e) => ignore("dhcp-lease-store", format!("{e:#}")),
            }
        }
        MessageType::Decline => {
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
        other => ignore("dhcp-unexpected-type", format!("{other:?} is not a client message")),
    }
}

fn no_address(ctx: &Ctx<'_>) -> Outcome {
    if ctx.leases.has_pool() {
        ignore("dhcp-pool-exhausted", "no free address in dhcp.pool")
    } else {
        ignore("dhcp-no-address", "machine has no fixed address and dhcp.pool is not configured")
    }
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

fn offer_or_ack(req: &Request, t: MessageType, kind: &'static str, a: &Assigned, d: &Decision, ctx: &Ctx<'_>) -> Reply {
    let me = ctx.settings.server_ip;
    let mut msg = base(req, t, me);
    msg.set_yiaddr(a.ip);
    if t == MessageType::Ack {
        msg.set_ciaddr(req.ciaddr());
    }
    let lease = ctx.settings.lease_secs;
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::AddressLeaseTime(lease));
    opts.insert(DhcpOption::Renewal(lease / 2));
    opts.insert(DhcpOption::Rebinding(lease / 8 * 7));
    add_config_parts(&mut msg, a, d.hostname.as_deref());
    if let Some(boot) = &d.boot_file {
        add_boot(&mut msg, req, d.class, boot, false, me);
    }
    // RENEWING: the client has its address and listens on it.
    let unicast_ok = t == MessageType::Ack && !req.ciaddr().is_unspecified();
    Reply::new(kind, msg, dest_for(req, unicast_ok), req)
}

fn nak(req: &Request, ctx: &Ctx<'_>, why: String) -> Outcome {
    let mut msg = base(req, MessageType::Nak, ctx.settings.server_ip);
    msg.opts_mut().insert(DhcpOption::Message(why));
    if !req.giaddr().is_unspecified() {
        // The relay must broadcast it on the client's segment.
        msg.set_flags(Flags::default().set_broadcast());
    }
    Outcome::Reply(Reply::new("nak", msg, dest_for(req, false), req))
}

/// RFC 2131 4.1: relayed → the relay's server port; a client that has its address →
/// unicast; otherwise broadcast (bootsvc does not write ARP entries for unconfigured
/// clients, so it never unicasts to `yiaddr`).
fn dest_for(req: &Request, unicast_to_ciaddr: bool) -> SocketAddrV4 {
    if !req.giaddr().is_unspecified() {
        SocketAddrV4::new(req.giaddr(), SERVER_PORT)
    } else if unicast_to_ciaddr {
        SocketAddrV4::new(req.ciaddr(), CLIENT_PORT)
    } else {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
    }
}

/// A reply skeleton: header fields copied from the request, message type, server id, and
/// (option 82 is added by [`Reply::encode`]).
fn base(req: &Request, t: MessageType, me: Ipv4Addr) -> Message {
    let h = &req.header;
    let mut msg = Message::new_with_id(
        h.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        h.giaddr(),
        &req.mac.octets(),
    );
    msg.set_opcode(Opcode::BootReply).set_flags(h.flags());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(t));
    opts.insert(DhcpOption::ServerIdentifier(me));
    msg
}

fn add_config(msg: &mut Message, a: &Assigned, machine: &Machine) {
    add_config_parts(msg, a, Some(&machine.hostname));
}

fn add_config_parts(msg: &mut Message, a: &Assigned, hostname: Option<&str>) {
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::SubnetMask(prefix_mask(a.prefix)));
    if let Some(gw) = a.gateway {
        opts.insert(DhcpOption::Router(vec![gw]));
    }
    if !a.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(a.dns.clone()));
    }
    if let Some(h) = hostname.filter(|h| !h.is_empty() && h.len() <= 255) {
        opts.insert(DhcpOption::Hostname(h.to_string()));
    }
}

/// Boot file in option 67 and in the BOOTP `file` field (both NUL-terminated), `siaddr`,
/// the vendor class the firmware expects, and option 97 echoed (PXE spec).
fn add_boot(msg: &mut Message, req: &Request, class: Class, boot: &BootFile, proxy: bool, me: Ipv4Addr) {
    msg.set_siaddr(me);
    let name = boot.as_str().as_bytes();
    // `file` is 128 bytes including the NUL; a longer URL goes in option 67 only.
    if name.len() < 128 {
        msg.set_fname(name);
    }
    let mut opt67 = name.to_vec();
    opt67.push(0);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::BootfileName(opt67));
    if class.is_http_boot() {
        opts.insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
    } else if proxy {
        opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        if class == Class::BiosPxe {
            opts.insert(DhcpOption::VendorExtensions(PXE_DISCOVERY_CONTROL.to_vec()));
        }
    }
    if let Some(uuid) = req.options.get(code::CLIENT_UUID) {
        opts.insert(DhcpOption::ClientMachineIdentifier(uuid.to_vec()));
    }
}

pub fn prefix_mask(prefix: u8) -> Ipv4Addr {
    let p = u32::from(prefix.min(32));
    Ipv4Addr::from(if p == 0 { 0 } else { u32::MAX << (32 - p) })
}

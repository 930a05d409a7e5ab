//! Writing a reply: the steps every reply shares, in one place. A decision in the parent
//! module says what the reply holds (a [`Plan`]: kind, message type, address, boot file,
//! destination); [`build`] turns that into the message, and [`Reply::encode`] into the UDP
//! payload (option 82 echoed last, padded to [`MIN_REPLY_LEN`]).

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, UnknownOption};
use dhcproto::{Encodable, Encoder};

use super::{
    Assigned, Ctx, Decision, Outcome, Reply, CLIENT_PORT, IPXE_NO_PXEDHCP, MIN_REPLY_LEN, PXE_DISCOVERY_CONTROL,
    SERVER_PORT,
};
use crate::dhcp::classify::{BootFile, Class};
use crate::dhcp::request::{code, Request};

/// What one reply says, as decided for its message type; [`build`] writes it.
pub(super) struct Plan {
    /// The metrics label (see [`Reply::kind`]).
    pub(super) kind: &'static str,
    pub(super) msg_type: MessageType,
    pub(super) address: Address,
    pub(super) boot: Boot,
    /// Option 56: why (a NAK's reason).
    pub(super) message: Option<String>,
    pub(super) dest: SocketAddrV4,
}

impl Plan {
    /// A reply on port 67, to where [`reply_to`] says.
    pub(super) fn new(kind: &'static str, msg_type: MessageType, address: Address, boot: Boot, req: &Request) -> Plan {
        Plan { kind, msg_type, address, boot, message: None, dest: reply_to(req, msg_type) }
    }
}

pub(super) enum Address {
    /// None: proxy replies, NAK.
    None,
    /// INFORM: subnet mask, router, DNS and host name for the address the client has; no
    /// `yiaddr`, no lease.
    Configure(Assigned),
    /// OFFER and ACK: `yiaddr`, the lease times and the configuration.
    Lease(Assigned),
}

/// Whether the decided boot file goes in, and how.
pub(super) enum Boot {
    /// Not at all (NAK).
    None,
    /// Beside an address (reservation mode), when there is one.
    WithAddress,
    /// As the whole answer (proxy mode, port 4011): with vendor class `PXEClient`, and for
    /// BIOS option 43.
    Proxy,
}

/// The reply `plan` describes, written the same way for every kind: the header, then the
/// address and its configuration, the reason, the boot file. Option 82 and the padding are
/// added by [`Reply::encode`].
pub(super) fn build(req: &Request, d: &Decision, ctx: &Ctx<'_>, plan: Plan) -> Outcome {
    let me = ctx.settings.server_ip;
    let mut msg = header(req, plan.msg_type, me);
    match &plan.address {
        Address::None => {}
        Address::Configure(a) => add_config(&mut msg, a, d.hostname.as_deref()),
        Address::Lease(a) => {
            msg.set_yiaddr(a.ip);
            add_lease_times(&mut msg, ctx.settings.lease_secs);
            add_config(&mut msg, a, d.hostname.as_deref());
            if d.client.ipxe {
                // The address comes with everything: iPXE need not wait for a ProxyDHCP offer.
                msg.opts_mut()
                    .insert(DhcpOption::Unknown(UnknownOption::new(code::IPXE_ENCAP.into(), IPXE_NO_PXEDHCP.to_vec())));
            }
        }
    }
    if let Some(why) = plan.message {
        msg.opts_mut().insert(DhcpOption::Message(why));
    }
    match (&plan.boot, d.offered_boot_file()) {
        (Boot::WithAddress, Some(boot)) => add_boot(&mut msg, req, d.class, boot, false, me),
        (Boot::Proxy, Some(boot)) => add_boot(&mut msg, req, d.class, boot, true, me),
        _ => {}
    }
    Outcome::Reply(Reply::new(plan.kind, msg, plan.dest, req))
}

/// The header and the two options every reply has. From the request: `xid`, `flags`,
/// `giaddr`, `chaddr`; an ACK echoes `ciaddr` (RFC 2131 table 3); a relayed NAK is flagged
/// broadcast, so the relay broadcasts it on the client's segment (4.3.2). Then the message
/// type and the server identifier.
fn header(req: &Request, t: MessageType, me: Ipv4Addr) -> Message {
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
    if t == MessageType::Ack {
        msg.set_ciaddr(req.ciaddr());
    }
    if t == MessageType::Nak && !req.giaddr().is_unspecified() {
        msg.set_flags(Flags::default().set_broadcast());
    }
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(t));
    opts.insert(DhcpOption::ServerIdentifier(me));
    msg
}

/// Where a reply to port 67 goes (RFC 2131 4.1): relayed → the relay's server port; an ACK
/// to a client that has its address (RENEWING, INFORM) → unicast to it; otherwise
/// broadcast (bootsvc does not write ARP entries for unconfigured clients, so it never
/// unicasts to `yiaddr`).
fn reply_to(req: &Request, t: MessageType) -> SocketAddrV4 {
    if !req.giaddr().is_unspecified() {
        SocketAddrV4::new(req.giaddr(), SERVER_PORT)
    } else if t == MessageType::Ack && !req.ciaddr().is_unspecified() {
        SocketAddrV4::new(req.ciaddr(), CLIENT_PORT)
    } else {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
    }
}

fn add_lease_times(msg: &mut Message, lease: u32) {
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::AddressLeaseTime(lease));
    opts.insert(DhcpOption::Renewal(lease / 2));
    opts.insert(DhcpOption::Rebinding(lease / 8 * 7));
}

fn add_config(msg: &mut Message, a: &Assigned, hostname: Option<&str>) {
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

fn prefix_mask(prefix: u8) -> Ipv4Addr {
    let p = u32::from(prefix.min(32));
    Ipv4Addr::from(if p == 0 { 0 } else { u32::MAX << (32 - p) })
}

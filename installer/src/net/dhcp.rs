//! DHCPv4 client messages (RFC 2131/2132) as pure functions: build DISCOVER and REQUEST,
//! judge a reply, turn an ACK into a [`Lease`]. The socket loop is in [`super::dhcp_client`].
//!
//! The client identifies itself as osie (option 60 [`VENDOR_CLASS`]) so bootsvc sees an
//! installer, not a PXE ROM or iPXE, and asks for broadcast replies: the interface has no
//! address until the ACK, so a unicast reply could not be received.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use osie_api::MacAddr;

/// Option 60 sent in every request.
pub const VENDOR_CLASS: &str = "osie-installer";

/// What the client asks the server for (option 55).
const PARAMS: [OptionCode; 8] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::AddressLeaseTime,
    OptionCode::Renewal,
    OptionCode::Rebinding,
];

/// An address offered or granted by a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    pub server: Ipv4Addr,
    /// Seconds; `None` means infinite.
    pub lease_secs: Option<u32>,
}

/// A reply that belongs to our transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer(Lease),
    Ack(Lease),
    Nak(String),
}

fn base(mac: MacAddr, xid: u32, secs: u16) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, z, &mac.octets());
    m.set_opcode(Opcode::BootRequest);
    m.set_flags(Flags::default().set_broadcast());
    m.set_secs(secs);
    let o = m.opts_mut();
    o.insert(DhcpOption::ClientIdentifier([&[1u8][..], &mac.octets()].concat()));
    o.insert(DhcpOption::ClassIdentifier(VENDOR_CLASS.as_bytes().to_vec()));
    o.insert(DhcpOption::MaxMessageSize(1500));
    o.insert(DhcpOption::ParameterRequestList(PARAMS.to_vec()));
    m
}

/// DHCPDISCOVER. `secs`: seconds since the client started (servers may prefer long waiters).
pub fn discover(mac: MacAddr, xid: u32, secs: u16) -> Vec<u8> {
    let mut m = base(mac, xid, secs);
    m.opts_mut().insert(DhcpOption::MessageType(MessageType::Discover));
    encode(&m)
}

/// DHCPREQUEST in SELECTING state, accepting `offer`.
pub fn request(mac: MacAddr, xid: u32, secs: u16, offer: &Lease) -> Vec<u8> {
    let mut m = base(mac, xid, secs);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(MessageType::Request));
    o.insert(DhcpOption::RequestedIpAddress(offer.address));
    o.insert(DhcpOption::ServerIdentifier(offer.server));
    encode(&m)
}

/// DHCPREQUEST in RENEWING state (RFC 2131 §4.3.2): `ciaddr` is the leased address, no
/// requested-address or server-id option, sent unicast to the server, reply unicast to us.
pub fn renew(mac: MacAddr, xid: u32, lease: &Lease) -> Vec<u8> {
    let mut m = base(mac, xid, 0);
    m.set_flags(Flags::default());
    m.set_ciaddr(lease.address);
    m.opts_mut().insert(DhcpOption::MessageType(MessageType::Request));
    encode(&m)
}

fn encode(m: &Message) -> Vec<u8> {
    // Encoding a message we built ourselves cannot fail (all fields are in range).
    let mut v = m.to_vec().unwrap_or_default();
    // Some servers and relays drop BOOTP messages shorter than 300 bytes.
    if v.len() < 300 {
        v.resize(300, 0);
    }
    v
}

/// Decode `bytes` and keep it only if it answers our transaction (`xid`, our MAC, a
/// BOOTREPLY with a message type we expect). Anything else is `None`: other clients' replies
/// arrive on the same broadcast port.
pub fn parse_reply(bytes: &[u8], mac: MacAddr, xid: u32) -> Option<Reply> {
    let m = Message::from_bytes(bytes).ok()?;
    if m.opcode() != Opcode::BootReply || m.xid() != xid || m.chaddr().get(..6) != Some(&mac.octets()[..]) {
        return None;
    }
    match m.opts().msg_type()? {
        MessageType::Offer => lease(&m).map(Reply::Offer),
        MessageType::Ack => lease(&m).map(Reply::Ack),
        MessageType::Nak => {
            let why = match m.opts().get(OptionCode::Message) {
                Some(DhcpOption::Message(s)) => s.clone(),
                _ => String::new(),
            };
            Some(Reply::Nak(why))
        }
        _ => None,
    }
}

fn lease(m: &Message) -> Option<Lease> {
    let o = m.opts();
    let address = m.yiaddr();
    if address.is_unspecified() {
        return None;
    }
    let server = match o.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => m.siaddr(),
    };
    let prefix = match o.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => mask_to_prefix(*mask)?,
        _ => default_prefix(address),
    };
    let ips = |code| match o.get(code) {
        Some(DhcpOption::Router(v)) | Some(DhcpOption::DomainNameServer(v)) => v.clone(),
        _ => Vec::new(),
    };
    Some(Lease {
        address,
        prefix,
        routers: ips(OptionCode::Router),
        dns: ips(OptionCode::DomainNameServer),
        domain: match o.get(OptionCode::DomainName) {
            Some(DhcpOption::DomainName(d)) => Some(d.trim_end_matches('\0').to_string()).filter(|d| !d.is_empty()),
            _ => None,
        },
        mtu: match o.get(OptionCode::InterfaceMtu) {
            Some(DhcpOption::InterfaceMtu(m)) if *m >= 576 => Some(*m),
            _ => None,
        },
        server,
        lease_secs: match o.get(OptionCode::AddressLeaseTime) {
            Some(DhcpOption::AddressLeaseTime(u32::MAX)) | None => None,
            Some(DhcpOption::AddressLeaseTime(t)) => Some(*t),
            _ => None,
        },
    })
}

/// Prefix length of a contiguous netmask; `None` for a non-contiguous one.
pub fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let p = m.leading_ones();
    (m.checked_shl(p).unwrap_or(0) == 0).then_some(p as u8)
}

/// Classful default when the server sends no mask (RFC 2131 leaves it to the client).
fn default_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    fn server_reply(ty: MessageType, xid: u32, mac: MacAddr) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(xid, z, Ipv4Addr::new(192, 0, 2, 100), z, z, &mac.octets());
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(ty));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 1)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(192, 0, 2, 1)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(198, 51, 100, 53)]));
        o.insert(DhcpOption::DomainName("osie.test".into()));
        o.insert(DhcpOption::AddressLeaseTime(3600));
        if ty == MessageType::Nak {
            o.insert(DhcpOption::Message("wrong network".into()));
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn discover_carries_osie_identity_and_broadcast_flag() {
        let b = discover(MAC, 0xdead_beef, 3);
        assert!(b.len() >= 300);
        let m = Message::from_bytes(&b).unwrap();
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.xid(), 0xdead_beef);
        assert!(m.flags().broadcast());
        assert_eq!(m.secs(), 3);
        assert_eq!(&m.chaddr()[..6], &MAC.octets());
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            m.opts().get(OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"osie-installer".to_vec()))
        );
        assert_eq!(
            m.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        assert!(m.opts().get(OptionCode::RequestedIpAddress).is_none());
    }

    #[test]
    fn offer_then_request_then_ack() {
        let Some(Reply::Offer(offer)) = parse_reply(&server_reply(MessageType::Offer, 7, MAC), MAC, 7) else {
            panic!("offer not recognised")
        };
        assert_eq!(offer.address, Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(offer.prefix, 24);
        assert_eq!(offer.routers, [Ipv4Addr::new(192, 0, 2, 1)]);
        assert_eq!(offer.dns.len(), 2);
        assert_eq!(offer.domain.as_deref(), Some("osie.test"));
        assert_eq!(offer.lease_secs, Some(3600));
        let req = Message::from_bytes(&request(MAC, 7, 1, &offer)).unwrap();
        assert_eq!(req.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            req.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(192, 0, 2, 100)))
        );
        assert_eq!(
            req.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert!(req.ciaddr().is_unspecified(), "ciaddr stays 0 while SELECTING");
        assert!(
            matches!(parse_reply(&server_reply(MessageType::Ack, 7, MAC), MAC, 7), Some(Reply::Ack(l)) if l == offer)
        );
        assert_eq!(
            parse_reply(&server_reply(MessageType::Nak, 7, MAC), MAC, 7),
            Some(Reply::Nak("wrong network".into()))
        );
    }

    #[test]
    fn renew_request_is_unicast_style_with_ciaddr() {
        let Some(Reply::Offer(lease)) = parse_reply(&server_reply(MessageType::Offer, 7, MAC), MAC, 7) else {
            panic!("offer not recognised")
        };
        let m = Message::from_bytes(&renew(MAC, 9, &lease)).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(m.ciaddr(), lease.address);
        assert!(!m.flags().broadcast());
        assert!(m.opts().get(OptionCode::RequestedIpAddress).is_none());
        assert!(m.opts().get(OptionCode::ServerIdentifier).is_none());
    }

    #[test]
    fn foreign_replies_are_ignored() {
        let other = MacAddr([2, 0, 0, 0, 0, 1]);
        assert_eq!(parse_reply(&server_reply(MessageType::Offer, 8, MAC), MAC, 7), None, "other xid");
        assert_eq!(parse_reply(&server_reply(MessageType::Offer, 7, other), MAC, 7), None, "other client");
        assert_eq!(parse_reply(&discover(MAC, 7, 0), MAC, 7), None, "a request, not a reply");
        assert_eq!(parse_reply(b"garbage", MAC, 7), None);
    }

    #[test]
    fn netmasks() {
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(default_prefix(Ipv4Addr::new(192, 0, 2, 9)), 24);
    }
}

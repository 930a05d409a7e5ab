//! DHCP messages as a PXE client sends them, built and read byte by byte (RFC 2131/2132,
//! RFC 4578): a load generator must cost the machine far less per packet than the server it
//! measures, so there is no general-purpose codec here, only the two messages a booting
//! machine sends and the fields it needs from the answers.

use std::net::Ipv4Addr;

/// BOOTP fixed header: op … file, then the magic cookie.
const HEADER: usize = 236;
const COOKIE: [u8; 4] = [99, 130, 83, 99];
const BROADCAST_FLAG: u16 = 0x8000;

/// Message types (option 53).
pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

/// Who the client is, as its firmware says it on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub mac: [u8; 6],
    /// Option 93 (client system architecture): 0 BIOS, 7 UEFI x64…
    pub arch: u16,
    /// Option 77 `iPXE`, as iPXE sends it once loaded (the second DHCP of a boot).
    pub ipxe: bool,
}

/// How the request travels: straight from the client (broadcast) or through a relay agent
/// whose address is `giaddr` (the server answers it unicast on port 67).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Broadcast,
    Relay { giaddr: Ipv4Addr },
}

/// Fields the client needs from an OFFER or ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub xid: u32,
    pub mac: [u8; 6],
    pub msg_type: u8,
    pub yiaddr: Ipv4Addr,
    /// `siaddr`: the next server (TFTP).
    pub siaddr: Ipv4Addr,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 67, else the BOOTP `file` field.
    pub boot_file: Option<String>,
}

/// A DISCOVER (`requested = None`) or a REQUEST in SELECTING state (`requested` = the
/// offered address and the offering server's identifier), written into `buf`; returns the
/// length. The options are those of a PXE ROM: 53, 57, 55, 93, 94, 97, 60 (and 77 for iPXE).
pub fn client_message(
    buf: &mut Vec<u8>,
    id: &Identity,
    xid: u32,
    path: Path,
    requested: Option<(Ipv4Addr, Ipv4Addr)>,
) -> usize {
    buf.clear();
    buf.resize(HEADER, 0);
    buf[0] = 1; // BOOTREQUEST
    buf[1] = 1; // Ethernet
    buf[2] = 6;
    buf[4..8].copy_from_slice(&xid.to_be_bytes());
    match path {
        // Ask for a broadcast answer: the client has no address yet, and servers that
        // unicast to yiaddr would need an ARP entry for a MAC that is not on the wire.
        Path::Broadcast => buf[10..12].copy_from_slice(&BROADCAST_FLAG.to_be_bytes()),
        Path::Relay { giaddr } => {
            buf[3] = 1; // hops
            buf[24..28].copy_from_slice(&giaddr.octets());
        }
    }
    buf[28..34].copy_from_slice(&id.mac);
    buf.extend_from_slice(&COOKIE);
    let kind = if requested.is_some() { REQUEST } else { DISCOVER };
    option(buf, 53, &[kind]);
    option(buf, 57, &1500u16.to_be_bytes());
    if let Some((addr, server)) = requested {
        option(buf, 50, &addr.octets());
        option(buf, 54, &server.octets());
    }
    option(buf, 55, &[1, 3, 6, 12, 15, 28, 43, 60, 66, 67, 97, 128]);
    option(buf, 93, &id.arch.to_be_bytes());
    option(buf, 94, &[1, 2, 1]); // UNDI 2.1
    let mut uuid = [0u8; 17];
    uuid[11..17].copy_from_slice(&id.mac);
    option(buf, 97, &uuid);
    let vendor = format!("PXEClient:Arch:{:05}:UNDI:002001", id.arch);
    option(buf, 60, vendor.as_bytes());
    if id.ipxe {
        option(buf, 77, b"iPXE");
    }
    buf.push(255);
    // RFC 1542: at least 300 bytes on the wire.
    if buf.len() < 300 {
        buf.resize(300, 0);
    }
    buf.len()
}

fn option(buf: &mut Vec<u8>, code: u8, data: &[u8]) {
    buf.push(code);
    buf.push(data.len() as u8);
    buf.extend_from_slice(data);
}

/// The transaction id of a packet, if it is long enough to have one.
pub fn xid(pkt: &[u8]) -> Option<u32> {
    pkt.get(4..8).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Read a server's answer (BOOTREPLY with option 53). `None` for anything else: requests
/// of other clients seen on the segment, truncated or option-less packets.
pub fn parse_reply(pkt: &[u8]) -> Option<Reply> {
    if pkt.len() < HEADER + 4 || pkt[0] != 2 || pkt[HEADER..HEADER + 4] != COOKIE {
        return None;
    }
    let ip = |at: usize| Ipv4Addr::new(pkt[at], pkt[at + 1], pkt[at + 2], pkt[at + 3]);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&pkt[28..34]);
    let mut msg_type = None;
    let mut server_id = None;
    let mut boot_file = None;
    let mut overload = 0u8;
    let mut i = HEADER + 4;
    while i < pkt.len() {
        let code = pkt[i];
        if code == 0 {
            i += 1;
            continue;
        }
        if code == 255 {
            break;
        }
        let len = usize::from(*pkt.get(i + 1)?);
        let data = pkt.get(i + 2..i + 2 + len)?;
        match code {
            53 if len == 1 => msg_type = Some(data[0]),
            54 if len == 4 => server_id = Some(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            67 => boot_file = Some(c_string(data)),
            52 if len == 1 => overload = data[0],
            _ => {}
        }
        i += 2 + len;
    }
    // The `file` field holds the boot file unless option 52 says it carries options.
    if boot_file.is_none() && overload & 1 == 0 {
        boot_file = Some(c_string(&pkt[108..236])).filter(|s| !s.is_empty());
    }
    Some(Reply {
        xid: xid(pkt)?,
        mac,
        msg_type: msg_type?,
        yiaddr: ip(16),
        siaddr: ip(20),
        server_id,
        boot_file: boot_file.filter(|s| !s.is_empty()),
    })
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The `n`th MAC of a load run: locally administered (`02:…`), distinct for every `n`
/// below 2³², the same on every run so reservations written once match.
pub fn nth_mac(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x02, 0x0b, b[0], b[1], b[2], b[3]]
}

/// `aa:bb:cc:dd:ee:ff`, as configuration files write it.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{self, Decodable, Decoder, Encodable, Encoder};

    fn id() -> Identity {
        Identity { mac: nth_mac(7), arch: 7, ipxe: true }
    }

    #[test]
    fn discover_decodes_as_a_pxe_discover() {
        let mut buf = Vec::new();
        let n = client_message(&mut buf, &id(), 0xdead_beef, Path::Broadcast, None);
        assert_eq!(n, buf.len());
        assert!(n >= 300);
        let m = v4::Message::decode(&mut Decoder::new(&buf)).unwrap();
        assert_eq!(m.opcode(), v4::Opcode::BootRequest);
        assert_eq!(m.xid(), 0xdead_beef);
        assert_eq!(&m.chaddr()[..6], &nth_mac(7));
        assert!(m.flags().broadcast());
        assert_eq!(m.giaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.opts().msg_type(), Some(v4::MessageType::Discover));
        assert_eq!(m.opts().get(v4::OptionCode::ClientSystemArchitecture).map(|o| o.to_vec().unwrap()), {
            let o = v4::DhcpOption::ClientSystemArchitecture(v4::Architecture::from(7u16));
            Some(o.to_vec().unwrap())
        });
        let vendor = m.opts().get(v4::OptionCode::ClassIdentifier).unwrap();
        assert_eq!(vendor, &v4::DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007:UNDI:002001".to_vec()));
        assert!(m.opts().get(v4::OptionCode::UserClass).is_some());
        assert!(m.opts().get(v4::OptionCode::RequestedIpAddress).is_none());
    }

    #[test]
    fn relayed_request_names_the_offer_and_the_server() {
        let mut buf = Vec::new();
        let giaddr = Ipv4Addr::new(198, 51, 100, 2);
        let offered = (Ipv4Addr::new(198, 51, 100, 20), Ipv4Addr::new(192, 0, 2, 1));
        client_message(&mut buf, &id(), 1, Path::Relay { giaddr }, Some(offered));
        let m = v4::Message::decode(&mut Decoder::new(&buf)).unwrap();
        assert_eq!(m.giaddr(), giaddr);
        assert_eq!(m.hops(), 1);
        assert!(!m.flags().broadcast());
        assert_eq!(m.opts().msg_type(), Some(v4::MessageType::Request));
        assert_eq!(
            m.opts().get(v4::OptionCode::RequestedIpAddress),
            Some(&v4::DhcpOption::RequestedIpAddress(offered.0))
        );
        assert_eq!(m.opts().get(v4::OptionCode::ServerIdentifier), Some(&v4::DhcpOption::ServerIdentifier(offered.1)));
    }

    fn server_reply(kind: v4::MessageType, file_in_header: bool) -> Vec<u8> {
        let mut m = v4::Message::default();
        m.set_opcode(v4::Opcode::BootReply)
            .set_xid(42)
            .set_yiaddr(Ipv4Addr::new(192, 0, 2, 10))
            .set_siaddr(Ipv4Addr::new(192, 0, 2, 1))
            .set_chaddr(&nth_mac(3));
        m.opts_mut().insert(v4::DhcpOption::MessageType(kind));
        m.opts_mut().insert(v4::DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 1)));
        if file_in_header {
            m.set_fname_str("undionly.kpxe");
        } else {
            m.opts_mut().insert(v4::DhcpOption::BootfileName(b"ipxe.efi\0".to_vec()));
        }
        let mut out = Vec::new();
        m.encode(&mut Encoder::new(&mut out)).unwrap();
        out
    }

    #[test]
    fn replies_are_read_from_options_or_the_header() {
        let r = parse_reply(&server_reply(v4::MessageType::Offer, false)).unwrap();
        assert_eq!(r.xid, 42);
        assert_eq!(r.mac, nth_mac(3));
        assert_eq!(r.msg_type, OFFER);
        assert_eq!(r.yiaddr, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(r.siaddr, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(r.server_id, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(r.boot_file.as_deref(), Some("ipxe.efi"));
        let r = parse_reply(&server_reply(v4::MessageType::Ack, true)).unwrap();
        assert_eq!(r.msg_type, ACK);
        assert_eq!(r.boot_file.as_deref(), Some("undionly.kpxe"));
    }

    #[test]
    fn requests_and_garbage_are_not_replies() {
        let mut buf = Vec::new();
        client_message(&mut buf, &id(), 1, Path::Broadcast, None);
        assert_eq!(parse_reply(&buf), None);
        let good = server_reply(v4::MessageType::Ack, true);
        assert_eq!(parse_reply(&good[..200]), None);
        // An option running past the end of the packet.
        let mut cut = good.clone();
        let end = cut.iter().rposition(|&b| b == 255).unwrap();
        cut.truncate(end);
        cut.extend_from_slice(&[67, 40, b'x']);
        assert_eq!(parse_reply(&cut), None);
    }

    #[test]
    fn macs_are_distinct_and_stable() {
        assert_eq!(mac_string(&nth_mac(0x0102_0304)), "02:0b:01:02:03:04");
        let set: std::collections::HashSet<_> = (0..10_000).map(nth_mac).collect();
        assert_eq!(set.len(), 10_000);
    }
}

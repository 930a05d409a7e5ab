//! A small DHCP client speaking for many MACs over one socket, for tests that need many
//! clients quickly (one udhcpc process per MAC would dominate the time). Must run inside the
//! client's namespace (`Netns::spawn`); replies are told apart by xid.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use osie_api::MacAddr;

pub struct Client {
    sock: UdpSocket,
    timeout: Duration,
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Offer { ip: Ipv4Addr, server: Ipv4Addr, boot_file: Option<String> },
    Ack { ip: Ipv4Addr, boot_file: Option<String> },
    Nak,
}

impl Client {
    /// UDP 68 on `iface`, broadcasting to 67.
    pub fn new(iface: &str, timeout: Duration) -> anyhow::Result<Client> {
        let sock = bootsvc::udp::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68), Some(iface), "test DHCP client")?;
        sock.set_nonblocking(false)?;
        Ok(Client { sock, timeout })
    }

    fn send(&self, mac: MacAddr, xid: u32, t: MessageType, opts: Vec<DhcpOption>) -> anyhow::Result<()> {
        let mut m = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac.octets(),
        );
        m.set_opcode(Opcode::BootRequest).set_flags(dhcproto::v4::Flags::default().set_broadcast());
        m.opts_mut().insert(DhcpOption::MessageType(t));
        // iPXE's user class: the answer carries the script URL.
        m.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        for o in opts {
            m.opts_mut().insert(o);
        }
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf))?;
        self.sock.send_to(&buf, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))?;
        Ok(())
    }

    /// The reply to `xid`, or `None` after the timeout.
    fn wait(&self, xid: u32) -> Option<Answer> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 1500];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).ok()?;
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else { return None };
            let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else { continue };
            if m.xid() != xid || m.opcode() != Opcode::BootReply {
                continue;
            }
            let boot_file = match m.opts().get(OptionCode::BootfileName) {
                Some(DhcpOption::BootfileName(b)) => {
                    Some(String::from_utf8_lossy(b).trim_end_matches('\0').to_string())
                }
                _ => None,
            };
            let server = match m.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) => *s,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            return match m.opts().msg_type() {
                Some(MessageType::Offer) => Some(Answer::Offer { ip: m.yiaddr(), server, boot_file }),
                Some(MessageType::Ack) => Some(Answer::Ack { ip: m.yiaddr(), boot_file }),
                Some(MessageType::Nak) => Some(Answer::Nak),
                _ => continue,
            };
        }
        None
    }

    pub fn discover(&self, mac: MacAddr, xid: u32) -> anyhow::Result<Option<Answer>> {
        self.send(mac, xid, MessageType::Discover, vec![])?;
        Ok(self.wait(xid))
    }

    pub fn request(&self, mac: MacAddr, xid: u32, ip: Ipv4Addr, server: Ipv4Addr) -> anyhow::Result<Option<Answer>> {
        self.send(
            mac,
            xid,
            MessageType::Request,
            vec![DhcpOption::RequestedIpAddress(ip), DhcpOption::ServerIdentifier(server)],
        )?;
        Ok(self.wait(xid))
    }

    /// DISCOVER, OFFER, REQUEST, ACK: the leased address, or what went wrong.
    pub fn dora(&self, mac: MacAddr, xid: u32) -> anyhow::Result<Option<Answer>> {
        let Some(Answer::Offer { ip, server, .. }) = self.discover(mac, xid)? else { return Ok(None) };
        self.request(mac, xid.wrapping_add(1), ip, server)
    }
}

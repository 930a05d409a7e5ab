//! DHCP: parse, classify and answer a sequence of packets, as the socket loop would, with one
//! lease store across them (so DISCOVER → REQUEST → RELEASE paths are reachable).
//!
//! Input: byte 0 picks the mode (bit 0: proxy), byte 1 the port of each packet in turn
//! (bit i set: packet i came in on 4011); then packets, each `len_hi len_lo bytes…`.
//!
//! Properties, beyond "never panics":
//! - every reply encodes, is at least 300 bytes, is a BOOTREPLY with the request's xid and
//!   client MAC, and its options walk cleanly to END;
//! - the message type is OFFER, ACK or NAK; option 54 is the server;
//! - a boot file appears in option 67 NUL-terminated, and in `file` when it fits;
//! - option 82 from a relayed request comes back byte for byte; relayed requests are
//!   answered to the relay, port-4011 requests to their sender; no request whose giaddr no
//!   relay can have is answered, and no reply goes to loopback, multicast, link-local or
//!   the server itself;
//! - proxy replies hand out no address; fixed machines get exactly their address; a pool
//!   ACK leaves the lease store saying that address belongs to that MAC; no MAC ever holds
//!   two addresses.
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::{config, FuzzBackend};
use bootsvc::config::DhcpMode;
use bootsvc::dhcp::reply::{self, Ctx, Outcome, Settings, Via};
use bootsvc::dhcp::request::{self, code, Options, HEADER_LEN};
use bootsvc::storage::{LeaseStore, Leases};

pub fn run(data: &[u8]) {
    let [mode, ports, rest @ ..] = data else { return };
    let mut cfg = config();
    if mode & 1 == 1 {
        cfg.dhcp.mode = DhcpMode::Proxy;
        cfg.dhcp.pool = None;
    }
    let settings = Settings::from_config(&cfg);
    let leases = LeaseStore::in_memory(settings.pool.as_ref()).expect("the fuzz pool is valid");
    let backend = FuzzBackend;
    let mut rest = rest;
    let mut i = 0;
    let base = bootsvc::storage::leases::now();
    while let [hi, lo, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (pkt, tail) = tail.split_at(len);
        rest = tail;
        let via = if (ports >> (i % 8)) & 1 == 1 {
            Via::Pxe(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 50), 4011))
        } else {
            Via::Dhcp
        };
        i += 1;
        // Time moves on by 20 s per packet: offers (held 60 s) expire along the way. It starts
        // at the real clock, which the HTTP side's lease lookup uses.
        let now = base + 20 * i as u64;
        one(pkt, via, &settings, &backend, &leases, now);
    }
}

fn one(pkt: &[u8], via: Via, settings: &Settings, backend: &FuzzBackend, leases: &LeaseStore, now: u64) {
    let Ok(req) = request::parse(pkt) else { return };
    let ctx = Ctx { settings, backend, leases, now };
    let d = reply::respond(&req, via, &ctx);
    assert_eq!(d.mac, req.mac);
    if let Outcome::Reply(r) = &d.outcome {
        let buf = r.encode().unwrap_or_else(|e| panic!("{} reply does not encode: {e}", r.kind));
        assert!(buf.len() >= reply::MIN_REPLY_LEN, "reply of {} bytes", buf.len());
        assert_eq!(buf[0], 2, "not a BOOTREPLY");
        assert_eq!(buf[4..8], pkt[4..8], "xid changed");
        assert_eq!(buf[28..34], req.mac.octets(), "chaddr changed");
        assert_eq!(buf[236..240], [99, 130, 83, 99], "magic cookie");
        let opts = Options::parse(&buf[HEADER_LEN..]).unwrap_or_else(|e| panic!("reply options do not parse: {e}"));
        let t = opts.get(code::MESSAGE_TYPE).expect("reply without a message type");
        assert!(matches!(t, [2] | [5] | [6]), "reply message type {t:?}");
        assert_eq!(opts.ipv4(code::SERVER_ID).ok().flatten(), Some(settings.server_ip));
        let yiaddr = Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]);
        if let Some(boot) = &d.boot_file {
            let mut want = boot.as_str().as_bytes().to_vec();
            want.push(0);
            if t != [6] {
                assert_eq!(opts.get(code::BOOTFILE), Some(&want[..]), "option 67");
                let file = &buf[108..236];
                if want.len() <= 128 {
                    assert_eq!(&file[..want.len()], &want[..], "file field");
                }
            }
        }
        if let Some(ra) = req.options.get(code::RELAY_AGENT) {
            assert_eq!(opts.get(code::RELAY_AGENT), Some(ra), "option 82 not echoed");
        }
        assert_eq!(req.relay_problem(settings.server_ip), None, "answered despite its giaddr");
        let to = *r.dest.ip();
        assert!(
            !(to.is_loopback() || to.is_multicast() || to.is_link_local() || to == settings.server_ip),
            "reply sent to {to}"
        );
        // Relayed requests are answered to the relay; port 4011 is unicast by the client
        // itself, whatever giaddr says, and answered to where it came from.
        match via {
            Via::Dhcp if !req.giaddr().is_unspecified() => {
                assert_eq!(r.dest, SocketAddrV4::new(req.giaddr(), reply::SERVER_PORT))
            }
            Via::Pxe(src) => assert_eq!(r.dest.port(), src.port(), "a 4011 answer goes back to its sender"),
            Via::Dhcp => {}
        }
        match (settings.mode, via, r.kind) {
            (DhcpMode::Proxy, _, _) | (_, Via::Pxe(_), _) => {
                assert_eq!(yiaddr, Ipv4Addr::UNSPECIFIED, "{} hands out an address", r.kind)
            }
            (_, _, "offer" | "ack") => match FuzzBackend::fixed_ip(&req.mac) {
                Some(ip) => assert_eq!(yiaddr, ip, "fixed machine got another address"),
                None => {
                    let pool = settings.pool.as_ref().expect("pool");
                    assert!((u32::from(pool.start)..=u32::from(pool.end)).contains(&u32::from(yiaddr)));
                    if r.kind == "ack" {
                        assert_eq!(leases.mac_for_ip(yiaddr), Some(req.mac), "ACKed lease not in the store");
                    }
                }
            },
            _ => {}
        }
    }
    // No MAC holds two pool addresses.
    if let Some(pool) = &settings.pool {
        let mut holders = std::collections::HashMap::new();
        for ip in u32::from(pool.start)..=u32::from(pool.end) {
            if let Some(mac) = leases.mac_for_ip(Ipv4Addr::from(ip)) {
                if let Some(other) = holders.insert(mac, ip) {
                    panic!("{mac} holds {} and {}", Ipv4Addr::from(other), Ipv4Addr::from(ip));
                }
            }
        }
    }
}

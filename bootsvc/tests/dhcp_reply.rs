//! Reservation-mode protocol flows without sockets: pool leases through OFFER/ACK/NAK,
//! RENEW, RELEASE, DECLINE, INFORM, requests meant for another server, and a lease store
//! that cannot write.

mod net;

use std::net::{Ipv4Addr, SocketAddrV4};

use bootsvc::config::{DhcpMode, Pool};
use bootsvc::dhcp::reply::{self, Ctx, Decision, Outcome, Settings, Via};
use bootsvc::dhcp::request::{self, code, Options, HEADER_LEN};
use bootsvc::storage::{LeasePool, LeaseStore};
use net::{machine, MapBackend, PUBLIC_URL};

const A: &str = "02:00:00:00:aa:01";
const B: &str = "02:00:00:00:bb:01";
const ME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, last)
}

/// A client packet: `mac`, message type `t`, `ciaddr`, options.
fn pkt(mac: &str, t: u8, ciaddr: Ipv4Addr, opts: &[(u8, &[u8])]) -> Vec<u8> {
    let m: osie_api::MacAddr = mac.parse().unwrap();
    let mut b = vec![0u8; HEADER_LEN];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&0xfeed_f00du32.to_be_bytes());
    b[12..16].copy_from_slice(&ciaddr.octets());
    b[28..34].copy_from_slice(&m.octets());
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[code::MESSAGE_TYPE, 1, t]);
    for (c, v) in opts {
        b.push(*c);
        b.push(v.len() as u8);
        b.extend_from_slice(v);
    }
    b.push(255);
    b
}

const DISCOVER: u8 = 1;
const REQUEST: u8 = 3;
const DECLINE: u8 = 4;
const RELEASE: u8 = 7;
const INFORM: u8 = 8;

fn pool() -> Pool {
    Pool { start: ip(100), end: ip(101), prefix: 24, gateway: Some(ip(1)), dns: vec![ip(53)] }
}

struct World {
    backend: MapBackend,
    leases: LeaseStore,
    settings: Settings,
}

impl World {
    fn new(leases: LeaseStore) -> World {
        World {
            backend: MapBackend::new(vec![
                machine("a", A, None, true),
                machine("b", B, None, true),
                machine("fixed", "02:00:00:00:cc:01", Some("192.0.2.100/24"), true),
            ]),
            leases,
            settings: Settings {
                server_ip: ME,
                mode: DhcpMode::Reservation,
                lease_secs: 600,
                public_url: PUBLIC_URL.into(),
                pool: Some(pool()),
                uefi_chain: Default::default(),
            },
        }
    }

    fn send(&self, bytes: &[u8], now: u64) -> Decision {
        let req = request::parse(bytes).unwrap();
        let ctx = Ctx { settings: &self.settings, backend: &self.backend, leases: &self.leases, now };
        reply::respond(&req, Via::Dhcp, &ctx)
    }
}

/// (kind, yiaddr, dest, options) of a reply.
fn sent(d: &Decision) -> (&'static str, Ipv4Addr, SocketAddrV4, Options) {
    let Outcome::Reply(r) = &d.outcome else { panic!("no reply: {d:?}") };
    let bytes = r.encode().unwrap();
    (r.kind, r.msg.yiaddr(), r.dest, Options::parse(&bytes[HEADER_LEN..]).unwrap())
}

fn ignored(d: &Decision) -> &'static str {
    match &d.outcome {
        Outcome::Ignore { reason, .. } => reason,
        o => panic!("expected no reply, got {o:?}"),
    }
}

#[test]
fn pool_machines_get_an_address_that_skips_fixed_ones() {
    let w = World::new(LeaseStore::in_memory(Some(&pool())).unwrap());
    // .100 is another machine's fixed address: the pool starts at .101 for A.
    let (kind, offered, _, o) = sent(&w.send(&pkt(A, DISCOVER, Ipv4Addr::UNSPECIFIED, &[]), 10));
    assert_eq!((kind, offered), ("offer", ip(101)));
    assert_eq!(o.get(code::ROUTER), Some(&[192, 0, 2, 1][..]));
    assert_eq!(o.get(code::DNS), Some(&[192, 0, 2, 53][..]));
    assert_eq!(o.get(code::HOSTNAME), Some(&b"a"[..]));
    let req = pkt(
        A,
        REQUEST,
        Ipv4Addr::UNSPECIFIED,
        &[(code::REQUESTED_IP, &[192, 0, 2, 101]), (code::SERVER_ID, &ME.octets())],
    );
    let (kind, got, _, _) = sent(&w.send(&req, 11));
    assert_eq!((kind, got), ("ack", ip(101)));
    assert_eq!(w.leases.current(&A.parse().unwrap(), 12).map(|l| l.ip), Some(ip(101)));

    // B wants the same address: NAK. Nothing else is left for it.
    let req = pkt(B, REQUEST, Ipv4Addr::UNSPECIFIED, &[(code::REQUESTED_IP, &[192, 0, 2, 101])]);
    assert_eq!(sent(&w.send(&req, 12)).0, "nak");
    assert_eq!(ignored(&w.send(&pkt(B, DISCOVER, Ipv4Addr::UNSPECIFIED, &[]), 13)), "dhcp-pool-exhausted");

    // RENEWING: ciaddr, no option 50 or 54; answered unicast to the client.
    let (kind, got, dest, _) = sent(&w.send(&pkt(A, REQUEST, ip(101), &[]), 300));
    assert_eq!((kind, got, dest), ("ack", ip(101), SocketAddrV4::new(ip(101), 68)));
}

#[test]
fn release_decline_and_other_servers() {
    let w = World::new(LeaseStore::in_memory(Some(&pool())).unwrap());
    let a: osie_api::MacAddr = A.parse().unwrap();
    assert_eq!(sent(&w.send(&pkt(A, DISCOVER, Ipv4Addr::UNSPECIFIED, &[]), 0)).1, ip(101));
    // A picked another server's offer: the held address is free again for B.
    let other = pkt(
        A,
        REQUEST,
        Ipv4Addr::UNSPECIFIED,
        &[(code::REQUESTED_IP, &[192, 0, 2, 77]), (code::SERVER_ID, &[192, 0, 2, 9])],
    );
    assert_eq!(ignored(&w.send(&other, 1)), "dhcp-other-server");
    assert_eq!(sent(&w.send(&pkt(B, DISCOVER, Ipv4Addr::UNSPECIFIED, &[]), 2)).1, ip(101));

    // A asks for .101 after all (INIT-REBOOT, no server id): held for B, so NAK.
    let req = pkt(A, REQUEST, Ipv4Addr::UNSPECIFIED, &[(code::REQUESTED_IP, &[192, 0, 2, 101])]);
    assert_eq!(sent(&w.send(&req, 3)).0, "nak");
    // Once B's offer lapses (60 s), A gets it.
    assert_eq!(sent(&w.send(&req, 70)).0, "ack");

    // RELEASE ends the lease now.
    assert!(matches!(w.send(&pkt(A, RELEASE, ip(101), &[]), 80).outcome, Outcome::Done(_)));
    assert_eq!(w.leases.current(&a, 81), None);
    // DECLINE: the address is held back; the next offer is something else or nothing.
    let decline = pkt(A, DECLINE, Ipv4Addr::UNSPECIFIED, &[(code::REQUESTED_IP, &[192, 0, 2, 101])]);
    assert!(matches!(w.send(&decline, 82).outcome, Outcome::Done(_)));
    assert_eq!(ignored(&w.send(&pkt(A, DISCOVER, Ipv4Addr::UNSPECIFIED, &[]), 83)), "dhcp-pool-exhausted");
}

#[test]
fn inform_gets_configuration_without_an_address() {
    let w = World::new(LeaseStore::in_memory(None).unwrap());
    let d = w.send(&pkt("02:00:00:00:cc:01", INFORM, ip(100), &[]), 0);
    let (kind, yiaddr, dest, o) = sent(&d);
    assert_eq!((kind, yiaddr, dest), ("inform-ack", Ipv4Addr::UNSPECIFIED, SocketAddrV4::new(ip(100), 68)));
    assert_eq!(o.get(code::LEASE_TIME), None, "no lease for INFORM (RFC 2131 3.4)");
    assert_eq!(o.get(code::SUBNET_MASK), Some(&[255, 255, 255, 0][..]));
    assert_eq!(o.get(code::BOOTFILE), None, "an OS's DHCP client gets no boot file");
    // From PXE firmware (vendor class PXEClient), the boot file for its class.
    let pxe = pkt("02:00:00:00:cc:01", INFORM, ip(100), &[(code::CLASS_ID, b"PXEClient")]);
    let (_, _, _, o) = sent(&w.send(&pxe, 1));
    assert_eq!(o.get(code::BOOTFILE), Some(&b"undionly.kpxe\0"[..]));
}

#[test]
fn machine_without_address_and_without_pool_gets_nothing() {
    let mut w = World::new(LeaseStore::in_memory(None).unwrap());
    w.settings.pool = None;
    assert_eq!(ignored(&w.send(&pkt(A, DISCOVER, Ipv4Addr::UNSPECIFIED, &[]), 0)), "dhcp-no-address");
}

#[test]
fn no_ack_without_a_durable_lease() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let w = World::new(LeaseStore::open(&state, Some(&pool())).unwrap());
    assert_eq!(sent(&w.send(&pkt(A, DISCOVER, Ipv4Addr::UNSPECIFIED, &[]), 0)).1, ip(101));
    // The state directory disappears (disk trouble): the lease cannot be written.
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::write(&state, b"not a directory").unwrap();
    let req = pkt(
        A,
        REQUEST,
        Ipv4Addr::UNSPECIFIED,
        &[(code::REQUESTED_IP, &[192, 0, 2, 101]), (code::SERVER_ID, &ME.octets())],
    );
    let d = w.send(&req, 1);
    assert_eq!(ignored(&d), "dhcp-lease-store");
    let Outcome::Ignore { why, .. } = &d.outcome else { unreachable!() };
    assert!(why.contains("dhcp-leases.json"), "{why}");
    assert_eq!(w.leases.current(&A.parse().unwrap(), 2), None, "not granted in memory either");
}

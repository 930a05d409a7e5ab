//! DHCP clients for tests and load.
//!
//! - [`packet`]: the messages a PXE client sends, built byte by byte, and the fields it reads
//!   from the server's answers.
//! - [`client`]: [`DhcpClient`], many machines' exchanges at once over one socket, broadcast
//!   (as machines on the segment) or as a relay agent. The benchmarks' load generator
//!   (`osie_bench::dhcp::load`) and bootsvc's load and crash tests drive servers with it.
//! - [`real`]: the real clients an OS runs (busybox udhcpc, ISC dhclient), in a namespace.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use osie_testkit::dhcp::{ClientConfig, DhcpClient, Identity, packet};
//! let client = DhcpClient::bind(ClientConfig::broadcast("vc0"))?;
//! let lease = client.exchange(&Identity { mac: packet::nth_mac(0), arch: 0, ipxe: false }).await?;
//! println!("{} in {:?}", lease.address, lease.latency);
//! # Ok(()) }
//! ```

pub mod client;
pub mod packet;
pub mod real;

pub use client::{ClientConfig, DhcpClient, ExchangeError, Lease};
pub use packet::Identity;
pub use real::{dhclient, dhclient6, env_value, udhcpc};

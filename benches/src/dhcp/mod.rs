//! The DHCP load generator, a library so other tests (the "machines boot at once" load
//! test) drive servers the same way the benchmark does.
//!
//! - [`packet`]: the client's messages (PXE options), reading the server's answers.
//! - [`client`]: [`DhcpClient`], many concurrent exchanges over one socket, broadcast (as
//!   machines on the segment) or as a relay agent.
//! - [`load`]: a window of exchanges in flight for a time; exchanges/s and latency.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use osie_bench::dhcp::{client::{ClientConfig, DhcpClient}, load, packet};
//! let client = std::sync::Arc::new(DhcpClient::bind(ClientConfig::broadcast("vc0"))?);
//! let clients = (0..250).map(|n| packet::Identity { mac: packet::nth_mac(n), arch: 0, ipxe: false }).collect();
//! let spec = load::LoadSpec {
//!     clients, window: 64, warmup: std::time::Duration::from_secs(1),
//!     duration: std::time::Duration::from_secs(5), max_exchanges: None, expect: vec![],
//! };
//! let report = load::run(client, spec).await;
//! println!("{:.0} exchanges/s, p99 {:.0} µs", report.exchanges_per_sec, report.latency.p99_us);
//! # Ok(()) }
//! ```

pub mod client;
pub mod load;
pub mod packet;

pub use client::{ClientConfig, DhcpClient, Lease};
pub use load::{LoadReport, LoadSpec};
pub use packet::Identity;

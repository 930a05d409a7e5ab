//! The DHCP load generator: a window of exchanges in flight for a time; exchanges/s and
//! latency. The client it drives is the test kit's ([`osie_testkit::dhcp`]), the one
//! bootsvc's own load test uses.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use osie_bench::dhcp::load;
//! use osie_testkit::dhcp::{packet, ClientConfig, DhcpClient, Identity};
//! let client = std::sync::Arc::new(DhcpClient::bind(ClientConfig::broadcast("vc0"))?);
//! let clients = (0..250).map(|n| Identity { mac: packet::nth_mac(n), arch: 0, ipxe: false }).collect();
//! let spec = load::LoadSpec {
//!     clients, window: 64, warmup: std::time::Duration::from_secs(1),
//!     duration: std::time::Duration::from_secs(5), max_exchanges: None, expect: vec![],
//! };
//! let report = load::run(client, spec).await;
//! println!("{:.0} exchanges/s, p99 {:.0} µs", report.exchanges_per_sec, report.latency.p99_us);
//! # Ok(()) }
//! ```

pub mod load;

pub use load::{LoadReport, LoadSpec};

//! DHCP: classification, reply building (pure), and the socket loops. The pool's leases
//! are the storage's (`crate::storage::LeasePool`).
//!
//! - [`request`]: parse and validate a received packet (malformed and truncated ones are
//!   refused with a reason that goes into `osie_dropped_packets_total`).
//! - [`classify`]: firmware class and architecture → boot file (the table in
//!   `bootsvc/docs/dhcp.md`, "Who gets what").
//! - [`reply`]: request in, reply out, for reservation and proxy mode, and why.
//! - [`seen`]: proxy mode's record of inventory machines' own DHCP requests (identity).
//! - [`server`]: sockets on UDP 67 and 4011, bound to `listen.interface`.
//!
//! The operator's view (classification table, proxy mode, relays, leases) is in
//! `bootsvc/docs/dhcp.md`.
//!
//! Interface used by the service wiring (`serve`): bind first (ports below 1024, before
//! privileges are dropped), then run.

pub mod classify;
pub mod reply;
pub mod request;
pub mod seen;
pub mod server;

pub use server::DhcpServer;

//! DHCPv6 (RFC 8415) for IPv6 netboot: inventory machines get their record's `ip6` address
//! and their boot file URL (option 59), UEFI PXE and HTTP boot over IPv6 and iPXE alike.
//!
//! - [`packet`]: parse and check a client message, write a reply (pure).
//! - [`reply`]: message in, decision out: who is asking (DUID and link-local source), what
//!   they get, and why (pure).
//! - [`server`]: the socket on UDP 547 on `listen.interface`, joined to ff02::1:2.
//!
//! The operator's view is in `bootsvc/docs/dhcp.md`, "IPv6"; what a neighbour can spoof in
//! `bootsvc/docs/security.md`, "DHCPv6". Addresses are the records' own (`ip6`): there is no
//! IPv6 pool, so there are no DHCPv6 leases to store.

pub mod packet;
pub mod reply;
pub mod server;

pub use server::Dhcp6Server;

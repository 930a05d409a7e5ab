//! bootsvc: osie's netboot service.
//!
//! One module per concern: [`config`] (bootsvc.toml), [`inventory`] (machine records),
//! [`dhcp`], [`tftp`], [`http`] (iPXE scripts, artifacts, metadata, events, admin),
//! [`ipxe`] (script rendering), [`state`] (events and per-machine state), [`metrics`].
//! Protocol logic is pure functions; the socket loops are small.

pub mod config;
pub mod dhcp;
pub mod http;
pub mod inventory;
pub mod ipxe;
pub mod metrics;
pub mod state;
pub mod tftp;
pub mod udp;

//! bootsvc: osie's netboot service.
//!
//! One module per concern: [`config`] (bootsvc.toml), [`inventory`] (machine records,
//! images, hot reload, the [`inventory::Backend`]), [`state`] (events and per-machine
//! state), [`storage`] (the one storage interface: machines, state, events, leases), [`dhcp`], [`ra`]
//! (IPv6 router advertisements that configure nothing), [`tftp`], [`http`] (iPXE scripts,
//! artifacts, metadata, events, admin),
//! [`ipxe`] (script rendering), [`metadata`] (what a machine is told), [`metrics`],
//! [`trace`] (the boot trace, the installer's log, the diagnosis; recorded by [`tracer`]),
//! [`identity`] (which machine is calling), [`power`] (a machine's BMC: Redfish, IPMI), [`serve`] (wiring) with [`privileges`] (root
//! given up after binding), [`cli`] with [`admin_client`] and [`power_cmd`], [`logging`]. Shared pieces:
//! [`problem`] (file/field/what errors), [`checks`] (small validators), [`arch`] (a
//! machine's architecture and where its files sit), [`jail`] (files
//! opened only inside their directory, for TFTP, HTTP and `check`) and [`droplog`] (dropped
//! packets logged without flooding the log).
//! Protocol logic is pure functions; the socket loops are small.

pub mod admin_client;
pub mod arch;
pub mod checks;
pub mod cli;
pub mod config;
pub mod dhcp;
pub mod dhcp6;
pub mod droplog;
pub mod grub;
pub mod http;
pub mod identity;
pub mod inventory;
pub mod ipxe;
pub mod jail;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod netaddr;
pub mod netboot;
pub mod power;
pub mod power_cmd;
pub mod privileges;
pub mod problem;
pub mod ra;
pub mod ratelimit;
pub mod serve;
pub mod signature;
pub mod state;
pub mod storage;
pub mod tftp;
pub mod trace;
pub mod tracer;
pub mod udp;
pub mod vendor_sums;

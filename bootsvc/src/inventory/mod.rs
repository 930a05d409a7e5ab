//! The machines bootsvc knows: loaded from the inventory directory, reloaded on change.
//!
//! Protocol code asks a [`Backend`] (by MAC, by IP), never the files: the same interface
//! serves the file inventory here and any other source later.

pub mod model;

use std::net::Ipv4Addr;
use std::sync::Arc;

use osie_api::MacAddr;

pub use model::Machine;

/// What the protocol servers need to know about machines.
pub trait Backend: Send + Sync + 'static {
    /// The machine that owns this MAC.
    fn by_mac(&self, mac: &MacAddr) -> Option<Arc<Machine>>;
    /// The machine whose fixed address (or current lease) is `ip`.
    fn by_ip(&self, ip: Ipv4Addr) -> Option<Arc<Machine>>;
    /// May this MAC netboot now: the record's `netboot.allow`, unless a finished install
    /// has cleared it in the state store.
    fn netboot_allowed(&self, mac: &MacAddr) -> bool;
}

/// Dynamic leases, as the DHCP server knows them: lets the HTTP side tell which machine a
/// pool address belongs to (metadata and events are answered only for their own machine).
pub trait Leases: Send + Sync + 'static {
    /// The MAC currently holding `ip`, if the lease has not expired.
    fn mac_for_ip(&self, ip: Ipv4Addr) -> Option<MacAddr>;
}

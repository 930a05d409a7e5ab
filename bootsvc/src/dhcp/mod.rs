//! DHCP: classification, reply building (pure), and the socket loops.
//!
//! Interface used by the service wiring (`serve`): bind first (ports below 1024, before
//! privileges are dropped), then run.

use std::sync::Arc;

use crate::config::Config;
use crate::inventory::{Backend, Leases};
use crate::metrics::Metrics;

/// The bound DHCP service (UDP 67, and 4011 when configured).
pub struct DhcpServer {
    _private: (),
}

impl DhcpServer {
    pub fn bind(_cfg: Arc<Config>, _backend: Arc<dyn Backend>, _metrics: Arc<Metrics>) -> anyhow::Result<DhcpServer> {
        anyhow::bail!("DHCP server not implemented yet")
    }

    /// The dynamic-pool leases, for the HTTP side's source-address checks.
    pub fn leases(&self) -> Arc<dyn Leases> {
        unimplemented!("DHCP server not implemented yet")
    }

    /// Serve until the task is dropped.
    pub async fn run(self) -> anyhow::Result<()> {
        anyhow::bail!("DHCP server not implemented yet")
    }
}

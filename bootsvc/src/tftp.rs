//! TFTP: read-only, octet mode, jailed to its root.
//!
//! Interface used by the service wiring (`serve`): bind first, then run.

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;

/// The bound TFTP service (UDP 69).
pub struct TftpServer {
    _private: (),
}

impl TftpServer {
    pub fn bind(_cfg: Arc<Config>, _metrics: Arc<Metrics>) -> anyhow::Result<TftpServer> {
        anyhow::bail!("TFTP server not implemented yet")
    }

    /// Serve until the task is dropped.
    pub async fn run(self) -> anyhow::Result<()> {
        anyhow::bail!("TFTP server not implemented yet")
    }
}

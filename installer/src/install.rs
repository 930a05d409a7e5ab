//! The install flow: metadata → disk → image → GPT → cloud-init → `installed`.

use std::path::PathBuf;

use osie_api::{Hardware, MacAddr, Metadata};

use crate::report::Reporter;

/// What the flow needs to know; [`crate::init`] fills it from the kernel command line, the
/// `install` command from its arguments.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    /// bootsvc base URL (`osie.url`).
    pub base_url: String,
    /// The NIC the machine booted from (`osie.mac`); sent as `X-Osie-Mac`.
    pub mac: MacAddr,
    /// Target disk override; `None` picks one from the metadata's hints.
    pub disk: Option<PathBuf>,
    /// Sent with the first event when known.
    pub hardware: Option<Hardware>,
}

/// Run the whole install. On success the disk holds the verified image and `installed` has
/// been reported; the returned metadata says what to do next (reboot, poweroff, kexec).
pub fn run(_req: &InstallRequest, _reporter: &Reporter) -> anyhow::Result<Metadata> {
    anyhow::bail!("install flow not implemented yet")
}

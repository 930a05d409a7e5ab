//! Shared by the harness's tests.

use std::path::PathBuf;

/// bootsvc's binary from this workspace, built if needed (debug: no figures are kept).
pub fn bootsvc() -> PathBuf {
    osie_testkit::site::bootsvc_binary().unwrap_or_else(|e| panic!("{e:#}"))
}

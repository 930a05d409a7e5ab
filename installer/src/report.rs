//! Events to bootsvc (`POST /events`), retried until acknowledged.

use osie_api::MacAddr;

pub struct Reporter {
    pub base_url: String,
    pub mac: MacAddr,
}

impl Reporter {
    pub fn new(base_url: &str, mac: MacAddr) -> Reporter {
        Reporter { base_url: base_url.to_string(), mac }
    }

    /// Report `failed` with the whole error chain.
    pub fn failed(&self, _err: &anyhow::Error) {}
}

//! `POST /events`: progress reports from the installer and from the installed OS.
//!
//! bootsvc stores every event durably before it answers 2xx, so a sender that got an
//! [`EventAck`] may forget the event. Senders retry until acknowledged; `run_id` + `seq`
//! make a retry of the same event a no-op on the server.

use serde::{Deserialize, Serialize};

use crate::hardware::Hardware;
use crate::mac::MacAddr;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub machine: MacAddr,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default)]
    pub message: String,
    /// RFC 3339 UTC time at the sender ([`crate::time::rfc3339`]).
    pub time: String,
    /// Random id of one installer run (or one first boot); with `seq` it identifies the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// 0, 1, 2… within `run_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// For `failed`: the error chain, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error: Vec<String>,
    /// Sent with the first event of an installer run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<Hardware>,
    /// For `disk-erased`: the disk, the method, bytes and seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase: Option<crate::erase::DiskErase>,
}

/// Where in the path of a machine an event comes from, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    BootedInstaller,
    Network,
    Metadata,
    DiskSelected,
    DiskWiped,
    ImageStreaming,
    ImageVerified,
    GptFixed,
    CloudInitSeeded,
    /// One of the record's `install.steps` done (or failed with `continue_on_error`): its
    /// exit status and the end of its output.
    Step,
    Installed,
    Failed,
    /// Sent by the installed OS on its first boot.
    FirstBoot,
    /// Deprovisioning: a disk being erased (progress of a long erase).
    Erasing,
    /// Deprovisioning: one disk erased (its report in the event's `erase`).
    DiskErased,
    /// Deprovisioning: every disk erased; the machine powers off.
    Deprovisioned,
    /// A power or boot action on the machine's BMC, asked by an operator: recorded by
    /// bootsvc itself, never accepted from a machine ([`Phase::SERVICE`]).
    Power,
    /// A phase this build does not know (a newer sender): such an event still parses, but
    /// bootsvc refuses to store it (400 naming the phase).
    #[serde(other)]
    Unknown,
}

impl Phase {
    /// The phases bootsvc records itself (not in [`Phase::ALL`]: a machine cannot send them).
    pub const SERVICE: [Phase; 1] = [Phase::Power];

    /// The phases machines send.
    pub const ALL: [Phase; 16] = [
        Phase::BootedInstaller,
        Phase::Network,
        Phase::Metadata,
        Phase::DiskSelected,
        Phase::DiskWiped,
        Phase::ImageStreaming,
        Phase::ImageVerified,
        Phase::GptFixed,
        Phase::CloudInitSeeded,
        Phase::Step,
        Phase::Installed,
        Phase::Failed,
        Phase::FirstBoot,
        Phase::Erasing,
        Phase::DiskErased,
        Phase::Deprovisioned,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::BootedInstaller => "booted-installer",
            Phase::Network => "network",
            Phase::Metadata => "metadata",
            Phase::DiskSelected => "disk-selected",
            Phase::DiskWiped => "disk-wiped",
            Phase::ImageStreaming => "image-streaming",
            Phase::ImageVerified => "image-verified",
            Phase::GptFixed => "gpt-fixed",
            Phase::CloudInitSeeded => "cloud-init-seeded",
            Phase::Step => "step",
            Phase::Installed => "installed",
            Phase::Failed => "failed",
            Phase::FirstBoot => "first-boot",
            Phase::Erasing => "erasing",
            Phase::DiskErased => "disk-erased",
            Phase::Deprovisioned => "deprovisioned",
            Phase::Power => "power",
            Phase::Unknown => "unknown",
        }
    }

    /// True for phases that end an installer run.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Phase::Installed | Phase::Failed | Phase::Deprovisioned)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Progress of a long phase (image streaming).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Progress {
    pub bytes_done: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Bytes per second over the last interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<u64>,
}

impl Progress {
    pub fn percent(&self) -> Option<f64> {
        self.bytes_total.filter(|t| *t > 0).map(|t| self.bytes_done as f64 * 100.0 / t as f64)
    }
}

/// bootsvc's answer to a stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAck {
    /// The event is durable on bootsvc's disk.
    pub stored: bool,
    /// It had been stored before (same `run_id` and `seq`).
    #[serde(default)]
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_serialize_kebab_case() {
        for p in Phase::ALL.into_iter().chain(Phase::SERVICE) {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<Phase>(&format!("\"{p}\"")).unwrap(), p);
        }
        assert_eq!(serde_json::from_str::<Phase>("\"from-the-future\"").unwrap(), Phase::Unknown);
    }

    #[test]
    fn minimal_event_parses() {
        let e: Event = serde_json::from_str(
            r#"{"machine":"52:54:00:00:00:01","phase":"first-boot","time":"2026-11-21T18:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(e.phase, Phase::FirstBoot);
        assert!(e.progress.is_none() && e.error.is_empty() && e.seq.is_none());
    }

    #[test]
    fn percent() {
        let p = Progress { bytes_done: 50, bytes_total: Some(200), ..Default::default() };
        assert_eq!(p.percent(), Some(25.0));
        assert_eq!(Progress::default().percent(), None);
    }
}

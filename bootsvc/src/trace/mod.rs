//! The boot trace: every step bootsvc serves or sees for one machine (DHCP, TFTP, the iPXE
//! script, kernel and initramfs downloads, metadata reads, the installer's events, the
//! installed OS's DHCP and phone-home), the installer's console log, and the diagnosis read
//! from them. Types only, plus pure rules ([`diagnose`]) and bounds ([`log`]): the recorder
//! that feeds storage off the hot paths is `crate::tracer`; what is recorded, the bounds and
//! the admin API are in `bootsvc/docs/trace.md`.
//!
//! These are also the JSON of the admin API (`GET /admin/machines/{mac}/trace`, `…/log`):
//! fields are additive and defaulted, as the wire contract's.

pub mod diagnose;
pub mod log;
pub mod render;

use std::net::{IpAddr, Ipv4Addr};

use osie_api::MacAddr;
use serde::{Deserialize, Serialize};

pub use diagnose::{Diagnosis, Health, Thresholds};
pub use log::{LogLine, LogRun, LogView};

/// One step of a machine's boot, as seen by bootsvc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStep {
    /// When bootsvc saw it: Unix milliseconds (what the diagnosis computes with).
    pub at_ms: u64,
    /// The NIC that sent it (the machine's key may be another of its MACs).
    pub mac: MacAddr,
    /// The sender's address, when it has one.
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// The installer run (trace id) the step belongs to: the installer's `run_id`, on its
    /// events, log chunks and metadata reads; `None` before the installer runs.
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(flatten)]
    pub step: Step,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    Dhcp(DhcpStep),
    Tftp(TftpStep),
    /// `GET /boot/{mac}.ipxe` answered.
    Script(ScriptStep),
    /// An artifact (kernel, initramfs), an image or a file of the TFTP root over HTTP.
    Download(DownloadStep),
    /// `GET /metadata`, the NoCloud seed or the EC2 tree answered.
    Metadata(MetadataStep),
    /// An installer event stored (also the installed OS's phone-home, `first-boot`).
    Event(EventStep),
}

/// One DHCP request and what bootsvc did with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DhcpStep {
    /// The request: `discover`, `request`, `inform`, `release`, `decline`.
    pub message: String,
    /// `dhcp` (port 67) or `pxe` (port 4011).
    #[serde(default)]
    pub via: String,
    /// Client system architecture (option 93), when sent.
    #[serde(default)]
    pub arch: Option<u16>,
    /// The firmware class bootsvc read (`bios-pxe`, `uefi-pxe`, `ipxe`…).
    #[serde(default)]
    pub class: String,
    /// Vendor class (option 60), printable characters only, at most 64.
    #[serde(default)]
    pub vendor_class: Option<String>,
    /// The answer sent: `offer`, `ack`, `nak`, `proxy-offer`…; `None`: nothing sent.
    #[serde(default)]
    pub answer: Option<String>,
    /// The address given (`yiaddr`), when one was.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    /// The boot file offered.
    #[serde(default)]
    pub boot_file: Option<String>,
    /// Why: the reason the decision log line gives (no boot file, why ignored…).
    #[serde(default)]
    pub reason: String,
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every byte sent (and, for TFTP, acknowledged).
    Complete,
    /// Started and not finished: the client went away, timed out or cut the connection.
    Abandoned,
    /// Not started: no such file, refused.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Abandoned => "abandoned",
            Outcome::Refused => "refused",
        }
    }
}

/// One TFTP read request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TftpStep {
    pub file: String,
    /// Options asked (`blksize=1468`, `tsize=0`…), as the client sent them.
    #[serde(default)]
    pub options: Vec<String>,
    /// Data bytes sent (acknowledged, when complete).
    #[serde(default)]
    pub bytes: u64,
    /// The file's size, when opened.
    #[serde(default)]
    pub size: Option<u64>,
    /// Last block acknowledged.
    #[serde(default)]
    pub block: u64,
    pub outcome: Outcome,
    /// Why it ended so (`timed out waiting for the ack of block 7`, `file not found`).
    #[serde(default)]
    pub reason: String,
}

/// The iPXE script served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptStep {
    /// `installer`, `custom`, `chain`, `local` (exit to the next boot device), `refused`.
    pub script: String,
    /// The HTTP status answered.
    #[serde(default)]
    pub status: u16,
}

/// What was downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Artifact {
    Kernel,
    Initramfs,
    Image,
    /// Anything else (a file of the TFTP root over HTTP, another artifact).
    File,
}

impl Artifact {
    pub fn as_str(self) -> &'static str {
        match self {
            Artifact::Kernel => "kernel",
            Artifact::Initramfs => "initramfs",
            Artifact::Image => "image",
            Artifact::File => "file",
        }
    }
}

/// One HTTP download (one request; a resumed image is several).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadStep {
    pub artifact: Artifact,
    /// The path asked.
    pub path: String,
    /// The HTTP status answered.
    #[serde(default)]
    pub status: u16,
    /// Body bytes sent.
    #[serde(default)]
    pub bytes: u64,
    /// Bytes the answer promised (the range's length, or the file's size).
    #[serde(default)]
    pub size: Option<u64>,
    pub outcome: Outcome,
    #[serde(default)]
    pub reason: String,
}

impl DownloadStep {
    /// How much of the answer went out, in percent (100 when there was nothing to send).
    pub fn percent(&self) -> f64 {
        match self.size {
            Some(s) if s > 0 => (self.bytes as f64 * 100.0 / s as f64).min(100.0),
            _ => 100.0,
        }
    }
}

/// A metadata read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataStep {
    /// The path asked (`/metadata`, `/nocloud/…/user-data`, `/latest/meta-data/…`).
    pub path: String,
    #[serde(default)]
    pub status: u16,
}

/// An event stored (the event itself is in the machine's events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventStep {
    pub phase: String,
    /// Progress of the phase in percent, when it reports any.
    #[serde(default)]
    pub percent: Option<f64>,
    /// The event's message, at most [`MAX_TEXT`] characters.
    #[serde(default)]
    pub message: String,
}

/// A step as stored: numbered per machine from 0 (the ring keeps the last
/// `trace.steps_per_machine`, so the first kept may not be 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredStep {
    pub n: u64,
    #[serde(flatten)]
    pub step: TraceStep,
}

/// `GET /admin/machines/{mac}/trace`: the machine's last steps, oldest first, and what they
/// say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceView {
    pub hostname: String,
    /// The machine's key (its first MAC).
    pub mac: MacAddr,
    /// Bootsvc's clock when it answered (Unix ms): the diagnosis's "now".
    pub now_ms: u64,
    pub steps: Vec<StoredStep>,
    pub diagnosis: Diagnosis,
}

/// Longest text kept from the outside in a step (vendor class, messages, paths).
pub const MAX_TEXT: usize = 200;

/// `s` made safe to keep and print: control characters (terminal escapes, newlines) shown
/// as `\u{..}`, at most `max` characters.
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for (i, c) in s.chars().enumerate() {
        if i >= max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_escapes_controls_and_bounds_length() {
        assert_eq!(clean("a\x1b[31mb\nc", 100), "a\\u{1b}[31mb\\u{a}c");
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(clean("<b>é</b>", 100), "<b>é</b>", "HTML is the page's to escape; only controls here");
    }

    #[test]
    fn steps_read_back_as_written() {
        let s = StoredStep {
            n: 3,
            step: TraceStep {
                at_ms: 1,
                mac: "52:54:00:00:00:01".parse().unwrap(),
                source: None,
                run_id: None,
                step: Step::Tftp(TftpStep {
                    file: "undionly.kpxe".into(),
                    options: vec!["blksize=1468".into()],
                    bytes: 512,
                    size: Some(1024),
                    block: 1,
                    outcome: Outcome::Abandoned,
                    reason: "timed out".into(),
                }),
            },
        };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["kind"], "tftp");
        assert_eq!(j["outcome"], "abandoned");
        assert_eq!(serde_json::from_value::<StoredStep>(j).unwrap(), s);
    }
}

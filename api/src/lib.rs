//! The contract between `bootsvc` and the `installer`.
//!
//! Only data types and pure parsing live here: no I/O. Both sides depend on this crate, so a
//! change here is a change of the wire format — keep fields additive and defaulted.
//!
//! - [`cmdline`]: the kernel command-line keys bootsvc writes into the iPXE script and the
//!   installer reads from `/proc/cmdline`.
//! - [`metadata`]: what `GET /metadata` returns for one machine.
//! - [`events`]: what the installer (and the installed OS) `POST /events`.
//! - [`hardware`]: the inventory the installer sends with its first event.
//! - [`log`]: the installer's console log, sent in chunks.
//! - [`erase`]: deprovisioning: the erase plan and the per-disk report.
//! - [`qcow2`]: the qcow2 header and tables, read the same way by both sides.

pub mod cmdline;
pub mod erase;
pub mod events;
pub mod hardware;
pub mod log;
pub mod mac;
pub mod metadata;
pub mod qcow2;
pub mod size;
pub mod steps;
pub mod time;

pub use cmdline::{BootParams, StaticIp};
pub use erase::{DiskErase, EraseMethod, ErasePlan};
pub use events::{Event, EventAck, Phase, Progress};
pub use hardware::Hardware;
pub use mac::MacAddr;
pub use metadata::{
    BootOrder, ChecksumOf, CloudInit, DiskHints, Finish, Image, ImageFormat, InstallPlan, Metadata, UefiPlan,
};
pub use steps::Step;

/// HTTP header the installer sets on every request to say which NIC it booted from.
/// bootsvc checks it together with the source address before answering.
pub const MAC_HEADER: &str = "X-Osie-Mac";

/// HTTP header the installer sets on its metadata reads: the architecture it runs on, which
/// is the machine's (`std::env::consts::ARCH`: `x86_64`, `aarch64`). bootsvc refuses to give
/// it an image of another architecture, whatever the machine's record says.
pub const ARCH_HEADER: &str = "X-Osie-Arch";

/// HTTP header the installer sets on its metadata reads: its run's `run_id` (the trace id
/// its events and log chunks carry), so bootsvc's boot trace files the read under the run.
pub const RUN_HEADER: &str = "X-Osie-Run";

/// Paths on bootsvc's HTTP service, relative to the base URL (`osie.url`).
pub mod paths {
    /// Native metadata for the installer (JSON, [`crate::Metadata`]).
    pub const METADATA: &str = "/metadata";
    /// Progress events (JSON, [`crate::Event`]).
    pub const EVENTS: &str = "/events";
    /// The installer's console log, in chunks (JSON, [`crate::log::LogChunk`]).
    pub const LOG: &str = "/log";
}

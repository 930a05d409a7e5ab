//! The installer's console log, sent to bootsvc as it runs (`POST /log`), in bounded
//! chunks, so it is kept after a failure even if the machine reboots. Identified as events
//! are (the machine's own address, `X-Osie-Mac`); bootsvc bounds it per run and per machine.

use serde::{Deserialize, Serialize};

use crate::MacAddr;

/// Most lines in one chunk.
pub const MAX_CHUNK_LINES: usize = 256;
/// Most bytes of text in one chunk (the lines together).
pub const MAX_CHUNK_BYTES: usize = 32 * 1024;
/// Longest line kept; longer ones are cut (and marked) by the sender.
pub const MAX_LINE: usize = 2048;

/// Some lines of one installer run's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    pub machine: MacAddr,
    /// The run (trace id): the same `run_id` its events carry.
    pub run_id: String,
    /// 0, 1, 2… within the run: a re-sent chunk is stored once.
    pub seq: u64,
    pub lines: Vec<String>,
    /// Lines the installer dropped before this chunk (bootsvc slow, queue full).
    #[serde(default)]
    pub dropped: u64,
}

/// bootsvc's answer to a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAck {
    pub stored: bool,
    /// Stored before (same `run_id` and `seq`).
    #[serde(default)]
    pub duplicate: bool,
    /// The run's log is full: the sender may stop sending (later lines are not kept).
    #[serde(default)]
    pub full: bool,
}

//! Deprovisioning: what `GET /metadata` says when a machine is to be erased instead of
//! installed ([`ErasePlan`]), and the per-disk report its `disk-erased` events carry
//! ([`DiskErase`]). bootsvc/docs/deprovision.md explains the flow.

use serde::{Deserialize, Serialize};

/// Erase every disk of the machine, then power off (`Metadata::erase`). Disks holding the
/// installer's own files and read-only disks are never touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErasePlan {
    /// Erase removable disks (USB sticks, SD cards) too.
    #[serde(default)]
    pub removable: bool,
}

/// How a disk was erased, best first ([`EraseMethod::as_str`] is the wire name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EraseMethod {
    /// NVMe Sanitize, crypto erase (the whole controller).
    NvmeSanitizeCrypto,
    /// NVMe Sanitize, block erase (the whole controller).
    NvmeSanitizeBlock,
    /// NVMe Format NVM with cryptographic erase.
    NvmeFormatCrypto,
    /// NVMe Format NVM with user data erase.
    NvmeFormat,
    /// BLKDISCARD of the whole device, which then read back zeros.
    Discard,
    /// BLKZEROOUT of the whole device (the device's Write Zeroes, or written zeros).
    Zeroout,
    /// A method this build does not know (a newer installer).
    #[serde(other)]
    Unknown,
}

impl EraseMethod {
    pub fn as_str(&self) -> &'static str {
        match self {
            EraseMethod::NvmeSanitizeCrypto => "nvme-sanitize-crypto",
            EraseMethod::NvmeSanitizeBlock => "nvme-sanitize-block",
            EraseMethod::NvmeFormatCrypto => "nvme-format-crypto",
            EraseMethod::NvmeFormat => "nvme-format",
            EraseMethod::Discard => "discard",
            EraseMethod::Zeroout => "zeroout",
            EraseMethod::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for EraseMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One disk erased: the `disk-erased` event's `erase`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskErase {
    /// `/dev/…`.
    pub path: String,
    pub method: EraseMethod,
    /// Bytes of the disk (all of them erased).
    pub bytes: u64,
    /// How long the erase took, verification included.
    pub seconds: f64,
    /// Methods tried before `method` and why each was not used, in order (`discard: read
    /// back non-zero data at byte 4096`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    /// Samples read back afterwards, all zero.
    #[serde(default)]
    pub verified_samples: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip_and_unknown_ones_parse() {
        for m in [
            EraseMethod::NvmeSanitizeCrypto,
            EraseMethod::NvmeSanitizeBlock,
            EraseMethod::NvmeFormatCrypto,
            EraseMethod::NvmeFormat,
            EraseMethod::Discard,
            EraseMethod::Zeroout,
        ] {
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{m}\""));
        }
        assert_eq!(serde_json::from_str::<EraseMethod>("\"shred\"").unwrap(), EraseMethod::Unknown);
        let p: ErasePlan = serde_json::from_str("{}").unwrap();
        assert!(!p.removable);
    }
}

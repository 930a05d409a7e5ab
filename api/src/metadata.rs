//! `GET /metadata`: everything the installer needs to install one machine.
//!
//! bootsvc answers for the calling machine only (source address and [`crate::MAC_HEADER`]).
//! Every field the installer may go without has a serde default, so older installers keep
//! working when fields are added.

use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;
use crate::size::SizeSpec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Stable id of this installation target (cloud-init's `instance-id`).
    pub instance_id: String,
    pub hostname: String,
    /// The NIC the machine booted from.
    pub mac: MacAddr,
    /// What to write to the disk. `None`: bootsvc has no plan for this machine, the
    /// installer reports `failed` and does not touch any disk.
    #[serde(default)]
    pub install: Option<InstallPlan>,
    /// Deprovisioning: erase the machine's disks and power off instead of installing
    /// (`install` is then `None`, so an installer that predates this field touches no disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase: Option<crate::erase::ErasePlan>,
    #[serde(default)]
    pub cloud_init: CloudInit,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Base URL of the EC2-compatible tree (`…/2009-04-04/meta-data/`), so cloud-init in the
    /// installed OS can read the live record too.
    #[serde(default)]
    pub metadata_base_url: Option<String>,
    /// URL the installed OS posts its `first-boot` event to (cloud-init `phone_home`).
    #[serde(default)]
    pub phone_home_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallPlan {
    pub image: Image,
    #[serde(default)]
    pub disk: DiskHints,
    #[serde(default)]
    pub gpt: GptPlan,
    #[serde(default)]
    pub finish: Finish,
    /// UEFI machines: the installed OS's boot entry.
    #[serde(default)]
    pub uefi: UefiPlan,
    /// The operator's steps, run in order after the cloud-init seed ([`crate::steps`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<crate::steps::Step>,
}

/// What the installer writes into the firmware of a machine that booted by UEFI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UefiPlan {
    #[serde(default)]
    pub boot_order: BootOrder,
}

/// Where the installed OS's boot entry goes in `BootOrder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootOrder {
    /// After the network options, which stay first: each boot asks bootsvc, whose one-shot
    /// rule decides (the installer while netboot is allowed, else on to the disk).
    #[default]
    NetworkFirst,
    /// First: the OS boots without the network; a reinstall then needs the BMC's one-time
    /// boot override.
    DiskFirst,
}

/// The OS image to stream onto the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub url: String,
    /// Lower-case hex digest of the stream named by `checksum_of`, in `digest_algo` (the
    /// field keeps its first name: an installer that predates `digest_algo` refuses a
    /// SHA-512 here as "not 64 hex digits" rather than mistaking it).
    pub sha256: String,
    /// The algorithm of `sha256`'s digest (SHA-512 when a vendor's `SHA512SUMS` gave it).
    #[serde(default)]
    pub digest_algo: DigestAlgo,
    /// Bytes of the download (the compressed file), when known.
    #[serde(default)]
    pub size: Option<u64>,
    /// Bytes once decompressed, when known.
    #[serde(default)]
    pub raw_size: Option<u64>,
    #[serde(default)]
    pub format: ImageFormat,
    #[serde(default)]
    pub checksum_of: ChecksumOf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// Decide from the first bytes (zstd, gzip, xz and qcow2 magic; anything else is raw).
    #[default]
    Auto,
    Raw,
    Zstd,
    Gzip,
    Xz,
    /// qcow2 (v2, v3): tables read first, then the file streamed in file order
    /// ([`crate::qcow2`]); `sha256` covers the downloaded file.
    Qcow2,
}

/// A digest's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgo {
    #[default]
    Sha256,
    Sha512,
}

impl DigestAlgo {
    /// Hex digits of a digest.
    pub fn hex_len(self) -> usize {
        match self {
            DigestAlgo::Sha256 => 64,
            DigestAlgo::Sha512 => 128,
        }
    }
}

/// Which bytes `sha256` covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumOf {
    /// The bytes as downloaded.
    #[default]
    Compressed,
    /// The bytes written to the disk.
    Raw,
}

/// How to choose the target disk. With no hints, the smallest non-removable, writable disk
/// large enough for the image.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskHints {
    /// `/dev/…` path (a by-id/by-path symlink is fine).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub wwn: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub min_size: Option<u64>,
    #[serde(default)]
    pub max_size: Option<u64>,
}

/// Partition-table work after the image is written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GptPlan {
    /// Grow the last partition (only the last) to the end of the disk.
    #[serde(default)]
    pub grow_last_partition: bool,
    /// Layout mode: when non-empty, the disk gets a fresh GPT with these partitions and the
    /// image is written into the one marked `image`.
    #[serde(default)]
    pub layout: Vec<PartitionSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSpec {
    pub name: String,
    /// A GUID, or one of `linux`, `esp`, `bios-boot`, `swap`, `linux-root-x86-64`.
    #[serde(rename = "type")]
    pub type_guid: String,
    /// `512MiB`, `20GiB`, `25%`, `rest`, or a number of bytes.
    pub size: SizeSpec,
    /// The image's bytes go into this partition.
    #[serde(default)]
    pub image: bool,
}

/// What the installer does once the install is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    #[default]
    Reboot,
    Poweroff,
    /// `kexec_file_load` the installed kernel (skips firmware POST).
    Kexec,
}

/// cloud-init NoCloud seed, written verbatim into the installed system.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CloudInit {
    #[serde(default)]
    pub user_data: Option<String>,
    /// YAML. bootsvc fills it (instance-id, local-hostname, public-keys) when the inventory
    /// does not give one.
    #[serde(default)]
    pub meta_data: Option<String>,
    #[serde(default)]
    pub network_config: Option<String>,
    #[serde(default)]
    pub vendor_data: Option<String>,
}

impl Image {
    /// `Ok` if `sha256` is the digest's hex digits (64 for SHA-256, 128 for SHA-512).
    pub fn check_sha256(&self) -> Result<(), String> {
        let n = self.digest_algo.hex_len();
        if self.sha256.len() == n && self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(format!("sha256 {:?} is not {n} hex digits ({:?})", self.sha256, self.digest_algo))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_metadata_parses_with_defaults() {
        let m: Metadata = serde_json::from_str(
            r#"{"instance_id":"i-1","hostname":"n1","mac":"52:54:00:00:00:01",
                "install":{"image":{"url":"http://192.0.2.1/i.raw.zst","sha256":"00"}}}"#,
        )
        .unwrap();
        let plan = m.install.unwrap();
        assert_eq!(plan.image.format, ImageFormat::Auto);
        assert_eq!(plan.image.checksum_of, ChecksumOf::Compressed);
        assert_eq!(plan.finish, Finish::Reboot);
        assert!(plan.gpt.layout.is_empty());
        assert!(plan.image.check_sha256().is_err());
        assert_eq!(plan.image.digest_algo, DigestAlgo::Sha256);
    }

    #[test]
    fn sha512_digests_are_checked_by_their_length() {
        let img = |algo: &str, hex: String| -> Image {
            serde_json::from_str(&format!(r#"{{"url":"http://192.0.2.1/i.qcow2","sha256":"{hex}"{algo}}}"#)).unwrap()
        };
        assert!(img(r#","digest_algo":"sha512""#, "ab".repeat(64)).check_sha256().is_ok());
        assert!(img(r#","digest_algo":"sha512""#, "ab".repeat(32)).check_sha256().is_err());
        // Without the field (an older bootsvc): SHA-256, and a 128-digit digest is refused.
        assert!(img("", "ab".repeat(32)).check_sha256().is_ok());
        assert!(img("", "ab".repeat(64)).check_sha256().is_err());
    }

    #[test]
    fn layout_mode_parses() {
        let g: GptPlan = serde_json::from_str(
            r#"{"layout":[{"name":"EFI","type":"esp","size":"512MiB"},{"name":"root","type":"linux","size":"rest","image":true}]}"#,
        )
        .unwrap();
        assert_eq!(g.layout.len(), 2);
        assert_eq!(g.layout[0].size, SizeSpec::Bytes(512 << 20));
        assert!(g.layout[1].image);
    }
}

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
    /// Lower-case hex sha256 of the stream named by `checksum_of`.
    pub sha256: String,
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
    /// `Ok` if `sha256` is 64 lower- or upper-case hex digits.
    pub fn check_sha256(&self) -> Result<(), String> {
        if self.sha256.len() == 64 && self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(format!("sha256 {:?} is not 64 hex digits", self.sha256))
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

//! The machine's hardware as the installer sees it, sent with its first event.

use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Hardware {
    #[serde(default)]
    pub cpu: Cpu,
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub nics: Vec<Nic>,
    #[serde(default)]
    pub dmi: Dmi,
    /// UEFI Secure Boot was enforcing when the installer ran (the firmware's `SecureBoot`
    /// variable); `None` on BIOS machines, or when the variable could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cpu {
    #[serde(default)]
    pub model: String,
    /// Logical CPUs the kernel brought up.
    #[serde(default)]
    pub threads: u32,
    /// Physical cores (distinct core ids per package).
    #[serde(default)]
    pub cores: u32,
    #[serde(default)]
    pub sockets: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Disk {
    /// `/dev/vda`, `/dev/nvme0n1`…
    pub path: String,
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub rotational: bool,
    pub removable: bool,
    pub read_only: bool,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub wwn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: MacAddr,
    #[serde(default)]
    pub driver: Option<String>,
    /// Carrier present.
    #[serde(default)]
    pub link: bool,
    #[serde(default)]
    pub speed_mbps: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dmi {
    #[serde(default)]
    pub sys_vendor: Option<String>,
    #[serde(default)]
    pub product_name: Option<String>,
    #[serde(default)]
    pub product_serial: Option<String>,
    #[serde(default)]
    pub product_uuid: Option<String>,
    #[serde(default)]
    pub board_vendor: Option<String>,
    #[serde(default)]
    pub board_name: Option<String>,
    #[serde(default)]
    pub bios_version: Option<String>,
}

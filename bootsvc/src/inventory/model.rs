//! One machine record, as written in the inventory directory (`<name>.json`). The reference
//! for every field is `bootsvc/docs/inventory.md`; keep the two in step.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use osie_api::metadata::{ChecksumOf, DiskHints, Finish, GptPlan, ImageFormat, UefiPlan};
use osie_api::{CloudInit, MacAddr, Step};
use serde::{Deserialize, Serialize};

pub use super::bmc::Bmc;
pub use crate::arch::Arch;
pub use crate::config::UefiChain;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub hostname: String,
    /// cloud-init instance id; defaults to `i-<first mac without colons>`.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// The machine's NICs. The first is the one it is expected to boot from.
    pub macs: Vec<MacAddr>,
    /// Fixed addressing. Absent: an address from `dhcp.pool`, if configured.
    #[serde(default)]
    pub ip: Option<IpConfig>,
    /// Fixed IPv6 address, handed out by DHCPv6 (`[dhcp6]`, `bootsvc/docs/dhcp.md`, "IPv6").
    /// Absent: DHCPv6 gives the machine its boot file and no address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ip6Config>,
    /// The machine's architecture: which boot program, kernel and initramfs it gets when its
    /// firmware's DHCP request names none (option 93 wins: `dhcp/classify.rs`).
    #[serde(default)]
    pub arch: Arch,
    #[serde(default)]
    pub netboot: Netboot,
    #[serde(default)]
    pub install: Option<Install>,
    #[serde(default, deserialize_with = "StrictCloudInit::deserialize")]
    pub cloud_init: CloudInit,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// The site whose bootsvc instances serve it (`database.site`); absent: every site's.
    /// Without `[database]` there is one instance, and it serves every record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Labels an operator selects machines by (`bootsvc reinstall --label rack=r12`):
    /// `key: value`, Kubernetes' rules for both (`bootsvc/docs/inventory.md`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The machine's BMC, for power and boot control (`bootsvc/docs/power.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc: Option<Bmc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpConfig {
    pub address: Ipv4Addr,
    pub prefix: u8,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
}

/// A machine's IPv6 address and the on-link prefix length it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ip6Config {
    pub address: Ipv6Addr,
    pub prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Netboot {
    /// Operator's intent: this machine may netboot (and so be (re)installed). A finished
    /// install clears it in the state store until `bootsvc machine <mac> reinstall`.
    #[serde(default)]
    pub allow: bool,
    /// A whole custom iPXE script served instead of the installer's.
    #[serde(default)]
    pub ipxe_script: Option<String>,
    /// Or: a URL the machine's script chains to.
    #[serde(default)]
    pub ipxe_script_url: Option<String>,
    /// UEFI only: the boot chain this machine gets, instead of the site's `boot.uefi_chain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uefi_chain: Option<UefiChain>,
    /// The shim/GRUB chain's counterpart of `ipxe_script`: a whole GRUB configuration
    /// served instead of the installer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grub_config: Option<String>,
    /// Extra kernel arguments for the installer (after `artifacts.kernel_args`). No secrets:
    /// the command line is world-readable.
    #[serde(default)]
    pub kernel_args: Option<String>,
}

/// What to install. `image` names an image in `artifacts.images_dir` (by its manifest) or
/// gives a URL and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    pub image: ImageRef,
    #[serde(default)]
    pub disk: DiskHints,
    #[serde(default)]
    pub gpt: GptPlan,
    #[serde(default)]
    pub finish: Finish,
    /// UEFI machines: the boot entry's place in `BootOrder` (`bootsvc/docs/inventory.md`).
    #[serde(default)]
    pub uefi: UefiPlan,
    /// The operator's steps after the image and the cloud-init seed (`write_file`, `run`),
    /// in order; the api type, which refuses unknown fields itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// Name of an image in `artifacts.images_dir` (its manifest gives URL, sha256, sizes).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    /// Instead of `sha256`: the vendor's `SHA256SUMS`/`SHA512SUMS` file, whose line for the
    /// image's file name gives the digest (`crate::vendor_sums`).
    #[serde(default)]
    pub checksums_url: Option<String>,
    /// The detached OpenPGP signature of `checksums_url`, checked against `[images] keyring`.
    #[serde(default)]
    pub signature_url: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub raw_size: Option<u64>,
    #[serde(default)]
    pub format: ImageFormat,
    #[serde(default)]
    pub checksum_of: ChecksumOf,
}

/// The record's `cloud_init` is [`CloudInit`], the api type the installer receives, read
/// strictly: an unknown key is a mistake in the record (the api type itself accepts
/// unknown keys, so that older installers keep working when fields are added). serde's
/// remote definition: the compiler checks it has exactly the api type's fields.
#[derive(Deserialize)]
#[serde(remote = "CloudInit", deny_unknown_fields)]
struct StrictCloudInit {
    #[serde(default)]
    user_data: Option<String>,
    /// YAML; generated from hostname, instance id and SSH keys when absent.
    #[serde(default)]
    meta_data: Option<String>,
    #[serde(default)]
    network_config: Option<String>,
    #[serde(default)]
    vendor_data: Option<String>,
}

impl Machine {
    /// The record as JSON to write out: what `deserialize` reads back to the same record,
    /// fields that are absent (`null`) left out.
    pub fn to_record(&self) -> serde_json::Value {
        fn strip(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(m) => {
                    m.retain(|_, x| !x.is_null());
                    m.values_mut().for_each(strip);
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
                _ => {}
            }
        }
        let mut v = serde_json::to_value(self).unwrap_or_default();
        strip(&mut v);
        v
    }

    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| match self.macs.first() {
            Some(m) => format!("i-{}", m.to_string().replace(':', "")),
            None => format!("i-{}", self.hostname),
        })
    }

    /// The boot chain this machine gets as a UEFI machine: its own, else the site's.
    pub fn uefi_chain(&self, site: UefiChain) -> UefiChain {
        self.netboot.uefi_chain.unwrap_or(site)
    }

    pub fn boot_mac(&self) -> Option<MacAddr> {
        self.macs.first().copied()
    }
}

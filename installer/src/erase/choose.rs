//! Which disks an erase touches, and which methods it tries on each, in order (pure: the
//! inputs are read by [`super`] from `/sys` and the NVMe controller).
//!
//! Disks: every disk of the machine (loop devices only when named), except read-only
//! ones, ones in use (a mounted filesystem or swap on them: where the installer's own files
//! would be; the initramfs itself is in RAM), ones another device is stacked on, and
//! removable ones unless the plan asks for them.
//!
//! Methods, best first; each one's result is read back before it counts, and a method that
//! fails or leaves data falls through to the next:
//! 1. NVMe Sanitize (crypto erase, then block erase) when the controller offers it
//!    (SANICAP). Sanitize acts on the whole controller: only when this namespace is its only
//!    one.
//! 2. NVMe Format NVM with Secure Erase (crypto erase when FNA says the controller can, else
//!    user data erase) when the controller supports Format (OACS). When FNA says a format or
//!    secure erase covers every namespace, only when this namespace is the only one.
//! 3. BLKDISCARD when the device discards (`queue/discard_max_bytes` > 0): trusted only if
//!    the samples read back are zero (`discard_zeroes_data` is always 0 on current kernels).
//! 4. BLKZEROOUT: the device's Write Zeroes where it has one, else the kernel writes zeros.

use std::collections::HashSet;
use std::fmt;

use osie_api::{EraseMethod, ErasePlan};

use crate::disk::DiskInfo;

/// Why a disk is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    ReadOnly,
    Removable,
    InUse,
    Stacked,
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Keep::ReadOnly => "read-only",
            Keep::Removable => "removable (erase removable disks was not asked for)",
            Keep::InUse => "in use (a mounted filesystem or swap: the installer's own files)",
            Keep::Stacked => "another device is stacked on it (md, device-mapper)",
        })
    }
}

/// Each disk to consider, and whether it is erased (`Ok`) or kept, with why.
/// `named`: kernel names; when empty, the machine's disks (no loop devices).
pub fn disks<'a>(
    all: &'a [DiskInfo],
    named: &[String],
    in_use: &HashSet<String>,
    plan: &ErasePlan,
) -> Vec<(&'a DiskInfo, Result<(), Keep>)> {
    all.iter()
        .filter(|d| if named.is_empty() { !d.is_loop } else { named.contains(&d.name) })
        .map(|d| {
            let busy = in_use.contains(&d.dev) || d.partitions.iter().any(|p| in_use.contains(&p.dev));
            let verdict = if d.read_only {
                Err(Keep::ReadOnly)
            } else if busy {
                Err(Keep::InUse)
            } else if d.has_holders {
                Err(Keep::Stacked)
            } else if d.removable && !plan.removable {
                Err(Keep::Removable)
            } else {
                Ok(())
            };
            (d, verdict)
        })
        .collect()
}

/// What the NVMe controller behind a namespace offers (Identify Controller and Namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NvmeCaps {
    /// OACS bit 1: Format NVM.
    pub format: bool,
    /// FNA bit 2: cryptographic erase as a Format's secure erase.
    pub format_crypto: bool,
    /// FNA bits 0–1: a format or secure erase covers every namespace of the controller.
    pub format_all_namespaces: bool,
    /// SANICAP bit 0.
    pub sanitize_crypto: bool,
    /// SANICAP bit 1.
    pub sanitize_block: bool,
    /// This namespace is the controller's only active one.
    pub only_namespace: bool,
}

/// What a disk can do, as far as erasing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps {
    /// An NVMe namespace whose controller answered Identify.
    pub nvme: Option<NvmeCaps>,
    /// `queue/discard_max_bytes`.
    pub discard_max_bytes: u64,
}

/// The methods to try, best first; always ends with [`EraseMethod::Zeroout`].
pub fn methods(c: &Caps) -> Vec<EraseMethod> {
    let mut out = Vec::new();
    if let Some(n) = c.nvme {
        if n.only_namespace {
            if n.sanitize_crypto {
                out.push(EraseMethod::NvmeSanitizeCrypto);
            }
            if n.sanitize_block {
                out.push(EraseMethod::NvmeSanitizeBlock);
            }
        }
        if n.format && (n.only_namespace || !n.format_all_namespaces) {
            if n.format_crypto {
                out.push(EraseMethod::NvmeFormatCrypto);
            }
            out.push(EraseMethod::NvmeFormat);
        }
    }
    if c.discard_max_bytes > 0 {
        out.push(EraseMethod::Discard);
    }
    out.push(EraseMethod::Zeroout);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::sysfs::PartInfo;

    fn disk(name: &str) -> DiskInfo {
        DiskInfo { name: name.into(), dev: format!("8:{}", name.len()), size: 1 << 30, ..Default::default() }
    }

    #[test]
    fn read_only_removable_busy_and_stacked_disks_are_kept() {
        let mut ro = disk("sdb");
        ro.read_only = true;
        let mut usb = disk("sdc");
        usb.removable = true;
        let mut busy = disk("sdd");
        busy.partitions = vec![PartInfo { name: "sdd1".into(), dev: "8:49".into(), start: 1 << 20, size: 1 << 20 }];
        let mut stacked = disk("sde");
        stacked.has_holders = true;
        let mut lo = disk("loop0");
        lo.is_loop = true;
        let all = vec![disk("nvme0n1"), ro, usb, busy, stacked, lo];
        let in_use: HashSet<String> = ["8:49".to_string()].into();
        let verdicts = |plan: &ErasePlan, named: &[&str]| -> Vec<(String, Result<(), Keep>)> {
            let named: Vec<String> = named.iter().map(|s| s.to_string()).collect();
            disks(&all, &named, &in_use, plan).into_iter().map(|(d, v)| (d.name.clone(), v)).collect()
        };
        assert_eq!(
            verdicts(&ErasePlan::default(), &[]),
            vec![
                ("nvme0n1".into(), Ok(())),
                ("sdb".into(), Err(Keep::ReadOnly)),
                ("sdc".into(), Err(Keep::Removable)),
                ("sdd".into(), Err(Keep::InUse)),
                ("sde".into(), Err(Keep::Stacked)),
            ],
            "loop devices are the host's files: left out unless named"
        );
        let with_removable = verdicts(&ErasePlan { removable: true }, &[]);
        assert_eq!(with_removable[2], ("sdc".into(), Ok(())));
        assert_eq!(
            verdicts(&ErasePlan::default(), &["loop0", "sdb"]),
            vec![("sdb".into(), Err(Keep::ReadOnly)), ("loop0".into(), Ok(()))]
        );
    }

    #[test]
    fn methods_best_first_and_zeroout_last() {
        use EraseMethod::*;
        assert_eq!(methods(&Caps::default()), [Zeroout]);
        assert_eq!(methods(&Caps { discard_max_bytes: 1 << 30, ..Default::default() }), [Discard, Zeroout]);
        let qemu = NvmeCaps { format: true, only_namespace: true, ..Default::default() };
        assert_eq!(methods(&Caps { nvme: Some(qemu), discard_max_bytes: 512 }), [NvmeFormat, Discard, Zeroout]);
        let dc = NvmeCaps {
            format: true,
            format_crypto: true,
            format_all_namespaces: true,
            sanitize_crypto: true,
            sanitize_block: true,
            only_namespace: true,
        };
        assert_eq!(
            methods(&Caps { nvme: Some(dc), discard_max_bytes: 0 }),
            [NvmeSanitizeCrypto, NvmeSanitizeBlock, NvmeFormatCrypto, NvmeFormat, Zeroout]
        );
        // Another namespace on the controller: sanitize would erase it too, and so would a
        // format whose scope is every namespace.
        let shared = NvmeCaps { only_namespace: false, ..dc };
        assert_eq!(methods(&Caps { nvme: Some(shared), discard_max_bytes: 0 }), [Zeroout]);
        let per_ns = NvmeCaps { format_all_namespaces: false, ..shared };
        assert_eq!(
            methods(&Caps { nvme: Some(per_ns), discard_max_bytes: 0 }),
            [NvmeFormatCrypto, NvmeFormat, Zeroout]
        );
    }
}

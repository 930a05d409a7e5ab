//! The installed OS's UEFI boot entry (issue 13, item 3): on a UEFI machine the installer
//! writes a `Boot####` option for the loader on the image's ESP and sets `BootOrder` by
//! policy ([`order::Policy`]: `network-first`, the default, keeps the network options in
//! front so bootsvc's one-shot rule decides each boot; `disk-first` boots the OS without the
//! network). What was written is returned for the event.
//!
//! [`loadopt`] encodes and reads load options, [`order`] decides the number and the order
//! (both pure), [`efivars`] reads and writes them through efivarfs. Which loader:
//! [`choose_loader`].

pub mod efivars;
pub mod esp;
pub mod loadopt;
pub mod order;

use std::fmt;

use anyhow::{Context, Result};

use efivars::Vars;
use loadopt::DiskLoader;
pub use order::Policy;

/// A UEFI architecture, as loader file names spell it (the UEFI specification's
/// removable-media names, `BOOTX64.EFI`, `BOOTAA64.EFI`; Debian's `shimx64.efi`,
/// `shimaa64.efi`…).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EfiArch {
    X64,
    Aa64,
}

impl EfiArch {
    /// This machine's: the installer runs natively, so the one it was built for.
    pub fn native() -> EfiArch {
        if cfg!(target_arch = "aarch64") {
            EfiArch::Aa64
        } else {
            EfiArch::X64
        }
    }

    /// `x64`, `aa64`.
    pub fn suffix(self) -> &'static str {
        match self {
            EfiArch::X64 => "x64",
            EfiArch::Aa64 => "aa64",
        }
    }
}

/// The loader to boot on an `arch` machine, from the files found under the ESP's `\EFI`
/// (paths with backslashes, as found; FAT names compare without case): a distribution's shim
/// (it chains its GRUB and keeps Secure Boot working), else its GRUB, else the removable-media
/// path (`\EFI\BOOT\BOOTX64.EFI`, `BOOTAA64.EFI`). Loaders of another architecture are not
/// candidates: the firmware could not run them.
pub fn choose_loader(files: &[String], arch: EfiArch) -> Option<String> {
    let sfx = arch.suffix();
    let removable = format!("\\EFI\\BOOT\\BOOT{}.EFI", sfx.to_ascii_uppercase());
    let named = |want: &str| {
        let mut found: Vec<&String> = files
            .iter()
            .filter(|f| {
                let l = f.to_ascii_lowercase();
                l.rsplit('\\').next() == Some(want) && !l.starts_with("\\efi\\boot\\")
            })
            .collect();
        found.sort();
        found.first().map(|s| s.to_string())
    };
    named(&format!("shim{sfx}.efi"))
        .or_else(|| named(&format!("grub{sfx}.efi")))
        .or_else(|| files.iter().find(|f| f.eq_ignore_ascii_case(&removable)).cloned())
}

/// What [`write`] did, for the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub number: u16,
    pub description: String,
    pub loader: String,
    /// The ESP's partition number.
    pub partition: u32,
    pub policy: Policy,
    pub order_before: Vec<u16>,
    pub order_after: Vec<u16>,
    /// Existing options that did not parse (left alone).
    pub skipped: Vec<String>,
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |o: &[u16]| o.iter().map(|n| format!("{n:04X}")).collect::<Vec<_>>().join(",");
        write!(
            f,
            "UEFI Boot{:04X} {:?} → {} on partition {}; BootOrder ({}) {} → {}",
            self.number,
            self.description,
            self.loader,
            self.partition,
            self.policy,
            list(&self.order_before),
            list(&self.order_after)
        )?;
        if !self.skipped.is_empty() {
            write!(f, "; unreadable options left alone: {}", self.skipped.join("; "))?;
        }
        Ok(())
    }
}

/// Write the entry for `loader` (reusing the number of an identical one) and set
/// `BootOrder` by `policy`.
pub fn write(vars: &Vars, description: &str, loader: &DiskLoader, policy: Policy) -> Result<Written> {
    let option = loadopt::encode(description, loader)?;
    let ours = loadopt::parse(&option).context("reading back the option just built")?;
    let (existing, skipped) = vars.boot_options()?;
    let number = order::number(&existing, description, &ours.path).context("every Boot#### number is taken")?;
    let before = vars.boot_order()?;
    vars.set(&format!("Boot{number:04X}"), &option)?;
    let network = |n: u16| existing.iter().any(|(m, p)| *m == n && p.is_network());
    let after = order::boot_order(&before, number, policy, &network);
    vars.set_boot_order(&after)?;
    Ok(Written {
        number,
        description: description.to_string(),
        loader: loader.path.clone(),
        partition: loader.partition_number,
        policy,
        order_before: before,
        order_after: after,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn shim_then_grub_then_the_fallback_path() {
        let x64 = EfiArch::X64;
        let debian = s(&["\\EFI\\BOOT\\BOOTX64.EFI", "\\EFI\\debian\\grubx64.efi", "\\EFI\\debian\\shimx64.efi"]);
        assert_eq!(choose_loader(&debian, x64).as_deref(), Some("\\EFI\\debian\\shimx64.efi"));
        let no_shim = s(&["\\EFI\\BOOT\\BOOTX64.EFI", "\\EFI\\debian\\grubx64.efi"]);
        assert_eq!(choose_loader(&no_shim, x64).as_deref(), Some("\\EFI\\debian\\grubx64.efi"));
        let fallback = s(&["\\EFI\\BOOT\\bootx64.efi", "\\EFI\\BOOT\\grubx64.efi"]);
        assert_eq!(choose_loader(&fallback, x64).as_deref(), Some("\\EFI\\BOOT\\bootx64.efi"));
        assert_eq!(choose_loader(&s(&["\\EFI\\tools\\shell.efi"]), x64), None);
    }

    #[test]
    fn each_architecture_boots_only_its_own_loaders() {
        let aa64 = EfiArch::Aa64;
        let debian = s(&["\\EFI\\BOOT\\BOOTAA64.EFI", "\\EFI\\debian\\grubaa64.efi", "\\EFI\\debian\\shimaa64.efi"]);
        assert_eq!(choose_loader(&debian, aa64).as_deref(), Some("\\EFI\\debian\\shimaa64.efi"));
        let no_shim = s(&["\\EFI\\BOOT\\BOOTAA64.EFI", "\\EFI\\debian\\grubaa64.efi"]);
        assert_eq!(choose_loader(&no_shim, aa64).as_deref(), Some("\\EFI\\debian\\grubaa64.efi"));
        assert_eq!(
            choose_loader(&s(&["\\EFI\\BOOT\\bootaa64.efi"]), aa64).as_deref(),
            Some("\\EFI\\BOOT\\bootaa64.efi")
        );
        // An x86_64 image's ESP on an arm64 machine, and the reverse: nothing to boot.
        let x86 = s(&["\\EFI\\BOOT\\BOOTX64.EFI", "\\EFI\\debian\\grubx64.efi", "\\EFI\\debian\\shimx64.efi"]);
        assert_eq!(choose_loader(&x86, aa64), None);
        assert_eq!(choose_loader(&debian, EfiArch::X64), None);
        // Both on one ESP: each machine its own.
        let both: Vec<String> = x86.iter().chain(&debian).cloned().collect();
        assert_eq!(choose_loader(&both, aa64).as_deref(), Some("\\EFI\\debian\\shimaa64.efi"));
        assert_eq!(choose_loader(&both, EfiArch::X64).as_deref(), Some("\\EFI\\debian\\shimx64.efi"));
        assert_eq!(EfiArch::native(), if cfg!(target_arch = "aarch64") { aa64 } else { EfiArch::X64 });
    }

    fn loader() -> DiskLoader {
        DiskLoader {
            partition_number: 15,
            start_lba: 2048,
            size_lba: 260_096,
            partition_guid: [7; 16],
            path: "\\EFI\\debian\\shimx64.efi".into(),
        }
    }

    /// An OVMF-like set of options: shell (0), PXEv4 (1, network), the disk (2).
    fn firmware(dir: &std::path::Path) -> Vars {
        let v = Vars::at(dir);
        let mut pxe_path = vec![3, 11, 37, 0];
        pxe_path.extend_from_slice(&[0; 33]);
        pxe_path.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        let option = |desc: &str, path: &[u8]| {
            let mut b = vec![1, 0, 0, 0];
            b.extend_from_slice(&u16::try_from(path.len()).unwrap().to_le_bytes());
            b.extend(format!("{desc}\0").encode_utf16().flat_map(u16::to_le_bytes));
            b.extend_from_slice(path);
            b
        };
        v.set(
            "Boot0000",
            &option(
                "EFI Internal Shell",
                &[4, 6, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 0xff, 4, 0],
            ),
        )
        .unwrap();
        v.set("Boot0001", &option("UEFI PXEv4", &pxe_path)).unwrap();
        v.set("Boot0002", &option("UEFI Misc Device", &[1, 1, 6, 0, 0, 1, 0x7f, 0xff, 4, 0])).unwrap();
        v.set_boot_order(&[1, 2, 0]).unwrap();
        v
    }

    #[test]
    fn network_first_then_a_reinstall_reuses_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let v = firmware(dir.path());
        let w = write(&v, "debian", &loader(), Policy::NetworkFirst).unwrap();
        assert_eq!((w.number, w.order_before.clone(), w.order_after.clone()), (3, vec![1, 2, 0], vec![1, 3, 2, 0]));
        assert_eq!(v.boot_order().unwrap(), [1, 3, 2, 0]);
        let (opts, _) = v.boot_options().unwrap();
        assert_eq!(opts.iter().find(|(n, _)| *n == 3).map(|(_, p)| p.description.as_str()), Some("debian"));
        assert!(w.to_string().contains("Boot0003 \"debian\" → \\EFI\\debian\\shimx64.efi"), "{w}");
        // Again (a reinstall): the same number, the order unchanged.
        let again = write(&v, "debian", &loader(), Policy::NetworkFirst).unwrap();
        assert_eq!((again.number, again.order_after), (3, vec![1, 3, 2, 0]));
    }

    #[test]
    fn disk_first_puts_the_entry_in_front() {
        let dir = tempfile::tempdir().unwrap();
        let v = firmware(dir.path());
        let w = write(&v, "debian", &loader(), Policy::DiskFirst).unwrap();
        assert_eq!(w.order_after, [3, 1, 2, 0]);
        assert_eq!(v.boot_order().unwrap(), [3, 1, 2, 0]);
    }
}

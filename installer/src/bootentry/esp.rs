//! The installed disk's side of the boot entry: on a UEFI machine, efivarfs mounted, the
//! image's ESP found in the (fixed) GPT, mounted read-only to see which loader it holds,
//! and the entry written ([`super::write`]).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::MsFlags;

use super::efivars::{self, Vars};
use super::loadopt::DiskLoader;
use super::{choose_loader, EfiArch, Policy, Written};
use crate::cloudinit::{Mount, PartNode};
use crate::gpt;
use crate::target::Target;

/// vfat mount options: character sets whose modules the initramfs has.
const FAT_OPTIONS: &str = "iocharset=utf8,codepage=437";

/// What happened to the boot entry, for the `installed` event.
#[derive(Debug)]
pub enum Outcome {
    /// Not a UEFI boot (no `/sys/firmware/efi`): the firmware boots the disk by itself.
    NotUefi,
    Written(Written),
}

/// Write the installed OS's boot entry on `t` when the machine booted by UEFI.
pub fn apply(t: &Target, policy: Policy) -> Result<Outcome> {
    if !Path::new("/sys/firmware/efi").is_dir() {
        return Ok(Outcome::NotUefi);
    }
    mount_efivarfs()?;
    let g = gpt::read(t)?;
    let esp_type = gpt::type_guid("esp")?;
    let (number, p) = g
        .iter()
        .find(|(_, p)| p.is_used() && p.partition_type_guid == esp_type)
        .context("the installed disk has no EFI system partition")?;
    let part = gpt::list(&g).into_iter().find(|x| x.number == number).context("the ESP vanished from the GPT")?;
    let node = PartNode::create(t, &part)?;
    // Debian's kernel defaults to iocharset=ascii, whose module the initramfs does not carry
    // (and ASCII would not do for names anyway); utf8 and cp437 it does.
    let mnt = Mount::with_type(&node.path, "vfat", MsFlags::MS_RDONLY | MsFlags::MS_NOATIME, Some(FAT_OPTIONS))
        .with_context(|| format!("mounting the ESP (partition {number})"))?;
    let files = efi_files(&mnt.dir);
    mnt.unmount()?;
    let arch = EfiArch::native();
    let path = choose_loader(&files, arch).with_context(|| {
        let sfx = arch.suffix();
        format!(
            "no loader for this machine on the ESP (partition {number}): no shim{sfx}.efi, grub{sfx}.efi or \\EFI\\BOOT\\BOOT{}.EFI among {files:?}",
            sfx.to_ascii_uppercase()
        )
    })?;
    // Named after the distribution's directory (`\EFI\debian\…`), as its own installer would.
    let description = match path.split('\\').nth(2) {
        Some(d) if !d.eq_ignore_ascii_case("BOOT") => d.to_string(),
        _ => "installed OS".to_string(),
    };
    let loader = DiskLoader {
        partition_number: number,
        start_lba: p.starting_lba,
        size_lba: p.ending_lba - p.starting_lba + 1,
        partition_guid: p.unique_partition_guid,
        path,
    };
    let vars = Vars::at(efivars::DIR);
    Ok(Outcome::Written(super::write(&vars, &description, &loader, policy)?))
}

/// efivarfs on its usual place (the kernel loads the module on demand); already mounted is
/// fine. Also before the hardware report, which reads the `SecureBoot` variable there.
pub fn mount_efivarfs() -> Result<()> {
    let dir = Path::new(efivars::DIR);
    match nix::mount::mount(Some("efivarfs"), dir, Some("efivarfs"), MsFlags::empty(), None::<&str>) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("mounting efivarfs on {}: {e}", dir.display())),
    }
}

/// `\EFI\<dir>\<file>` for every file two levels under the ESP's `EFI` directory (any case).
fn efi_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Some(efi) = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case("EFI"))
    else {
        return out;
    };
    let efi_name = efi.file_name().to_string_lossy().to_string();
    for d in fs::read_dir(efi.path()).into_iter().flatten().flatten() {
        let dir_name = d.file_name().to_string_lossy().to_string();
        for f in fs::read_dir(d.path()).into_iter().flatten().flatten() {
            if f.path().is_file() {
                out.push(format!("\\{efi_name}\\{dir_name}\\{}", f.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

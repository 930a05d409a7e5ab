//! The names TFTP answers with something other than a file of `tftp.root`: the shim/GRUB
//! chain's (`bootsvc/docs/secure-boot.md`). Debian's signed GRUB speaks only TFTP, so it
//! reads here its configurations (`grub/grub.cfg`, `boot/<mac>.grub`, and the arm64 GRUB's
//! `boot/arm64/<mac>.grub`, made per request by `netboot::grub` with the caller identified by
//! its source address) and the installer's kernel and
//! initramfs of each architecture (`artifacts/<artifacts.kernel>`,
//! `artifacts/<artifacts.initrd>`, `artifacts/arm64/…` the same, opened through a jail on
//! `artifacts.dir`, as `/artifacts/` over HTTP). Those names shadow the same names in
//! `tftp.root`.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use crate::arch::Arch;
use crate::config::Config;
use crate::grub;
use crate::identity::Identity;
use crate::jail::{Jail, Refusal};
use crate::netboot;
use crate::storage::Storage;

pub struct Generated {
    cfg: Arc<Config>,
    storage: Arc<dyn Storage>,
    identity: Arc<Identity>,
    artifacts: Jail,
}

impl Generated {
    pub fn new(cfg: Arc<Config>, storage: Arc<dyn Storage>, identity: Arc<Identity>) -> Result<Generated> {
        let artifacts = Jail::new(&cfg.artifacts.dir)?;
        Ok(Generated { cfg, storage, identity, artifacts })
    }

    /// The file for `name` asked by `client`, with its size; `None` when `name` is not one of
    /// these (the root serves it).
    pub fn open(&self, name: &str, client: SocketAddr) -> Option<Result<(File, u64), Refusal>> {
        let bare = name.strip_prefix('/').unwrap_or(name);
        if let Some(file) = bare.strip_prefix(grub::ARTIFACTS_DIR).and_then(|r| r.strip_prefix('/')) {
            for arch in [Arch::X86_64, Arch::Aarch64] {
                let (kernel, initrd) = netboot::artifacts(&self.cfg, arch);
                if file == kernel || file == initrd {
                    return Some(self.artifacts.open(Path::new(file)));
                }
            }
            return None;
        }
        let g = grub::parse_name(name)?;
        let c = netboot::grub::answer(&self.cfg, &*self.storage, &self.identity, g, client.ip());
        netboot::grub::log(&c, g, &client, "tftp");
        Some(in_memory(c.config.as_bytes()).map_err(|e| Refusal::Io(format!("a file in memory for {name}: {e}"))))
    }
}

/// `bytes` as a file TFTP can `pread` like any other: an anonymous memory file.
fn in_memory(bytes: &[u8]) -> std::io::Result<(File, u64)> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(c"osie-tftp", MFdFlags::MFD_CLOEXEC).map_err(std::io::Error::from)?;
    let mut f = File::from(fd);
    f.write_all(bytes)?;
    Ok((f, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn memory_files_read_back() {
        let (f, n) = in_memory(b"configfile x\n").unwrap();
        assert_eq!(n, 13);
        let mut buf = [0u8; 13];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"configfile x\n");
    }
}

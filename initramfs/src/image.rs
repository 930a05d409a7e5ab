//! Assemble the initramfs: the installer as `/init`, the chosen modules with a generated
//! index, the mount points PID 1 needs, and `/dev/console` so the kernel can give `/init`
//! its stdio before devtmpfs is mounted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::compress::{compress, compress_module, Compression, ModuleCompression};
use crate::cpio::{self, Header, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG};
use crate::modindex::{self, Alias, SoftDep};
use crate::tree::{KernelTree, Selection};

/// Drivers the installer may need on real and virtual machines: storage, network, the
/// buses they sit on, and the filesystems of installed systems. "Where present": a name this
/// kernel lacks or builds in is reported, not an error.
pub const DEFAULT_MODULES: &[&str] = &[
    // buses (virtio devices appear only once virtio_pci binds the PCI functions)
    "virtio_pci",
    "virtio_mmio",
    // storage
    "virtio_blk",
    "virtio_scsi",
    "nvme",
    "ahci",
    "ata_piix",
    // arm64 servers: SATA controllers on the SoC (Ampere, HiSilicon) rather than on PCI
    "ahci_platform",
    "sd_mod",
    // network
    "virtio_net",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "mlx5_core",
    // arm64 servers' NICs (Ampere boards: Broadcom; HiSilicon Kunpeng; Cavium ThunderX)
    "bnxt_en",
    "hns3",
    "nicvf",
    // filesystems of installed systems (cloud-init seeding mounts the root; ESPs are vfat)
    "ext4",
    "xfs",
    "btrfs",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_utf8",
    // UEFI variables: the installed OS's boot entry (installer/src/bootentry)
    "efivarfs",
];

/// Directories PID 1 mounts on or writes to.
const DIRS: &[&str] = &["dev", "etc", "mnt", "proc", "root", "run", "sys", "tmp"];

pub struct Options {
    /// The unpacked kernel package (holds `lib/modules/<release>/`).
    pub kernel_root: PathBuf,
    pub release: Option<String>,
    /// The static installer binary, shipped as `/init`.
    pub init: PathBuf,
    pub modules: Vec<String>,
    pub compression: Compression,
    pub level: Option<i32>,
    pub module_compression: ModuleCompression,
}

/// The result and what went into it.
pub struct Built {
    pub image: Vec<u8>,
    pub cpio_len: usize,
    pub release: String,
    pub selection: Selection,
}

pub fn build(opts: &Options) -> Result<Built> {
    let tree = KernelTree::open(&opts.kernel_root, opts.release.as_deref())?;
    let mut selection = tree.resolve(&opts.modules).context("resolving module dependencies")?;
    if opts.module_compression != ModuleCompression::None {
        for m in selection.modules.values_mut() {
            m.bytes = compress_module(&m.bytes, opts.module_compression)
                .with_context(|| format!("compressing {}", m.path))?;
            m.path.push_str(opts.module_compression.suffix());
        }
    }
    let init = std::fs::read(&opts.init).with_context(|| format!("reading the init binary {}", opts.init.display()))?;
    if init.get(..4) != Some(b"\x7fELF") {
        anyhow::bail!("{} is not an ELF executable", opts.init.display());
    }
    let cpio = archive(&tree.release, &init, &selection, &tree.builtin)?;
    let image = compress(&cpio, opts.compression, opts.level).context("compressing the archive")?;
    Ok(Built { image, cpio_len: cpio.len(), release: tree.release, selection })
}

/// The uncompressed newc archive, entries sorted by path.
pub fn archive(release: &str, init: &[u8], sel: &Selection, builtin: &BTreeSet<String>) -> Result<Vec<u8>> {
    let mut files: BTreeMap<String, (Header, Vec<u8>)> = BTreeMap::new();
    let reg = |mode| Header { mode: S_IFREG | mode, rdev_major: 0, rdev_minor: 0 };
    files.insert("init".into(), (reg(0o755), init.to_vec()));
    // The kernel runs /sbin/modprobe to load modules on demand (fs-ext4 at mount time); the
    // installer does that job when started under this name.
    files.insert(
        "sbin/modprobe".into(),
        (Header { mode: S_IFLNK | 0o777, rdev_major: 0, rdev_minor: 0 }, b"/init".to_vec()),
    );
    files.insert("dev/console".into(), (Header { mode: S_IFCHR | 0o600, rdev_major: 5, rdev_minor: 1 }, vec![]));
    files.insert("dev/null".into(), (Header { mode: S_IFCHR | 0o666, rdev_major: 1, rdev_minor: 3 }, vec![]));
    let moddir = format!("lib/modules/{release}");
    let mut aliases = Vec::new();
    let mut softdeps = BTreeMap::new();
    for (name, m) in &sel.modules {
        files.insert(format!("{moddir}/{}", m.path), (reg(0o644), m.bytes.clone()));
        aliases.extend(m.info.aliases.iter().map(|a| Alias { pattern: a.clone(), module: name.clone() }));
        if !m.info.softdep.is_empty() {
            softdeps
                .insert(name.clone(), SoftDep { pre: m.info.softdep.pre.clone(), post: m.info.softdep.post.clone() });
        }
    }
    let builtin_list: String = builtin.iter().map(|b| format!("{b}\n")).collect();
    for (file, text) in [
        ("modules.dep", modindex::write_dep(&sel.dep_map())),
        ("modules.alias", modindex::write_alias(&aliases)),
        ("modules.softdep", modindex::write_softdep(&softdeps)),
        ("modules.builtin", builtin_list),
    ] {
        files.insert(format!("{moddir}/{file}"), (reg(0o644), text.into_bytes()));
    }
    // Every parent directory, plus the fixed mount points.
    let mut dirs: BTreeSet<String> = DIRS.iter().map(|d| d.to_string()).collect();
    for path in files.keys() {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    for d in dirs {
        files.insert(d, (Header { mode: S_IFDIR | 0o755, rdev_major: 0, rdev_minor: 0 }, vec![]));
    }
    let mut w = cpio::Writer::new(Vec::new());
    for (path, (h, data)) in &files {
        w.entry(path, *h, data).with_context(|| format!("adding {path}"))?;
    }
    Ok(w.finish()?)
}

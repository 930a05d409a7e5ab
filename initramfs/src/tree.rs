//! The unpacked kernel package's module tree (`<root>/lib/modules/<release>/`) and the
//! dependency closure of the modules the initramfs should carry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::modindex::{fnmatch, name_from_path, normalize};
use crate::modinfo::ModInfo;

/// Suffixes of module files, compressed or not, as kernels ship them.
const SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

pub struct KernelTree {
    /// `<root>/lib/modules/<release>`
    pub dir: PathBuf,
    pub release: String,
    /// Module name → path relative to `dir` (as shipped, maybe compressed).
    pub files: BTreeMap<String, String>,
    /// Names of modules built into the kernel (`modules.builtin`).
    pub builtin: BTreeSet<String>,
    /// Aliases of built-in modules (`modules.builtin.modinfo`), for softdep resolution.
    builtin_aliases: Vec<(String, String)>,
}

/// One module chosen for the initramfs, decompressed.
#[derive(Debug, Clone)]
pub struct Module {
    /// Path inside `lib/modules/<release>/`, without a compression suffix.
    pub path: String,
    pub bytes: Vec<u8>,
    pub info: ModInfo,
}

/// The modules to ship and what was asked for but is not needed or not there.
#[derive(Debug, Default)]
pub struct Selection {
    pub modules: BTreeMap<String, Module>,
    /// Asked for, but built into this kernel.
    pub builtin: Vec<String>,
    /// Asked for, but neither a module nor built in (this kernel lacks the driver).
    pub missing: Vec<String>,
}

impl KernelTree {
    /// Open `<root>/lib/modules/<release>`; with `release` unset there must be exactly one.
    pub fn open(root: &Path, release: Option<&str>) -> Result<KernelTree> {
        let base = root.join("lib/modules");
        let release = match release {
            Some(r) => r.to_string(),
            None => {
                let mut found: Vec<String> = std::fs::read_dir(&base)
                    .with_context(|| format!("listing kernel releases in {}", base.display()))?
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().join("kernel").is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                found.sort();
                match found.len() {
                    1 => found.remove(0),
                    0 => bail!("no kernel module tree (lib/modules/<release>/kernel) under {}", base.display()),
                    _ => bail!("several kernel releases under {}: {found:?}; pass --release", base.display()),
                }
            }
        };
        let dir = base.join(&release);
        let mut files = BTreeMap::new();
        walk(&dir, &dir.join("kernel"), &mut files).with_context(|| format!("scanning {}", dir.display()))?;
        if files.is_empty() {
            bail!("no kernel modules under {}", dir.display());
        }
        let builtin = read_optional(&dir.join("modules.builtin"))?.lines().map(name_from_path).collect();
        let builtin_aliases = read_optional_bytes(&dir.join("modules.builtin.modinfo"))?
            .split(|&b| b == 0)
            .filter_map(|e| {
                let e = String::from_utf8_lossy(e);
                let (m, rest) = e.split_once('.')?;
                let a = rest.strip_prefix("alias=")?;
                Some((a.to_string(), normalize(m)))
            })
            .collect();
        Ok(KernelTree { dir, release, files, builtin, builtin_aliases })
    }

    /// Read and decompress one module, and parse its `.modinfo`.
    pub fn load(&self, name: &str) -> Result<Module> {
        let rel = self.files.get(name).with_context(|| format!("module {name} is not in {}", self.dir.display()))?;
        let path = self.dir.join(rel);
        let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let bytes = crate::compress::decompress_module(rel, raw).with_context(|| format!("decompressing {rel}"))?;
        let info = ModInfo::from_elf(&bytes).with_context(|| format!("reading .modinfo of {rel}"))?;
        let stem = SUFFIXES.iter().find_map(|s| rel.strip_suffix(s)).unwrap_or(rel);
        Ok(Module { path: format!("{stem}.ko"), bytes, info })
    }

    /// Every alias pattern → module name, over the whole tree (slow: reads every module).
    /// Only needed when a softdep names an alias rather than a module.
    fn all_aliases(&self) -> Result<Vec<(String, String)>> {
        let mut out = self.builtin_aliases.clone();
        for name in self.files.keys() {
            let m = self.load(name)?;
            out.extend(m.info.aliases.into_iter().map(|a| (a, name.clone())));
        }
        Ok(out)
    }

    /// The closure of `wanted` over `depends=` and `softdep=` (pre and post) entries.
    /// Wanted names that are built in or absent are recorded, not errors ("where present");
    /// a hard dependency that is missing is an error: the module could not load.
    pub fn resolve(&self, wanted: &[String]) -> Result<Selection> {
        let mut sel = Selection::default();
        let mut aliases: Option<Vec<(String, String)>> = None;
        let mut queue: Vec<(String, bool)> = wanted.iter().map(|w| (normalize(w), true)).collect();
        queue.reverse();
        while let Some((name, asked)) = queue.pop() {
            if sel.modules.contains_key(&name) {
                continue;
            }
            if !self.files.contains_key(&name) {
                if self.builtin.contains(&name) {
                    if asked {
                        sel.builtin.push(name);
                    }
                    continue;
                }
                if asked {
                    sel.missing.push(name);
                    continue;
                }
                bail!("module dependency {name} is neither in {} nor built in", self.dir.display());
            }
            let m = self.load(&name)?;
            for d in &m.info.depends {
                queue.push((d.clone(), false));
            }
            for s in m.info.softdep.pre.iter().chain(&m.info.softdep.post) {
                let n = normalize(s);
                if self.files.contains_key(&n) || self.builtin.contains(&n) {
                    queue.push((n, false));
                    continue;
                }
                // A softdep may name an alias (`crypto-crc32c`): every module providing it.
                let all = match &aliases {
                    Some(a) => a,
                    None => aliases.insert(self.all_aliases()?),
                };
                let providers: BTreeSet<&String> = all.iter().filter(|(p, _)| fnmatch(p, s)).map(|(_, m)| m).collect();
                if providers.is_empty() {
                    tracing::warn!(module = %name, softdep = %s, "soft dependency matches no module; skipped");
                }
                queue.extend(providers.into_iter().map(|p| (p.clone(), false)));
            }
            sel.modules.insert(name, m);
        }
        sel.builtin.sort();
        sel.builtin.dedup();
        Ok(sel)
    }
}

impl Selection {
    /// `modules.dep` entries: each module's file → its dependencies' files, transitively,
    /// in depmod order (the last one is loaded first).
    pub fn dep_map(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for (name, m) in &self.modules {
            let mut order = Vec::new();
            let mut seen = BTreeSet::new();
            seen.insert(name.clone());
            for d in &m.info.depends {
                self.post_order(d, &mut seen, &mut order);
            }
            order.reverse();
            out.insert(m.path.clone(), order.iter().map(|n| self.modules[n].path.clone()).collect());
        }
        out
    }

    fn post_order(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        let Some(m) = self.modules.get(name) else { return };
        if !seen.insert(name.to_string()) {
            return;
        }
        for d in &m.info.depends {
            self.post_order(d, seen, order);
        }
        order.push(name.to_string());
    }
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            walk(base, &p, out)?;
            continue;
        }
        let rel = p.strip_prefix(base).unwrap_or(&p).to_string_lossy().into_owned();
        if SUFFIXES.iter().any(|s| rel.ends_with(s)) {
            out.insert(name_from_path(&rel), rel);
        }
    }
    Ok(())
}

fn read_optional(p: &Path) -> Result<String> {
    Ok(String::from_utf8_lossy(&read_optional_bytes(p)?).into_owned())
}

fn read_optional_bytes(p: &Path) -> Result<Vec<u8>> {
    match std::fs::read(p) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modinfo::tests::fake_module;

    /// A kernel tree on disk: `(relative path, modinfo)` per module.
    pub(crate) fn fake_tree(mods: &[(&str, &str)], builtin: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("lib/modules/6.1.0-test");
        for (rel, info) in mods {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let elf = fake_module(&info.replace(';', "\0").into_bytes());
            let bytes = if rel.ends_with(".zst") { zstd::encode_all(&elf[..], 3).unwrap() } else { elf };
            std::fs::write(p, bytes).unwrap();
        }
        std::fs::write(dir.join("modules.builtin"), builtin).unwrap();
        root
    }

    #[test]
    fn closure_follows_depends_and_alias_softdeps() {
        let root = fake_tree(
            &[
                (
                    "kernel/drivers/net/virtio_net.ko",
                    "name=virtio_net;depends=net_failover,virtio_ring;alias=virtio:d00000001v*",
                ),
                ("kernel/drivers/net/net_failover.ko", "name=net_failover;depends=failover"),
                ("kernel/net/core/failover.ko", "name=failover;depends="),
                ("kernel/drivers/virtio/virtio_ring.ko", "name=virtio_ring;depends="),
                ("kernel/fs/ext4/ext4.ko.zst", "name=ext4;depends=jbd2;softdep=pre: crypto-crc32c;alias=fs-ext4"),
                ("kernel/fs/jbd2/jbd2.ko", "name=jbd2;depends="),
                ("kernel/crypto/crc32c_generic.ko", "name=crc32c_generic;alias=crypto-crc32c;alias=crc32c"),
                ("kernel/arch/x86/crypto/crc32c-intel.ko", "name=crc32c_intel;alias=crypto-crc32c"),
                ("kernel/drivers/unused.ko", "name=unused"),
            ],
            "kernel/drivers/pci/pci-stub.ko\n",
        );
        let tree = KernelTree::open(root.path(), None).unwrap();
        assert_eq!(tree.release, "6.1.0-test");
        let wanted: Vec<String> = ["virtio_net", "ext4", "pci-stub", "mlx5_core"].map(String::from).to_vec();
        let sel = tree.resolve(&wanted).unwrap();
        let names: Vec<&str> = sel.modules.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["crc32c_generic", "crc32c_intel", "ext4", "failover", "jbd2", "net_failover", "virtio_net", "virtio_ring"]
        );
        assert_eq!(sel.builtin, ["pci_stub"]);
        assert_eq!(sel.missing, ["mlx5_core"]);
        // The compressed module is stored decompressed under a plain .ko name.
        assert_eq!(sel.modules["ext4"].path, "kernel/fs/ext4/ext4.ko");
        assert_eq!(&sel.modules["ext4"].bytes[..4], b"\x7fELF");
        let deps = sel.dep_map();
        assert_eq!(
            deps["kernel/drivers/net/virtio_net.ko"],
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/net/core/failover.ko"
            ],
            "loading from the end backwards: failover, net_failover, virtio_ring"
        );
        assert!(deps["kernel/fs/jbd2/jbd2.ko"].is_empty());
    }

    #[test]
    fn missing_hard_dependency_is_an_error() {
        let root = fake_tree(&[("kernel/a.ko", "name=a;depends=b")], "");
        let tree = KernelTree::open(root.path(), None).unwrap();
        let err = format!("{:#}", tree.resolve(&["a".to_string()]).unwrap_err());
        assert!(err.contains("module dependency b"), "{err}");
    }
}

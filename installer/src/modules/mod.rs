//! Kernel modules shipped in the initramfs: load one with its dependencies and soft
//! dependencies (like `modprobe`), and coldplug every device present (see [`coldplug`]).
//!
//! The index (`modules.dep`, `modules.alias`, `modules.softdep`, `modules.builtin`) is
//! written by `mkinitramfs` in depmod's formats; [`osie_initramfs::modindex`] parses it.

pub mod coldplug;
pub mod kmod;
pub mod modprobe;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use osie_initramfs::modindex::{normalize, ModIndex};

/// How a module file gets into the kernel: [`kmod::insert`], or a recorder in tests.
pub type Inserter = Box<dyn FnMut(&Path) -> Result<kmod::Inserted> + Send>;

/// Loads modules from one `/lib/modules/<release>` directory, remembering what is loaded.
pub struct Loader {
    dir: PathBuf,
    index: ModIndex,
    loaded: BTreeSet<String>,
    /// Modules whose load failed (not retried; a failed probe does not get better).
    failed: BTreeSet<String>,
    insert: Inserter,
}

/// What a load did, for the console and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub names: Vec<String>,
}

impl Loader {
    /// The running kernel's module directory (`/lib/modules/$(uname -r)`).
    pub fn for_running_kernel() -> Result<Loader> {
        let release = nix::sys::utsname::uname().context("uname")?.release().to_string_lossy().into_owned();
        Loader::open(&Path::new("/lib/modules").join(release))
    }

    /// Read the index in `dir`. Modules already in the kernel (`/proc/modules`) count as
    /// loaded.
    pub fn open(dir: &Path) -> Result<Loader> {
        let read = |f: &str| -> Result<String> {
            let p = dir.join(f);
            match std::fs::read_to_string(&p) {
                Ok(s) => Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && f != "modules.dep" => Ok(String::new()),
                Err(e) => Err(e).with_context(|| format!("reading the module index {}", p.display())),
            }
        };
        let (index, bad) = ModIndex::parse(
            &read("modules.dep")?,
            &read("modules.alias")?,
            &read("modules.softdep")?,
            &read("modules.builtin")?,
        );
        for b in bad {
            tracing::warn!("module index: {b}");
        }
        let mut loader = Loader::from_index(dir, index, Box::new(|p: &Path| kmod::insert(p)));
        if let Ok(m) = std::fs::read_to_string("/proc/modules") {
            loader.loaded.extend(m.lines().filter_map(|l| l.split_whitespace().next()).map(normalize));
        }
        Ok(loader)
    }

    /// A loader over a parsed index that inserts with `insert` (built-ins count as loaded).
    pub fn from_index(dir: &Path, index: ModIndex, insert: Inserter) -> Loader {
        let loaded = index.builtin.iter().cloned().collect();
        Loader { dir: dir.to_path_buf(), index, loaded, failed: BTreeSet::new(), insert }
    }

    pub fn index(&self) -> &ModIndex {
        &self.index
    }

    /// Loaded by us, earlier, or built in. A fresh check of `/proc/modules` too, since the
    /// kernel's own `modprobe` calls (another process) load modules behind our back.
    pub fn is_loaded(&self, name: &str) -> bool {
        let name = normalize(name);
        self.loaded.contains(&name)
            || std::fs::read_to_string("/proc/modules")
                .is_ok_and(|m| m.lines().any(|l| l.split_whitespace().next().map(normalize).as_deref() == Some(&name)))
    }

    /// Load every module matching `modalias` (or named so), as `modprobe -q` would. Errors
    /// of individual modules are logged, not returned: one broken driver must not stop the
    /// others. Returns the modules newly loaded.
    pub fn load_alias(&mut self, modalias: &str) -> Loaded {
        let mut out = Loaded::default();
        for name in self.index.lookup(modalias) {
            self.load(&name, &mut out, 0);
        }
        out
    }

    fn load(&mut self, name: &str, out: &mut Loaded, depth: usize) {
        let name = normalize(name);
        if depth > 16 || self.loaded.contains(&name) || self.failed.contains(&name) {
            return;
        }
        let Some((file, deps)) = self.index.deps.get(&name).cloned() else {
            tracing::debug!(module = %name, "not in modules.dep");
            return;
        };
        // Mark first so softdep cycles (a pre: b, b pre: a) end.
        self.loaded.insert(name.clone());
        let soft = self.index.softdeps.get(&name).cloned().unwrap_or_default();
        for s in &soft.pre {
            for m in self.index.lookup(s) {
                self.load(&m, out, depth + 1);
            }
        }
        // modules.dep lists dependencies so that loading from the end satisfies them.
        for d in deps.iter().rev() {
            self.load(d, out, depth + 1);
        }
        let path = self.dir.join(&file);
        match (self.insert)(&path) {
            Ok(kmod::Inserted::Loaded) => {
                tracing::info!(module = %name, "loaded");
                out.names.push(name.clone());
            }
            Ok(kmod::Inserted::AlreadyThere) => {}
            Err(e) => {
                // ENODEV and friends: the driver found nothing to drive; not an error.
                tracing::debug!(module = %name, "not loaded: {e:#}");
                self.loaded.remove(&name);
                self.failed.insert(name.clone());
            }
        }
        for s in &soft.post {
            for m in self.index.lookup(s) {
                self.load(&m, out, depth + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An index like the initramfs's, and a loader that records what it inserts; `fail`
    /// names modules whose insert errors (a driver with nothing to drive).
    fn loader(fail: &'static [&'static str]) -> (Loader, Arc<Mutex<Vec<String>>>) {
        let dep = "kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
kernel/net/core/failover.ko:\n\
kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n\
kernel/fs/jbd2/jbd2.ko:\n\
kernel/crypto/crc32c_generic.ko:\n\
kernel/arch/x86/crypto/crc32c-intel.ko:\n";
        let alias = "alias virtio:d00000001v* virtio_net\nalias fs-ext4 ext4\nalias crypto-crc32c crc32c_generic\n\
alias crypto-crc32c crc32c_intel\n";
        let (index, bad) =
            ModIndex::parse(dep, alias, "softdep ext4 pre: crypto-crc32c\n", "kernel/drivers/virtio/virtio.ko\n");
        assert!(bad.is_empty());
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&log);
        let insert: Inserter = Box::new(move |p: &Path| {
            let name = osie_initramfs::modindex::name_from_path(&p.to_string_lossy());
            l.lock().unwrap().push(name.clone());
            if fail.contains(&name.as_str()) {
                anyhow::bail!("ENODEV");
            }
            Ok(kmod::Inserted::Loaded)
        });
        (Loader::from_index(Path::new("/lib/modules/test"), index, insert), log)
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let (mut l, log) = loader(&[]);
        let got = l.load_alias("virtio:d00000001v00001AF4");
        assert_eq!(*log.lock().unwrap(), ["failover", "net_failover", "virtio_ring", "virtio_net"]);
        assert_eq!(got.names, ["failover", "net_failover", "virtio_ring", "virtio_net"]);
        // A second device of the same kind loads nothing new.
        assert!(l.load_alias("virtio:d00000001v00001AF4").names.is_empty());
        assert!(l.is_loaded("virtio_net") && l.is_loaded("virtio"), "built-ins count as loaded");
    }

    #[test]
    fn softdep_aliases_load_before_the_module() {
        let (mut l, log) = loader(&["crc32c_intel"]);
        let got = l.load_alias("fs-ext4");
        assert_eq!(*log.lock().unwrap(), ["crc32c_generic", "crc32c_intel", "jbd2", "ext4"]);
        assert_eq!(got.names, ["crc32c_generic", "jbd2", "ext4"], "a failed provider is not reported as loaded");
        // A failed module is not retried.
        l.load_alias("crypto-crc32c");
        assert_eq!(log.lock().unwrap().iter().filter(|n| *n == "crc32c_intel").count(), 1);
        assert!(l.load_alias("pci:v0000FFFFd0000FFFF").names.is_empty(), "no driver, nothing loaded");
    }
}

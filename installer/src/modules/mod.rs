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

/// Loads modules from one `/lib/modules/<release>` directory, remembering what is loaded.
pub struct Loader {
    dir: PathBuf,
    index: ModIndex,
    loaded: BTreeSet<String>,
    /// Modules whose load failed (not retried; a failed probe does not get better).
    failed: BTreeSet<String>,
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
        let mut loaded: BTreeSet<String> = index.builtin.iter().cloned().collect();
        if let Ok(m) = std::fs::read_to_string("/proc/modules") {
            loaded.extend(m.lines().filter_map(|l| l.split_whitespace().next()).map(normalize));
        }
        Ok(Loader { dir: dir.to_path_buf(), index, loaded, failed: BTreeSet::new() })
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
        match kmod::insert(&path) {
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

    /// Modules that provide filesystems (an `fs-<type>` alias) and the code pages vfat
    /// mounts need. Not needed at boot, where the kernel calls [`modprobe`] on demand; for
    /// environments without that path (`/proc/sys/kernel/modprobe` pointing elsewhere).
    pub fn load_filesystems(&mut self) -> Loaded {
        let mut names: Vec<String> = self
            .index
            .aliases
            .iter()
            .filter(|a| a.pattern.starts_with("fs-"))
            .map(|a| a.module.clone())
            .chain(self.index.deps.keys().filter(|n| n.starts_with("nls_")).cloned())
            .collect();
        names.sort();
        names.dedup();
        let mut out = Loaded::default();
        for n in names {
            self.load(&n, &mut out, 0);
        }
        out
    }
}

//! Coldplug: find the drivers for every device the kernel has found, from the `modalias`
//! files in sysfs, and load them — repeatedly, because loading a bus driver (virtio_pci)
//! makes new devices appear (the virtio NIC and disk) that need drivers of their own.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::{Loaded, Loader};

/// Every `modalias` value under `sys/devices` (sorted, unique, empty ones skipped).
/// Symlinks are not followed: sysfs is full of them and they loop.
pub fn modaliases(sys: &Path) -> Vec<String> {
    let mut out = BTreeSet::new();
    walk(&sys.join("devices"), &mut out, 0);
    out.into_iter().collect()
}

fn walk(dir: &Path, out: &mut BTreeSet<String>, depth: usize) {
    // Deepest real sysfs device paths are ~20 levels; the cap guards against surprises.
    if depth > 40 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            walk(&e.path(), out, depth + 1);
        } else if ft.is_file() && e.file_name() == "modalias" {
            if let Ok(s) = std::fs::read_to_string(e.path()) {
                let s = s.trim();
                if !s.is_empty() {
                    out.insert(s.to_string());
                }
            }
        }
    }
}

/// Load drivers for all present devices until a scan, after `settle`, finds no new
/// modalias (or `max_rounds` is reached). Returns every module loaded.
pub fn run(loader: &mut Loader, sys: &Path, settle: Duration, max_rounds: usize) -> Loaded {
    let mut seen = BTreeSet::new();
    let mut all = Loaded::default();
    let mut quiet_rounds = 0;
    for round in 0..max_rounds {
        let new: Vec<String> = modaliases(sys).into_iter().filter(|a| !seen.contains(a)).collect();
        if new.is_empty() {
            quiet_rounds += 1;
            // Drivers probe asynchronously at times: one extra look after a pause.
            if quiet_rounds > 1 {
                break;
            }
            std::thread::sleep(settle);
            continue;
        }
        quiet_rounds = 0;
        tracing::debug!(round, devices = new.len(), "coldplug: new devices");
        for a in new {
            let l = loader.load_alias(&a);
            all.names.extend(l.names);
            seen.insert(a);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_modaliases_without_following_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("devices/pci0000:00/0000:00:03.0");
        std::fs::create_dir_all(dev.join("virtio0")).unwrap();
        std::fs::write(dev.join("modalias"), "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n").unwrap();
        std::fs::write(dev.join("virtio0/modalias"), "virtio:d00000001v00001AF4\n").unwrap();
        std::fs::write(dev.join("virtio0/uevent"), "DRIVER=virtio_net\n").unwrap();
        std::fs::write(d.path().join("devices/modalias"), "\n").unwrap();
        // A loop back up the tree, as sysfs `subsystem`/`driver` links make.
        std::os::unix::fs::symlink(d.path().join("devices"), dev.join("virtio0/subsystem")).unwrap();
        assert_eq!(
            modaliases(d.path()),
            ["pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", "virtio:d00000001v00001AF4"]
        );
    }

    #[test]
    fn this_machines_sysfs_has_modaliases() {
        // Real sysfs: PCI devices at least (containers still see /sys/devices).
        let found = modaliases(Path::new("/sys"));
        assert!(
            found.iter().any(|a| a.starts_with("pci:") || a.starts_with("acpi:") || a.starts_with("platform:")),
            "{found:?}"
        );
    }
}

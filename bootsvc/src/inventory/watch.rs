//! Hot reload: poll the inventory and images directories (names, sizes, mtimes) every
//! interval; on a change, load and validate everything again. A good inventory replaces the
//! current one (the log says what changed); a bad one is refused, every problem is logged
//! with file and field, and the last good inventory stays in service.
//!
//! Polling rather than inotify: it works the same on every filesystem (NFS, bind mounts,
//! ConfigMap-style symlink swaps) and a directory of JSON files is cheap to stat.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Inventory, Snapshot};
use crate::config::Config;

/// How often the directories are polled for changes.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// What the poll compares: every file's (size, mtime) in the watched directories.
pub type Fingerprint = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

pub fn fingerprint(cfg: &Config) -> Fingerprint {
    let mut fp = Fingerprint::new();
    if let Some(inv) = &cfg.inventory {
        add_dir(&inv.dir, &mut fp);
    }
    add_dir(&cfg.artifacts.images_dir, &mut fp);
    fp
}

/// Add every file of `dir` (or the directory itself as missing) to `fp`.
pub fn add_dir(dir: &Path, fp: &mut Fingerprint) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        fp.insert(dir.to_path_buf(), (u64::MAX, None));
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        // Follow symlinks: a swapped link target is a change.
        if let Ok(m) = std::fs::metadata(&p) {
            fp.insert(p, (m.len(), m.modified().ok()));
        }
    }
}

/// Poll until the task is dropped.
pub async fn watch(cfg: Arc<Config>, inventory: Arc<Inventory>, interval: Duration) {
    let mut last = fingerprint(&cfg);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let c = Arc::clone(&cfg);
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&c)).await else { continue };
        if now == last {
            continue;
        }
        last = now;
        let c = Arc::clone(&cfg);
        let Ok(loaded) = tokio::task::spawn_blocking(move || Snapshot::load(&c)).await else { continue };
        match loaded {
            Ok(new) => {
                let old = inventory.snapshot();
                let changes = describe_changes(&old, &new);
                let n = new.len();
                inventory.replace(new);
                tracing::info!(machines = n, changes = %changes, "inventory reloaded");
            }
            Err(problems) => {
                let kept = inventory.snapshot().len();
                for p in problems.iter() {
                    tracing::warn!(file = %p.file.display(), field = %p.field, problem = %p.what, "inventory edit refused: {p}");
                }
                tracing::warn!(
                    problems = problems.len(),
                    machines = kept,
                    "inventory reload refused, keeping the last good inventory"
                );
            }
        }
    }
}

/// `added node3 (c.json); changed node1; removed node2`, or `no machine changed`.
pub fn describe_changes(old: &Snapshot, new: &Snapshot) -> String {
    let key = |e: &super::Entry| (e.source.file.clone(), e.source.item.clone());
    let before: BTreeMap<_, _> = old.entries().iter().map(|e| (key(e), e)).collect();
    let after: BTreeMap<_, _> = new.entries().iter().map(|e| (key(e), e)).collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    for (k, e) in &after {
        match before.get(k) {
            None => added.push(format!("{} ({})", e.machine.hostname, e.source.describe())),
            Some(o) if o.machine != e.machine => changed.push(e.machine.hostname.clone()),
            Some(_) => {}
        }
    }
    for (k, e) in &before {
        if !after.contains_key(k) {
            removed.push(e.machine.hostname.clone());
        }
    }
    let mut parts = Vec::new();
    for (what, v) in [("added", added), ("changed", changed), ("removed", removed)] {
        if !v.is_empty() {
            parts.push(format!("{what} {}", v.join(", ")));
        }
    }
    if old.images != new.images {
        parts.push(format!("images now {}", new.images.keys().cloned().collect::<Vec<_>>().join(", ")));
    }
    if parts.is_empty() {
        "no machine changed".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::load::parse_file;
    use crate::problem::Problems;

    fn snap(files: &[(&str, &str)]) -> Snapshot {
        let mut p = Problems::default();
        let mut entries = Vec::new();
        for (f, j) in files {
            entries.extend(parse_file(Path::new(f), j, &mut p));
        }
        assert!(p.is_empty(), "{p}");
        Snapshot::new(entries, Default::default())
    }

    #[test]
    fn describes_what_changed() {
        let a = r#"{"hostname":"a","macs":["52:54:00:00:00:01"]}"#;
        let b = r#"{"hostname":"b","macs":["52:54:00:00:00:02"]}"#;
        let b2 = r#"{"hostname":"b","macs":["52:54:00:00:00:02"],"netboot":{"allow":false,"kernel_args":"quiet"}}"#;
        let c = r#"{"hostname":"c","macs":["52:54:00:00:00:03"]}"#;
        let old = snap(&[("a.json", a), ("b.json", b)]);
        let new = snap(&[("b.json", b2), ("c.json", c)]);
        assert_eq!(describe_changes(&old, &new), "added c (c.json); changed b; removed a");
        assert_eq!(describe_changes(&old, &old), "no machine changed");
    }
}

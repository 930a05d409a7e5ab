//! Dependency loops between the workspace's crates, counting dev- and build-dependencies:
//! cargo accepts `a → (dev) b → a`, but then `a`'s tests build a second `a` inside `b`, and
//! no crate can be read knowing only the crates below it.
//!
//! Read from the `Cargo.toml` files: the root's `[workspace] members` and
//! `[workspace.dependencies]`, and each member's `[dependencies]`, `[dev-dependencies]`,
//! `[build-dependencies]` (also under `[target.'…']`). A dependency is on a workspace crate
//! when it has a `path` (or `workspace = true` and the workspace entry has one) leading to a
//! member's directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Normal,
    Dev,
    Build,
}

impl Kind {
    const TABLES: [(&'static str, Kind); 3] =
        [("dependencies", Kind::Normal), ("dev-dependencies", Kind::Dev), ("build-dependencies", Kind::Build)];
}

/// `from` depends on `to` (both package names).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dep {
    pub from: String,
    pub to: String,
    pub kind: Kind,
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Normal => "",
            Kind::Dev => " (dev)",
            Kind::Build => " (build)",
        };
        write!(f, "{} → {}{kind}", self.from, self.to)
    }
}

/// Every dependency of a workspace member on another member, sorted.
pub fn deps(root: &Path) -> Result<Vec<Dep>> {
    let manifest = read(&root.join("Cargo.toml"))?;
    let ws = manifest.get("workspace").context("the root Cargo.toml has no [workspace]")?;
    let members: Vec<PathBuf> = ws
        .get("members")
        .and_then(|m| m.as_array())
        .context("[workspace] has no members list")?
        .iter()
        .map(|m| m.as_str().map(|s| root.join(s)).context("a member that is not a string"))
        .collect::<Result<_>>()?;
    // Members by directory: what a `path` leads to.
    let mut by_dir = BTreeMap::new();
    let mut manifests = Vec::new();
    for dir in &members {
        if dir.to_string_lossy().contains('*') {
            bail!("{}: glob members are not read here; list them", dir.display());
        }
        let m = read(&dir.join("Cargo.toml"))?;
        let name = m
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .with_context(|| format!("{}/Cargo.toml has no package.name", dir.display()))?
            .to_string();
        by_dir.insert(canonical(dir), name.clone());
        manifests.push((dir.clone(), name, m));
    }
    let ws_paths: BTreeMap<String, PathBuf> = ws
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| t.iter().filter_map(|(k, v)| Some((k.clone(), root.join(v.get("path")?.as_str()?)))).collect())
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    for (dir, name, m) in &manifests {
        let targets = m.get("target").and_then(|t| t.as_table()).into_iter().flat_map(|t| t.values());
        for holder in std::iter::once(m).chain(targets) {
            for (table, kind) in Kind::TABLES {
                let Some(t) = holder.get(table).and_then(|t| t.as_table()) else { continue };
                for (key, spec) in t {
                    let path = match spec.get("path").and_then(|p| p.as_str()) {
                        Some(p) => Some(dir.join(p)),
                        None if spec.get("workspace").and_then(|w| w.as_bool()) == Some(true) => {
                            ws_paths.get(key).cloned()
                        }
                        None => None,
                    };
                    if let Some(to) = path.and_then(|p| by_dir.get(&canonical(&p))) {
                        out.insert(Dep { from: name.clone(), to: to.clone(), kind });
                    }
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Loops among `deps`: for each set of crates that reach each other, one loop through it,
/// as its edges.
pub fn cycles(deps: &[Dep]) -> Vec<Vec<Dep>> {
    let mut next: BTreeMap<&str, Vec<&Dep>> = BTreeMap::new();
    for d in deps {
        next.entry(d.from.as_str()).or_default().push(d);
    }
    let mut seen_in_a_loop = BTreeSet::new();
    let mut out = Vec::new();
    let starts: BTreeSet<&str> = deps.iter().map(|d| d.from.as_str()).collect();
    for start in starts {
        if seen_in_a_loop.contains(start) {
            continue;
        }
        if let Some(path) = path_back(&next, start) {
            seen_in_a_loop.extend(path.iter().map(|d| d.from.clone()));
            out.push(path);
        }
    }
    out
}

/// The shortest path of edges from `start` back to itself (breadth first), if any.
fn path_back(next: &BTreeMap<&str, Vec<&Dep>>, start: &str) -> Option<Vec<Dep>> {
    let mut came_by: BTreeMap<&str, &Dep> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for d in next.get(at).into_iter().flatten() {
            if d.to == start {
                let mut path = vec![(*d).clone()];
                let mut back = at;
                while back != start {
                    let e = came_by[back];
                    path.push(e.clone());
                    back = e.from.as_str();
                }
                path.reverse();
                return Some(path);
            }
            if !came_by.contains_key(d.to.as_str()) {
                came_by.insert(d.to.as_str(), d);
                queue.push_back(d.to.as_str());
            }
        }
    }
    None
}

/// Panics naming every loop (each edge with its kind) among the workspace's crates.
pub fn assert_no_cycles(root: &Path) {
    let deps = deps(root).unwrap_or_else(|e| panic!("reading the workspace's manifests: {e:#}"));
    let loops = cycles(&deps);
    if !loops.is_empty() {
        let text: Vec<String> =
            loops.iter().map(|l| l.iter().map(Dep::to_string).collect::<Vec<_>>().join(", ")).collect();
        panic!("dependency loops between the workspace's crates:\n  {}", text.join("\n  "));
    }
}

fn read(path: &Path) -> Result<toml::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(crates: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let members: Vec<String> = crates.iter().map(|(n, _)| format!("{n:?}")).collect();
        std::fs::write(
            d.path().join("Cargo.toml"),
            format!(
                "[workspace]\nmembers = [{}]\n\n[workspace.dependencies]\nkit = {{ path = \"kit\" }}\n",
                members.join(", ")
            ),
        )
        .unwrap();
        for (name, deps) in crates {
            std::fs::create_dir_all(d.path().join(name)).unwrap();
            std::fs::write(d.path().join(name).join("Cargo.toml"), format!("[package]\nname = \"{name}\"\n{deps}"))
                .unwrap();
        }
        d
    }

    #[test]
    fn a_loop_through_a_dev_dependency_is_found_with_its_edges() {
        let d = workspace(&[
            ("svc", "[dependencies]\nserde = \"1\"\n[dev-dependencies]\nkit.workspace = true\nbench = { path = \"../bench\" }\n"),
            ("bench", "[dependencies]\nkit = { workspace = true }\n[target.'cfg(unix)'.dependencies]\ne2e = { path = \"../e2e\" }\n"),
            ("e2e", "[dependencies]\nsvc = { path = \"../svc\" }\n"),
            ("kit", ""),
        ]);
        let deps = deps(d.path()).unwrap();
        let shown: Vec<String> = deps.iter().map(Dep::to_string).collect();
        assert_eq!(shown, ["bench → e2e", "bench → kit", "e2e → svc", "svc → bench (dev)", "svc → kit (dev)"]);
        let loops = cycles(&deps);
        assert_eq!(loops.len(), 1, "{loops:?}");
        let names: Vec<String> = loops[0].iter().map(Dep::to_string).collect();
        assert_eq!(names, ["bench → e2e", "e2e → svc", "svc → bench (dev)"]);
    }

    #[test]
    fn crates_importing_downward_make_no_loop() {
        let d = workspace(&[
            ("svc", "[dev-dependencies]\nkit.workspace = true\n"),
            ("e2e", "[dependencies]\nsvc = { path = \"../svc\" }\nkit.workspace = true\n"),
            ("kit", ""),
        ]);
        assert!(cycles(&deps(d.path()).unwrap()).is_empty());
    }
}

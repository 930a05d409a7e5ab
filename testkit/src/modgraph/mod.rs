//! Import cycles between the modules of a crate, so that each module can be read (and
//! changed) knowing only the modules below it.
//!
//! Read from the source files under a crate's `src/` (the library: `lib.rs` and the files
//! its modules live in; `main.rs` and `src/bin/` are other crates and left out). A file
//! refers to a module when it names a path into it: `use crate::a::…`, `super::b::…`,
//! `self::…` and child modules in `use` trees, and such paths written in code. Items under
//! `#[cfg(test)]` do not count.
//!
//! Two modules are compared at the level where their paths part: `image::fetch` naming
//! `http::permanent` is the edge `image → http` among the crate's top-level modules;
//! `image::decode` naming `image::pipeline::send` is `decode → pipeline` among `image`'s
//! submodules. A module naming its parent's items or its own children is not an edge.
//! [`cycles`] lists every strongly connected set of modules at each level, with one cycle
//! through it and the line behind each of its edges.

mod scan;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};

/// One reference from a module into another, at the level where they part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The parent module both sit under (`crate` for top-level modules).
    pub level: String,
    pub from: String,
    pub to: String,
    /// The first place (file, line) that makes the edge, and the path written there.
    pub file: PathBuf,
    pub line: usize,
    pub path: String,
}

/// Modules that import each other, directly or around a loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub level: String,
    /// `a → b → … → a`, each edge with its evidence.
    pub edges: Vec<Edge>,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.edges.iter().map(|e| e.from.as_str()).collect();
        let first = names.first().copied().unwrap_or_default();
        writeln!(f, "in {}: {} → {first}", self.level, names.join(" → "))?;
        for e in &self.edges {
            writeln!(f, "    {} → {}: {}:{} `{}`", e.from, e.to, e.file.display(), e.line, e.path)?;
        }
        Ok(())
    }
}

/// Every edge between sibling modules of the crate whose sources are in `src`, one per
/// (level, from, to), sorted.
pub fn edges(src: &Path) -> std::io::Result<Vec<Edge>> {
    let files = module_files(src)?;
    let known: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut found: BTreeMap<(String, String, String), Edge> = BTreeMap::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(file)?;
        for r in scan::refs(&text, module) {
            let Some(target) = resolve(&r, &known) else { continue };
            let Some((level, from, to)) = parting(module, &target) else { continue };
            let key = (level.clone(), from.clone(), to.clone());
            found.entry(key).or_insert_with(|| Edge {
                level,
                from,
                to,
                file: file.strip_prefix(src.parent().unwrap_or(src)).unwrap_or(file).to_path_buf(),
                line: r.line,
                path: r.segments.join("::"),
            });
        }
    }
    Ok(found.into_values().collect())
}

/// The import cycles among sibling modules of the crate whose sources are in `src`.
pub fn cycles(src: &Path) -> std::io::Result<Vec<Cycle>> {
    let edges = edges(src)?;
    let mut levels: BTreeMap<&str, Vec<&Edge>> = BTreeMap::new();
    for e in &edges {
        levels.entry(&e.level).or_default().push(e);
    }
    let mut out = Vec::new();
    for (level, es) in levels {
        for group in strongly_connected(&es) {
            out.push(Cycle { level: level.to_string(), edges: cycle_through(&group, &es) });
        }
    }
    Ok(out)
}

/// Panics, listing each cycle and the lines behind it, when modules of the crate whose
/// sources are in `src` import each other; also when `src` holds no module edge at all
/// (a wrong directory would otherwise pass).
pub fn assert_no_cycles(src: &Path) {
    let edges = edges(src).unwrap_or_else(|e| panic!("reading the sources under {}: {e}", src.display()));
    assert!(!edges.is_empty(), "no module of {} refers to another: is it a crate's src/?", src.display());
    let found = cycles(src).unwrap_or_else(|e| panic!("reading the sources under {}: {e}", src.display()));
    if !found.is_empty() {
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        panic!(
            "modules of {} import each other (move the shared piece into a module both use, or pass it in):\n{}",
            src.display(),
            text.join("")
        );
    }
}

/// Each source file with its module path: `lib.rs` is `[]`, `a.rs` and `a/mod.rs` are
/// `[a]`, `a/b.rs` is `[a, b]`.
fn module_files(src: &Path) -> std::io::Result<Vec<(Vec<String>, PathBuf)>> {
    let mut out = Vec::new();
    let mut dirs = vec![(src.to_path_buf(), Vec::<String>::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if path.is_dir() {
                if !(prefix.is_empty() && name == "bin") {
                    dirs.push((path, [prefix.clone(), vec![name]].concat()));
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(".rs") else { continue };
            let module = match (prefix.is_empty(), stem) {
                (true, "lib") => Vec::new(),
                (true, "main") => continue,
                (_, "mod") => prefix.clone(),
                _ => [prefix.clone(), vec![stem.to_string()]].concat(),
            };
            out.push((module, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The module a reference lands in (the longest known module its path starts with); `None`
/// for paths outside the crate.
fn resolve(r: &scan::Ref, known: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut segs = r.segments.iter().peekable();
    let mut path: Vec<String> = match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segs.next();
            Vec::new()
        }
        Some("self") => {
            segs.next();
            r.scope.clone()
        }
        Some("super") => {
            let mut p = r.scope.clone();
            while segs.peek().map(|s| s.as_str()) == Some("super") {
                segs.next();
                p.pop()?;
            }
            p
        }
        // A child module named without `self::` (edition 2018 `use` paths), or another crate.
        Some(first) if known.contains(&[r.scope.clone(), vec![first.to_string()]].concat()) => r.scope.clone(),
        _ => return None,
    };
    path.extend(segs.cloned());
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| known.contains(p) || p.is_empty())
}

/// Where `from` and `to` part: (their common parent, `from`'s and `to`'s child of it).
/// `None` when one contains the other.
fn parting(from: &[String], to: &[String]) -> Option<(String, String, String)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    let (a, b) = (from.get(common)?, to.get(common)?);
    let level = if common == 0 { "crate".to_string() } else { from[..common].join("::") };
    Some((level, a.clone(), b.clone()))
}

/// The sets of two or more modules that reach each other (Tarjan's algorithm).
fn strongly_connected(edges: &[&Edge]) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&str> = edges.iter().flat_map(|e| [e.from.as_str(), e.to.as_str()]).collect();
    let next = |n: &str| -> Vec<&str> { edges.iter().filter(|e| e.from == n).map(|e| e.to.as_str()).collect() };
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(n: &'a str, next: &dyn Fn(&'a str) -> Vec<&'a str>, s: &mut State<'a>) {
        let i = s.index.len();
        s.index.insert(n, i);
        s.low.insert(n, i);
        s.stack.push(n);
        s.on_stack.insert(n);
        for m in next(n) {
            if !s.index.contains_key(m) {
                visit(m, next, s);
                let low = s.low[n].min(s.low[m]);
                s.low.insert(n, low);
            } else if s.on_stack.contains(m) {
                let low = s.low[n].min(s.index[m]);
                s.low.insert(n, low);
            }
        }
        if s.low[n] == s.index[n] {
            let mut group = Vec::new();
            while let Some(m) = s.stack.pop() {
                s.on_stack.remove(m);
                group.push(m.to_string());
                if m == n {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.out.push(group);
            }
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for n in nodes {
        if !s.index.contains_key(n) {
            visit(n, &next, &mut s);
        }
    }
    s.out.sort();
    s.out
}

/// A shortest cycle from the group's first module back to it, inside the group.
fn cycle_through(group: &[String], edges: &[&Edge]) -> Vec<Edge> {
    let inside = |e: &&&Edge| group.contains(&e.from) && group.contains(&e.to);
    let start = &group[0];
    let mut came: BTreeMap<&str, &Edge> = BTreeMap::new();
    let mut queue = VecDeque::from([start.as_str()]);
    while let Some(n) = queue.pop_front() {
        for e in edges.iter().filter(inside).filter(|e| e.from == n) {
            if e.to == *start {
                let mut path = vec![(*e).clone()];
                let mut at = n;
                while at != start {
                    let prev = came[at];
                    path.push(prev.clone());
                    at = &prev.from;
                }
                path.reverse();
                return path;
            }
            if !came.contains_key(e.to.as_str()) {
                came.insert(&e.to, e);
                queue.push_back(&e.to);
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate under a fresh directory from (relative path, text) pairs; returns its `src`.
    fn krate(files: &[(&str, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(crate::unique("modgraph-"));
        for (path, text) in files {
            let p = root.join("src").join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        root.join("src")
    }

    fn shown(c: &[Cycle]) -> Vec<String> {
        c.iter()
            .map(|c| {
                format!("{}: {}", c.level, c.edges.iter().map(|e| e.from.as_str()).collect::<Vec<_>>().join(" → "))
            })
            .collect()
    }

    #[test]
    fn finds_top_level_and_sibling_cycles_with_their_lines() {
        let src = krate(&[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod img;\n"),
            ("main.rs", "use crate::a::X;\n"),
            ("a.rs", "//! a\n\nuse crate::b::Y;\n"),
            ("b.rs", "pub fn y() { crate::c::z() }\n"),
            ("c.rs", "use crate::a::{self, X};\n"),
            ("img/mod.rs", "mod dec;\nmod pipe;\npub use dec::D;\nfn f() { pipe::run() }\n"),
            ("img/pipe.rs", "use super::dec::{decode, Opts};\nuse super::Spec;\n"),
            ("img/dec.rs", "use super::pipe::send;\n#[cfg(test)]\nmod tests { use crate::a::Q; }\n"),
        ]);
        let c = cycles(&src).unwrap();
        assert_eq!(shown(&c), ["crate: a → b → c", "img: dec → pipe"]);
        assert_eq!(c[0].edges[0].file, Path::new("src/a.rs"));
        assert_eq!((c[0].edges[0].line, c[0].edges[0].path.as_str()), (3, "crate::b::Y"));
        let text = c[1].to_string();
        assert!(text.contains("in img: dec → pipe → dec"), "{text}");
        assert!(text.contains("dec → pipe: src/img/dec.rs:1 `super::pipe::send`"), "{text}");
        let e = std::panic::catch_unwind(|| assert_no_cycles(&src)).unwrap_err();
        let msg = e.downcast_ref::<String>().unwrap();
        assert!(msg.contains("a → b → c → a") && msg.contains("pipe → dec: src/img/pipe.rs:1"), "{msg}");
        std::fs::remove_dir_all(src.parent().unwrap()).unwrap();
    }

    #[test]
    fn parents_children_and_tests_are_not_cycles() {
        let src = krate(&[
            ("lib.rs", "pub mod a;\npub mod b;\n"),
            ("a/mod.rs", "pub mod inner;\nuse inner::I;\npub fn helper() { crate::b::f() }\n"),
            ("a/inner.rs", "use super::helper;\nuse crate::a::helper as h;\n"),
            ("b.rs", "pub fn f() {}\n#[cfg(test)]\nmod tests { use crate::a::helper; }\n"),
        ]);
        assert_eq!(cycles(&src).unwrap(), []);
        let e = edges(&src).unwrap();
        let pairs: Vec<(&str, &str, &str)> =
            e.iter().map(|e| (e.level.as_str(), e.from.as_str(), e.to.as_str())).collect();
        assert_eq!(pairs, [("crate", "a", "b")]);
        assert_no_cycles(&src);
        std::fs::remove_dir_all(src.parent().unwrap()).unwrap();
    }
}

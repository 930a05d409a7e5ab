//! The module index the initramfs carries and the installer reads: `modules.dep`,
//! `modules.alias`, `modules.softdep` and `modules.builtin`, in the formats `depmod` writes,
//! and the shell-glob matching `modprobe` applies to aliases.
//!
//! This is the contract between the builder (which writes the files from each module's own
//! `.modinfo`) and the installer's coldplug (which reads them). Debian's kernel package ships
//! no `modules.dep`/`modules.alias`, so both are generated here.
//!
//! Formats (paths relative to `/lib/modules/<release>/`):
//! - `modules.dep`: `kernel/a/b.ko: kernel/c.ko kernel/d.ko` — every dependency, transitively,
//!   ordered as depmod does: loading the list from the *end* to the front satisfies them.
//! - `modules.alias`: `alias <glob pattern> <module name>`.
//! - `modules.softdep`: `softdep <module> pre: <name…> post: <name…>` (names may be aliases).
//! - `modules.builtin`: one `kernel/…/x.ko` per line for modules built into the kernel.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Canonical module name: modprobe treats `-` and `_` alike; the kernel reports `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Module name from a path in the tree: `kernel/fs/ext4/ext4.ko.xz` → `ext4`.
pub fn name_from_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

/// One line of `modules.alias`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Alias {
    pub pattern: String,
    pub module: String,
}

/// Soft dependencies of one module (`softdep=pre: a b post: c`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoftDep {
    pub pre: Vec<String>,
    pub post: Vec<String>,
}

impl SoftDep {
    /// Parse the value of a `softdep=` modinfo entry or the tail of a `modules.softdep` line,
    /// adding to what is already there (a module may carry several `softdep=` entries).
    pub fn add(&mut self, value: &str) {
        let mut into_pre = None;
        for word in value.split_whitespace() {
            match word {
                "pre:" => into_pre = Some(true),
                "post:" => into_pre = Some(false),
                w => match into_pre {
                    Some(true) => push_unique(&mut self.pre, w),
                    Some(false) => push_unique(&mut self.post, w),
                    None => {}
                },
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pre.is_empty() && self.post.is_empty()
    }
}

fn push_unique(v: &mut Vec<String>, w: &str) {
    if !v.iter().any(|x| x == w) {
        v.push(w.to_string());
    }
}

/// The parsed index: everything coldplug needs to go from a device's modalias to the
/// ordered list of files to load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModIndex {
    /// Module name → its file (relative path) and its dependencies' names, depmod order.
    pub deps: BTreeMap<String, (String, Vec<String>)>,
    pub aliases: Vec<Alias>,
    pub softdeps: BTreeMap<String, SoftDep>,
    /// Names of modules built into the kernel: always "loaded".
    pub builtin: Vec<String>,
}

impl ModIndex {
    /// Parse the four files' contents (any may be empty). Malformed lines are skipped with
    /// their line numbers returned, so a damaged index degrades instead of stopping boot.
    pub fn parse(dep: &str, alias: &str, softdep: &str, builtin: &str) -> (ModIndex, Vec<String>) {
        let mut idx = ModIndex::default();
        let mut bad = Vec::new();
        for (n, line) in lines(dep) {
            let Some((file, rest)) = line.split_once(':') else {
                bad.push(format!("modules.dep:{n}: no ':'"));
                continue;
            };
            let file = file.trim();
            let deps = rest.split_whitespace().map(name_from_path).collect();
            idx.deps.insert(name_from_path(file), (file.to_string(), deps));
        }
        for (n, line) in lines(alias) {
            let mut w = line.split_whitespace();
            match (w.next(), w.next(), w.next(), w.next()) {
                (Some("alias"), Some(p), Some(m), None) => {
                    idx.aliases.push(Alias { pattern: p.to_string(), module: normalize(m) })
                }
                _ => bad.push(format!("modules.alias:{n}: expected `alias <pattern> <module>`")),
            }
        }
        for (n, line) in lines(softdep) {
            let mut w = line.splitn(3, char::is_whitespace);
            match (w.next(), w.next(), w.next()) {
                (Some("softdep"), Some(m), Some(rest)) => idx.softdeps.entry(normalize(m)).or_default().add(rest),
                _ => bad.push(format!("modules.softdep:{n}: expected `softdep <module> pre: … post: …`")),
            }
        }
        idx.builtin = lines(builtin).map(|(_, l)| name_from_path(l)).collect();
        (idx, bad)
    }

    /// Module names whose alias patterns match `modalias` (sorted, unique), as `modprobe
    /// <modalias>` would resolve it. A plain module name matches itself.
    pub fn lookup(&self, modalias: &str) -> Vec<String> {
        let name = normalize(modalias);
        if self.deps.contains_key(&name) || self.is_builtin(&name) {
            return vec![name];
        }
        let mut out: Vec<String> =
            self.aliases.iter().filter(|a| fnmatch(&a.pattern, modalias)).map(|a| a.module.clone()).collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.iter().any(|b| b == name)
    }
}

fn lines(s: &str) -> impl Iterator<Item = (usize, &str)> {
    s.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Write `modules.dep`: `deps` maps a module's file to its dependencies' files, already in
/// depmod order. Sorted by file for reproducible output.
pub fn write_dep(deps: &BTreeMap<String, Vec<String>>) -> String {
    let mut s = String::new();
    for (file, ds) in deps {
        let _ = write!(s, "{file}:");
        for d in ds {
            let _ = write!(s, " {d}");
        }
        s.push('\n');
    }
    s
}

/// Write `modules.alias` (sorted by module, then pattern, as given).
pub fn write_alias(aliases: &[Alias]) -> String {
    let mut v = aliases.to_vec();
    v.sort_by(|a, b| (&a.module, &a.pattern).cmp(&(&b.module, &b.pattern)));
    v.dedup();
    v.iter().map(|a| format!("alias {} {}\n", a.pattern, a.module)).collect()
}

/// Write `modules.softdep`.
pub fn write_softdep(softdeps: &BTreeMap<String, SoftDep>) -> String {
    let mut s = String::new();
    for (m, d) in softdeps.iter().filter(|(_, d)| !d.is_empty()) {
        let _ = write!(s, "softdep {m}");
        if !d.pre.is_empty() {
            let _ = write!(s, " pre: {}", d.pre.join(" "));
        }
        if !d.post.is_empty() {
            let _ = write!(s, " post: {}", d.post.join(" "));
        }
        s.push('\n');
    }
    s
}

/// Shell glob as `fnmatch(3)` without flags (what kmod uses for aliases): `*`, `?`,
/// `[abc]`, `[a-z]`, `[!x]`/`[^x]`, `\` escapes. Iterative with one backtrack point, so
/// patterns with many `*` stay linear-ish.
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == b'[' {
                        // An unclosed `[` is literal.
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                b'\\' if pi + 1 < p.len() && p[pi + 1] == t[ti] => {
                    pi += 2;
                    ti += 1;
                    continue;
                }
                b'\\' if pi + 1 < p.len() => {}
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        // Mismatch: let the last `*` swallow one more byte, or fail.
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Match `c` against the bracket expression starting at `p[start] == b'['`. Returns whether it
/// matched and the index after the closing `]`, or `None` if the bracket is not closed.
fn class(p: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = p[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_fnmatch() {
        let yes = [
            ("virtio:d00000001v*", "virtio:d00000001v00001AF4"),
            ("pci:v00008086d000010D3sv*sd*bc*sc*i*", "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00"),
            ("*", ""),
            ("a?c", "abc"),
            ("[a-c]x", "bx"),
            ("[!a]x", "bx"),
            ("[^a]x", "bx"),
            ("[]]", "]"),
            ("a\\*", "a*"),
            ("*a*b*c*", "xxaxxbxxcxx"),
            ("fs-ext4", "fs-ext4"),
            ("[unclosed", "[unclosed"),
        ];
        for (p, t) in yes {
            assert!(fnmatch(p, t), "{p:?} should match {t:?}");
        }
        let no = [
            ("virtio:d00000001v*", "virtio:d00000002v00001AF4"),
            ("a?c", "ac"),
            ("[a-c]x", "dx"),
            ("[!a]x", "ax"),
            ("a\\*", "ab"),
            ("*a*b*c", "xxaxxbxxcxx_"),
            ("abc", "abcd"),
            ("", "a"),
        ];
        for (p, t) in no {
            assert!(!fnmatch(p, t), "{p:?} should not match {t:?}");
        }
    }

    #[test]
    fn softdep_parses_pre_and_post() {
        let mut d = SoftDep::default();
        d.add("pre: crc32c crypto-crc32c");
        d.add("pre: crc32c post: foo");
        assert_eq!(d.pre, vec!["crc32c", "crypto-crc32c"]);
        assert_eq!(d.post, vec!["foo"]);
    }

    #[test]
    fn index_round_trips_and_looks_up() {
        let mut deps = BTreeMap::new();
        deps.insert(
            "kernel/drivers/net/virtio_net.ko".to_string(),
            vec!["kernel/drivers/net/net_failover.ko".to_string(), "kernel/net/core/failover.ko".to_string()],
        );
        deps.insert("kernel/net/core/failover.ko".to_string(), vec![]);
        let aliases = vec![
            Alias { pattern: "virtio:d00000001v*".into(), module: "virtio_net".into() },
            Alias { pattern: "fs-ext4".into(), module: "ext4".into() },
            Alias { pattern: "crypto-crc32c".into(), module: "crc32c_intel".into() },
            Alias { pattern: "crypto-crc32c".into(), module: "crc32c_generic".into() },
        ];
        let mut soft = BTreeMap::new();
        soft.entry("ext4".to_string()).or_insert_with(SoftDep::default).add("pre: crypto-crc32c");
        let dep_s = write_dep(&deps);
        assert_eq!(
            dep_s,
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n"
        );
        let (idx, bad) =
            ModIndex::parse(&dep_s, &write_alias(&aliases), &write_softdep(&soft), "kernel/drivers/pci/foo.ko\n");
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(idx.deps["virtio_net"].1, vec!["net_failover", "failover"]);
        assert_eq!(idx.lookup("virtio:d00000001v00001AF4"), vec!["virtio_net"]);
        assert_eq!(idx.lookup("crypto-crc32c"), vec!["crc32c_generic", "crc32c_intel"]);
        assert_eq!(idx.lookup("virtio-net"), vec!["virtio_net"]);
        assert_eq!(idx.lookup("foo"), vec!["foo"]);
        assert!(idx.lookup("pci:v0000FFFF").is_empty());
        assert_eq!(idx.softdeps["ext4"].pre, vec!["crypto-crc32c"]);
    }

    #[test]
    fn malformed_lines_are_reported_not_fatal() {
        let (idx, bad) = ModIndex::parse("nocolon\nk/a.ko:\n", "alias onlytwo\nalias p m\n", "softdep\n", "");
        assert_eq!(idx.deps.len(), 1);
        assert_eq!(idx.aliases.len(), 1);
        assert_eq!(bad.len(), 3, "{bad:?}");
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(name_from_path("kernel/arch/x86/crypto/crc32c-intel.ko"), "crc32c_intel");
        assert_eq!(name_from_path("kernel/fs/ext4/ext4.ko.xz"), "ext4");
    }
}

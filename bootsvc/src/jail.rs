//! Opening a requested file inside a served directory, and nowhere else: the TFTP root, and
//! over HTTP the artifacts, images and TFTP directories. The same rules decide what `bootsvc
//! check` and the inventory reload accept ([`servable`], [`refused_links`]), so a file they
//! pass is a file the server serves. This module knows nothing of its users: it answers with
//! a [`Refusal`], which TFTP turns into its metrics labels and ERROR packets and HTTP into a
//! 404 (`http::files` adds URL rules of its own first: no backslashes, no empty components).
//!
//! Two steps. First the name alone: `..` anywhere is refused, so is a hidden component (one
//! starting with `.`, over TFTP and HTTP alike), and an absolute name is accepted only when
//! it names something under the root (`/srv/tftp/ipxe.efi` with root `/srv/tftp`); any other
//! absolute name is refused rather than quietly re-rooted, so a client probing `/etc/passwd`
//! shows up as such in the metrics. Then the open itself:
//! `openat2(root, name, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, which makes the kernel
//! refuse any resolution that leaves the root, through a symlink at any depth, atomically
//! (no window between checking and opening). Relative symlinks that stay inside the root
//! work; absolute symlinks never do, even when they point inside (the kernel does not start a
//! resolution outside the root).
//! Kernels without openat2 (before 5.6) get the portable equivalent: canonicalize, check the
//! prefix, open with `O_NOFOLLOW`.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{self, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Why a name was refused. The protocol layers map it to what their clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("path contains '..'")]
    Traversal,
    #[error("absolute path outside the served directory")]
    Absolute,
    #[error("hidden name (a component starts with '.'): never served")]
    Hidden,
    #[error("resolves outside the served directory (symlink)")]
    SymlinkEscape,
    #[error("no such file")]
    NotFound,
    #[error("not a regular file")]
    NotAFile,
    #[error("empty file name")]
    Empty,
    #[error("permission denied")]
    Denied,
    #[error("{0}")]
    Io(String),
}

/// A served directory, opened once.
pub struct Jail {
    /// Canonical path of the root.
    root: PathBuf,
    /// The root as given in the config (absolute names may use either form).
    configured: PathBuf,
    dir: OwnedFd,
}

impl Jail {
    pub fn new(root: &Path) -> Result<Jail> {
        let canonical = std::fs::canonicalize(root).with_context(|| format!("served directory {}", root.display()))?;
        let dir = fcntl::open(&canonical, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .with_context(|| format!("served directory {}: opening it", canonical.display()))?;
        Ok(Jail { root: canonical, configured: root.to_path_buf(), dir })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The name relative to the root, or why it cannot be one: the name rules, before any
    /// file is looked at. Backslashes count as separators (some Windows-minded firmware sends
    /// them).
    pub fn relative(&self, requested: &Path) -> Result<PathBuf, Refusal> {
        let s = requested.to_string_lossy().replace('\\', "/");
        let p = Path::new(&s);
        // `..` first, wherever it is: the attempt is counted as what it is.
        if p.components().any(|c| c == Component::ParentDir) {
            return Err(Refusal::Traversal);
        }
        let p = if p.is_absolute() {
            p.strip_prefix(&self.root).or_else(|_| p.strip_prefix(&self.configured)).map_err(|_| Refusal::Absolute)?
        } else {
            p
        };
        let mut rel = PathBuf::new();
        for c in p.components() {
            match c {
                Component::Normal(n) if n.as_encoded_bytes().starts_with(b".") => return Err(Refusal::Hidden),
                Component::Normal(n) => rel.push(n),
                Component::CurDir => {}
                Component::ParentDir => return Err(Refusal::Traversal),
                Component::RootDir | Component::Prefix(_) => return Err(Refusal::Absolute),
            }
        }
        if rel.as_os_str().is_empty() {
            return Err(Refusal::Empty);
        }
        Ok(rel)
    }

    /// Open `requested` for reading; returns the file and its size.
    pub fn open(&self, requested: &Path) -> Result<(File, u64), Refusal> {
        let rel = self.relative(requested)?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let file = match fcntl::openat2(&self.dir, &rel, how) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOSYS) | Err(Errno::EPERM) => self.open_portable(&rel)?,
            Err(e) => return Err(errno_refusal(e)),
        };
        let meta = file.metadata().map_err(|e| Refusal::Io(e.to_string()))?;
        if !meta.is_file() {
            return Err(Refusal::NotAFile);
        }
        Ok((file, meta.len()))
    }

    /// Without openat2: resolve every symlink, require the result under the root, and open
    /// that path without following a symlink swapped in at the last component.
    fn open_portable(&self, rel: &Path) -> Result<File, Refusal> {
        let full = std::fs::canonicalize(self.root.join(rel)).map_err(|e| io_refusal(&e))?;
        if !full.starts_with(&self.root) {
            return Err(Refusal::SymlinkEscape);
        }
        let fd = fcntl::open(
            &full,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(errno_refusal)?;
        Ok(File::from(fd))
    }
}

impl Jail {
    /// Why `name` is refused, for the operator: the file, the root and the fix.
    pub fn explain(&self, name: &str, r: &Refusal) -> String {
        let root = self.configured.display();
        let path = self.configured.join(name);
        let fix = format!("copy the file into {root} or use a relative link that stays inside it");
        match r {
            Refusal::SymlinkEscape => match self.escaping_link(Path::new(name)) {
                Some((link, target)) if target.is_absolute() => format!(
                    "{} is an absolute symlink (to {}); the server follows only relative links that stay inside \
                     {root}, so every request for it would be refused: {fix}",
                    link.display(),
                    target.display()
                ),
                Some((link, target)) => format!(
                    "{} is a symlink pointing outside {root} (to {}), so every request for it would be refused: {fix}",
                    link.display(),
                    target.display()
                ),
                None => format!(
                    "{} resolves through a symlink pointing outside {root}, so every request for it would be \
                     refused: {fix}",
                    path.display()
                ),
            },
            Refusal::NotFound => match std::fs::read_link(&path) {
                Ok(target) => format!("{} is a symlink to {}, which does not exist", path.display(), target.display()),
                Err(_) => format!("file {}: does not exist", path.display()),
            },
            Refusal::NotAFile => format!("{} is not a regular file", path.display()),
            Refusal::Denied => format!("{}: permission denied", path.display()),
            Refusal::Io(e) => format!("{}: {e}", path.display()),
            Refusal::Traversal | Refusal::Absolute | Refusal::Hidden | Refusal::Empty => {
                format!("{name:?} is not a name served from {root}: {r}")
            }
        }
    }

    /// The symlink on the way to `rel` that leads out of the root, and its target: `rel`
    /// followed one component at a time the way the kernel would, from the root.
    fn escaping_link(&self, rel: &Path) -> Option<(PathBuf, PathBuf)> {
        let mut todo: std::collections::VecDeque<std::ffi::OsString> =
            rel.components().map(|c| c.as_os_str().to_owned()).collect();
        let mut cur = self.root.clone();
        let mut last: Option<(PathBuf, PathBuf)> = None;
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            if c == ".." {
                if cur == self.root {
                    return last;
                }
                cur.pop();
                continue;
            }
            if c == "." || c == "/" {
                continue;
            }
            let next = cur.join(&c);
            let is_link = std::fs::symlink_metadata(&next).is_ok_and(|m| m.file_type().is_symlink());
            if !is_link {
                cur = next;
                continue;
            }
            hops += 1;
            let target = std::fs::read_link(&next).ok()?;
            let shown = self.configured.join(next.strip_prefix(&self.root).unwrap_or(&next));
            if target.is_absolute() || hops > 40 {
                return Some((shown, target));
            }
            for t in target.components().rev() {
                todo.push_front(t.as_os_str().to_owned());
            }
            last = Some((shown, target));
        }
        None
    }
}

/// For `bootsvc check` and the inventory reload: `name` in `root`, opened exactly as a
/// request for it would be. Its metadata, or what is wrong, for the operator.
pub fn servable(root: &Path, name: &str) -> Result<std::fs::Metadata, String> {
    open_servable(root, name)?.metadata().map_err(|e| format!("{}: {e}", root.join(name).display()))
}

/// The file a request for `name` would be served, opened through the same jail (for checks
/// that read it, such as a qcow2 image's tables).
pub fn open_servable(root: &Path, name: &str) -> Result<std::fs::File, String> {
    let jail = Jail::new(root).map_err(|e| format!("{e:#}"))?;
    match jail.open(Path::new(name)) {
        Ok((f, _)) => Ok(f),
        Err(r) => Err(jail.explain(name, &r)),
    }
}

/// Symlinks under `root` that no request could be served through (leading outside it,
/// absolute, or dangling), each explained for the operator: what `bootsvc check` reports
/// for a directory whose files are asked for by name (the TFTP root). Hidden entries are
/// skipped (never served); the walk stops at 16 levels and 10,000 entries.
pub fn refused_links(root: &Path) -> Vec<String> {
    let Ok(jail) = Jail::new(root) else { return Vec::new() };
    let mut out = Vec::new();
    let mut seen = 0usize;
    let mut dirs = vec![(PathBuf::new(), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(jail.root.join(&dir)) else { continue };
        for e in rd.flatten() {
            seen += 1;
            if seen > 10_000 {
                return out;
            }
            let name = e.file_name();
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let rel = dir.join(&name);
            match e.file_type() {
                Ok(t) if t.is_dir() && depth < 16 => dirs.push((rel, depth + 1)),
                Ok(t) if t.is_symlink() => match jail.open(&rel) {
                    Ok(_) | Err(Refusal::NotAFile) => {}
                    Err(r) => out.push(jail.explain(&rel.to_string_lossy(), &r)),
                },
                _ => {}
            }
        }
    }
    out.sort();
    out
}

fn errno_refusal(e: Errno) -> Refusal {
    match e {
        // RESOLVE_BENEATH reports an escape (`..` through a symlink, an absolute symlink) as EXDEV.
        Errno::EXDEV | Errno::ELOOP => Refusal::SymlinkEscape,
        Errno::ENOENT | Errno::ENOTDIR => Refusal::NotFound,
        Errno::EACCES | Errno::EPERM => Refusal::Denied,
        Errno::EISDIR => Refusal::NotAFile,
        e => Refusal::Io(e.desc().to_string()),
    }
}

fn io_refusal(e: &std::io::Error) -> Refusal {
    match e.raw_os_error() {
        Some(n) => errno_refusal(Errno::from_raw(n)),
        None => Refusal::Io(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, Jail) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("undionly.kpxe"), b"ipxe").unwrap();
        std::fs::write(root.join("sub/file"), b"inner").unwrap();
        std::fs::write(t.path().join("secret"), b"outside").unwrap();
        symlink("../secret", root.join("escape-rel")).unwrap();
        symlink(t.path().join("secret"), root.join("escape-abs")).unwrap();
        symlink("../..", root.join("sub/up")).unwrap();
        symlink("sub/file", root.join("inside")).unwrap();
        let jail = Jail::new(&root).unwrap();
        (t, jail)
    }

    fn read(j: &Jail, p: &str) -> Result<String, Refusal> {
        let (mut f, size) = j.open(Path::new(p))?;
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(size as usize, s.len());
        Ok(s)
    }

    #[test]
    fn serves_files_under_the_root() {
        let (_t, j) = setup();
        assert_eq!(read(&j, "undionly.kpxe").unwrap(), "ipxe");
        assert_eq!(read(&j, "./sub/file").unwrap(), "inner");
        assert_eq!(read(&j, "sub\\file").unwrap(), "inner");
        assert_eq!(read(&j, "inside").unwrap(), "inner", "a symlink that stays inside");
        let abs = j.root().join("undionly.kpxe");
        assert_eq!(read(&j, abs.to_str().unwrap()).unwrap(), "ipxe", "absolute, under the root");
    }

    #[test]
    fn refuses_every_escape() {
        let (_t, j) = setup();
        assert_eq!(read(&j, "../secret"), Err(Refusal::Traversal));
        assert_eq!(read(&j, "sub/../../secret"), Err(Refusal::Traversal));
        assert_eq!(read(&j, "..\\secret"), Err(Refusal::Traversal));
        assert_eq!(read(&j, "/etc/passwd"), Err(Refusal::Absolute));
        assert_eq!(read(&j, "escape-rel"), Err(Refusal::SymlinkEscape));
        assert_eq!(read(&j, "escape-abs"), Err(Refusal::SymlinkEscape));
        assert_eq!(read(&j, "sub/up/secret"), Err(Refusal::SymlinkEscape));
        assert_eq!(read(&j, "missing"), Err(Refusal::NotFound));
        assert_eq!(read(&j, "sub"), Err(Refusal::NotAFile));
        assert_eq!(read(&j, ""), Err(Refusal::Empty));
    }

    #[test]
    fn hidden_names_are_refused_wherever_they_are() {
        let (_t, j) = setup();
        std::fs::write(j.root().join(".hidden"), b"dot").unwrap();
        std::fs::create_dir(j.root().join(".git")).unwrap();
        std::fs::write(j.root().join(".git/config"), b"dot").unwrap();
        assert_eq!(read(&j, ".hidden"), Err(Refusal::Hidden));
        assert_eq!(read(&j, "./.hidden"), Err(Refusal::Hidden));
        assert_eq!(read(&j, ".git/config"), Err(Refusal::Hidden));
        assert_eq!(read(&j, "sub/.x"), Err(Refusal::Hidden));
        assert_eq!(read(&j, "..."), Err(Refusal::Hidden));
        let abs = j.root().join(".hidden");
        assert_eq!(read(&j, abs.to_str().unwrap()), Err(Refusal::Hidden));
        // `..` is named as such even after a hidden component.
        assert_eq!(read(&j, ".git/../../secret"), Err(Refusal::Traversal));
        assert_eq!(read(&j, "./sub/file").unwrap(), "inner", "'.' alone is not a hidden name");
    }

    #[test]
    fn explanations_name_the_link_the_root_and_the_fix() {
        let (t, j) = setup();
        symlink("escape-rel", j.root().join("chain")).unwrap();
        symlink(j.root().join("undionly.kpxe"), j.root().join("abs-inside")).unwrap();
        let root = j.root().display().to_string();
        let why = |name: &str| j.explain(name, &j.open(Path::new(name)).unwrap_err());
        let e = why("escape-abs");
        assert!(
            e.starts_with(&format!("{root}/escape-abs is an absolute symlink (to {}/secret)", t.path().display())),
            "{e}"
        );
        assert!(e.contains(&format!("copy the file into {root} or use a relative link")), "{e}");
        let e = why("abs-inside");
        assert!(e.contains("abs-inside is an absolute symlink"), "absolute links fail even inside: {e}");
        let e = why("escape-rel");
        assert!(
            e.starts_with(&format!("{root}/escape-rel is a symlink pointing outside {root} (to ../secret)")),
            "{e}"
        );
        // A chain: the link that leaves is named, not the first one.
        assert!(
            why("chain").starts_with(&format!("{root}/escape-rel is a symlink pointing outside")),
            "{}",
            why("chain")
        );
        let e = why("sub/up/secret");
        assert!(e.starts_with(&format!("{root}/sub/up is a symlink pointing outside {root} (to ../..)")), "{e}");
        assert!(why("missing").contains("does not exist"));
    }

    #[test]
    fn servable_is_what_open_serves() {
        let (_t, j) = setup();
        assert_eq!(servable(j.root(), "inside").unwrap().len(), 5);
        assert!(servable(j.root(), "escape-abs").unwrap_err().contains("absolute symlink"));
        assert!(servable(j.root(), "sub").unwrap_err().contains("not a regular file"));
        assert!(servable(&j.root().join("nope"), "x").is_err());
    }

    #[test]
    fn refused_links_lists_every_link_that_cannot_be_served() {
        let (_t, j) = setup();
        symlink("gone", j.root().join("dangling")).unwrap();
        symlink("sub", j.root().join("dir-link")).unwrap();
        symlink("/etc/passwd", j.root().join(".hidden-link")).unwrap();
        let got = refused_links(j.root());
        let names: Vec<&str> = got
            .iter()
            .map(|p| p.strip_prefix(&format!("{}/", j.root().display())).unwrap_or(p).split(' ').next().unwrap())
            .collect();
        // `sub/up` leads out as a directory; `inside` and `dir-link` stay in; hidden ones are never served.
        assert_eq!(names, ["dangling", "escape-abs", "escape-rel", "sub/up"], "{got:#?}");
    }

    /// A module every protocol uses must not know any of them.
    #[test]
    fn knows_none_of_its_users() {
        let src = include_str!("jail.rs");
        let code = &src[..src.find("#[cfg(test)]").unwrap()];
        for user in ["crate::tftp", "crate::http", "crate::dhcp", "crate::config"] {
            assert!(!code.contains(user), "jail.rs uses {user}");
        }
    }

    #[test]
    fn portable_fallback_refuses_symlink_escapes_too() {
        let (_t, j) = setup();
        assert!(j.open_portable(Path::new("escape-rel")).is_err_and(|r| r == Refusal::SymlinkEscape));
        assert!(j.open_portable(Path::new("escape-abs")).is_err_and(|r| r == Refusal::SymlinkEscape));
        assert!(j.open_portable(Path::new("inside")).is_ok());
    }
}

//! Opening a requested file inside a served directory, and nowhere else: the TFTP root, and
//! over HTTP the artifacts, images and TFTP directories (`http::files` adds its own, stricter
//! rules on the name first: no hidden components, no backslashes).
//!
//! Two steps. First the name alone: `..` anywhere is refused, and an absolute name is
//! accepted only when it names something under the root (`/srv/tftp/ipxe.efi` with root
//! `/srv/tftp`); any other absolute name is refused rather than quietly re-rooted, so a
//! client probing `/etc/passwd` shows up as such in the metrics. Then the open itself:
//! `openat2(root, name, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, which makes the kernel
//! refuse any resolution that leaves the root, through a symlink at any depth, atomically
//! (no window between checking and opening). Symlinks that stay inside the root work.
//! Kernels without openat2 (before 5.6) get the portable equivalent: canonicalize, check the
//! prefix, open with `O_NOFOLLOW`.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{self, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Why a request was refused. [`Refusal::reason`] is the TFTP metrics label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("path contains '..'")]
    Traversal,
    #[error("absolute path outside the served directory")]
    Absolute,
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

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Traversal => "tftp-traversal",
            Refusal::Absolute => "tftp-absolute-path",
            Refusal::SymlinkEscape => "tftp-symlink-escape",
            Refusal::NotFound | Refusal::Empty => "tftp-not-found",
            Refusal::NotAFile => "tftp-not-a-file",
            Refusal::Denied => "tftp-denied",
            Refusal::Io(_) => "tftp-io-error",
        }
    }

    /// The TFTP error sent to the client: escapes look like "access violation", without
    /// saying more.
    pub fn packet_error(&self) -> Vec<u8> {
        use crate::tftp::packet::{error, ErrorCode};
        match self {
            Refusal::NotFound | Refusal::Empty | Refusal::NotAFile => error(ErrorCode::FileNotFound, "File not found"),
            Refusal::Io(_) => error(ErrorCode::NotDefined, "Cannot read the file"),
            _ => error(ErrorCode::AccessViolation, "Access violation"),
        }
    }
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

    /// The name relative to the root, or why it cannot be one. Backslashes count as
    /// separators (some Windows-minded firmware sends them).
    pub fn relative(&self, requested: &Path) -> Result<PathBuf, Refusal> {
        let s = requested.to_string_lossy().replace('\\', "/");
        let p = Path::new(&s);
        let p = if p.is_absolute() {
            p.strip_prefix(&self.root).or_else(|_| p.strip_prefix(&self.configured)).map_err(|_| Refusal::Absolute)?
        } else {
            p
        };
        let mut rel = PathBuf::new();
        for c in p.components() {
            match c {
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
    fn portable_fallback_refuses_symlink_escapes_too() {
        let (_t, j) = setup();
        assert!(j.open_portable(Path::new("escape-rel")).is_err_and(|r| r == Refusal::SymlinkEscape));
        assert!(j.open_portable(Path::new("escape-abs")).is_err_and(|r| r == Refusal::SymlinkEscape));
        assert!(j.open_portable(Path::new("inside")).is_ok());
    }
}

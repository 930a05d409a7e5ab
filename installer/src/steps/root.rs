//! The installed system's files, reached beneath its mounted root only: every path is
//! opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from a descriptor of the
//! root, so the kernel refuses a `..` or an absolute symlink met anywhere on the way (the
//! image's own symlinks included), not a string check that a symlink could get around.
//! Missing directories are made one component at a time, each beneath the root again.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use osie_api::steps::{check_path, Id, Owner};

/// A directory tree, reached beneath its top only.
pub struct Root {
    fd: OwnedFd,
}

/// What [`Root::write_file`] did, for the step's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: usize,
    pub uid: u32,
    pub gid: u32,
    /// Directories it made, outermost first (`/etc/osie`).
    pub made: Vec<String>,
}

impl Root {
    pub fn open(dir: &Path) -> Result<Root> {
        let fd = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .with_context(|| format!("opening {}", dir.display()))?;
        Ok(Root { fd })
    }

    fn beneath(&self, rel: &str, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let rel = if rel.is_empty() { "." } else { rel };
        openat2(self.fd.as_fd(), rel, how)
    }

    /// The directory `/<parts…>` opened (`O_PATH`), made with `mode` where missing.
    pub fn dir(&self, parts: &[&str], mode: u32, made: &mut Vec<String>) -> Result<OwnedFd> {
        let mut cur =
            self.beneath("", OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).map_err(|e| refusal("/", e))?;
        for i in 0..parts.len() {
            let rel = parts[..=i].join("/");
            let open = || self.beneath(&rel, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty());
            cur = match open() {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match nix::sys::stat::mkdirat(cur.as_fd(), parts[i], Mode::from_bits_truncate(mode)) {
                        Ok(()) => made.push(format!("/{rel}")),
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(refusal(&format!("/{rel}"), e)).context("making the directory"),
                    }
                    // The mode as given, not as the umask left it.
                    open().map_err(|e| refusal(&format!("/{rel}"), e))?
                }
                Err(e) => return Err(refusal(&format!("/{rel}"), e)),
            };
        }
        Ok(cur)
    }

    /// Write `bytes` to `path` (absolute, in the tree), owned by `owner`, with `mode`; the
    /// directories on the way made with `dir_mode` where missing. Flushed to the disk.
    pub fn write_file(&self, path: &str, bytes: &[u8], mode: u32, owner: &Owner, dir_mode: u32) -> Result<Written> {
        let parts = check_path(path).map_err(anyhow::Error::msg)?;
        let (uid, gid) = self.ids(owner)?;
        let mut made = Vec::new();
        self.dir(&parts[..parts.len() - 1], dir_mode, &mut made)?;
        let rel = parts.join("/");
        let fd = self
            .beneath(&rel, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC, Mode::from_bits_truncate(mode & 0o777))
            .map_err(|e| refusal(path, e))?;
        let mut f = File::from(fd);
        f.write_all(bytes).with_context(|| format!("writing {path}"))?;
        // Owner first: chown clears the set-id bits that chmod then sets.
        nix::unistd::fchown(f.as_fd(), Some(uid.into()), Some(gid.into()))
            .with_context(|| format!("chown {uid}:{gid} {path}"))?;
        nix::sys::stat::fchmod(f.as_fd(), Mode::from_bits_truncate(mode)).with_context(|| format!("chmod {path}"))?;
        f.sync_all().with_context(|| format!("syncing {path}"))?;
        Ok(Written { bytes: bytes.len(), uid, gid, made })
    }

    /// A file of the tree, read whole (beneath the root like every path here).
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        let rel = check_path(path).map_err(anyhow::Error::msg)?.join("/");
        let fd = self.beneath(&rel, OFlag::O_RDONLY, Mode::empty()).map_err(|e| refusal(path, e))?;
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut File::from(fd), &mut v).with_context(|| format!("reading {path}"))?;
        Ok(v)
    }

    /// Numeric ids: names looked up in the tree's own `/etc/passwd` and `/etc/group`.
    fn ids(&self, owner: &Owner) -> Result<(u32, u32)> {
        let lookup = |id: &Id, file: &str| -> Result<u32> {
            match id {
                Id::Num(n) => Ok(*n),
                Id::Name(name) => {
                    let text = self.read(file).with_context(|| format!("looking up {name:?}"))?;
                    let text = String::from_utf8_lossy(&text);
                    text.lines()
                        .filter_map(|l| {
                            let f: Vec<&str> = l.split(':').collect();
                            (f.len() >= 3 && f[0] == name).then(|| f[2].parse::<u32>().ok()).flatten()
                        })
                        .next()
                        .with_context(|| format!("no {name:?} in the installed system's {file}"))
                }
            }
        };
        Ok((lookup(&owner.user, "/etc/passwd")?, lookup(&owner.group, "/etc/group")?))
    }
}

/// An `openat2` failure as the operator should read it.
fn refusal(path: &str, e: Errno) -> anyhow::Error {
    match e {
        Errno::EXDEV => anyhow::anyhow!(
            "{path}: refused: its resolution leaves the installed root (an absolute symlink or `..` on the way)"
        ),
        Errno::ELOOP => anyhow::anyhow!("{path}: refused: too many symlinks, or a magic link, on the way"),
        Errno::ENOTDIR => anyhow::anyhow!("{path}: a component on the way is not a directory"),
        Errno::ENOSYS => anyhow::anyhow!("{path}: this kernel has no openat2 (Linux 5.6 or later is needed)"),
        e => anyhow::anyhow!("{path}: {e}"),
    }
}

/// Fail unless `dir` is a directory beneath `root`'s top reached without symlinks: where a
/// bind mount may go (`mount` follows symlinks in its target; an image's `/dev` that is a
/// symlink must not move the bind elsewhere).
pub fn plain_dir(root: &Root, name: &str) -> Result<OwnedFd> {
    let mut made = Vec::new();
    let fd = root.dir(&[name], 0o755, &mut made)?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    match openat2(root.fd.as_fd(), name, how) {
        Ok(fd2) => {
            drop(fd);
            Ok(fd2)
        }
        Err(Errno::ELOOP) => bail!("/{name} in the installed system is a symlink: nothing is mounted on it"),
        Err(e) => Err(refusal(&format!("/{name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    use super::*;

    fn owner0() -> Owner {
        Owner::parse(&format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid())).unwrap()
    }

    #[test]
    fn writes_beneath_the_root_and_makes_directories() {
        let d = tempfile::tempdir().unwrap();
        let r = Root::open(d.path()).unwrap();
        let w = r.write_file("/etc/osie/x.conf", b"hello\n", 0o640, &owner0(), 0o700).unwrap();
        assert_eq!(w.made, ["/etc", "/etc/osie"]);
        assert_eq!(w.bytes, 6);
        let p = d.path().join("etc/osie/x.conf");
        assert_eq!(std::fs::read(&p).unwrap(), b"hello\n");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::metadata(d.path().join("etc/osie")).unwrap().permissions().mode() & 0o7777, 0o700);
        // Again: truncated and rewritten, nothing made.
        let w = r.write_file("/etc/osie/x.conf", b"hi", 0o644, &owner0(), 0o700).unwrap();
        assert!(w.made.is_empty());
        assert_eq!(std::fs::read(&p).unwrap(), b"hi");
    }

    #[test]
    fn relative_symlinks_inside_are_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("usr/lib")).unwrap();
        symlink("usr/lib", d.path().join("lib")).unwrap();
        let r = Root::open(d.path()).unwrap();
        r.write_file("/lib/osie.txt", b"x", 0o644, &owner0(), 0o755).unwrap();
        assert_eq!(std::fs::read(d.path().join("usr/lib/osie.txt")).unwrap(), b"x");
    }

    #[test]
    fn escapes_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let r = Root::open(d.path()).unwrap();
        // An absolute symlink in the image (to a directory that exists outside, too).
        symlink(outside.path(), d.path().join("abs")).unwrap();
        // A relative one that climbs out.
        symlink("../../../../../../..", d.path().join("up")).unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        symlink("/etc/passwd", d.path().join("etc/pw")).unwrap();
        for (path, want) in [
            ("/abs/x", "leaves the installed root"),
            ("/up/tmp/x", "leaves the installed root"),
            ("/etc/pw", "leaves the installed root"),
            ("/abs/new/dir/x", "leaves the installed root"),
            ("/etc/../x", "`..`"),
            ("etc/x", "not an absolute path"),
        ] {
            let e = r.write_file(path, b"x", 0o644, &owner0(), 0o755).unwrap_err();
            assert!(format!("{e:#}").contains(want), "{path}: {e:#}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside");
    }

    #[test]
    fn owners_by_name_come_from_the_tree() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nme:x:4242:4243::/:/bin/sh\n").unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nus:x:4244:\n").unwrap();
        let r = Root::open(d.path()).unwrap();
        assert_eq!(r.ids(&Owner::parse("me:us").unwrap()).unwrap(), (4242, 4244));
        assert_eq!(r.ids(&Owner::parse("7:root").unwrap()).unwrap(), (7, 0));
        let e = r.ids(&Owner::parse("nobody:us").unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("no \"nobody\" in the installed system's /etc/passwd"), "{e:#}");
        if nix::unistd::getuid().is_root() {
            let w = r.write_file("/home/me/f", b"", 0o600, &Owner::parse("me:us").unwrap(), 0o755).unwrap();
            let m = std::fs::metadata(d.path().join("home/me/f")).unwrap();
            assert_eq!((m.uid(), m.gid(), w.uid, w.gid), (4242, 4244, 4242, 4244));
        }
    }

    #[test]
    fn bind_targets_must_be_plain_directories() {
        let d = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        symlink(other.path(), d.path().join("dev")).unwrap();
        std::fs::create_dir(d.path().join("proc")).unwrap();
        let r = Root::open(d.path()).unwrap();
        assert!(plain_dir(&r, "proc").is_ok());
        assert!(plain_dir(&r, "run").is_ok(), "made when missing");
        assert!(d.path().join("run").is_dir());
        let e = plain_dir(&r, "dev").unwrap_err();
        assert!(format!("{e:#}").contains("leaves the installed root"), "{e:#}");
    }
}

//! newc ("070701") cpio archives, the format the kernel unpacks into the initramfs.
//!
//! Everything that could vary between builds is fixed: mtime 0, uid/gid 0, inode numbers
//! assigned in write order, no device numbers for regular files. Callers write entries in a
//! sorted order (see [`crate::image`]), so the same inputs give the same bytes.

use std::io::{self, Write};

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";

/// Streams entries into `W`; [`Writer::finish`] writes the trailer.
pub struct Writer<W: Write> {
    out: W,
    next_ino: u32,
    offset: u64,
}

/// One entry's header fields that vary; the rest are fixed for reproducibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// File type and permission bits (`S_IFREG | 0o755`…).
    pub mode: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer { out, next_ino: 1, offset: 0 }
    }

    /// Write one entry. `name` is relative (no leading `/`), as the kernel expects.
    pub fn entry(&mut self, name: &str, h: Header, data: &[u8]) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if h.mode & 0o170000 == S_IFDIR { 2 } else { 1 };
        self.raw(name, ino, h, nlink, data)
    }

    fn raw(&mut self, name: &str, ino: u32, h: Header, nlink: u32, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: larger than 4 GiB")))?;
        let namesize = name.len() as u32 + 1;
        let mut hdr = Vec::with_capacity(110 + name.len() + 4);
        hdr.extend_from_slice(MAGIC);
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        for v in [ino, h.mode, 0, 0, nlink, 0, size, 0, 0, h.rdev_major, h.rdev_minor, namesize, 0] {
            hdr.extend_from_slice(format!("{v:08X}").as_bytes());
        }
        hdr.extend_from_slice(name.as_bytes());
        hdr.push(0);
        self.put(&hdr)?;
        self.pad4()?;
        self.put(data)?;
        self.pad4()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.offset += b.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.offset % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    /// Write the trailer, pad the archive to 512 bytes (as GNU cpio does) and return `W`.
    pub fn finish(mut self) -> io::Result<W> {
        self.raw(TRAILER, 0, Header { mode: 0, rdev_major: 0, rdev_minor: 0 }, 1, &[])?;
        let pad = (512 - (self.offset % 512) as usize) % 512;
        self.put(&vec![0u8; pad])?;
        Ok(self.out)
    }
}

/// An entry read back from an archive (tests, and `mkinitramfs --list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub ino: u32,
    pub mtime: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Parse an uncompressed newc archive up to its trailer.
pub fn read(mut b: &[u8]) -> Result<Vec<Entry>, String> {
    let total = b.len();
    let mut out = Vec::new();
    loop {
        let at = total - b.len();
        if b.len() < 110 || &b[..6] != MAGIC {
            return Err(format!("offset {at}: no newc header (magic 070701)"));
        }
        let field = |i: usize| -> Result<u32, String> {
            let s = std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).map_err(|_| format!("offset {at}: bad header"))?;
            u32::from_str_radix(s, 16).map_err(|_| format!("offset {at}: bad hex field {s:?}"))
        };
        let (ino, mode, uid, gid, mtime, size) = (field(0)?, field(1)?, field(2)?, field(3)?, field(5)?, field(6)?);
        let rdev = (field(9)?, field(10)?);
        let namesize = field(11)? as usize;
        let name_end = 110 + namesize;
        let data_start = name_end.div_ceil(4) * 4;
        let data_end = data_start + size as usize;
        if b.len() < data_end || namesize == 0 {
            return Err(format!("offset {at}: entry runs past the end"));
        }
        let name = String::from_utf8_lossy(&b[110..name_end - 1]).into_owned();
        if name == TRAILER {
            return Ok(out);
        }
        out.push(Entry { name, mode, ino, mtime, uid, gid, rdev, data: b[data_start..data_end].to_vec() });
        b = &b[(data_end.div_ceil(4) * 4).min(b.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.entry("dev", Header { mode: S_IFDIR | 0o755, rdev_major: 0, rdev_minor: 0 }, &[]).unwrap();
        w.entry("dev/console", Header { mode: S_IFCHR | 0o600, rdev_major: 5, rdev_minor: 1 }, &[]).unwrap();
        w.entry("init", Header { mode: S_IFREG | 0o755, rdev_major: 0, rdev_minor: 0 }, b"#!hello\n").unwrap();
        w.entry("sbin", Header { mode: S_IFLNK | 0o777, rdev_major: 0, rdev_minor: 0 }, b"bin").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn writes_aligned_newc_and_reads_back() {
        let a = sample();
        assert_eq!(a.len() % 512, 0);
        assert_eq!(&a[..6], b"070701");
        let e = read(&a).unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["dev", "dev/console", "init", "sbin"]);
        assert_eq!(e[1].rdev, (5, 1));
        assert_eq!(e[2].data, b"#!hello\n");
        assert_eq!(e[2].mode, S_IFREG | 0o755);
        assert!(e.iter().all(|e| e.mtime == 0 && e.uid == 0 && e.gid == 0));
        assert_eq!(e.iter().map(|e| e.ino).collect::<Vec<_>>(), [1, 2, 3, 4]);
    }

    #[test]
    fn gnu_cpio_lists_and_extracts_it() {
        if std::process::Command::new("cpio").arg("--version").output().is_err() {
            eprintln!("SKIP: cpio not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let arch = dir.path().join("a.cpio");
        std::fs::write(&arch, sample()).unwrap();
        let out = std::process::Command::new("cpio").args(["-t", "-v", "--quiet", "-F"]).arg(&arch).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8(out.stdout).unwrap();
        assert!(listing.contains("dev/console"), "{listing}");
        assert!(listing.lines().any(|l| l.starts_with("crw-------") && l.contains("5,") && l.contains("dev/console")));
        assert!(listing.lines().any(|l| l.starts_with("lrwxrwxrwx") && l.contains("sbin -> bin")), "{listing}");
        // Extract the regular file (device nodes need mknod rights; skip them).
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let st = std::process::Command::new("cpio")
            .args(["-i", "--quiet", "-d", "-F"])
            .arg(&arch)
            .arg("init")
            .current_dir(&x)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read(x.join("init")).unwrap(), b"#!hello\n");
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let a = sample();
        let err = read(&a[..150]).unwrap_err();
        assert!(err.contains("past the end") || err.contains("no newc header"), "{err}");
    }
}

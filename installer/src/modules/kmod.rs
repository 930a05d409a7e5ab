//! Inserting one module file into the kernel: `finit_module`, also for compressed files
//! (`MODULE_INIT_COMPRESSED_FILE` where the kernel decompresses, else decompressed here and
//! handed over with `init_module`).

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::kmod::{finit_module, init_module, ModuleInitFlags};

/// `MODULE_INIT_COMPRESSED_FILE` (Linux 6.4+, `CONFIG_MODULE_DECOMPRESS`).
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    Loaded,
    AlreadyThere,
}

/// The compression of a module file, by suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    Plain,
    Xz,
    Zstd,
    Gzip,
}

impl Packing {
    pub fn of(path: &Path) -> Packing {
        let s = path.to_string_lossy();
        if s.ends_with(".ko.xz") {
            Packing::Xz
        } else if s.ends_with(".ko.zst") {
            Packing::Zstd
        } else if s.ends_with(".ko.gz") {
            Packing::Gzip
        } else {
            Packing::Plain
        }
    }
}

/// Insert the module at `path` with no parameters.
pub fn insert(path: &Path) -> Result<Inserted> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let packing = Packing::of(path);
    let flags = if packing == Packing::Plain {
        ModuleInitFlags::empty()
    } else {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    };
    let r = finit_module(&f, c"", flags);
    let r = match r {
        // Older kernels reject the flag (EINVAL) or cannot decompress this format.
        Err(Errno::EINVAL) | Err(Errno::EOPNOTSUPP) | Err(Errno::ENOEXEC) if packing != Packing::Plain => {
            let image = decompress(packing, f).with_context(|| format!("decompressing {}", path.display()))?;
            init_module(&image, c"")
        }
        r => r,
    };
    match r {
        Ok(()) => Ok(Inserted::Loaded),
        Err(Errno::EEXIST) => Ok(Inserted::AlreadyThere),
        Err(e) => Err(anyhow::Error::new(e)).with_context(|| format!("loading {}", path.display())),
    }
}

/// The ELF image of a compressed module.
pub fn decompress(packing: Packing, r: impl Read) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match packing {
        Packing::Plain => {
            let mut r = r;
            r.read_to_end(&mut out)?;
        }
        Packing::Xz => {
            liblzma::read::XzDecoder::new(r).read_to_end(&mut out)?;
        }
        Packing::Zstd => {
            zstd::stream::read::Decoder::new(r)?.read_to_end(&mut out)?;
        }
        Packing::Gzip => {
            flate2::read::GzDecoder::new(r).read_to_end(&mut out)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn packing_by_suffix() {
        assert_eq!(Packing::of(Path::new("k/ext4.ko")), Packing::Plain);
        assert_eq!(Packing::of(Path::new("k/ext4.ko.xz")), Packing::Xz);
        assert_eq!(Packing::of(Path::new("k/ext4.ko.zst")), Packing::Zstd);
        assert_eq!(Packing::of(Path::new("k/ext4.ko.gz")), Packing::Gzip);
    }

    #[test]
    fn decompresses_every_packing() {
        let elf = b"\x7fELF pretend module".repeat(100);
        let zst = zstd::encode_all(&elf[..], 3).unwrap();
        assert_eq!(decompress(Packing::Zstd, &zst[..]).unwrap(), elf);
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&elf[..], 6).read_to_end(&mut xz).unwrap();
        assert_eq!(decompress(Packing::Xz, &xz[..]).unwrap(), elf);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf).unwrap();
        assert_eq!(decompress(Packing::Gzip, &gz.finish().unwrap()[..]).unwrap(), elf);
        assert!(decompress(Packing::Xz, &b"not xz"[..]).is_err());
    }
}

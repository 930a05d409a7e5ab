//! Decompressing modules as shipped (`.ko.xz`, `.ko.zst`, `.ko.gz`) and compressing the
//! finished archive in a way the kernel unpacks (`CONFIG_RD_ZSTD`, `CONFIG_RD_GZIP`) and that
//! is reproducible (no timestamps, no file names, single-threaded).

use std::io::{Read, Write};

use anyhow::{Context, Result};

/// How the archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Zstd,
    Gzip,
    None,
}

/// How module files are stored in the archive. Plain is the default (the archive as a whole
/// is compressed, which packs better); xz and zstd make the initramfs look like a distribution
/// kernel's module tree, and exercise the installer's compressed-module path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ModuleCompression {
    #[default]
    None,
    Xz,
    Zstd,
}

impl ModuleCompression {
    pub fn suffix(self) -> &'static str {
        match self {
            ModuleCompression::None => "",
            ModuleCompression::Xz => ".xz",
            ModuleCompression::Zstd => ".zst",
        }
    }
}

/// Compress one module as kmod's build does: xz with CRC32 checks (the kernel's own xz
/// decoder knows no other), or a single zstd frame.
pub fn compress_module(elf: &[u8], how: ModuleCompression) -> Result<Vec<u8>> {
    match how {
        ModuleCompression::None => Ok(elf.to_vec()),
        ModuleCompression::Xz => {
            let stream = liblzma::stream::Stream::new_easy_encoder(6, liblzma::stream::Check::Crc32)?;
            let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
            e.write_all(elf)?;
            Ok(e.finish()?)
        }
        ModuleCompression::Zstd => Ok(zstd::encode_all(elf, 9)?),
    }
}

/// The module's ELF bytes, decompressing by file suffix.
pub fn decompress_module(rel: &str, raw: Vec<u8>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len() * 3);
    if rel.ends_with(".ko.xz") {
        liblzma::read::XzDecoder::new(&raw[..]).read_to_end(&mut out).context("xz")?;
    } else if rel.ends_with(".ko.zst") {
        zstd::stream::read::Decoder::new(&raw[..])?.read_to_end(&mut out).context("zstd")?;
    } else if rel.ends_with(".ko.gz") {
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).context("gzip")?;
    } else {
        return Ok(raw);
    }
    Ok(out)
}

/// Compress the cpio archive. `level`: zstd 1..=19, gzip 1..=9; `None` picks a default.
pub fn compress(data: &[u8], how: Compression, level: Option<i32>) -> Result<Vec<u8>> {
    match how {
        Compression::None => Ok(data.to_vec()),
        Compression::Zstd => {
            let mut e = zstd::stream::Encoder::new(Vec::new(), level.unwrap_or(19))?;
            e.include_checksum(true)?;
            e.include_contentsize(true)?;
            e.set_pledged_src_size(Some(data.len() as u64))?;
            e.write_all(data)?;
            Ok(e.finish()?)
        }
        Compression::Gzip => {
            // GzBuilder writes mtime 0 and no file name unless asked: reproducible.
            let lvl = flate2::Compression::new(level.unwrap_or(9).clamp(1, 9) as u32);
            let mut e = flate2::GzBuilder::new().write(Vec::new(), lvl);
            e.write_all(data)?;
            Ok(e.finish()?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_modules_decompress_by_suffix() {
        let elf = b"\x7fELF module bytes".to_vec();
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&elf[..], 6).read_to_end(&mut xz).unwrap();
        assert_eq!(decompress_module("a.ko.xz", xz).unwrap(), elf);
        let zst = zstd::encode_all(&elf[..], 3).unwrap();
        assert_eq!(decompress_module("a.ko.zst", zst).unwrap(), elf);
        assert_eq!(decompress_module("a.ko", elf.clone()).unwrap(), elf);
        assert!(decompress_module("a.ko.xz", b"garbage".to_vec()).is_err());
    }

    #[test]
    fn modules_compress_and_come_back() {
        let elf = b"\x7fELF module".repeat(500);
        for how in [ModuleCompression::Xz, ModuleCompression::Zstd] {
            let c = compress_module(&elf, how).unwrap();
            assert!(c.len() < elf.len());
            assert_eq!(decompress_module(&format!("m.ko{}", how.suffix()), c).unwrap(), elf);
        }
        // xz with CRC32 (check id 1 in the stream flags), as the kernel's decoder needs.
        let xz = compress_module(&elf, ModuleCompression::Xz).unwrap();
        assert_eq!(&xz[..6], b"\xfd7zXZ\0");
        assert_eq!(xz[7], 1);
    }

    #[test]
    fn output_is_reproducible_and_decodes_with_real_tools() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for how in [Compression::Zstd, Compression::Gzip] {
            let a = compress(&data, how, Some(3)).unwrap();
            let b = compress(&data, how, Some(3)).unwrap();
            assert_eq!(a, b, "{how:?} output differs between runs");
            let tool = if how == Compression::Zstd { "zstd" } else { "gzip" };
            if !osie_testkit::require_tools("output_is_reproducible_and_decodes_with_real_tools", &[tool]) {
                continue;
            }
            let mut child = std::process::Command::new(tool)
                .arg("-dc")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let writer = std::thread::spawn(move || stdin.write_all(&a));
            let out = child.wait_with_output().unwrap();
            writer.join().unwrap().unwrap();
            assert!(out.status.success());
            assert_eq!(out.stdout, data, "{tool} -d gives back the input");
        }
    }
}

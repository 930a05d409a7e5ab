//! osie's initramfs builder: from the unpacked Debian kernel package and the static
//! installer, a reproducible newc cpio (zstd or gzip) holding the installer as `/init` and
//! the kernel modules it needs, with a generated module index.
//!
//! - [`cpio`]: the newc writer (and a reader for checks).
//! - [`modinfo`]: a module's `.modinfo` from its ELF section.
//! - [`modindex`]: `modules.dep`/`alias`/`softdep` formats and alias globbing — shared with
//!   the installer, which reads what this writes.
//! - [`tree`]: the kernel's module tree and the dependency closure.
//! - [`image`]: assembling and compressing the archive.

pub mod compress;
pub mod cpio;
pub mod image;
pub mod modindex;
pub mod modinfo;
pub mod tree;

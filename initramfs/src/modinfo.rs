//! A kernel module's own metadata: the NUL-separated `key=value` strings of its ELF
//! `.modinfo` section (what `modinfo(8)` prints). The builder resolves dependencies and
//! aliases from these, because Debian's kernel package ships no `modules.dep`.

use crate::modindex::{normalize, SoftDep};

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum ModinfoError {
    #[error("not a 64-bit little-endian ELF file")]
    NotElf64,
    #[error("ELF section table is truncated or out of bounds")]
    Truncated,
    #[error("no .modinfo section (not a kernel module?)")]
    NoModinfo,
}

/// What the builder needs from `.modinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=`, normalized; empty when the module does not carry one (older kernels).
    pub name: String,
    pub depends: Vec<String>,
    pub aliases: Vec<String>,
    pub softdep: SoftDep,
    pub firmware: Vec<String>,
    pub vermagic: String,
}

impl ModInfo {
    /// Parse an uncompressed module's bytes.
    pub fn from_elf(elf: &[u8]) -> Result<ModInfo, ModinfoError> {
        Ok(Self::from_section(section(elf, ".modinfo")?.ok_or(ModinfoError::NoModinfo)?))
    }

    /// Parse the raw `.modinfo` section.
    pub fn from_section(sec: &[u8]) -> ModInfo {
        let mut m = ModInfo::default();
        for entry in sec.split(|&b| b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            let Some((k, v)) = entry.split_once('=') else { continue };
            match k {
                "name" => m.name = normalize(v),
                "depends" => m.depends.extend(v.split(',').filter(|d| !d.is_empty()).map(normalize)),
                "alias" => m.aliases.push(v.to_string()),
                "softdep" => m.softdep.add(v),
                "firmware" => m.firmware.push(v.to_string()),
                "vermagic" => m.vermagic = v.trim().to_string(),
                _ => {}
            }
        }
        m
    }
}

/// The bytes of the section called `want` in a 64-bit little-endian ELF file.
pub fn section<'a>(elf: &'a [u8], want: &str) -> Result<Option<&'a [u8]>, ModinfoError> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err(ModinfoError::NotElf64);
    }
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize);
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize);
    let t = ModinfoError::Truncated;
    let shoff = u64_at(0x28).ok_or(t)?;
    let shentsize = u16_at(0x3a).ok_or(t)?;
    let shnum = u16_at(0x3c).ok_or(t)?;
    let shstrndx = u16_at(0x3e).ok_or(t)?;
    if shentsize < 64 || shstrndx >= shnum {
        return Err(t);
    }
    let sh = |i: usize| -> Result<(usize, usize, usize), ModinfoError> {
        let base = shoff.checked_add(i.checked_mul(shentsize).ok_or(ModinfoError::Truncated)?);
        let base = base.ok_or(ModinfoError::Truncated)?;
        let name = u32_at(base).ok_or(ModinfoError::Truncated)?;
        let off = u64_at(base + 24).ok_or(ModinfoError::Truncated)?;
        let size = u64_at(base + 32).ok_or(ModinfoError::Truncated)?;
        Ok((name, off, size))
    };
    let bytes = |off: usize, size: usize| off.checked_add(size).and_then(|end| elf.get(off..end));
    let (_, stroff, strsize) = sh(shstrndx)?;
    let strtab = bytes(stroff, strsize).ok_or(ModinfoError::Truncated)?;
    for i in 0..shnum {
        let (name, off, size) = sh(i)?;
        let Some(n) = strtab.get(name..) else { continue };
        let n = &n[..n.iter().position(|&b| b == 0).unwrap_or(n.len())];
        if n == want.as_bytes() {
            return bytes(off, size).map(Some).ok_or(ModinfoError::Truncated);
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 with a `.modinfo` section holding `info` (and the string table).
    pub(crate) fn fake_module(info: &[u8]) -> Vec<u8> {
        let shstr = b"\0.modinfo\0.shstrtab\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let info_off = elf.len();
        elf.extend_from_slice(info);
        let str_off = elf.len();
        elf.extend_from_slice(shstr);
        while !elf.len().is_multiple_of(8) {
            elf.push(0);
        }
        let shoff = elf.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, info_off, info.len());
        sh(10, str_off, shstr.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf
    }

    #[test]
    fn parses_a_real_looking_modinfo() {
        let info = b"license=GPL\0description=Virtio network driver\0alias=virtio:d00000001v*\0\
depends=virtio_ring,virtio,net_failover\0retpoline=Y\0name=virtio_net\0vermagic=6.1.0-56-amd64 SMP preempt \0\0";
        let m = ModInfo::from_elf(&fake_module(info)).unwrap();
        assert_eq!(m.name, "virtio_net");
        assert_eq!(m.depends, ["virtio_ring", "virtio", "net_failover"]);
        assert_eq!(m.aliases, ["virtio:d00000001v*"]);
        assert_eq!(m.vermagic, "6.1.0-56-amd64 SMP preempt");
        assert!(m.softdep.is_empty());
    }

    #[test]
    fn empty_depends_and_several_softdeps() {
        let m = ModInfo::from_section(b"depends=\0softdep=pre: crc32c\0softdep=pre: xxhash64 post: x\0name=btrfs\0");
        assert!(m.depends.is_empty());
        assert_eq!(m.softdep.pre, ["crc32c", "xxhash64"]);
        assert_eq!(m.softdep.post, ["x"]);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(ModInfo::from_elf(b"not an elf file at all, clearly").unwrap_err(), ModinfoError::NotElf64);
        let mut m = fake_module(b"name=x\0");
        let n = m.len();
        m.truncate(n - 40);
        assert_eq!(ModInfo::from_elf(&m).unwrap_err(), ModinfoError::Truncated);
        let mut no = fake_module(b"name=x\0");
        // Rename the section so it is not found.
        let p = no.windows(8).position(|w| w == b".modinfo").unwrap();
        no[p + 1] = b'X';
        assert_eq!(ModInfo::from_elf(&no).unwrap_err(), ModinfoError::NoModinfo);
    }
}

//! qcow2 (versions 2 and 3) as pure functions: the header, the L1 and L2 tables, and the
//! [`Plan`] that lets the installer stream a qcow2 file in file order onto a raw disk.
//!
//! The installer reads the header and the tables first (HTTP Range requests), builds a plan
//! with [`Header::parse`], [`Header::l2_tables`] and [`Mapper`], then reads the whole file
//! once, front to back: each data extent (a run of clusters, or one compressed cluster) is
//! written at its guest offset as the stream passes it, and everything the tables do not map
//! (unallocated and zero clusters) becomes a zero run. bootsvc's `check` runs the same
//! parser on the files it serves. The layout: QEMU's `docs/interop/qcow2.txt`.
//!
//! Refused, each with the reason: backing files, encryption, external data files, images
//! marked corrupt, unknown incompatible features, tables or clusters outside the file,
//! subclusters both allocated and zero, and tables larger than [`L1_MAX`] / [`EXTENTS_MAX`]
//! (memory stays bounded whatever the file says).

use std::fmt;

pub const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Bytes of the file's start [`Header::parse`] wants (the v3 header with its compression
/// type is 105; header extensions are not needed).
pub const HEADER_READ: u64 = 512;
/// Largest L1 table accepted, in entries (QEMU's own limit: 32 MiB of table).
pub const L1_MAX: u64 = 4 << 20;
/// Most data extents a plan may hold (32 bytes each: at most 32 MiB). An extent is a run of
/// clusters contiguous in the file and on the disk, or one compressed cluster.
pub const EXTENTS_MAX: usize = 1 << 20;

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
const ZERO_FLAG: u64 = 1;
const SUBCLUSTERS: u64 = 32;

/// Why a file cannot be streamed (the message says what and where).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("qcow2: {0}")]
pub struct Refused(pub String);

fn refuse<T>(why: impl fmt::Display) -> Result<T, Refused> {
    Err(Refused(why.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (no zlib header), QEMU's default.
    Zlib,
    Zstd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    /// The disk's size (bytes the image expands to).
    pub size: u64,
    pub l1_size: u64,
    pub l1_offset: u64,
    pub compression: Compression,
    /// 16-byte L2 entries with 32 subclusters each.
    pub extended_l2: bool,
    /// Bytes of the whole file (from the HTTP answer or the file system).
    pub file_size: u64,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// True when `head` starts with the qcow2 magic.
pub fn is_qcow2(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

impl Header {
    /// Parse the header from the file's first bytes (at least 72 for v2, 104 for v3; give
    /// [`HEADER_READ`] when the file has them). `file_size` bounds every offset.
    pub fn parse(b: &[u8], file_size: u64) -> Result<Header, Refused> {
        if !is_qcow2(b) {
            return refuse("no qcow2 magic (QFI\\xfb) at the start of the file");
        }
        if b.len() < 72 {
            return refuse(format!("the header is cut short ({} bytes)", b.len()));
        }
        let version = be32(b, 4);
        if version != 2 && version != 3 {
            return refuse(format!("version {version} (only 2 and 3 are known)"));
        }
        let backing = be64(b, 8);
        if backing != 0 {
            let len = be32(b, 16) as usize;
            let name = usize::try_from(backing)
                .ok()
                .and_then(|s| b.get(s..s.checked_add(len)?))
                .map(|n| format!(" ({:?})", String::from_utf8_lossy(n)))
                .unwrap_or_default();
            return refuse(format!(
                "the image has a backing file{name}: it is a layer over another image, not a whole disk \
                 (flatten it with `qemu-img convert -O qcow2`)"
            ));
        }
        let cluster_bits = be32(b, 20);
        if !(9..=21).contains(&cluster_bits) {
            return refuse(format!("cluster_bits {cluster_bits} (9 to 21 are valid)"));
        }
        let size = be64(b, 24);
        if be32(b, 32) != 0 {
            return refuse(format!("the image is encrypted (method {}): osie cannot decrypt it", be32(b, 32)));
        }
        let l1_size = u64::from(be32(b, 36));
        let l1_offset = be64(b, 40);
        let mut compression = Compression::Zlib;
        let mut extended_l2 = false;
        if version == 3 {
            if b.len() < 104 {
                return refuse(format!("the version 3 header is cut short ({} bytes)", b.len()));
            }
            let incompatible = be64(b, 72);
            let header_len = be32(b, 100);
            if incompatible & 2 != 0 {
                return refuse("the image is marked corrupt (repair it with `qemu-img check -r all`)");
            }
            if incompatible & 4 != 0 {
                return refuse("the image keeps its data in an external data file, not in this file");
            }
            let unknown = incompatible & !0x1f;
            if unknown != 0 {
                return refuse(format!("unknown incompatible features {unknown:#x}"));
            }
            if incompatible & 8 != 0 {
                if header_len < 105 || b.len() < 105 {
                    return refuse("the compression-type feature is set but the header has no compression type");
                }
                compression = match b[104] {
                    0 => Compression::Zlib,
                    1 => Compression::Zstd,
                    t => return refuse(format!("unknown compression type {t}")),
                };
            } else if header_len >= 105 && b.len() >= 105 && b[104] != 0 {
                return refuse(format!("compression type {} without the compression-type feature", b[104]));
            }
            extended_l2 = incompatible & 16 != 0;
            if extended_l2 && cluster_bits < 14 {
                return refuse(format!(
                    "extended L2 entries need clusters of 16 KiB or more (cluster_bits {cluster_bits})"
                ));
            }
        }
        let h = Header { version, cluster_bits, size, l1_size, l1_offset, compression, extended_l2, file_size };
        let needed = h.l1_needed();
        if needed > L1_MAX {
            return refuse(format!("the virtual size {size} needs {needed} L1 entries (at most {L1_MAX} are read)"));
        }
        if l1_size < needed {
            return refuse(format!("the L1 table has {l1_size} entries, the virtual size {size} needs {needed}"));
        }
        if needed > 0 {
            if !l1_offset.is_multiple_of(h.cluster_size()) {
                return refuse(format!("the L1 table's offset {l1_offset} is not cluster-aligned"));
            }
            h.within_file("the L1 table", l1_offset, needed * 8)?;
        }
        Ok(h)
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn entry_size(&self) -> u64 {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }

    /// Entries of one L2 table (one cluster).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.entry_size()
    }

    /// Guest bytes one L2 table maps.
    fn l2_span(&self) -> u64 {
        self.l2_entries() * self.cluster_size()
    }

    /// L1 entries that cover the virtual size (the rest are not read).
    pub fn l1_needed(&self) -> u64 {
        self.size.div_ceil(self.l2_span())
    }

    /// Where the L1 table is, and how many of its bytes to read.
    pub fn l1_range(&self) -> (u64, u64) {
        (self.l1_offset, self.l1_needed() * 8)
    }

    fn within_file(&self, what: &str, at: u64, len: u64) -> Result<(), Refused> {
        match at.checked_add(len) {
            Some(end) if end <= self.file_size => Ok(()),
            _ => refuse(format!(
                "{what} at byte {at} ({len} bytes) points outside the file ({} bytes): truncated or corrupt",
                self.file_size
            )),
        }
    }

    /// The L2 tables the L1 table (`l1`: the bytes of [`Header::l1_range`]) points at.
    pub fn l2_tables(&self, l1: &[u8]) -> Result<Vec<L2Table>, Refused> {
        let (_, len) = self.l1_range();
        if (l1.len() as u64) < len {
            return refuse(format!("the L1 table is cut short ({} of {len} bytes)", l1.len()));
        }
        let mut out = Vec::new();
        for (index, e) in l1.chunks_exact(8).take(self.l1_needed() as usize).enumerate() {
            let offset = be64(e, 0) & OFFSET_MASK;
            if offset == 0 {
                continue;
            }
            if !offset.is_multiple_of(self.cluster_size()) {
                return refuse(format!("L1 entry {index} points at {offset}, not cluster-aligned"));
            }
            self.within_file(&format!("the L2 table of L1 entry {index}"), offset, self.cluster_size())?;
            out.push(L2Table { index: index as u64, offset });
        }
        Ok(out)
    }
}

/// An L2 table to read: one cluster at `offset`, mapping the `index`th span of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Table {
    pub index: u64,
    pub offset: u64,
}

/// Bytes of the file that become bytes of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Where they start in the file.
    pub host: u64,
    /// Bytes in the file (for a compressed cluster: its compressed bytes, which may run a
    /// little past the data into the next one's sectors).
    pub len: u64,
    /// Where they go on the disk.
    pub guest: u64,
    /// Bytes on the disk (`len` unless compressed).
    pub guest_len: u64,
    pub compressed: bool,
}

impl Extent {
    pub fn host_end(&self) -> u64 {
        self.host + self.len
    }

    pub fn guest_end(&self) -> u64 {
        self.guest + self.guest_len
    }
}

/// Collects the data extents of the L2 tables, merging neighbours.
pub struct Mapper<'h> {
    h: &'h Header,
    extents: Vec<Extent>,
}

impl<'h> Mapper<'h> {
    pub fn new(h: &'h Header) -> Mapper<'h> {
        Mapper { h, extents: Vec::new() }
    }

    fn push(&mut self, e: Extent) -> Result<(), Refused> {
        if let Some(last) = self.extents.last_mut() {
            if !e.compressed && !last.compressed && last.host_end() == e.host && last.guest_end() == e.guest {
                last.len += e.len;
                last.guest_len += e.guest_len;
                return Ok(());
            }
        }
        if self.extents.len() >= EXTENTS_MAX {
            return refuse(format!("the tables map more than {EXTENTS_MAX} separate extents"));
        }
        self.extents.push(e);
        Ok(())
    }

    /// Add the L2 table `t` (its cluster's bytes in `table`).
    pub fn add(&mut self, t: L2Table, table: &[u8]) -> Result<(), Refused> {
        let h = self.h;
        let cs = h.cluster_size();
        if (table.len() as u64) < cs {
            return refuse(format!("the L2 table at {} is cut short", t.offset));
        }
        let es = h.entry_size() as usize;
        for (j, e) in table.chunks_exact(es).enumerate() {
            let guest = (t.index * h.l2_entries() + j as u64) * cs;
            if guest >= h.size {
                break;
            }
            let guest_len = cs.min(h.size - guest);
            let entry = be64(e, 0);
            let whr = || format!("the L2 entry for disk byte {guest} (table at {}, entry {j})", t.offset);
            if entry & COMPRESSED != 0 {
                let x = 62 - (h.cluster_bits - 8);
                let host = entry & ((1 << x) - 1);
                let sectors = (entry >> x) & ((1 << (h.cluster_bits - 8)) - 1);
                if host >= h.file_size {
                    return refuse(format!(
                        "{} points at byte {host}, past the end of the file ({} bytes)",
                        whr(),
                        h.file_size
                    ));
                }
                // The sector count rounds up: the last cluster's may run past the end of
                // the file (QEMU reads what is there).
                let end = ((host & !511) + (sectors + 1) * 512).min(h.file_size);
                self.push(Extent { host, len: end - host, guest, guest_len, compressed: true })?;
                continue;
            }
            let host = entry & OFFSET_MASK;
            if host != 0 && !host.is_multiple_of(cs) {
                return refuse(format!("{} points at {host}, not cluster-aligned", whr()));
            }
            let data = |m: &mut Self, at: u64, off: u64, len: u64| -> Result<(), Refused> {
                if host == 0 {
                    return refuse(format!("{} has allocated subclusters but no cluster", whr()));
                }
                h.within_file(&whr(), host + off, len)?;
                m.push(Extent { host: host + off, len, guest: at, guest_len: len, compressed: false })
            };
            if !h.extended_l2 {
                if host != 0 && !(h.version == 3 && entry & ZERO_FLAG != 0) {
                    data(self, guest, 0, guest_len)?;
                }
                continue;
            }
            let bitmap = be64(e, 8);
            let sub = cs / SUBCLUSTERS;
            for i in 0..SUBCLUSTERS {
                let at = guest + i * sub;
                if at >= h.size {
                    break;
                }
                let (alloc, zero) = (bitmap >> i & 1 != 0, bitmap >> (i + 32) & 1 != 0);
                if alloc && zero {
                    return refuse(format!("{}: subcluster {i} is marked both allocated and zero", whr()));
                }
                if alloc {
                    data(self, at, i * sub, sub.min(h.size - at))?;
                }
            }
        }
        Ok(())
    }

    /// The finished plan.
    pub fn finish(self) -> Plan {
        plan(self.h.size, self.extents)
    }
}

/// How to stream the file: the data extents in file order, and the disk's ranges no extent
/// covers (they read as zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub size: u64,
    pub extents: Vec<Extent>,
    pub zeros: Vec<(u64, u64)>,
}

fn plan(size: u64, mut extents: Vec<Extent>) -> Plan {
    // Guest ranges never overlap (each cluster has one entry): their gaps are the zeros.
    extents.sort_by_key(|e| e.guest);
    let mut zeros = Vec::new();
    let mut at = 0;
    for e in &extents {
        if e.guest > at {
            zeros.push((at, e.guest - at));
        }
        at = e.guest_end();
    }
    if size > at {
        zeros.push((at, size - at));
    }
    extents.sort_by_key(|e| (e.host, e.guest));
    Plan { size, extents, zeros }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 header: 64 KiB clusters, L1 at 196608 with `l1` entries.
    fn header(size: u64, l1: u32) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&16u32.to_be_bytes());
        b[24..32].copy_from_slice(&size.to_be_bytes());
        b[36..40].copy_from_slice(&l1.to_be_bytes());
        b[40..48].copy_from_slice(&(3u64 << 16).to_be_bytes());
        b[96..100].copy_from_slice(&4u32.to_be_bytes());
        b[100..104].copy_from_slice(&112u32.to_be_bytes());
        b
    }

    fn refused(b: &[u8], file: u64) -> String {
        Header::parse(b, file).unwrap_err().0
    }

    #[test]
    fn header_fields_and_refusals() {
        let b = header(1 << 30, 2);
        let h = Header::parse(&b, 1 << 20).unwrap();
        assert_eq!((h.cluster_size(), h.l2_entries(), h.l1_needed()), (65536, 8192, 2));
        assert_eq!(h.l1_range(), (196608, 16));
        assert!(refused(&b[..60], 1 << 20).contains("cut short"));
        assert!(refused(b"QFI\xfa", 1 << 20).contains("magic"));
        let mut x = b.clone();
        x[8..16].copy_from_slice(&300u64.to_be_bytes());
        x[16..20].copy_from_slice(&4u32.to_be_bytes());
        x[300..304].copy_from_slice(b"base");
        assert!(refused(&x, 1 << 20).contains("backing file (\"base\")"));
        let mut x = b.clone();
        x[35] = 2;
        assert!(refused(&x, 1 << 20).contains("encrypted"));
        let mut x = b.clone();
        x[79] = 4;
        assert!(refused(&x, 1 << 20).contains("external data file"));
        x[79] = 2;
        assert!(refused(&x, 1 << 20).contains("corrupt"));
        x[79] = 0x40;
        assert!(refused(&x, 1 << 20).contains("unknown incompatible features 0x40"));
        x[79] = 8;
        x[104] = 1;
        assert_eq!(Header::parse(&x, 1 << 20).unwrap().compression, Compression::Zstd);
        x[104] = 7;
        assert!(refused(&x, 1 << 20).contains("compression type 7"));
        x[79] = 0;
        assert!(refused(&x, 1 << 20).contains("without the compression-type feature"));
        // The L1 table must cover the size, and lie in the file.
        assert!(refused(&header(1 << 40, 2), 1 << 20).contains("needs 2048"));
        assert!(refused(&header(1 << 30, 2), 196608 + 8).contains("outside the file"));
        assert!(refused(&header(u64::MAX, u32::MAX), 1 << 20).contains("L1 entries"));
        let mut x = b.clone();
        x[23] = 30;
        assert!(refused(&x, 1 << 20).contains("cluster_bits 30"));
    }

    fn l2(entries: &[u64]) -> Vec<u8> {
        let mut t = vec![0u8; 65536];
        for (i, e) in entries.iter().enumerate() {
            t[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        t
    }

    #[test]
    fn tables_become_extents_in_file_order_and_zero_runs() {
        let h = Header::parse(&header(10 * 65536 + 512, 1), 100 << 20).unwrap();
        let mut l1 = vec![0u8; 8];
        l1.copy_from_slice(&((4u64 << 16) | 1 << 63).to_be_bytes());
        let t = h.l2_tables(&l1).unwrap();
        assert_eq!(t, [L2Table { index: 0, offset: 4 << 16 }]);
        let c = |n: u64| n << 16;
        // Clusters 0-1 at 10-11 (merged), 2 unallocated, 3 zero-flagged, 4 at 5 (before the
        // others in the file), 5 compressed at byte 1000 of cluster 20 with 2 more sectors,
        // 10 (the partial last one) at 30.
        let comp = COMPRESSED | (2 << 54) | (c(20) + 1000);
        let entries = [c(10), c(11), 0, c(12) | 1, c(5), comp, 0, 0, 0, 0, c(30)];
        let mut m = Mapper::new(&h);
        m.add(t[0], &l2(&entries)).unwrap();
        let p = m.finish();
        let ext = |host, len, guest, guest_len, compressed| Extent { host, len, guest, guest_len, compressed };
        assert_eq!(
            p.extents,
            [
                ext(c(5), c(1), c(4), c(1), false),
                ext(c(10), c(2), 0, c(2), false),
                ext(c(20) + 1000, 3 * 512 - 1000 + 512, c(5), c(1), true),
                ext(c(30), 512, c(10), 512, false),
            ]
        );
        assert_eq!(p.zeros, [(c(2), c(2)), (c(6), c(4))]);
    }

    #[test]
    fn entries_outside_the_file_are_refused() {
        let h = Header::parse(&header(65536 * 4, 1), 1 << 20).unwrap();
        let t = L2Table { index: 0, offset: 65536 };
        for (e, want) in [
            (20u64 << 16, "outside the file"),
            ((1 << 16) + 512, "not cluster-aligned"),
            (COMPRESSED | (2 << 20), "past the end of the file"),
        ] {
            let got = Mapper::new(&h).add(t, &l2(&[e])).unwrap_err().0;
            assert!(got.contains(want) && got.contains("disk byte 0"), "{got}");
        }
        let mut l1 = vec![0u8; 8];
        l1.copy_from_slice(&(40u64 << 16).to_be_bytes());
        assert!(h.l2_tables(&l1).unwrap_err().0.contains("L2 table of L1 entry 0"));
    }

    #[test]
    fn extended_l2_subclusters() {
        let mut b = header(65536 * 2, 1);
        b[79] = 16;
        let h = Header::parse(&b, 1 << 20).unwrap();
        assert_eq!(h.l2_entries(), 4096);
        let mut t = vec![0u8; 65536];
        // Cluster 0 at 3: subclusters 0-1 allocated, 2 zero, the rest unallocated.
        t[..8].copy_from_slice(&(3u64 << 16).to_be_bytes());
        t[8..16].copy_from_slice(&(0b11u64 | 1 << 34).to_be_bytes());
        let mut m = Mapper::new(&h);
        m.add(L2Table { index: 0, offset: 65536 }, &t).unwrap();
        let p = m.finish();
        assert_eq!(p.extents.len(), 1);
        assert_eq!((p.extents[0].host, p.extents[0].len, p.extents[0].guest), (3 << 16, 4096, 0));
        assert_eq!(p.zeros, [(4096, 2 * 65536 - 4096)]);
        t[8..16].copy_from_slice(&(1u64 | 1 << 32).to_be_bytes());
        let e = Mapper::new(&h).add(L2Table { index: 0, offset: 65536 }, &t).unwrap_err();
        assert!(e.0.contains("both allocated and zero"), "{e}");
    }
}

//! The qcow2 header and table parser (`osie_api::qcow2`), the one both bootsvc's `check` and
//! the installer use. Input: a whole qcow2 file.
//!
//! Oracle: when the parser accepts the file, its plan must (1) keep every extent inside the
//! file, sorted by file offset; (2) cover the disk exactly once with data extents and zero
//! runs; (3) agree, at every cluster and subcluster it is asked about, with a lookup written
//! separately here the way QEMU reads one guest offset (L1 entry → L2 entry → host offset,
//! compressed, zero or unallocated). Any disagreement, or a panic, is a finding.

use osie_api::qcow2::{Header, Mapper, Plan, HEADER_READ};

fn be64(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Where disk byte `g` comes from, looked up alone.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    Zero,
    /// File byte.
    Raw(u64),
    /// The compressed cluster starting at this file byte.
    Compressed(u64),
}

fn lookup(file: &[u8], h: &Header, g: u64) -> Source {
    let cs = h.cluster_size();
    let es = if h.extended_l2 { 16 } else { 8 };
    let l2_entries = cs / es;
    let (cluster, within) = (g / cs, g % cs);
    let l1e = be64(file, h.l1_offset + 8 * (cluster / l2_entries)) & 0x00ff_ffff_ffff_fe00;
    if l1e == 0 {
        return Source::Zero;
    }
    let at = l1e + es * (cluster % l2_entries);
    let e = be64(file, at);
    if e & (1 << 62) != 0 {
        return Source::Compressed(e & ((1u64 << (62 - (h.cluster_bits - 8))) - 1));
    }
    let host = e & 0x00ff_ffff_ffff_fe00;
    if !h.extended_l2 {
        let zero = h.version == 3 && e & 1 == 1;
        return if host == 0 || zero { Source::Zero } else { Source::Raw(host + within) };
    }
    let bitmap = be64(file, at + 8);
    let sub = within / (cs / 32);
    if bitmap >> (sub + 32) & 1 == 1 || bitmap >> sub & 1 == 0 {
        Source::Zero
    } else {
        Source::Raw(host + within)
    }
}

/// What the plan says of disk byte `g`.
fn planned(p: &Plan, by_guest: &[usize], g: u64) -> Source {
    let i = by_guest.partition_point(|&i| p.extents[i].guest <= g);
    if i > 0 {
        let e = &p.extents[by_guest[i - 1]];
        if g < e.guest_end() {
            return if e.compressed { Source::Compressed(e.host) } else { Source::Raw(e.host + (g - e.guest)) };
        }
    }
    assert!(p.zeros.iter().any(|&(a, l)| a <= g && g < a + l), "disk byte {g} is in no extent and no zero run");
    Source::Zero
}

/// The plan, if the parser accepts `file`.
pub fn plan(file: &[u8]) -> Option<(Header, Plan)> {
    let len = file.len() as u64;
    let h = Header::parse(&file[..file.len().min(HEADER_READ as usize)], len).ok()?;
    let (at, n) = h.l1_range();
    let l1 = &file[at as usize..(at + n) as usize];
    let mut m = Mapper::new(&h);
    for t in h.l2_tables(l1).ok()? {
        let table = &file[t.offset as usize..(t.offset + h.cluster_size()) as usize];
        m.add(t, table).ok()?;
    }
    Some((h.clone(), m.finish()))
}

pub fn run(file: &[u8]) {
    let Some((h, p)) = plan(file) else { return };
    let len = file.len() as u64;
    // (1) In the file, in file order.
    for w in p.extents.windows(2) {
        assert!((w[0].host, w[0].guest) <= (w[1].host, w[1].guest), "extents out of file order");
    }
    for e in &p.extents {
        assert!(e.len > 0 && e.host_end() <= len, "extent {e:?} outside the file ({len} bytes)");
        assert!(e.guest_end() <= h.size, "extent {e:?} past the disk ({} bytes)", h.size);
        assert!(e.compressed || e.len == e.guest_len, "{e:?}");
    }
    // (2) Data and zeros cover the disk exactly once.
    let mut ranges: Vec<(u64, u64)> = p.extents.iter().map(|e| (e.guest, e.guest_len)).collect();
    ranges.extend(p.zeros.iter().copied());
    ranges.sort();
    let mut at = 0;
    for (a, l) in ranges {
        assert_eq!(a, at, "a gap or an overlap at disk byte {at}");
        at = a + l;
    }
    assert_eq!(at, h.size, "the plan covers {at} of {} bytes", h.size);
    // (3) The same answers as a lookup, at the first and last byte of each (sub)cluster
    // asked about (at most a few thousand).
    let mut by_guest: Vec<usize> = (0..p.extents.len()).collect();
    by_guest.sort_by_key(|&i| p.extents[i].guest);
    let step = if h.extended_l2 { h.cluster_size() / 32 } else { h.cluster_size() };
    let units = h.size.div_ceil(step);
    for u in (0..units.min(2048)).chain(units.saturating_sub(64)..units) {
        for g in [u * step, ((u + 1) * step).min(h.size) - 1] {
            assert_eq!(planned(&p, &by_guest, g), lookup(file, &h, g), "disk byte {g}");
        }
    }
}

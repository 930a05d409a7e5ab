//! The decode stage for qcow2 images: streamed, never staged.
//!
//! ```text
//!  Range GETs: header, L1, each L2 ─► osie_api::qcow2::Plan (extents in file order, zeros)
//!  the download, front to back ─► walk: skip, copy, inflate ─► Msg::At(disk offset, bytes)
//!                                                            ─► Msg::Zeros(…) at the end
//! ```
//! The tables are read ahead with HTTP Range requests (a few small requests; the download
//! waits on its bounded channel meanwhile). Then the whole file arrives in file order through
//! the hash stage like any image, and this stage cuts it up: each data extent is copied (or
//! its compressed cluster inflated) into an output buffer sent with its disk offset;
//! metadata and refcount blocks are skipped. The header and tables read ahead are checked
//! against the same bytes of the stream as it passes them (sha256), so what lands on the
//! disk is decided by the downloaded, checksummed file alone, never by an answer outside it.
//!
//! Memory: the plan (at most [`osie_api::qcow2::EXTENTS_MAX`] extents, 32 bytes each), one
//! L2 table at a time while planning, the window of bytes two extents share (a cluster or
//! two; refused past [`WINDOW_MAX`]), and the output buffers of the pool.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::SyncSender;

use anyhow::{anyhow, bail, Context, Result};
use osie_api::qcow2::{Compression, Extent, Header, Mapper, Plan, HEADER_READ};
use reqwest::blocking::Client;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use zstd::zstd_safe::{DCtx, InBuffer, OutBuffer, ResetDirective};

use super::stage::{send, StageResult};
use super::timing::{Busy, StageTime};
use crate::io::chunks::{ChunkReader, Msg};
use crate::io::pool::{Pool, Pooled};
use crate::servers::Servers;

/// Bytes of the stream two neighbouring extents may share before the file is refused (they
/// share a sector or a cluster in files QEMU writes).
pub const WINDOW_MAX: usize = 64 << 20;

/// Where the tables are read from, and the disk they must fit.
pub struct Tables<'a> {
    pub client: &'a Client,
    pub sources: &'a Servers,
    pub disk_len: u64,
    pub disk: String,
}

/// A region of the file read ahead (header or table), to be found again in the stream.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: u64,
    pub len: u64,
    pub sha256: [u8; 32],
    pub what: String,
}

/// The stage: plan from the tables, then walk the stream; output in buffers of `chunk`
/// bytes, `depth` in flight.
pub(super) fn decode(
    mut src: ChunkReader,
    tx: &SyncSender<Msg>,
    tables: &Tables<'_>,
    (chunk, depth): (usize, usize),
    busy: Busy,
) -> StageResult<StageTime> {
    let (h, plan, seen) = read_tables(tables).context("reading the qcow2 header and tables (HTTP Range)")?;
    if plan.size > tables.disk_len {
        return Err(anyhow!(
            "the qcow2 image's virtual size ({} bytes) does not fit on {} ({} bytes)",
            plan.size,
            tables.disk,
            tables.disk_len
        )
        .into());
    }
    tracing::info!(
        "qcow2 v{}: {} bytes virtual, {} KiB clusters{}{}, {} data extents, {} zero runs",
        h.version,
        plan.size,
        h.cluster_size() >> 10,
        if h.extended_l2 { ", extended L2" } else { "" },
        match h.compression {
            Compression::Zlib => "",
            Compression::Zstd => ", zstd",
        },
        plan.extents.len(),
        plan.zeros.len()
    );
    let mut out = Assembler { pool: Pool::new(chunk, depth + 2), tx, cur: None };
    walk(&mut src, &h, &plan, &seen, chunk, &mut out)?;
    out.flush()?;
    for &(at, len) in &plan.zeros {
        send(tx, Msg::Zeros(at, len))?;
    }
    send(tx, Msg::End)?;
    Ok(busy.finish_cpu())
}

/// `bytes=at-…` of the image, from the first source that answers: the bytes and the file's
/// total size.
fn range(t: &Tables<'_>, at: u64, len: u64) -> Result<(Vec<u8>, u64)> {
    let mut why = Vec::new();
    for url in t.sources.urls() {
        match range_from(t.client, url, at, len) {
            Ok(v) => return Ok(v),
            Err(e) => why.push(format!("{url}: {e:#}")),
        }
    }
    bail!("bytes {at}+{len}: {}", why.join("; "))
}

fn range_from(client: &Client, url: &str, at: u64, len: u64) -> Result<(Vec<u8>, u64)> {
    let resp = client.get(url).header(RANGE, format!("bytes={at}-{}", at + len - 1)).send()?;
    if resp.status() != StatusCode::PARTIAL_CONTENT {
        bail!("answered {} to a Range request (qcow2 images need a server that serves ranges)", resp.status());
    }
    let cr = resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (start, total) = cr
        .strip_prefix("bytes ")
        .and_then(|r| {
            let (span, total) = r.split_once('/')?;
            Some((span.split('-').next()?.trim().parse::<u64>().ok()?, total.trim().parse::<u64>().ok()?))
        })
        .ok_or_else(|| anyhow!("no usable Content-Range in the answer ({cr:?})"))?;
    if start != at {
        bail!("asked for byte {at}, the answer starts at {start}");
    }
    let want = len.min(total.saturating_sub(at));
    let mut body = Vec::with_capacity(want as usize);
    resp.take(want).read_to_end(&mut body)?;
    if body.len() as u64 != want {
        bail!("the answer ended after {} of {want} bytes", body.len());
    }
    Ok((body, total))
}

fn seen(at: u64, bytes: &[u8], what: String) -> Seen {
    Seen { at, len: bytes.len() as u64, sha256: Sha256::digest(bytes).into(), what }
}

/// Header, L1, then each L2 table (one at a time: only the plan is kept).
fn read_tables(t: &Tables<'_>) -> Result<(Header, Plan, Vec<Seen>)> {
    let (head, total) = range(t, 0, HEADER_READ)?;
    let h = Header::parse(&head, total)?;
    let mut regions = vec![seen(0, &head, "the header".into())];
    let (l1_at, l1_len) = h.l1_range();
    let mut mapper = Mapper::new(&h);
    if l1_len > 0 {
        let (l1, _) = range(t, l1_at, l1_len)?;
        regions.push(seen(l1_at, &l1, "the L1 table".into()));
        for l2 in h.l2_tables(&l1)? {
            let (table, _) = range(t, l2.offset, h.cluster_size())?;
            mapper.add(l2, &table)?;
            regions.push(seen(l2.offset, &table, format!("the L2 table at byte {}", l2.offset)));
        }
    }
    let plan = mapper.finish();
    Ok((h, plan, regions))
}

/// Where the walk puts disk bytes: a slot of `len` bytes for disk offset `at`.
pub trait Place {
    fn slot(&mut self, at: u64, len: usize) -> StageResult<&mut [u8]>;
}

/// Gathers disk-contiguous pieces into the pool's buffers and sends each full one on.
struct Assembler<'a> {
    pool: Pool,
    tx: &'a SyncSender<Msg>,
    cur: Option<(u64, Pooled)>,
}

impl Assembler<'_> {
    fn flush(&mut self) -> StageResult<()> {
        match self.cur.take() {
            Some((at, b)) if !b.is_empty() => send(self.tx, Msg::At(at, b)),
            _ => Ok(()),
        }
    }
}

impl Place for Assembler<'_> {
    fn slot(&mut self, at: u64, len: usize) -> StageResult<&mut [u8]> {
        let fits = matches!(&self.cur, Some((s, b)) if s + b.len() as u64 == at && b.len() + len <= b.capacity());
        if !fits {
            self.flush()?;
            let mut b = self.pool.get();
            b.clear();
            self.cur = Some((at, b));
        }
        let (_, b) = self.cur.as_mut().ok_or_else(|| anyhow!("no output buffer"))?;
        let start = b.len();
        if start + len > b.capacity() {
            return Err(anyhow!("a piece of {len} bytes is larger than the output buffers").into());
        }
        b.set_len(start + len);
        Ok(&mut b[start..start + len])
    }
}

/// What the walk does at one place in the file.
enum Step<'p> {
    Data(&'p Extent),
    Check(&'p Seen),
}

impl Step<'_> {
    fn start(&self) -> u64 {
        match self {
            Step::Data(e) => e.host,
            Step::Check(s) => s.at,
        }
    }
}

/// Read `src` (the whole file) front to back, putting each extent of `plan` at its disk
/// offset through `out` in pieces of at most `piece` bytes, and checking the regions read
/// ahead. Returns the file's length.
pub fn walk(
    src: &mut dyn BufRead,
    h: &Header,
    plan: &Plan,
    regions: &[Seen],
    piece: usize,
    out: &mut dyn Place,
) -> StageResult<u64> {
    let mut steps: Vec<Step<'_>> = plan.extents.iter().map(Step::Data).chain(regions.iter().map(Step::Check)).collect();
    steps.sort_by_key(Step::start);
    let mut w = Window { src, start: 0, buf: Vec::new() };
    let mut zstd = DCtx::create();
    let mut zlib = flate2::Decompress::new(false);
    for (i, step) in steps.iter().enumerate() {
        let next = steps.get(i + 1).map_or(u64::MAX, Step::start);
        match step {
            Step::Check(s) => {
                let got: [u8; 32] = Sha256::digest(w.get(s.at, s.at + s.len)?).into();
                if got != s.sha256 {
                    return Err(anyhow!(
                        "{} (byte {}) differs between the Range answer and the download: the file changed",
                        s.what,
                        s.at
                    )
                    .into());
                }
                w.release(next.min(s.at + s.len));
            }
            Step::Data(e) if e.compressed => {
                let input = w.get(e.host, e.host_end())?;
                let dst = out.slot(e.guest, e.guest_len as usize)?;
                inflate(h.compression, &mut zlib, &mut zstd, input, dst).with_context(|| {
                    format!("the compressed cluster for disk byte {} (file byte {}) does not decode", e.guest, e.host)
                })?;
                w.release(next.min(e.host_end()));
            }
            Step::Data(e) => {
                let mut a = e.host;
                while a < e.host_end() {
                    let b = e.host_end().min(a + piece as u64);
                    let dst = out.slot(e.guest + (a - e.host), (b - a) as usize)?;
                    w.copy(a, dst, next)?;
                    w.release(next.min(b));
                    a = b;
                }
            }
        }
    }
    Ok(w.finish()?)
}

/// The stream's bytes `[start, start + buf.len())`, kept while a later step still needs them.
struct Window<'r> {
    src: &'r mut dyn BufRead,
    start: u64,
    buf: Vec<u8>,
}

impl Window<'_> {
    fn pos(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    fn eof(&self, want: u64) -> anyhow::Error {
        anyhow!("the file ends at byte {}, its tables point at byte {want}: truncated", self.pos())
    }

    /// Drop what is before `at` and skip the stream to it.
    fn seek(&mut self, at: u64) -> Result<()> {
        if at >= self.pos() {
            self.start = self.pos();
            self.buf.clear();
            let mut left = at - self.start;
            while left > 0 {
                let n = self.src.fill_buf()?.len().min(left as usize);
                if n == 0 {
                    return Err(self.eof(at));
                }
                self.src.consume(n);
                self.start += n as u64;
                left -= n as u64;
            }
        }
        Ok(())
    }

    /// Forget the bytes before `to` (no step needs them).
    fn release(&mut self, to: u64) {
        if to > self.start {
            let n = ((to - self.start) as usize).min(self.buf.len());
            self.buf.drain(..n);
            self.start += n as u64;
        }
    }

    /// The stream's bytes `[a, b)`, read into the window.
    fn get(&mut self, a: u64, b: u64) -> Result<&[u8]> {
        self.seek(a)?;
        while self.pos() < b {
            let want = (b - self.pos()) as usize;
            let avail = self.src.fill_buf()?;
            if avail.is_empty() {
                return Err(self.eof(b));
            }
            let n = avail.len().min(want);
            self.buf.extend_from_slice(&avail[..n]);
            self.src.consume(n);
            if self.buf.len() > WINDOW_MAX {
                bail!("extents of the file overlap by more than {WINDOW_MAX} bytes");
            }
        }
        let (s, e) = ((a - self.start) as usize, (b - self.start) as usize);
        Ok(&self.buf[s..e])
    }

    /// Copy `[a, a + dst.len())` into `dst`; straight from the stream when the window is
    /// empty and the next step (at `next`) starts after it.
    fn copy(&mut self, a: u64, dst: &mut [u8], next: u64) -> Result<()> {
        let b = a + dst.len() as u64;
        if next < b || a < self.pos() {
            dst.copy_from_slice(self.get(a, b)?);
            return Ok(());
        }
        self.seek(a)?;
        self.src.read_exact(dst).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => self.eof(b),
            _ => anyhow!(e),
        })?;
        self.start = b;
        Ok(())
    }

    /// Read the rest of the stream (it is all hashed); its total length.
    fn finish(mut self) -> Result<u64> {
        self.buf.clear();
        loop {
            let n = self.src.fill_buf()?.len();
            if n == 0 {
                return Ok(self.start);
            }
            self.src.consume(n);
            self.start += n as u64;
        }
    }
}

/// Decode one compressed cluster into `dst` (its exact disk bytes). The input runs to the end
/// of its last sector, past the compressed data: decoding stops once `dst` is full.
pub fn inflate(
    c: Compression,
    zlib: &mut flate2::Decompress,
    zstd: &mut DCtx<'_>,
    input: &[u8],
    dst: &mut [u8],
) -> Result<()> {
    match c {
        Compression::Zlib => {
            zlib.reset(false);
            let r = zlib.decompress(input, dst, flate2::FlushDecompress::Finish);
            let got = zlib.total_out() as usize;
            match r {
                Ok(_) if got == dst.len() => Ok(()),
                Ok(_) => bail!("deflate data ended after {got} of {} bytes", dst.len()),
                Err(e) => bail!("deflate: {e}"),
            }
        }
        Compression::Zstd => {
            let zerr = |code: usize| anyhow!("zstd: {}", zstd::zstd_safe::get_error_name(code));
            zstd.reset(ResetDirective::SessionOnly).map_err(zerr)?;
            let mut inb = InBuffer::around(input);
            let mut outb = OutBuffer::around(dst);
            loop {
                let before = (inb.pos(), outb.pos());
                zstd.decompress_stream(&mut outb, &mut inb).map_err(zerr)?;
                if outb.pos() == outb.capacity() {
                    return Ok(());
                }
                if (inb.pos(), outb.pos()) == before || inb.pos() == input.len() {
                    bail!("zstd data ended after {} of {} bytes", outb.pos(), outb.capacity());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    /// Disk bytes into a vector.
    struct Image(Vec<u8>);

    impl Place for Image {
        fn slot(&mut self, at: u64, len: usize) -> StageResult<&mut [u8]> {
            let end = at as usize + len;
            if self.0.len() < end {
                self.0.resize(end, 0);
            }
            Ok(&mut self.0[at as usize..end])
        }
    }

    fn deflate(raw: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(raw).unwrap();
        e.finish().unwrap()
    }

    fn header() -> Header {
        Header {
            version: 3,
            cluster_bits: 12,
            size: 5 * 4096,
            l1_size: 1,
            l1_offset: 4096,
            compression: Compression::Zlib,
            extended_l2: false,
            file_size: 0,
        }
    }

    fn run(file: &[u8], h: &Header, plan: &Plan, regions: &[Seen]) -> Result<Vec<u8>, String> {
        let mut img = Image(Vec::new());
        match walk(&mut Cursor::new(file), h, plan, regions, 4096, &mut img) {
            Ok(n) => {
                assert_eq!(n, file.len() as u64);
                Ok(img.0)
            }
            Err(super::super::stage::StageError::Real(e)) => Err(format!("{e:#}")),
            Err(_) => Err("pipe".into()),
        }
    }

    #[test]
    fn extents_out_of_disk_order_shared_sectors_and_checked_regions() {
        let cs = 4096usize;
        let a: Vec<u8> = (0..cs).map(|i| (i * 7) as u8).collect();
        let b: Vec<u8> = (0..cs).map(|i| (i * 13 + 1) as u8).collect();
        let c: Vec<u8> = (0..cs).map(|i| (i % 5) as u8).collect();
        let (ca, cc) = (deflate(&a), deflate(&c));
        // The file: 4 KiB of "metadata", a raw cluster (disk cluster 3), then two compressed
        // clusters sharing a sector (disk clusters 0 and 4).
        let mut file = vec![0x11u8; cs];
        file.extend_from_slice(&b);
        let c0 = file.len() as u64;
        file.extend_from_slice(&ca);
        let c1 = file.len() as u64;
        file.extend_from_slice(&cc);
        file.resize(file.len().div_ceil(512) * 512, 0xee);
        let end = file.len() as u64;
        let ext = |host, len, guest, compressed| Extent { host, len, guest, guest_len: cs as u64, compressed };
        let plan = Plan {
            size: 5 * cs as u64,
            extents: vec![
                ext(4096, 4096, 3 * 4096, false),
                ext(c0, end - c0, 0, true),
                ext(c1, end - c1, 4 * 4096, true),
            ],
            zeros: vec![],
        };
        let regions = [seen(0, &file[..cs], "the header".into())];
        let h = header();
        let got = run(&file, &h, &plan, &regions).unwrap();
        assert!(got[..cs] == a && got[3 * cs..4 * cs] == b && got[4 * cs..] == c);

        // The header read ahead differs from the downloaded one.
        let mut other = file.clone();
        other[10] ^= 1;
        assert!(run(&other, &h, &plan, &regions).unwrap_err().contains("the header (byte 0) differs"));
        // Cut short, and a compressed cluster that does not decode.
        let e = run(&file[..c1 as usize], &h, &plan, &regions).unwrap_err();
        assert!(e.contains(&format!("the file ends at byte {c1}")), "{e}");
        let mut bad = file.clone();
        bad[c0 as usize..c0 as usize + 8].copy_from_slice(&[0xff; 8]);
        let e = run(&bad, &h, &plan, &regions).unwrap_err();
        assert!(e.contains(&format!("compressed cluster for disk byte 0 (file byte {c0}) does not decode")), "{e}");
    }

    #[test]
    fn zstd_clusters_decode_with_padding_after_them() {
        let raw: Vec<u8> = (0..65536u32).map(|i| (i / 300) as u8).collect();
        let mut z = zstd::bulk::compress(&raw, 3).unwrap();
        z.extend_from_slice(&[0u8; 700]);
        let mut dst = vec![0u8; raw.len()];
        let (mut zl, mut zs) = (flate2::Decompress::new(false), DCtx::create());
        inflate(Compression::Zstd, &mut zl, &mut zs, &z, &mut dst).unwrap();
        assert!(dst == raw);
        let e = inflate(Compression::Zstd, &mut zl, &mut zs, &z[..z.len() / 3], &mut dst).unwrap_err();
        assert!(format!("{e:#}").contains("ended after"), "{e:#}");
    }
}

//! Splitting a zstd stream into its frames without decoding it (RFC 8878, section 3.1).
//!
//! A zstd file may hold several frames one after another, each decodable on its own. Images
//! packed as many modest frames (`images/pack`) can then be decoded on every core: this
//! module walks the frame and block headers (3 bytes per block of up to 128 KiB) and hands
//! each whole frame on as pieces of the download chunks it arrived in, copying nothing but
//! the headers it reads.
//! Anything it does not recognise is left to the real decoder, which says what is wrong.

use std::io::{self, BufRead};

use super::chunks::{ChunkReader, Piece};

const FRAME_MAGIC: u32 = 0xFD2F_B528;
/// Skippable frames carry metadata (pzstd's frame sizes, seekable-format indexes).
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
const SKIPPABLE_MASK: u32 = 0xFFFF_FFF0;
/// The largest block the format allows (`Block_Maximum_Size`).
const BLOCK_MAX: u64 = 128 << 10;

/// What a frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of the header, magic included.
    pub len: usize,
    /// `Frame_Content_Size`, when the encoder wrote it.
    pub content_size: Option<u64>,
    pub has_checksum: bool,
    pub dictionary: bool,
}

/// Parse the header at the start of `b` (magic included). `Ok(None)`: `b` is too short to
/// tell yet; `Err`: not a zstd frame header this module handles.
pub fn parse_header(b: &[u8]) -> Result<Option<Header>, &'static str> {
    if b.len() < 4 {
        return Ok(None);
    }
    if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != FRAME_MAGIC {
        return Err("not a zstd frame magic number");
    }
    if b.len() < 5 {
        return Ok(None);
    }
    let d = b[4];
    if d & 0x08 != 0 {
        return Err("reserved bit set in the frame header");
    }
    let single_segment = d & 0x20 != 0;
    let fcs_len = match d >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let did_len = match d & 0x03 {
        0 => 0,
        1 => 1,
        2 => 2,
        _ => 4,
    };
    let len = 5 + usize::from(!single_segment) + did_len + fcs_len;
    if b.len() < len {
        return Ok(None);
    }
    let fcs = &b[len - fcs_len..len];
    let content_size = match fcs_len {
        0 => None,
        1 => Some(u64::from(fcs[0])),
        2 => Some(u64::from(u16::from_le_bytes([fcs[0], fcs[1]])) + 256),
        4 => Some(u64::from(u32::from_le_bytes([fcs[0], fcs[1], fcs[2], fcs[3]]))),
        _ => Some(u64::from_le_bytes([fcs[0], fcs[1], fcs[2], fcs[3], fcs[4], fcs[5], fcs[6], fcs[7]])),
    };
    let dictionary = did_len > 0 && b[5 + usize::from(!single_segment)..][..did_len].iter().any(|&x| x != 0);
    Ok(Some(Header { len, content_size, has_checksum: d & 0x04 != 0, dictionary }))
}

/// A block header: (last block?, bytes of block content that follow it).
pub fn parse_block(h: [u8; 3]) -> Result<(bool, u64), &'static str> {
    let v = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
    let size = u64::from(v >> 3);
    let content = match (v >> 1) & 3 {
        0 | 2 if size > BLOCK_MAX => return Err("block larger than 128 KiB"),
        0 | 2 => size,
        1 => 1, // RLE: one byte, repeated `size` times
        _ => return Err("reserved block type"),
    };
    Ok((v & 1 == 1, content))
}

/// The most compressed bytes a frame of `content` decoded bytes can take from a sane
/// encoder: every block stored raw, plus headers. More means a corrupt or hostile stream.
pub fn max_compressed(content: u64) -> u64 {
    content + (content / BLOCK_MAX + 1) * 3 + 32
}

/// The next item of the stream, as [`Splitter::next_frame`] finds it.
pub enum Next {
    /// The input ended cleanly, between frames.
    End,
    /// A whole frame, as pieces of the chunks it arrived in (not copied), decoding to
    /// `content_size` bytes.
    Frame { content_size: u64, pieces: Vec<Piece> },
    /// Something to leave to a streaming decoder: a frame without a content size or larger
    /// than the limit, one with a dictionary, or bytes that are no frame at all. `consumed`
    /// holds what was read of it; the decoder must see those bytes first, then the rest.
    Other { consumed: Vec<u8> },
}

/// Reads whole frames out of a compressed stream.
pub struct Splitter {
    src: ChunkReader,
    /// Frames decoding to more than this are left to a streaming decoder.
    max_content: u64,
    /// Offset in the compressed stream (for error messages).
    pub offset: u64,
}

impl Splitter {
    pub fn new(src: ChunkReader, max_content: u64) -> Splitter {
        Splitter { src, max_content, offset: 0 }
    }

    /// Give back the source (after [`Next::Other`]).
    pub fn into_inner(self) -> ChunkReader {
        self.src
    }

    /// The next frame. Skippable frames are passed over.
    pub fn next_frame(&mut self) -> io::Result<Next> {
        loop {
            let mut pieces = Vec::new();
            let mut head = Vec::with_capacity(18);
            // The magic number, or a clean end.
            self.take(4, &mut pieces, Some(&mut head))?;
            if head.is_empty() {
                return Ok(Next::End);
            }
            if head.len() < 4 {
                return Ok(Next::Other { consumed: head });
            }
            let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if magic & SKIPPABLE_MASK == SKIPPABLE_MAGIC {
                self.take(4, &mut pieces, Some(&mut head))?;
                if head.len() < 8 {
                    return Ok(Next::Other { consumed: head });
                }
                let skip = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
                if self.skip(skip)? < skip {
                    return Err(self.truncated("skippable frame"));
                }
                continue;
            }
            let header = loop {
                match parse_header(&head) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {
                        if self.take(1, &mut pieces, Some(&mut head))? < 1 {
                            return Ok(Next::Other { consumed: head });
                        }
                    }
                    Err(_) => return Ok(Next::Other { consumed: head }),
                }
            };
            let content_size = match header.content_size {
                Some(c) if c <= self.max_content && !header.dictionary => c,
                _ => return Ok(Next::Other { consumed: head }),
            };
            let limit = max_compressed(content_size);
            let mut len = head.len() as u64;
            loop {
                let mut bh = Vec::with_capacity(3);
                self.copy(3, &mut pieces, Some(&mut bh), &mut len, limit)?;
                let (last, content) = parse_block([bh[0], bh[1], bh[2]]).map_err(|why| self.corrupt(why))?;
                self.copy(content, &mut pieces, None, &mut len, limit)?;
                if last {
                    break;
                }
            }
            if header.has_checksum {
                self.copy(4, &mut pieces, None, &mut len, limit)?;
            }
            return Ok(Next::Frame { content_size, pieces });
        }
    }

    /// Take up to `n` bytes as pieces (copied into `copy` too when given); returns how many.
    fn take(&mut self, n: usize, pieces: &mut Vec<Piece>, copy: Option<&mut Vec<u8>>) -> io::Result<usize> {
        let k = self.src.take(n, pieces, copy)?;
        self.offset += k as u64;
        Ok(k)
    }

    /// Take exactly `n` bytes of the frame, whose length `len` must stay within `limit`.
    fn copy(
        &mut self,
        n: u64,
        pieces: &mut Vec<Piece>,
        copy: Option<&mut Vec<u8>>,
        len: &mut u64,
        limit: u64,
    ) -> io::Result<()> {
        if *len + n > limit {
            return Err(self.corrupt("more compressed bytes than its content size allows"));
        }
        // n ≤ limit, which is a few MiB over FRAME_MAX: it fits a usize.
        if self.take(n as usize, pieces, copy)? < n as usize {
            return Err(self.truncated("zstd frame"));
        }
        *len += n;
        Ok(())
    }

    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let mut done = 0;
        while done < n {
            let b = self.src.fill_buf()?;
            if b.is_empty() {
                break;
            }
            let k = (b.len() as u64).min(n - done) as usize;
            self.src.consume(k);
            self.offset += k as u64;
            done += k as u64;
        }
        Ok(done)
    }

    fn truncated(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the stream ends inside a {what} (at byte {})", self.offset),
        )
    }

    fn corrupt(&self, why: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("corrupt zstd frame before byte {}: {why}", self.offset))
    }
}

/// A reader over `data`, sent in `chunk`-byte pieces (as the download stage sends them).
#[cfg(test)]
pub(crate) fn chunked(data: &[u8], chunk: usize) -> ChunkReader {
    let pieces: Vec<&[u8]> = data.chunks(chunk.max(1)).collect();
    let (tx, rx) = std::sync::mpsc::sync_channel(pieces.len() + 1);
    let mut pool = crate::io::pool::Pool::new(chunk.max(1), pieces.len() + 1);
    for p in pieces {
        let mut b = pool.get();
        b.extend_from(p);
        tx.send(crate::io::chunks::Msg::Data(b)).expect("receiver alive");
    }
    tx.send(crate::io::chunks::Msg::End).expect("receiver alive");
    ChunkReader::new(rx)
}

/// Test data: compressible but not trivially (a slow-changing pattern with noise).
#[cfg(test)]
pub(crate) fn sample(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if i % 7 == 0 {
                (x >> 16) as u8
            } else {
                (i / 100) as u8
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]], level: i32) -> Vec<u8> {
        parts.iter().flat_map(|p| zstd::bulk::compress(p, level).unwrap()).collect()
    }

    use super::sample;

    /// Each whole frame (content size, bytes), and what was handed back, if anything.
    type Split = (Vec<(u64, Vec<u8>)>, Option<Vec<u8>>);

    fn split_all(data: &[u8], max: u64) -> Split {
        // Odd chunk sizes put headers and blocks across chunk boundaries.
        let mut last = None;
        for chunk in [7, 4096, 1 << 20] {
            let mut s = Splitter::new(chunked(data, chunk), max);
            let mut out = Vec::new();
            let split = loop {
                match s.next_frame().unwrap() {
                    Next::End => break (out, None),
                    Next::Frame { content_size, pieces } => {
                        out.push((content_size, pieces.iter().flat_map(|p| p.to_vec()).collect()))
                    }
                    Next::Other { consumed } => break (out, Some(consumed)),
                }
            };
            if let Some(l) = &last {
                assert_eq!(l, &split, "chunks of {chunk} bytes split differently");
            }
            last = Some(split);
        }
        last.expect("three runs")
    }

    #[test]
    fn splits_concatenated_frames_exactly() {
        let parts = [sample(300_000, 1), sample(1, 2), vec![0u8; 200_000], sample(70_000, 3)];
        let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        for level in [1, 9] {
            let stream = frames(&refs, level);
            let (got, other) = split_all(&stream, 1 << 20);
            assert!(other.is_none());
            assert_eq!(got.len(), parts.len());
            let joined: Vec<u8> = got.iter().flat_map(|(_, f)| f.clone()).collect();
            assert_eq!(joined, stream, "the frames are the stream, byte for byte");
            for ((size, f), p) in got.iter().zip(&parts) {
                assert_eq!(*size, p.len() as u64);
                assert_eq!(&zstd::bulk::decompress(f, p.len()).unwrap(), p);
            }
        }
    }

    #[test]
    fn skippable_frames_are_passed_over_and_checksums_kept() {
        let a = sample(50_000, 4);
        let mut enc = zstd::bulk::Compressor::new(3).unwrap();
        enc.include_checksum(true).unwrap();
        let fa = enc.compress(&a).unwrap();
        let mut stream = vec![0x50, 0x2a, 0x4d, 0x18, 5, 0, 0, 0, 1, 2, 3, 4, 5];
        stream.extend_from_slice(&fa);
        let (got, other) = split_all(&stream, 1 << 20);
        assert!(other.is_none());
        assert_eq!(got, vec![(a.len() as u64, fa.clone())]);
        assert!(parse_header(&fa).unwrap().unwrap().has_checksum);
    }

    #[test]
    fn what_it_cannot_split_is_handed_back_with_the_bytes_read() {
        let big = frames(&[&sample(300_000, 5)], 3);
        // Over the limit: handed back at the header.
        let (got, other) = split_all(&big, 100_000);
        assert!(got.is_empty());
        let consumed = other.unwrap();
        assert_eq!(consumed, big[..consumed.len()]);
        // No content size (a streamed encoder): handed back.
        let mut streamed = Vec::new();
        zstd::stream::copy_encode(&sample(1000, 6)[..], &mut streamed, 3).unwrap();
        assert_eq!(parse_header(&streamed).unwrap().unwrap().content_size, None);
        let small = frames(&[b"hello"], 3);
        let mut mixed = small.clone();
        mixed.extend_from_slice(&streamed);
        let (got, other) = split_all(&mixed, 1 << 20);
        assert_eq!(got.len(), 1);
        assert_eq!(other.unwrap(), streamed[..parse_header(&streamed).unwrap().unwrap().len]);
        // Not zstd at all, or three stray bytes: handed back as they are.
        assert_eq!(split_all(b"garbage!", 1 << 20).1.unwrap(), b"garb");
        let mut tail = small.clone();
        tail.extend_from_slice(b"xyz");
        let (got, other) = split_all(&tail, 1 << 20);
        assert_eq!((got.len(), other.unwrap()), (1, b"xyz".to_vec()));
    }

    #[test]
    fn truncation_and_lies_are_errors() {
        let f = frames(&[&sample(300_000, 7)], 3);
        for cut in [f.len() - 1, f.len() / 2, 20] {
            let e = Splitter::new(chunked(&f[..cut], 1000), 1 << 20).next_frame().err().unwrap();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        // A header claiming 10 bytes of content in front of 300 kB of blocks.
        let mut lie = f.clone();
        let h = parse_header(&f).unwrap().unwrap();
        lie[4] = 0x20; // single segment, one-byte content size
        lie.drain(5..h.len);
        lie.insert(5, 10);
        let e = Splitter::new(chunked(&lie, 1000), 1 << 20).next_frame().err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(parse_block([0x06, 0, 0]).is_err(), "reserved block type");
        assert_eq!(parse_block([0x01 | (5 << 3), 0, 0]).unwrap(), (true, 5));
        assert_eq!(parse_block([0x02 | (200 << 3) as u8, (200 >> 5) as u8, 0]).unwrap(), (false, 1));
    }
}

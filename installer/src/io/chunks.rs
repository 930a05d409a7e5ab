//! The messages pipeline stages pass each other, and a [`Read`] over a channel of them.

use std::io::{self, BufRead, Read};
use std::ops::Deref;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use super::pool::Pooled;

pub enum Msg {
    Data(Pooled),
    /// Bytes that go at this offset of the output: qcow2 clusters arrive in file order,
    /// not disk order (`image::qcow2`).
    At(u64, Pooled),
    /// The output's bytes `[at, at + len)` read as zeros.
    Zeros(u64, u64),
    /// The producer reached the end of its stream cleanly. A channel that closes without
    /// `End` means the producer failed: readers report that instead of a short stream.
    End,
}

/// Reads the bytes of the chunks arriving on a channel, in order.
pub struct ChunkReader {
    rx: Receiver<Msg>,
    /// Shared, so [`ChunkReader::take`] can hand out pieces of it without copying.
    cur: Option<Arc<Pooled>>,
    pos: usize,
    done: bool,
}

/// Bytes of a chunk, shared: the chunk returns to its pool when its last piece is dropped.
pub struct Piece {
    chunk: Arc<Pooled>,
    start: usize,
    end: usize,
}

impl Deref for Piece {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.chunk[self.start..self.end]
    }
}

impl ChunkReader {
    pub fn new(rx: Receiver<Msg>) -> ChunkReader {
        ChunkReader { rx, cur: None, pos: 0, done: false }
    }

    /// Consume up to `n` bytes as pieces of the chunks they are in (appended to `pieces`,
    /// contiguous ones merged), also copying them into `copy` when given. Returns how many
    /// were taken: fewer than `n` only at the end of the stream.
    pub fn take(&mut self, n: usize, pieces: &mut Vec<Piece>, mut copy: Option<&mut Vec<u8>>) -> io::Result<usize> {
        let mut taken = 0;
        while taken < n {
            let avail = self.fill_buf()?.len();
            if avail == 0 {
                break;
            }
            let k = avail.min(n - taken);
            let Some(chunk) = self.cur.as_ref().map(Arc::clone) else { break };
            let (start, end) = (self.pos, self.pos + k);
            if let Some(c) = copy.as_deref_mut() {
                c.extend_from_slice(&chunk[start..end]);
            }
            match pieces.last_mut() {
                Some(p) if Arc::ptr_eq(&p.chunk, &chunk) && p.end == start => p.end = end,
                _ => pieces.push(Piece { chunk, start, end }),
            }
            self.consume(k);
            taken += k;
        }
        Ok(taken)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        loop {
            if self.cur.as_ref().is_some_and(|c| self.pos < c.len()) {
                break;
            }
            self.cur = None;
            if self.done {
                return Ok(&[]);
            }
            match self.rx.recv() {
                Ok(Msg::Data(c)) => {
                    self.cur = Some(Arc::new(c));
                    self.pos = 0;
                }
                Ok(Msg::End) => self.done = true,
                Ok(Msg::At(..) | Msg::Zeros(..)) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "placed bytes cannot be read as a stream"))
                }
                Err(_) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stage before stopped mid-stream"))
                }
            }
        }
        let c = self.cur.as_ref().expect("checked above");
        Ok(&c[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = out.len().min(avail.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::pool::Pool;
    use std::sync::mpsc::sync_channel;

    #[test]
    fn reads_across_chunks_and_flags_a_dead_producer() {
        let mut pool = Pool::new(4096, 4);
        let (tx, rx) = sync_channel(4);
        for part in [&b"hello "[..], b"world"] {
            let mut c = pool.get();
            c.extend_from(part);
            tx.send(Msg::Data(c)).unwrap();
        }
        tx.send(Msg::End).unwrap();
        let mut s = String::new();
        ChunkReader::new(rx).read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");

        let (tx, rx) = sync_channel(4);
        let mut c = pool.get();
        c.extend_from(b"partial");
        tx.send(Msg::Data(c)).unwrap();
        drop(tx);
        let e = ChunkReader::new(rx).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}

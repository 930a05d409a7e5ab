//! The decompression stage.
//!
//! zstd images made of several frames (`images/pack` writes 32 MiB frames) are decoded on
//! every core: this thread splits the stream into whole frames ([`Splitter`]), worker
//! threads decode each frame straight from the download's chunks into an output buffer of
//! its content size (zstd's stable output buffer), and an emitter thread passes the decoded
//! frames on in stream order. The compressed bytes are not copied, and the decoder skips
//! the copy a streaming decoder makes through its window buffer.
//!
//! ```text
//!               ┌─► worker ─┐
//!  splitter ────┼─► worker ─┼──► emitter (stream order) ──► next stage
//!  (frames)     └───────────┘
//! ```
//! Output buffers are taken from a bounded pool by the splitter, in stream order and before
//! it reads the frame, so the oldest frame always holds its buffer, and frames in flight —
//! with the download chunks they keep — are at most threads + 2: memory stays at about
//! (threads + 2) × (frame + compressed frame).
//!
//! Everything else — single-frame zstd (a frame larger than [`FRAME_MAX`] or without a
//! content size), gzip, xz, raw — is decoded as one stream on this thread, as is the rest
//! of a zstd stream from the first frame the splitter cannot take.

use std::io::{self, BufRead, Cursor, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use anyhow::{anyhow, Context};
use osie_api::ImageFormat;

use super::qcow2::Tables;
use super::stage::{fill, send, Join, StageError, StageResult};
use super::timing::{Busy, StageTime};
use crate::io::chunks::{ChunkReader, Msg, Piece};
use crate::io::decompress::decoder;
use crate::io::pool::{Pool, Pooled};
use crate::io::sniff::sniff;
use crate::io::zstd_frames::{max_compressed, Next, Splitter};
use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer, ResetDirective};

/// Frames decoding to more than this are decoded as a stream (their output cannot be
/// held whole).
pub const FRAME_MAX: u64 = 64 << 20;

/// How the decode stage runs.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOpts {
    pub format: ImageFormat,
    /// Bytes per decoded chunk on the streaming path.
    pub chunk: usize,
    /// Buffers in flight on the streaming path.
    pub depth: usize,
    /// Worker threads for multi-frame zstd.
    pub threads: usize,
}

/// What the decode stage did.
pub(super) struct Decoded {
    /// The format it decoded (what `auto` turned out to be).
    pub format: ImageFormat,
    pub time: StageTime,
}

pub(super) fn decode_stage(
    rx: Receiver<Msg>,
    tx: SyncSender<Msg>,
    opts: DecodeOpts,
    tables: &Tables<'_>,
) -> StageResult<Decoded> {
    let busy = Busy::start();
    let mut src = ChunkReader::new(rx);
    let format = match opts.format {
        ImageFormat::Auto => sniff(src.fill_buf().context("reading the image's first bytes")?),
        f => f,
    };
    if format == ImageFormat::Qcow2 {
        let time = super::qcow2::decode(src, &tx, tables, (opts.chunk, opts.depth), busy)?;
        return Ok(Decoded { format, time });
    }
    if format == ImageFormat::Zstd {
        let time = zstd_frames(src, tx, opts, busy)?;
        return Ok(Decoded { format, time });
    }
    stream_tail(Box::new(src), &tx, format, opts)?;
    send(&tx, Msg::End)?;
    Ok(Decoded { format, time: busy.finish_cpu() })
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Auto => "auto",
        ImageFormat::Raw => "raw",
        ImageFormat::Zstd => "zstd",
        ImageFormat::Gzip => "gzip",
        ImageFormat::Xz => "xz",
        ImageFormat::Qcow2 => "qcow2",
    }
}

fn what(format: ImageFormat) -> String {
    format!("decoding the {} stream", format_name(format))
}

/// Decode `src` as one stream into chunks sent on `tx`, and refuse bytes after its end.
fn stream_tail<'a>(
    mut src: Box<dyn BufRead + Send + 'a>,
    tx: &SyncSender<Msg>,
    format: ImageFormat,
    opts: DecodeOpts,
) -> StageResult<()> {
    let mut pool = Pool::new(opts.chunk, opts.depth + 2);
    {
        let mut dec = decoder(format, &mut src).with_context(|| what(format))?;
        loop {
            let mut b = pool.get();
            let end = fill(&mut dec, &mut b).with_context(|| what(format))?;
            if !b.is_empty() {
                send(tx, Msg::Data(b))?;
            }
            if end {
                break;
            }
        }
    }
    // Bytes after the compressed stream's end marker are not part of any image we know.
    let mut extra = 0;
    loop {
        let n = src.fill_buf().with_context(|| what(format))?.len();
        if n == 0 {
            break;
        }
        extra += n;
        src.consume(n);
    }
    if extra > 0 {
        return Err(anyhow!("{extra} bytes follow the end of the {} stream", format_name(format)).into());
    }
    Ok(())
}

struct Job {
    index: u64,
    /// Where the frame starts in the compressed stream.
    offset: u64,
    /// The compressed frame, in the pieces of the download's chunks it arrived in.
    input: Vec<Piece>,
    out: Pooled,
    content: usize,
    done: SyncSender<io::Result<Pooled>>,
}

enum Slot {
    Frame(Receiver<io::Result<Pooled>>),
    /// The rest of the stream, decoded as one: its chunks, then `End`.
    Tail(Receiver<Msg>),
    End,
}

fn zstd_frames(src: ChunkReader, tx: SyncSender<Msg>, opts: DecodeOpts, busy: Busy) -> StageResult<StageTime> {
    let threads = opts.threads.max(1);
    let (jobs_tx, jobs_rx) = sync_channel::<Job>(threads);
    let jobs_rx = Mutex::new(jobs_rx);
    let (slots_tx, slots_rx) = sync_channel::<Slot>(threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads).map(|_| s.spawn(|| worker(&jobs_rx))).collect();
        let emitter = s.spawn(move || emit(slots_rx, tx));
        let split = split(src, jobs_tx, slots_tx, opts, threads);
        let split_cpu = busy.finish_cpu().cpu;
        let emitted = emitter.join().unwrap_or_else(|_| Err(StageError::Real(anyhow!("the decode emitter panicked"))));
        let mut worker_cpu = std::time::Duration::ZERO;
        for w in workers {
            worker_cpu += w.join().unwrap_or_default();
        }
        // A frame that failed to decode lies before wherever the splitter stopped.
        let mut join = Join::default();
        match (join.result(emitted), join.result(split)) {
            (Some(()), Some(())) => {
                Ok(StageTime { busy: split_cpu.max(worker_cpu / threads as u32), cpu: split_cpu + worker_cpu })
            }
            _ => Err(join.stage_error()),
        }
    })
}

/// Split the stream into frames and hand them out; the first frame it cannot take and
/// everything after it are decoded here as one stream.
fn split(
    src: ChunkReader,
    jobs: SyncSender<Job>,
    slots: SyncSender<Slot>,
    opts: DecodeOpts,
    threads: usize,
) -> StageResult<()> {
    let slot = |s: Slot| slots.send(s).map_err(|_| StageError::Pipe);
    // A frame's output buffer is taken before its input is read: frames in flight (and the
    // download chunks they hold) are bounded by this pool.
    let mut outputs = Pool::new(FRAME_MAX as usize, frames_in_flight(threads));
    let mut splitter = Splitter::new(src, FRAME_MAX);
    let mut frames = 0u64;
    for index in 0.. {
        frames = index;
        let offset = splitter.offset;
        let out = outputs.get();
        match splitter.next_frame().with_context(|| what(ImageFormat::Zstd))? {
            Next::End => break,
            Next::Frame { content_size, pieces } => {
                let (done, result) = sync_channel(1);
                slot(Slot::Frame(result))?;
                let job = Job { index, offset, input: pieces, out, content: content_size as usize, done };
                jobs.send(job).map_err(|_| StageError::Pipe)?;
            }
            Next::Other { consumed } => {
                drop((out, jobs));
                tracing::info!(
                    "decoding the zstd stream from byte {} on as one stream, after {frames} frame(s) on {threads} thread(s)",
                    splitter.offset - consumed.len() as u64
                );
                let (tail_tx, tail_rx) = sync_channel(opts.depth);
                slot(Slot::Tail(tail_rx))?;
                let rest = Cursor::new(consumed).chain(splitter.into_inner());
                stream_tail(Box::new(rest), &tail_tx, ImageFormat::Zstd, opts)?;
                return tail_tx.send(Msg::End).map_err(|_| StageError::Pipe);
            }
        }
    }
    tracing::info!("decoded {frames} zstd frame(s) on {threads} thread(s)");
    slot(Slot::End)
}

/// Frames that can hold download chunks at once: one per output buffer.
pub fn frames_in_flight(threads: usize) -> usize {
    threads.max(1) + 2
}

/// Download chunks the frames in flight can hold, beyond what the channels hold: the
/// download stage's pool must allow this many more, or the splitter would wait for chunks
/// that only come back when it has finished a frame.
pub fn chunks_held(threads: usize, chunk: usize) -> usize {
    frames_in_flight(threads) * (max_compressed(FRAME_MAX) as usize / chunk.max(1) + 2)
}

/// Decode frames until the splitter is done; returns the thread's CPU time.
fn worker(jobs: &Mutex<Receiver<Job>>) -> std::time::Duration {
    let busy = Busy::start();
    let mut dctx = DCtx::create();
    loop {
        let job = match jobs.lock().map(|r| r.recv()) {
            Ok(Ok(j)) => j,
            _ => break,
        };
        let Job { index, offset, input, mut out, content, done } = job;
        let r = decode_frame(&mut dctx, &input, &mut out.full_mut()[..content])
            .map(|()| {
                out.set_len(content);
                out
            })
            .map_err(|e| io::Error::new(e.kind(), format!("zstd frame {index} at byte {offset}: {e}")));
        drop(input);
        // The emitter may be gone (the stream failed elsewhere): nothing left to tell.
        let _ = done.send(r);
    }
    busy.finish_cpu().cpu
}

/// Decode one whole frame from its pieces straight into `dst`, which is exactly its
/// content size. With a stable output buffer zstd keeps its history in `dst` itself: no
/// window buffer, no copy out of it, and the input is read where it lies.
fn decode_frame(dctx: &mut DCtx<'_>, input: &[Piece], dst: &mut [u8]) -> io::Result<()> {
    let zerr =
        |code: usize| io::Error::new(io::ErrorKind::InvalidData, zstd::zstd_safe::get_error_name(code).to_string());
    dctx.reset(ResetDirective::SessionOnly).map_err(zerr)?;
    dctx.set_parameter(DParameter::StableOutBuffer(true)).map_err(zerr)?;
    let (mut pos, mut left) = (0, 1);
    for piece in input {
        let mut inb = InBuffer::around(&piece[..]);
        while inb.pos() < piece.len() {
            let mut outb = OutBuffer::around_pos(&mut *dst, pos);
            left = dctx.decompress_stream(&mut outb, &mut inb).map_err(zerr)?;
            pos = outb.pos();
            if left == 0 {
                break;
            }
        }
    }
    if left != 0 || pos != dst.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it decoded to {pos} bytes, its header says {}", dst.len()),
        ));
    }
    Ok(())
}

/// Pass the decoded frames on in stream order.
fn emit(slots: Receiver<Slot>, tx: SyncSender<Msg>) -> StageResult<()> {
    loop {
        match slots.recv().map_err(|_| StageError::Pipe)? {
            Slot::Frame(result) => {
                let out = result.recv().map_err(|_| StageError::Pipe)?.with_context(|| what(ImageFormat::Zstd))?;
                if !out.is_empty() {
                    send(&tx, Msg::Data(out))?;
                }
            }
            Slot::Tail(chunks) => {
                while let Msg::Data(b) = chunks.recv().map_err(|_| StageError::Pipe)? {
                    send(&tx, Msg::Data(b))?;
                }
                return send(&tx, Msg::End);
            }
            Slot::End => return send(&tx, Msg::End),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use crate::io::zstd_frames::sample as data;

    fn frame(raw: &[u8], checksum: bool) -> Vec<u8> {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.include_checksum(checksum).unwrap();
        c.compress(raw).unwrap()
    }

    /// A frame without a content size, as a streaming encoder writes it.
    fn streamed(raw: &[u8]) -> Vec<u8> {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.write_all(raw).unwrap();
        e.finish().unwrap()
    }

    /// Run the stage on `input`, fed in `chunk`-byte pieces; the decoded bytes or the error.
    fn decode(input: &[u8], chunk: usize, threads: usize) -> Result<Vec<u8>, String> {
        let (in_tx, in_rx) = sync_channel(4);
        let (out_tx, out_rx) = sync_channel(4);
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || {
            // As the download stage sizes it: frames in flight keep their chunks.
            let mut pool = Pool::new(chunk, 6 + chunks_held(threads, chunk));
            for piece in input.chunks(chunk) {
                let mut b = pool.get();
                b.extend_from(piece);
                if in_tx.send(Msg::Data(b)).is_err() {
                    return;
                }
            }
            let _ = in_tx.send(Msg::End);
        });
        let opts = DecodeOpts { format: ImageFormat::Auto, chunk: 1 << 16, depth: 2, threads };
        let stage = std::thread::spawn(move || {
            let (client, sources) =
                (reqwest::blocking::Client::new(), crate::servers::Servers::single("http://192.0.2.1/"));
            let tables = Tables { client: &client, sources: &sources, disk_len: 0, disk: String::new() };
            decode_stage(in_rx, out_tx, opts, &tables).map(|d| d.format)
        });
        let mut out = Vec::new();
        let read = ChunkReader::new(out_rx).read_to_end(&mut out);
        let r = stage.join().unwrap();
        feeder.join().unwrap();
        match r {
            Ok(f) => {
                assert_eq!(f, ImageFormat::Zstd);
                read.map_err(|e| format!("stage ok but the stream was cut: {e}"))?;
                Ok(out)
            }
            Err(StageError::Real(e)) => Err(format!("{e:#}")),
            Err(StageError::Pipe) => Err("pipe".into()),
        }
    }

    #[test]
    fn frames_decode_in_order_on_several_threads() {
        let parts = [data(700_000, 1), Vec::new(), vec![0; 300_000], data(1, 2), data(2_000_000, 3), data(50_000, 4)];
        let mut stream = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            stream.extend(frame(p, i % 2 == 0));
            if i == 2 {
                stream.extend([0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9]); // skippable
            }
        }
        let want: Vec<u8> = parts.concat();
        for (chunk, threads) in [(4096, 3), (1 << 20, 2), (777, 1)] {
            assert!(decode(&stream, chunk, threads).unwrap() == want, "chunk {chunk}, {threads} threads");
        }
    }

    #[test]
    fn the_first_frame_it_cannot_split_and_the_rest_decode_as_one_stream() {
        let (a, b, c) = (data(100_000, 5), data(200_000, 6), data(30_000, 7));
        let mut stream = frame(&a, false);
        stream.extend(streamed(&b));
        stream.extend(frame(&c, true));
        assert!(decode(&stream, 5000, 2).unwrap() == [a.clone(), b.clone(), c].concat());
        // A single frame without a content size (what `zstd` writes from a pipe).
        assert!(decode(&streamed(&b), 5000, 2).unwrap() == b);
    }

    #[test]
    fn a_corrupt_frame_is_named_and_nothing_after_it_is_passed_on() {
        let parts = [data(300_000, 8), data(300_000, 9), data(300_000, 10)];
        let frames: Vec<Vec<u8>> = parts.iter().map(|p| frame(p, true)).collect();
        let mut stream = frames.concat();
        let second = frames[0].len();
        stream[second + frames[1].len() / 2] ^= 0x10;
        let e = decode(&stream, 4096, 2).unwrap_err();
        assert!(e.contains(&format!("zstd frame 1 at byte {second}")), "{e}");
    }

    #[test]
    fn truncated_streams_and_trailing_bytes_are_errors() {
        let stream = [frame(&data(300_000, 11), false), frame(&data(300_000, 12), false)].concat();
        for cut in [stream.len() - 1, stream.len() * 2 / 3, 7] {
            let e = decode(&stream[..cut], 4096, 2).unwrap_err();
            assert!(e.contains("decoding the zstd stream"), "cut at {cut}: {e}");
        }
        let mut trailing = stream.clone();
        trailing.extend(b"not zstd at all");
        assert!(decode(&trailing, 4096, 2).is_err());
    }
}

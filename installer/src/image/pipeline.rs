//! One attempt at the stream: the stage threads and the channels between them.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::Instant;

use anyhow::{anyhow, Result};
use osie_api::{ChecksumOf, ImageFormat, Progress};
use reqwest::blocking::Client;
use sha2::{Digest, Sha256};

use super::decode::{decode_stage, DecodeOpts};
use super::fetch::{Download, Restart};
use super::progress::Meter;
use super::sink::Sink;
use super::timing::{Busy, StageTime, Timings};
use super::{hex, ImageSpec, Outcome, Tuning};
use crate::io::aligned::AlignedBuf;
use crate::io::chunks::Msg;
use crate::io::pool::Pool;
use crate::target::Target;

/// Why a stage stopped.
pub(super) enum StageError {
    /// Its neighbour went away (that neighbour has the real reason).
    Pipe,
    Real(anyhow::Error),
}

impl From<anyhow::Error> for StageError {
    fn from(e: anyhow::Error) -> Self {
        StageError::Real(e)
    }
}

pub(super) type StageResult<T> = Result<T, StageError>;

pub(super) fn send(tx: &SyncSender<Msg>, m: Msg) -> StageResult<()> {
    tx.send(m).map_err(|_| StageError::Pipe)
}

/// Run every stage once. Returns what happened and the held first MiB (not yet written).
pub(super) fn run(
    client: &Client,
    spec: &ImageSpec,
    target: &Target,
    tuning: &Tuning,
    on_progress: &(dyn Fn(&Progress) + Sync),
) -> Result<(Outcome, AlignedBuf)> {
    let dl = Download::open(client.clone(), &spec.url, tuning.resume, tuning.timeouts).map_err(from_io)?;
    if let (Some(want), Some(offered)) = (spec.size, dl.total()) {
        if want != offered {
            anyhow::bail!("the server offers {offered} bytes, the metadata says the image has {want}");
        }
    }
    let dl_total = spec.size.or(dl.total());
    let downloaded = AtomicU64::new(0);
    let raw = AtomicU64::new(0);
    let depth = tuning.depth.max(1);
    let (stop_progress, progress_stopped) = channel::<()>();

    std::thread::scope(|s| {
        let (downloaded, raw) = (&downloaded, &raw);
        s.spawn(move || {
            // Report on the decoded bytes when their total is known (what the disk gets),
            // else on the download.
            let (counter, mut meter) = match spec.raw_size {
                Some(t) => (raw, Meter::new(Some(t))),
                None => (downloaded, Meter::new(dl_total)),
            };
            let mut last = Instant::now();
            // One report per interval, and a last one when the stream ends (so even a short
            // stream reports its progress once).
            loop {
                let stopped =
                    !matches!(progress_stopped.recv_timeout(tuning.progress_every), Err(RecvTimeoutError::Timeout));
                let p = meter.sample(counter.load(Ordering::Relaxed), last.elapsed());
                last = Instant::now();
                on_progress(&p);
                if stopped {
                    break;
                }
            }
        });

        let (tx, rx) = sync_channel(depth);
        let held = super::decode::chunks_held(tuning.decode_threads, tuning.in_chunk);
        let h_download = s.spawn(move || download_stage(dl, tx, tuning.in_chunk, depth, held, downloaded));
        let (rx, h_hash_download) = match spec.checksum_of {
            ChecksumOf::Compressed => {
                let (tx2, rx2) = sync_channel(depth);
                (rx2, Some(s.spawn(move || hash_stage(rx, tx2))))
            }
            ChecksumOf::Raw => (rx, None),
        };
        let (tx, rx_decoded) = sync_channel(depth);
        let opts = DecodeOpts { format: spec.format, chunk: tuning.out_chunk, depth, threads: tuning.decode_threads };
        let h_decode = s.spawn(move || decode_stage(rx, tx, opts));
        let (rx, h_hash_raw) = match spec.checksum_of {
            ChecksumOf::Raw => {
                let (tx2, rx2) = sync_channel(depth);
                (rx2, Some(s.spawn(move || hash_stage(rx_decoded, tx2))))
            }
            ChecksumOf::Compressed => (rx_decoded, None),
        };
        let sunk = sink_stage(rx, target, raw);
        drop(stop_progress);

        let download = joined(h_download);
        let hash_download = h_hash_download.map(joined);
        let decode = joined(h_decode);
        let hash_raw = h_hash_raw.map(joined);

        // The first real error in stream order is the cause; the others are its echoes.
        let mut first: Option<anyhow::Error> = None;
        let mut note = |r: Option<StageError>| {
            if let (None, Some(StageError::Real(e))) = (&first, r) {
                first = Some(e);
            }
        };
        let download = download.map_err(|e| note(Some(e))).ok();
        let hash_download = hash_download.and_then(|r| r.map_err(|e| note(Some(e))).ok());
        let format = decode.map_err(|e| note(Some(e))).ok();
        let hash_raw = hash_raw.and_then(|r| r.map_err(|e| note(Some(e))).ok());
        let sunk = sunk.map_err(|e| note(Some(e))).ok();
        if let Some(e) = first {
            return Err(e);
        }
        match (download, format, sunk, hash_download.or(hash_raw)) {
            (
                Some((resumes, t_download)),
                Some((format, t_decode)),
                Some(((head, written, zeroed), t_sink)),
                Some((digest, t_hash)),
            ) => Ok((
                Outcome {
                    format: Some(format),
                    downloaded: downloaded.load(Ordering::Relaxed),
                    raw_bytes: raw.load(Ordering::Relaxed),
                    bytes_written: written,
                    bytes_zeroed: zeroed,
                    sha256: hex(&digest),
                    resumes,
                    timings: Timings { download: t_download, hash: t_hash, decode: t_decode, sink: t_sink },
                    ..Default::default()
                },
                head,
            )),
            _ => Err(anyhow!("the image pipeline stopped without saying why")),
        }
    })
}

fn joined<T>(h: std::thread::ScopedJoinHandle<'_, StageResult<T>>) -> StageResult<T> {
    h.join().unwrap_or_else(|_| Err(StageError::Real(anyhow!("a pipeline thread panicked"))))
}

/// An `io::Error` from the download, keeping a [`Restart`] recognisable by the caller.
fn from_io(e: io::Error) -> anyhow::Error {
    if e.get_ref().is_some_and(|i| i.is::<Restart>()) {
        if let Some(inner) = e.into_inner() {
            return match inner.downcast::<Restart>() {
                Ok(r) => anyhow::Error::new(*r),
                Err(other) => anyhow!(other),
            };
        }
        return anyhow!("download failed");
    }
    anyhow::Error::new(e)
}

/// Read until `buf` is full or the source ends; true at the end.
pub(super) fn fill(src: &mut dyn Read, buf: &mut AlignedBuf) -> io::Result<bool> {
    while buf.len() < buf.capacity() {
        match src.read(buf.spare()) {
            Ok(0) => return Ok(true),
            Ok(n) => buf.set_len(buf.len() + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// `held`: chunks a later stage may keep beyond the channels (see
/// [`super::decode::chunks_held`]); buffers are only allocated as they are needed.
fn download_stage(
    mut dl: Download,
    tx: SyncSender<Msg>,
    chunk: usize,
    depth: usize,
    held: usize,
    counter: &AtomicU64,
) -> StageResult<(u32, StageTime)> {
    let mut pool = Pool::new(chunk, depth + 2 + held);
    let mut busy = Busy::start();
    loop {
        let mut b = pool.get();
        let end = busy.time(|| fill(&mut dl, &mut b)).map_err(from_io)?;
        counter.fetch_add(b.len() as u64, Ordering::Relaxed);
        if !b.is_empty() {
            send(&tx, Msg::Data(b))?;
        }
        if end {
            send(&tx, Msg::End)?;
            return Ok((dl.resumes, busy.finish()));
        }
    }
}

/// sha256 of everything passing through, on its own core.
fn hash_stage(rx: Receiver<Msg>, tx: SyncSender<Msg>) -> StageResult<([u8; 32], StageTime)> {
    let mut h = Sha256::new();
    let mut busy = Busy::start();
    loop {
        match rx.recv() {
            Ok(Msg::Data(b)) => {
                busy.time(|| h.update(&b[..]));
                send(&tx, Msg::Data(b))?;
            }
            Ok(Msg::End) => {
                send(&tx, Msg::End)?;
                return Ok((h.finalize().into(), busy.finish()));
            }
            Err(_) => return Err(StageError::Pipe),
        }
    }
}

type Sunk = (AlignedBuf, u64, u64);

fn sink_stage(rx: Receiver<Msg>, target: &Target, counter: &AtomicU64) -> StageResult<(Sunk, StageTime)> {
    let mut sink = Sink::new(target);
    let mut busy = Busy::start();
    loop {
        match rx.recv() {
            Ok(Msg::Data(b)) => {
                busy.time(|| sink.push(&b))?;
                counter.store(sink.pos(), Ordering::Relaxed);
            }
            Ok(Msg::End) => break,
            Err(_) => return Err(StageError::Pipe),
        }
    }
    let sunk = busy.time(|| sink.finish())?;
    Ok((sunk, busy.finish()))
}

pub fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Auto => "auto",
        ImageFormat::Raw => "raw",
        ImageFormat::Zstd => "zstd",
        ImageFormat::Gzip => "gzip",
        ImageFormat::Xz => "xz",
    }
}

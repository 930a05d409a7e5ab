//! One attempt at the stream: [`run`] wires the stage threads and the channels between
//! them; each stage is a function below (decoding is [`super::decode`]), and what the
//! stages share — their error, sending, filling, joining — is [`super::stage`].

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

use anyhow::{anyhow, Result};
use osie_api::metadata::DigestAlgo;
use osie_api::{ChecksumOf, Progress};
use reqwest::blocking::Client;
use sha2::{Digest, Sha256, Sha512};

use super::decode::{chunks_held, decode_stage, DecodeOpts, Decoded};
use super::fetch::{Download, Restart};
use super::progress::Meter;
use super::qcow2::Tables;
use super::sink::{Sink, Written};
use super::stage::{fill, send, Join, StageError, StageResult};
use super::timing::{Busy, StageTime, Timings};
use super::{hex, ImageSpec, Outcome, Tuning};
use crate::io::aligned::AlignedBuf;
use crate::io::chunks::Msg;
use crate::io::pool::Pool;
use crate::servers::Servers;
use crate::target::Target;

/// What one attempt produced.
pub(super) struct Attempt {
    pub outcome: Outcome,
    /// The image's first MiB, not yet written: the caller writes it once it verified the
    /// stream.
    pub head: AlignedBuf,
}

/// Bytes past the two ends of the pipeline so far, for progress and the outcome.
#[derive(Default)]
struct Counters {
    downloaded: AtomicU64,
    raw: AtomicU64,
}

/// Run every stage once:
///
/// ```text
/// download ─► [hash, of compressed] ─► decode ─► [hash, of raw] ─► sink (this thread)
/// ```
pub(super) fn run(
    client: &Client,
    spec: &ImageSpec,
    sources: &Servers,
    target: &Target,
    tuning: &Tuning,
    on_progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Attempt> {
    let dl = open(client, spec, sources, tuning)?;
    let dl_total = spec.size.or(dl.total());
    let counters = Counters::default();
    let depth = tuning.depth.max(1);
    let (stop_progress, progress_stopped) = channel::<()>();

    std::thread::scope(|s| {
        let counters = &counters;
        s.spawn(move || report_progress(spec, dl_total, counters, tuning, progress_stopped, on_progress));

        let held = chunks_held(tuning.decode_threads, tuning.in_chunk);
        let (tx, rx) = sync_channel(depth);
        let download = s.spawn(move || download_stage(dl, tx, tuning.in_chunk, depth, held, &counters.downloaded));
        let (rx, hash_compressed) = hash_if(s, spec.checksum_of == ChecksumOf::Compressed, spec.algo, rx, depth);
        let (tx, rx_decoded) = sync_channel(depth);
        let opts = DecodeOpts { format: spec.format, chunk: tuning.out_chunk, depth, threads: tuning.decode_threads };
        let tables = Tables { client, sources, disk_len: target.len, disk: target.describe() };
        let decode = s.spawn(move || decode_stage(rx, tx, opts, &tables));
        let (rx, hash_raw) = hash_if(s, spec.checksum_of == ChecksumOf::Raw, spec.algo, rx_decoded, depth);
        let sunk = sink_stage(rx, target, &counters.raw);
        drop(stop_progress);

        // Joined in stream order: the first real error is the cause.
        let mut join = Join::default();
        let fetched = join.thread(download);
        let hashed = hash_compressed.and_then(|h| join.thread(h));
        let decoded = join.thread(decode);
        let hashed = hash_raw.and_then(|h| join.thread(h)).or(hashed);
        let sunk = join.result(sunk);
        match (fetched, hashed, decoded, sunk) {
            (Some(f), Some(h), Some(d), Some(w)) => Ok(attempt(f, h, d, w, counters)),
            _ => Err(join.cause()),
        }
    })
}

/// The download, refused at once when the server offers another size than the metadata's.
fn open(client: &Client, spec: &ImageSpec, sources: &Servers, tuning: &Tuning) -> Result<Download> {
    let dl = Download::open(client.clone(), sources.clone(), tuning.resume, tuning.timeouts).map_err(from_io)?;
    if let (Some(want), Some(offered)) = (spec.size, dl.total()) {
        if want != offered {
            anyhow::bail!("the server offers {offered} bytes, the metadata says the image has {want}");
        }
    }
    Ok(dl)
}

fn attempt(f: Fetched, h: Hashed, d: Decoded, w: Sunk, counters: &Counters) -> Attempt {
    let outcome = Outcome {
        format: Some(d.format),
        downloaded: counters.downloaded.load(Ordering::Relaxed),
        raw_bytes: counters.raw.load(Ordering::Relaxed),
        bytes_written: w.written.bytes_written,
        bytes_zeroed: w.written.bytes_zeroed,
        sha256: hex(&h.digest),
        resumes: f.resumes,
        timings: Timings { download: f.time, hash: h.time, decode: d.time, sink: w.time },
        ..Default::default()
    };
    Attempt { outcome, head: w.written.head }
}

/// Calls `on_progress` every `tuning.progress_every` until `stopped` closes, and once more
/// then (so even a short stream reports once). On the decoded bytes when their total is
/// known (what the disk gets), else on the download.
fn report_progress(
    spec: &ImageSpec,
    dl_total: Option<u64>,
    counters: &Counters,
    tuning: &Tuning,
    stopped: Receiver<()>,
    on_progress: &(dyn Fn(&Progress) + Sync),
) {
    let (counter, mut meter) = match spec.raw_size {
        Some(t) => (&counters.raw, Meter::new(Some(t))),
        None => (&counters.downloaded, Meter::new(dl_total)),
    };
    let mut last = Instant::now();
    loop {
        let end = !matches!(stopped.recv_timeout(tuning.progress_every), Err(RecvTimeoutError::Timeout));
        let p = meter.sample(counter.load(Ordering::Relaxed), last.elapsed());
        last = Instant::now();
        on_progress(&p);
        if end {
            break;
        }
    }
}

/// A hash stage after `rx` when `on` (returning its output), else `rx` itself.
fn hash_if<'s>(
    s: &'s Scope<'s, '_>,
    on: bool,
    algo: DigestAlgo,
    rx: Receiver<Msg>,
    depth: usize,
) -> (Receiver<Msg>, Option<ScopedJoinHandle<'s, StageResult<Hashed>>>) {
    if !on {
        return (rx, None);
    }
    let (tx, out) = sync_channel(depth);
    (out, Some(s.spawn(move || hash_stage(algo, rx, tx))))
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

struct Fetched {
    resumes: u32,
    time: StageTime,
}

/// `held`: chunks a later stage may keep beyond the channels (see
/// [`chunks_held`]); buffers are only allocated as they are needed.
fn download_stage(
    mut dl: Download,
    tx: SyncSender<Msg>,
    chunk: usize,
    depth: usize,
    held: usize,
    counter: &AtomicU64,
) -> StageResult<Fetched> {
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
            return Ok(Fetched { resumes: dl.resumes, time: busy.finish() });
        }
    }
}

struct Hashed {
    digest: Vec<u8>,
    time: StageTime,
}

/// The two digests vendors publish, behind one interface.
enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// The digest (sha256 or sha512) of everything passing through, on its own core.
fn hash_stage(algo: DigestAlgo, rx: Receiver<Msg>, tx: SyncSender<Msg>) -> StageResult<Hashed> {
    let mut h = match algo {
        DigestAlgo::Sha256 => Hasher::Sha256(Sha256::new()),
        DigestAlgo::Sha512 => Hasher::Sha512(Sha512::new()),
    };
    let mut busy = Busy::start();
    loop {
        match rx.recv() {
            Ok(Msg::Data(b)) => {
                busy.time(|| h.update(&b[..]));
                send(&tx, Msg::Data(b))?;
            }
            Ok(Msg::End) => {
                send(&tx, Msg::End)?;
                return Ok(Hashed { digest: h.finish(), time: busy.finish() });
            }
            Ok(Msg::At(..) | Msg::Zeros(..)) => {
                return Err(anyhow!("a qcow2 image has no stream of raw bytes to hash: its sha256 covers the download (checksum_of: compressed)").into())
            }
            Err(_) => return Err(StageError::Pipe),
        }
    }
}

struct Sunk {
    written: Written,
    time: StageTime,
}

fn sink_stage(rx: Receiver<Msg>, target: &Target, counter: &AtomicU64) -> StageResult<Sunk> {
    let mut sink = Sink::new(target);
    let mut busy = Busy::start();
    loop {
        match rx.recv() {
            Ok(Msg::Data(b)) => {
                busy.time(|| sink.push(&b))?;
                counter.store(sink.pos(), Ordering::Relaxed);
            }
            Ok(Msg::At(at, b)) => {
                busy.time(|| sink.place(at, &b))?;
                counter.store(sink.pos(), Ordering::Relaxed);
            }
            Ok(Msg::Zeros(at, len)) => {
                busy.time(|| sink.zeros(at, len))?;
                counter.store(sink.pos(), Ordering::Relaxed);
            }
            Ok(Msg::End) => break,
            Err(_) => return Err(StageError::Pipe),
        }
    }
    let written = busy.time(|| sink.finish())?;
    Ok(Sunk { written, time: busy.finish() })
}

//! Image streaming — the heart of the installer.
//!
//! ```text
//!  HTTP GET ──► [sha256 of the download] ──► decompress ──► [sha256 of the raw bytes] ──► disk
//!  (fetch.rs,        (own thread)         (decode.rs:           (own thread)         (sink.rs)
//!   plain.rs)                              frames on all cores)
//! ```
//! Each stage is a thread joined to the next by a bounded channel of large pooled buffers
//! ([`crate::io::pool`]), so download, hashing, decompression and writing overlap and memory
//! stays bounded. Only the hash stage the metadata's `checksum_of` names runs.
//!
//! Where the CPU goes is what sets the speed, so each byte is touched as few times as
//! possible: plain `http://` bodies are read from the socket straight into the pipeline's
//! buffers ([`plain`]), and zstd images packed as many frames (`images/pack`) are decoded
//! on every core, each frame from the download's chunks straight into its output buffer
//! ([`decode`]). Memory: about 40 MiB of buffers for one-frame zstd, gzip, xz and raw
//! images (21–47 MiB max RSS measured); for packed images at most (threads + 2) frames in
//! flight, each a 32 MiB output buffer plus the chunks of its compressed bytes (163–201 MiB
//! max RSS in `scripts/bench image` with 2 threads). Both in `installer/README.md`.
//!
//! Safety rules, in order of importance:
//! - The first MiB of the image is held in memory and written only after the whole stream
//!   was received, decoded to its end marker, matched the expected size and the sha256. The
//!   caller wiped the disk's first MiB before, so a corrupt or truncated image never leaves
//!   a bootable disk.
//! - Zero runs (aligned 1 MiB segments) are written with BLKZEROOUT, never skipped: the disk
//!   held other data before.
//! - A dropped connection resumes with a Range request checked against the validator
//!   ([`fetch`]), on the next bootsvc instance when the one in use is gone; when that is
//!   impossible the whole stream starts over from byte 0 with a fresh hash, decoder and
//!   write position — two files are never spliced.

mod decode;
pub mod fetch;
mod pipeline;
pub mod plain;
pub mod progress;
pub mod qcow2;
pub mod sink;
mod stage;
pub mod timing;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use osie_api::metadata::DigestAlgo;
use osie_api::{ChecksumOf, ImageFormat, Progress};
use reqwest::blocking::Client;

use crate::backoff::Backoff;
use crate::http::Timeouts;
use crate::io::aligned::AlignedBuf;
use crate::servers::Servers;
use crate::target::Target;

/// What to stream (from the metadata's `install.image`, or `write-image`'s arguments).
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub url: String,
    /// The expected digest of the stream named by `checksum_of`, in `algo`.
    pub digest: Vec<u8>,
    pub algo: DigestAlgo,
    pub checksum_of: ChecksumOf,
    pub format: ImageFormat,
    /// Expected bytes of the download.
    pub size: Option<u64>,
    /// Expected bytes once decoded.
    pub raw_size: Option<u64>,
}

impl ImageSpec {
    pub fn from_api(img: &osie_api::Image) -> Result<ImageSpec> {
        Ok(ImageSpec {
            url: img.url.clone(),
            digest: parse_digest(&img.sha256, img.digest_algo).context("install.image.sha256")?,
            algo: img.digest_algo,
            checksum_of: img.checksum_of,
            format: img.format,
            size: img.size,
            raw_size: img.raw_size,
        })
    }
}

/// Knobs; the defaults are what the installer uses, tests shorten the waits.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Bytes per download chunk.
    pub in_chunk: usize,
    /// Bytes per decoded chunk (what one write covers at most).
    pub out_chunk: usize,
    /// Buffers in flight per stage.
    pub depth: usize,
    /// Threads decoding the frames of a multi-frame zstd image at once.
    pub decode_threads: usize,
    /// Retries of one dropped connection.
    pub resume: Backoff,
    /// Whole-stream restarts when a resume is impossible (the file changed).
    pub restarts: u32,
    pub progress_every: Duration,
    /// Connect and read timeouts of the download (the HTTP configuration's).
    pub timeouts: Timeouts,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            in_chunk: 1 << 20,
            out_chunk: 4 << 20,
            depth: 6,
            decode_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            resume: Backoff::new(Duration::from_millis(500), Duration::from_secs(15), 12),
            restarts: 3,
            progress_every: Duration::from_secs(2),
            timeouts: Timeouts::default(),
        }
    }
}

/// What a finished stream did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub format: Option<ImageFormat>,
    pub downloaded: u64,
    pub raw_bytes: u64,
    pub bytes_written: u64,
    pub bytes_zeroed: u64,
    /// Hex digest of the checked stream, in the spec's algorithm (the name predates SHA-512).
    pub sha256: String,
    pub resumes: u32,
    pub restarts: u32,
    pub elapsed: Duration,
    /// Where the last attempt's time went, per stage.
    pub timings: timing::Timings,
}

/// Stream the image onto `target`, verify it, then write its first MiB and fsync.
/// `on_progress` is called every `tuning.progress_every` from a helper thread.
pub fn stream(
    client: &Client,
    spec: &ImageSpec,
    target: &Target,
    tuning: &Tuning,
    on_progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Outcome> {
    stream_from(client, spec, &Servers::single(&spec.url), target, tuning, on_progress)
}

/// [`stream`] from `sources`: the image's URL on each bootsvc instance
/// ([`Servers::for_url`]), moving on to the next on connection errors.
pub fn stream_from(
    client: &Client,
    spec: &ImageSpec,
    sources: &Servers,
    target: &Target,
    tuning: &Tuning,
    on_progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Outcome> {
    let start = Instant::now();
    if spec.format == ImageFormat::Qcow2 && spec.checksum_of == ChecksumOf::Raw {
        bail!("a qcow2 image's sha256 covers the downloaded file (checksum_of: compressed), not the disk's bytes");
    }
    if let Some(raw) = spec.raw_size {
        if raw > target.len {
            bail!("the image ({raw} bytes) does not fit on {} ({} bytes)", target.describe(), target.len);
        }
    }
    // Blank the first MiB first: until the verified head is written last, the target is not
    // bootable, whatever happens.
    let blank = AlignedBuf::new(sink::SEGMENT.min(target.len) as usize);
    let mut blank = blank;
    let n = blank.capacity().min(target.len as usize);
    blank.set_len(n);
    target.write_at(0, &blank).context("blanking the first MiB before streaming")?;
    target.sync()?;
    let mut restarts = 0;
    let pipeline::Attempt { outcome: mut out, head } = loop {
        match pipeline::run(client, spec, sources, target, tuning, on_progress) {
            Ok(v) => break v,
            Err(e) if e.downcast_ref::<fetch::Restart>().is_some() && restarts < tuning.restarts => {
                restarts += 1;
                tracing::warn!("{e:#}; restarting the stream from byte 0 ({restarts}/{})", tuning.restarts);
            }
            Err(e) => return Err(e.context(format!("streaming {} to {}", spec.url, target.describe()))),
        }
    };
    out.restarts = restarts;
    verify(spec, &out).with_context(|| {
        format!(
            "verifying {} (the first MiB of {} was left blank, so it will not boot a bad image)",
            spec.url,
            target.describe()
        )
    })?;
    // Verified: now the disk may become bootable.
    target.write_at(0, &head).context("writing the image's first MiB")?;
    target.sync()?;
    out.elapsed = start.elapsed();
    Ok(out)
}

fn verify(spec: &ImageSpec, out: &Outcome) -> Result<()> {
    if let Some(s) = spec.size {
        if out.downloaded != s {
            bail!("downloaded {} bytes, the metadata says the image has {s}: truncated or wrong file", out.downloaded);
        }
    }
    if let Some(s) = spec.raw_size {
        if out.raw_bytes != s {
            bail!("the image decoded to {} bytes, the metadata says {s}: truncated or wrong file", out.raw_bytes);
        }
    }
    let want = hex(&spec.digest);
    if out.sha256 != want {
        let of = match spec.checksum_of {
            ChecksumOf::Compressed => "downloaded",
            ChecksumOf::Raw => "decoded",
        };
        let algo = algo_name(spec.algo);
        bail!("{algo} of the {of} bytes is {}, expected {want}: the image is corrupt or not the one named", out.sha256);
    }
    Ok(())
}

/// `sha256` or `sha512`, as logs and errors name it.
pub fn algo_name(a: DigestAlgo) -> &'static str {
    match a {
        DigestAlgo::Sha256 => "sha256",
        DigestAlgo::Sha512 => "sha512",
    }
}

/// A hex digest of `algo` (64 or 128 digits, either case).
pub fn parse_digest(s: &str, algo: DigestAlgo) -> Result<Vec<u8>> {
    let s = s.trim();
    if s.len() != algo.hex_len() {
        bail!("{s:?} is not a {} ({} hex digits)", algo_name(algo), algo.hex_len());
    }
    let mut out = vec![0u8; s.len() / 2];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).with_context(|| format!("{s:?} is not hex"))?;
    }
    Ok(out)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parsing() {
        let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let parse = |s: &str| parse_digest(s, DigestAlgo::Sha256);
        assert_eq!(hex(&parse(h).unwrap()), h);
        assert_eq!(hex(&parse(&h.to_uppercase()).unwrap()), h);
        assert!(parse("abc").is_err());
        assert!(parse(&"zz".repeat(32)).is_err());
        // SHA-512 wants 128 digits: a SHA-256 is not taken for one, nor the reverse.
        let h512 = "cf".repeat(64);
        assert_eq!(hex(&parse_digest(&h512, DigestAlgo::Sha512).unwrap()), h512);
        assert!(parse_digest(h, DigestAlgo::Sha512).is_err());
        assert!(parse(&h512).is_err());
    }
}

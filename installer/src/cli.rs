//! The installer as an ordinary command: `install`, `write-image`, `disks`, `erase`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use osie_api::metadata::DigestAlgo;
use osie_api::{ChecksumOf, ImageFormat, MacAddr};

use crate::disk;
use crate::http::HttpConfig;
use crate::image::{self, progress, ImageSpec, Tuning};
use crate::install::{self, InstallRequest, Options};
use crate::report::Reporter;
use crate::servers::Servers;
use crate::target::Target;

#[derive(Parser, Debug)]
#[command(
    name = "installer",
    version,
    about = "osie's installer: puts an OS image on a disk.",
    long_about = "osie's installer. Started by the kernel as /init (PID 1) it reads osie.url and osie.mac \
                  from the kernel command line and installs the machine. Run as a command it does the same \
                  steps on demand, against any block device."
)]
struct Cli {
    /// More detail in logs (same as RUST_LOG=debug).
    #[arg(long, short, global = true)]
    verbose: bool,
    /// Extra trusted CA certificate (PEM) for https:// URLs.
    #[arg(long, global = true, value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// Seconds a download may stall before it counts as dropped (and is resumed).
    #[arg(long, global = true, default_value_t = 30.0, value_name = "SECS")]
    read_timeout: f64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The whole install: fetch metadata, pick and wipe the disk, stream the image, fix the
    /// GPT, seed cloud-init, report every step to bootsvc.
    Install {
        /// bootsvc's base URL (GET <URL>/metadata, POST <URL>/events), or several separated by
        /// commas (instances of one site, tried in order: the next on a connection error or a
        /// 5xx). A URL ending in /metadata is accepted too.
        #[arg(long, value_name = "URL[,URL…]")]
        metadata_url: String,
        /// MAC of the machine to install as (sent as X-Osie-Mac).
        #[arg(long)]
        mac: MacAddr,
        /// Install to this device instead of choosing one from the metadata's hints.
        #[arg(long, value_name = "DEV")]
        disk: Option<PathBuf>,
        /// Only consider these devices when choosing by hints (repeatable).
        #[arg(long = "candidate", value_name = "DEV")]
        candidates: Vec<PathBuf>,
        /// Do not send events to bootsvc (log them only).
        #[arg(long)]
        no_events: bool,
    },
    /// Stream one image to a device: download, verify, decompress, write. No metadata server.
    WriteImage {
        #[arg(long)]
        url: String,
        /// Expected digest (hex) of the stream named by --checksum-of, in --algo.
        #[arg(long)]
        sha256: String,
        /// The digest's algorithm (sha512: a vendor's SHA512SUMS).
        #[arg(long, value_enum, default_value_t = Algo::Sha256)]
        algo: Algo,
        #[arg(long, value_enum, default_value_t = Format::Auto)]
        format: Format,
        #[arg(long, value_enum, default_value_t = Of::Compressed)]
        checksum_of: Of,
        /// Expected bytes of the download.
        #[arg(long)]
        size: Option<u64>,
        /// Expected bytes once decompressed.
        #[arg(long)]
        raw_size: Option<u64>,
        /// Target block device (or file).
        #[arg(long, value_name = "DEV")]
        disk: PathBuf,
        /// Seconds between progress lines.
        #[arg(long, default_value_t = 2.0)]
        progress_every: f64,
    },
    /// Erase disks as deprovisioning does (NVMe sanitize or format, discard that reads back
    /// zeros, else BLKZEROOUT; read-only disks and disks in use are kept) and print the
    /// report per disk as JSON. Without --disk: every disk of this machine.
    Erase {
        /// Only these devices (repeatable; loop devices only when named).
        #[arg(long = "disk", value_name = "DEV")]
        disks: Vec<PathBuf>,
        /// Erase removable disks too.
        #[arg(long)]
        removable: bool,
        /// Use only this method (fails where the device does not offer it): nvme-sanitize-crypto,
        /// nvme-sanitize-block, nvme-format-crypto, nvme-format, discard, zeroout.
        #[arg(long, value_parser = erase_method)]
        method: Option<osie_api::EraseMethod>,
        /// Required without --disk: this erases every disk of the machine it runs on.
        #[arg(long)]
        all_disks_of_this_machine: bool,
    },
    /// List the disks this machine has and why each would be refused as a target.
    Disks {
        /// Minimum size in bytes a disk must have (e.g. the image's raw size).
        #[arg(long)]
        min_size: Option<u64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    Auto,
    Raw,
    Zstd,
    Gzip,
    Xz,
    Qcow2,
}

/// `--method`: an erase method by its wire name (`osie_api::EraseMethod`).
fn erase_method(s: &str) -> Result<osie_api::EraseMethod, String> {
    match serde_json::from_value(serde_json::Value::String(s.to_string())) {
        Ok(osie_api::EraseMethod::Unknown) | Err(_) => Err(format!(
            "{s:?}: one of nvme-sanitize-crypto, nvme-sanitize-block, nvme-format-crypto, nvme-format, discard, zeroout"
        )),
        Ok(m) => Ok(m),
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Algo {
    Sha256,
    Sha512,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Of {
    Compressed,
    Raw,
}

/// Parse arguments, run, and return the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    crate::logging::init(cli.verbose);
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("installer: error: {e:#}");
            1
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let mut http = HttpConfig::default();
    if let Some(ca) = cli.ca_cert {
        http.ca_file = Some(ca);
    }
    http.read_timeout = Duration::from_secs_f64(cli.read_timeout.max(0.1));
    match cli.cmd {
        Cmd::Install { metadata_url, mac, disk, candidates, no_events } => {
            let servers = Servers::parse(&base_urls(&metadata_url)).context("--metadata-url")?;
            let reporter = if no_events { Reporter::disabled(mac) } else { Reporter::new(&servers, mac) };
            let req = InstallRequest { servers, mac, disk, hardware: None };
            let opts = Options { http, candidates, ..Options::default() };
            match install::run_with(&req, &reporter, &opts) {
                Ok(md) if md.erase.is_some() => {
                    tracing::info!("disks erased; the metadata asks to power off (command mode does not)");
                    Ok(())
                }
                Ok(md) => {
                    let finish = md.install.map(|p| p.finish).unwrap_or_default();
                    tracing::info!("installed; the metadata asks to {finish:?} (command mode does not)");
                    Ok(())
                }
                Err(e) => {
                    reporter.failed(&e);
                    Err(e)
                }
            }
        }
        Cmd::WriteImage { url, sha256, algo, format, checksum_of, size, raw_size, disk, progress_every } => {
            let algo = match algo {
                Algo::Sha256 => DigestAlgo::Sha256,
                Algo::Sha512 => DigestAlgo::Sha512,
            };
            let spec = ImageSpec {
                url,
                digest: image::parse_digest(&sha256, algo).context("--sha256")?,
                algo,
                checksum_of: match checksum_of {
                    Of::Compressed => ChecksumOf::Compressed,
                    Of::Raw => ChecksumOf::Raw,
                },
                format: match format {
                    Format::Auto => ImageFormat::Auto,
                    Format::Raw => ImageFormat::Raw,
                    Format::Zstd => ImageFormat::Zstd,
                    Format::Gzip => ImageFormat::Gzip,
                    Format::Xz => ImageFormat::Xz,
                    Format::Qcow2 => ImageFormat::Qcow2,
                },
                size,
                raw_size,
            };
            let target = Target::open(&disk)?;
            let tuning = Tuning {
                progress_every: Duration::from_secs_f64(progress_every.max(0.1)),
                timeouts: http.timeouts(),
                ..Tuning::default()
            };
            let client = http.client()?;
            let out = image::stream(&client, &spec, &target, &tuning, &|p| {
                tracing::info!("image: {}", progress::describe(p));
            })?;
            target.reread_partitions()?;
            let secs = out.elapsed.as_secs_f64();
            tracing::info!(
                "wrote {} bytes ({} written, {} zeroed) from {} downloaded in {secs:.2} s ({:.0} MB/s); {} {} ok; {} resumes, {} restarts; {}",
                out.raw_bytes,
                out.bytes_written,
                out.bytes_zeroed,
                out.downloaded,
                out.raw_bytes as f64 / secs / 1e6,
                image::algo_name(spec.algo),
                out.sha256,
                out.resumes,
                out.restarts,
                out.timings.describe(out.elapsed)
            );
            Ok(())
        }
        Cmd::Disks { min_size, json } => disk::print_report(min_size, json),
        Cmd::Erase { disks, removable, method, all_disks_of_this_machine } => {
            if disks.is_empty() && !all_disks_of_this_machine {
                anyhow::bail!("name the disks with --disk, or give --all-disks-of-this-machine");
            }
            let opts = crate::erase::Options { named: disks, only: method, ..Default::default() };
            let reporter = Reporter::disabled(MacAddr::new([0; 6]));
            let out = crate::erase::run(&osie_api::ErasePlan { removable }, &reporter, &opts)?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
    }
}

/// `--metadata-url` as `osie.url` takes it: each entry's `/metadata` (and trailing `/`) cut.
fn base_urls(list: &str) -> String {
    let base = |u: &str| u.trim_end_matches('/').trim_end_matches(osie_api::paths::METADATA).to_string();
    list.split(',').map(base).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_become_bases() {
        assert_eq!(base_urls("http://a:8080/metadata"), "http://a:8080");
        assert_eq!(base_urls("http://a:8080/,http://b:8080/metadata/"), "http://a:8080,http://b:8080");
        let e = format!("{:#}", Servers::parse(&base_urls("http://a:8080,b:8080")).unwrap_err());
        assert!(e.contains("entry 2 \"b:8080\""), "{e}");
    }
}

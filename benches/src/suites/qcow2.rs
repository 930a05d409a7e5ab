//! Item 1b, qcow2 images: `installer write-image` of a qcow2 file (tables by Range, then the
//! file streamed once, each cluster to its place) beside `qemu-img convert -O raw` of the
//! same file, already on local disk, to the same device, and beside what Ironic's agent does:
//! download the qcow2 into a RAM-backed file (`/dev/shm`), hash it, then `qemu-img convert`
//! it onto the disk. Same nginx, same loop device, same reset as item 1 ([`super::image`]).
//!
//! Inputs (made once from item 1's raw Debian image, kept in `build/bench/inputs/`): the
//! Debian image as qcow2 with 64 KiB clusters, plain and with zlib-compressed clusters (`-c`,
//! how distributions publish their cloud images). Smoke mode: a 64 MiB image.
//!
//! RAM: the tool's peak RSS (wait4 rusage of it and its children); for Ironic's way, plus the
//! file staged in `/dev/shm` (page cache that cannot be dropped until the write is done).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::image::{self, Input, PORT};
use super::{Ctx, Record, SuiteResult};
use osie_testkit::{LoopDev, Netns};

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Installer,
    QemuImg,
    Ironic,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Installer => "installer write-image",
            Tool::QemuImg => "qemu-img convert -O raw (file on local disk)",
            Tool::Ironic => "Ironic's way: download to /dev/shm, qemu-img convert",
        }
    }
}

const STAGED: &str = "/dev/shm/osie-bench-staged.qcow2";

pub fn run(ctx: &Ctx, out: &mut SuiteResult) -> Result<()> {
    if !ctx.installer.is_file() {
        bail!("installer not found at {} (scripts/bench builds it)", ctx.installer.display());
    }
    let inputs_dir = if ctx.quick { ctx.out.join("inputs-quick") } else { ctx.out.join("inputs") };
    std::fs::create_dir_all(&inputs_dir)?;
    let inputs = prepare(ctx, &inputs_dir)?;
    let dir = ctx.scratch("qcow2")?;
    let ns = Netns::new()?;
    let _nginx = image::start_nginx(&ns, &dir, &inputs_dir)?;
    let disk_size = inputs.iter().map(|i| i.raw_size).max().unwrap_or(0) + (64 << 20);
    let disk = LoopDev::new(&dir, disk_size).context("creating the target loop device")?;
    osie_testkit::netns::run(Command::new("losetup").args(["--direct-io=on"]).arg(&disk.path))
        .context("switching the loop device to direct I/O")?;
    let dev = disk.path.to_string_lossy().into_owned();
    out.notes.push(format!(
        "Target, source and reset as in item 1 ({} MiB loop device). MB/s = the disk's bytes (the \
         virtual size) / wall seconds from start to exit. `qemu-img convert` reads the qcow2 from the page \
         cache and writes with `-n -t none -W` (no cache, out-of-order writes, zeros as write-zeroes); \
         Ironic's way is `curl` into `/dev/shm`, `sha256sum` of the file, then `qemu-img convert -O \
         host_device -t directsync -W` (the agent's conversion), timed from the start of the download \
         to a written disk. RAM MiB = peak RSS, plus the staged file for Ironic's way. Every tool's \
         result is checked once per image against the raw image's sha256. Only the installer and \
         Ironic's way check a checksum.",
        disk_size >> 20
    ));
    let base = format!("http://127.0.0.1:{PORT}");
    for input in inputs.iter().filter(|i| ctx.wants(&i.label)) {
        for tool in [Tool::Installer, Tool::QemuImg, Tool::Ironic] {
            let mut rec = Record::new("qcow2", &input.label, tool.name(), tool == Tool::Installer);
            let cmd_text = command_text(ctx, tool, input, &base, &inputs_dir, &dev);
            rec.commands.push(cmd_text.clone());
            eprintln!("-- qcow2 {}: {}", input.label, tool.name());
            for run in 0..ctx.runs {
                image::reset(&dev, &inputs_dir, input)?;
                let log = dir.join(format!("{}.log", tool.name().split_whitespace().next().unwrap_or("tool")));
                let ran = image::run_script(&ns, &cmd_text, &log)
                    .with_context(|| format!("{} on {}", tool.name(), input.label))?;
                if run == 0 {
                    image::verify(&dev, input).with_context(|| format!("{} on {}", tool.name(), input.label))?;
                }
                let gb = input.raw_size as f64 / 1e9;
                let rss = ran.max_rss_kib as f64 / 1024.0;
                let staged = if tool == Tool::Ironic { input.size as f64 / 1048576.0 } else { 0.0 };
                rec.runs.push(BTreeMap::from([
                    ("mb_per_sec".into(), input.raw_size as f64 / 1e6 / ran.seconds),
                    ("seconds".into(), ran.seconds),
                    ("cpu_s".into(), ran.cpu.total()),
                    ("cpu_s_per_gb".into(), ran.cpu.total() / gb),
                    ("cores".into(), ran.cpu.total() / ran.seconds),
                    ("max_rss_mib".into(), rss),
                    ("ram_mib".into(), rss + staged),
                ]));
                eprintln!(
                    "   run {run}: {:.2} s, {:.0} MB/s, {:.2} CPU s, {:.0} MiB RAM",
                    ran.seconds,
                    input.raw_size as f64 / 1e6 / ran.seconds,
                    ran.cpu.total(),
                    rss + staged
                );
            }
            out.records.push(rec);
        }
    }
    let _ = std::fs::remove_file(STAGED);
    Ok(())
}

fn command_text(ctx: &Ctx, tool: Tool, i: &Input, base: &str, inputs: &Path, dev: &str) -> String {
    match tool {
        Tool::Installer => image::installer_command(ctx, i, base, dev),
        Tool::QemuImg => {
            format!("qemu-img convert -n -t none -W -f qcow2 -O raw {} {dev}", inputs.join(&i.zst).display())
        }
        Tool::Ironic => format!(
            "curl -sS --fail -o {STAGED} {base}/{zst} && echo '{sha}  {STAGED}' | sha256sum --quiet -c - && \
             qemu-img convert -t directsync -W -f qcow2 -O host_device {STAGED} {dev}; rc=$?; rm -f {STAGED}; exit $rc",
            zst = i.zst,
            sha = i.sha256,
        ),
    }
}

/// The qcow2 forms of the raw image (cached beside it, by the raw image's sha256).
fn prepare(ctx: &Ctx, dir: &Path) -> Result<Vec<Input>> {
    let raw = if ctx.quick {
        let raw = dir.join("qcow2-src-64m.raw");
        if !raw.exists() {
            super::tftp::write_file(&raw, 8 << 20)?;
            std::fs::OpenOptions::new().write(true).open(&raw)?.set_len(64 << 20)?;
        }
        Input {
            label: "(q) 64 MiB, 8 MiB of data".into(),
            zst: String::new(),
            size: 0,
            sha256: String::new(),
            raw_size: 64 << 20,
            raw_sha256: image::sha256_file(&raw)?,
            raw: image::file_name(&raw),
            packing: String::new(),
        }
    } else {
        image::debian(ctx, dir)?
    };
    let stem = raw.raw.trim_end_matches(".raw").to_string();
    let mut v = Vec::new();
    for (suffix, opts, what) in [("", &[][..], "qcow2"), ("-zlib", &["-c"][..], "qcow2, zlib clusters")] {
        let file = format!("{stem}{suffix}.qcow2");
        let path = dir.join(&file);
        let stamp = dir.join(format!("{file}.source"));
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(raw.raw_sha256.as_str()) || !path.exists() {
            eprintln!("-- qcow2: making {file}");
            let mut c = Command::new("qemu-img");
            c.args(["convert", "-W", "-f", "raw", "-O", "qcow2"]).args(opts).arg(dir.join(&raw.raw)).arg(&path);
            osie_testkit::netns::run(&mut c).with_context(|| format!("making {file}"))?;
            std::fs::write(&stamp, &raw.raw_sha256)?;
        }
        let label = raw.label.split(',').next().unwrap_or(&raw.label).to_string();
        v.push(Input {
            label: format!("{label} as {what}"),
            size: std::fs::metadata(&path)?.len(),
            sha256: image::sha256_file(&path)?,
            zst: file,
            ..raw.clone()
        });
    }
    Ok(v)
}

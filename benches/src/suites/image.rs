//! Item 1, image streaming: `installer write-image` against `curl | zstd -dc | dd bs=4M
//! oflag=direct`, `coreos-installer install` and `dd` of the uncompressed file from local
//! disk, all writing the same images to the same loop device, the compressed ones fetched
//! from the same nginx (in a namespace of its own, over its loopback).
//!
//! Images (built once, kept in `build/bench/inputs/`):
//! (a) the Debian image from `images/` (mostly zeros),
//! (b) 1 GiB of pseudo-random bytes (incompressible; zstd'd all the same),
//! (c) 4 GiB ext4 filesystem holding ~3 GiB of real files copied from this machine's /usr.
//! Compressed like `images/build` does: `images/pack` (zstd -9 in independent 32 MiB frames,
//! one ordinary .zst file that every tool here reads).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Ctx, Record, SuiteResult};
use crate::measure::{self, Ran};
use osie_testkit::{ChildGuard, LoopDev, Netns};

/// How (b) and (c) are compressed; a cached input made otherwise is made again.
const PACKING: &str = "images/pack --level 9 --frame-mib 32";
pub(super) const PORT: u16 = 8080;

/// An image as the tools are given it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input {
    pub label: String,
    /// The zstd file, in the served directory.
    pub zst: String,
    pub size: u64,
    pub sha256: String,
    pub raw_size: u64,
    pub raw_sha256: String,
    /// The uncompressed file, in the served directory (for `dd`).
    pub raw: String,
    /// How the zstd file was made ([`PACKING`] for the inputs made here).
    #[serde(default)]
    pub packing: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Installer,
    Pipeline,
    Coreos,
    Dd,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Installer => "installer write-image",
            Tool::Pipeline => "curl | zstd -dc | dd",
            Tool::Coreos => "coreos-installer install",
            Tool::Dd => "dd of the raw file",
        }
    }
}

pub fn run(ctx: &Ctx, out: &mut SuiteResult) -> Result<()> {
    for (what, p) in [("installer", &ctx.installer), ("coreos-installer", &ctx.coreos_installer)] {
        if !p.is_file() {
            bail!("{what} not found at {} (scripts/bench builds it)", p.display());
        }
    }
    let inputs_dir = if ctx.quick { ctx.out.join("inputs-quick") } else { ctx.out.join("inputs") };
    let inputs = prepare(ctx, &inputs_dir)?;
    let dir = ctx.scratch("image")?;
    let ns = Netns::new()?;
    let _nginx = start_nginx(&ns, &dir, &inputs_dir)?;
    let disk_size = inputs.iter().map(|i| i.raw_size).max().unwrap_or(0) + (64 << 20);
    let disk = LoopDev::new(&dir, disk_size).context("creating the target loop device")?;
    osie_testkit::netns::run(Command::new("losetup").args(["--direct-io=on"]).arg(&disk.path))
        .context("switching the loop device to direct I/O")?;
    let dev = disk.path.to_string_lossy().into_owned();
    out.notes.push(format!(
        "Target: a {} MiB loop device (`losetup --direct-io=on`, so writes reach the backing file on {} \
         without a second page cache), discarded (`blkdiscard`) and its buffers flushed before every run. \
         Source: nginx in a network namespace, the tools fetch over its loopback; the files are read into \
         the page cache before every run, so the network and the source disk are not what is measured. \
         MB/s = raw image bytes / wall seconds from start to exit (each tool's own end: the installer and \
         coreos-installer fsync, `dd oflag=direct` has written through). CPU s/GB = user+sys of the tool \
         and every process it waited for (wait4 rusage), per 10⁹ raw bytes. Every tool's result is checked \
         once per image: the device's first raw-size bytes must hash to the image's raw sha256. \
         Only the installer verifies a checksum while writing.",
        disk_size >> 20,
        crate::machine::disk_kind(&dir),
    ));
    let shim = dir.join("udev-shim");
    std::fs::create_dir_all(&shim)?;
    std::fs::write(shim.join("udevadm"), "#!/bin/sh\n# osie-bench: no udevd here; nothing to settle.\nexit 0\n")?;
    osie_testkit::netns::run(Command::new("chmod").arg("755").arg(shim.join("udevadm")))?;
    let base = format!("http://127.0.0.1:{PORT}");
    for input in inputs.iter().filter(|i| ctx.wants(&i.label)) {
        for tool in [Tool::Installer, Tool::Pipeline, Tool::Coreos, Tool::Dd] {
            let mut rec = Record::new("image", &input.label, tool.name(), tool == Tool::Installer);
            let cmd_text = command_text(ctx, tool, input, &base, &inputs_dir, &dev);
            rec.commands.push(cmd_text.clone());
            eprintln!("-- image {}: {}", input.label, tool.name());
            for run in 0..ctx.runs {
                reset(&dev, &inputs_dir, input)?;
                let log = dir.join(format!("{}.log", tool.name().split_whitespace().next().unwrap_or("tool")));
                let ran =
                    run_script(&ns, &cmd_text, &log).with_context(|| format!("{} on {}", tool.name(), input.label))?;
                if run == 0 {
                    verify(&dev, input).with_context(|| format!("{} on {}", tool.name(), input.label))?;
                }
                let gb = input.raw_size as f64 / 1e9;
                rec.runs.push(BTreeMap::from([
                    ("mb_per_sec".into(), input.raw_size as f64 / 1e6 / ran.seconds),
                    ("seconds".into(), ran.seconds),
                    ("cpu_s".into(), ran.cpu.total()),
                    ("user_s".into(), ran.cpu.user),
                    ("sys_s".into(), ran.cpu.sys),
                    ("cpu_s_per_gb".into(), ran.cpu.total() / gb),
                    ("cores".into(), ran.cpu.total() / ran.seconds),
                    ("max_rss_mib".into(), ran.max_rss_kib as f64 / 1024.0),
                ]));
                eprintln!(
                    "   run {run}: {:.2} s, {:.0} MB/s, {:.2} CPU s",
                    ran.seconds,
                    input.raw_size as f64 / 1e6 / ran.seconds,
                    ran.cpu.total()
                );
            }
            out.records.push(rec);
        }
    }
    Ok(())
}

/// The installer's `write-image` command line for `i` served at `base`, as both image suites
/// run and quote it.
pub(super) fn installer_command(ctx: &Ctx, i: &Input, base: &str, dev: &str) -> String {
    format!(
        "{} write-image --url {base}/{} --sha256 {} --size {} --raw-size {} --disk {dev} --progress-every 60",
        ctx.installer.display(),
        i.zst,
        i.sha256,
        i.size,
        i.raw_size
    )
}

fn command_text(ctx: &Ctx, tool: Tool, i: &Input, base: &str, inputs: &Path, dev: &str) -> String {
    match tool {
        Tool::Installer => installer_command(ctx, i, base, dev),
        Tool::Pipeline => {
            format!("curl -sS --fail {base}/{} | zstd -dc | dd of={dev} bs=4M oflag=direct status=none", i.zst)
        }
        // coreos-installer insists on udev (/run/udev/control, `udevadm settle`); this machine
        // runs no udevd. A private mount namespace gives it the control file and a no-op
        // udevadm (settling on an idle machine returns at once); its own 200 ms sleep before
        // each settle stays.
        Tool::Coreos => format!(
            "unshare -m --propagation private sh -c 'mount -t tmpfs osie-bench /run && mkdir /run/udev && \
             : > /run/udev/control && PATH={shim}:$PATH exec {} install {dev} --image-url {base}/{} --insecure'",
            ctx.coreos_installer.display(),
            i.zst,
            shim = ctx.work.join("image/udev-shim").display(),
        ),
        Tool::Dd => format!("dd if={} of={dev} bs=4M oflag=direct status=none", inputs.join(&i.raw).display()),
    }
}

/// `script` under `bash -o pipefail` in `ns`, measured (wall time, CPU and peak RSS of it and
/// its children), its output in `log`.
pub(super) fn run_script(ns: &Netns, script: &str, log: &Path) -> Result<Ran> {
    let (script, log) = (script.to_string(), log.to_path_buf());
    ns.spawn(move || {
        let mut c = Command::new("bash");
        c.args(["-o", "pipefail", "-c", &script]);
        measure::run_measured(&mut c, &log, "image writer")
    })
    .join()
    .map_err(|_| anyhow::anyhow!("runner thread panicked"))?
}

/// Before each run: the target discarded (its backing file's blocks freed) and its buffers
/// dropped; the image files read into the page cache.
pub(super) fn reset(dev: &str, inputs: &Path, i: &Input) -> Result<()> {
    osie_testkit::netns::run(Command::new("blkdiscard").args(["-f", dev])).context("blkdiscard")?;
    osie_testkit::netns::run(Command::new("blockdev").args(["--flushbufs", dev])).context("blockdev --flushbufs")?;
    for f in [&i.zst, &i.raw] {
        warm(&inputs.join(f))?;
    }
    Ok(())
}

pub(super) fn warm(p: &Path) -> Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut buf = vec![0u8; 8 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// The device's first `raw_size` bytes must be the image.
pub(super) fn verify(dev: &str, i: &Input) -> Result<()> {
    let mib = i.raw_size / (1 << 20);
    let out = osie_testkit::netns::run(Command::new("bash").args([
        "-o",
        "pipefail",
        "-c",
        &format!("dd if={dev} bs=1M count={mib} iflag=direct status=none | sha256sum"),
    ]))?;
    let got = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string();
    if got != i.raw_sha256 {
        bail!("the device holds {got}, the image is {}", i.raw_sha256);
    }
    Ok(())
}

pub(super) fn start_nginx(ns: &Netns, dir: &Path, root: &Path) -> Result<ChildGuard> {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{ worker_connections 256; }}\n\
             http {{ sendfile on; tcp_nopush on; types {{ }} default_type application/octet-stream;\n\
             access_log {d}/nginx-access.log; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             server {{ listen 127.0.0.1:{PORT}; root {r}; location / {{ }} }} }}\n",
            d = dir.display(),
            r = root.display()
        ),
    )?;
    let mut cmd = ns.cmd("nginx");
    cmd.args([
        "-e",
        &dir.join("nginx-error.log").to_string_lossy(),
        "-c",
        &conf.to_string_lossy(),
        "-g",
        "daemon off;",
    ]);
    let g = ChildGuard::spawn("nginx", &mut cmd)?;
    // curl exits 0 on any answer (403 for the directory), 7 while nothing listens.
    osie_testkit::wait_for("nginx to listen", std::time::Duration::from_secs(10), || {
        ns.run("curl", &["-s", "-o", "/dev/null", &format!("http://127.0.0.1:{PORT}/")]).ok()
    })?;
    Ok(g)
}

/// Build the inputs that are missing; return them in order (a), (b), (c).
fn prepare(ctx: &Ctx, dir: &Path) -> Result<Vec<Input>> {
    std::fs::create_dir_all(dir)?;
    let mut v = Vec::new();
    if ctx.quick {
        v.push(cached(dir, "zeros-64m", "(a') 64 MiB, 8 MiB of data then zeros", |raw| {
            super::tftp::write_file(raw, 8 << 20)?;
            std::fs::OpenOptions::new().write(true).open(raw)?.set_len(64 << 20)?;
            Ok(())
        })?);
        v.push(cached(dir, "random-32m", "(b') 32 MiB random", |raw| super::tftp::write_file(raw, 32 << 20))?);
        return Ok(v);
    }
    v.push(debian(ctx, dir)?);
    v.push(cached(dir, "random-1g", "(b) 1 GiB random (incompressible)", |raw| super::tftp::write_file(raw, 1 << 30))?);
    v.push(cached(dir, "usr-4g", "(c) 4 GiB ext4, ~3 GiB of /usr files", usr_filesystem)?);
    Ok(v)
}

/// An input made by `make` (the raw file), compressed and hashed, cached by its manifest.
fn cached(dir: &Path, name: &str, label: &str, make: impl FnOnce(&Path) -> Result<()>) -> Result<Input> {
    let manifest = dir.join(format!("{name}.json"));
    if let Ok(text) = std::fs::read_to_string(&manifest) {
        if let Ok(i) = serde_json::from_str::<Input>(&text) {
            if i.packing == packing_id()? && dir.join(&i.zst).exists() && dir.join(&i.raw).exists() {
                return Ok(i);
            }
            if dir.join(&i.raw).exists() {
                eprintln!("-- image: compressing input {name} again ({PACKING})");
                return finish(dir, &dir.join(&i.raw), &dir.join(&i.zst), label);
            }
        }
    }
    eprintln!("-- image: building input {name}");
    let raw = dir.join(format!("{name}.raw"));
    let zst = dir.join(format!("{name}.raw.zst"));
    make(&raw).with_context(|| format!("making {}", raw.display()))?;
    finish(dir, &raw, &zst, label)
}

/// Compress `raw` into `zst`, hash both, write the manifest.
fn finish(dir: &Path, raw: &Path, zst: &Path, label: &str) -> Result<Input> {
    let name = file_name(raw).trim_end_matches(".raw").to_string();
    let manifest = dir.join(format!("{name}.json"));
    compress(raw, zst)?;
    let i = Input {
        label: label.into(),
        zst: file_name(zst),
        size: std::fs::metadata(zst)?.len(),
        sha256: sha256_file(zst)?,
        raw_size: std::fs::metadata(raw)?.len(),
        raw_sha256: sha256_file(raw)?,
        raw: file_name(raw),
        packing: packing_id()?,
    };
    std::fs::write(&manifest, serde_json::to_string_pretty(&i)?)?;
    Ok(i)
}

/// (a): `build/images/debian-12.raw.zst` from `images/build` (run by scripts/bench), and
/// its raw file for `dd`.
pub(super) fn debian(ctx: &Ctx, dir: &Path) -> Result<Input> {
    let src = ctx.root.join("build/images/debian-12.raw.zst");
    let man = ctx.root.join("build/images/debian-12.json");
    if !src.exists() || !man.exists() {
        bail!("{} is missing: run images/build (scripts/bench does)", src.display());
    }
    #[derive(Deserialize)]
    struct Manifest {
        size: u64,
        raw_size: u64,
        sha256: String,
        raw_sha256: Option<String>,
    }
    let m: Manifest = serde_json::from_str(&std::fs::read_to_string(&man)?).context("debian-12.json")?;
    let zst = dir.join("debian-12.raw.zst");
    let fresh = std::fs::metadata(&zst).map(|z| z.len() == m.size).unwrap_or(false) && sha256_file(&zst)? == m.sha256;
    let raw = dir.join("debian-12.raw");
    if !fresh || !raw.exists() {
        eprintln!("-- image: copying the Debian image and decompressing it for dd");
        std::fs::copy(&src, &zst)?;
        osie_testkit::netns::run(
            Command::new("zstd").args(["-d", "-f", "-q", "--long=27"]).arg(&zst).arg("-o").arg(&raw),
        )?;
    }
    let raw_sha256 = match m.raw_sha256 {
        Some(s) => s,
        None => sha256_file(&raw)?,
    };
    Ok(Input {
        label: format!("(a) Debian 12 image, {} MiB raw (mostly zeros)", m.raw_size >> 20),
        zst: file_name(&zst),
        size: m.size,
        sha256: m.sha256,
        raw_size: m.raw_size,
        raw_sha256,
        raw: file_name(&raw),
        packing: "images/build".into(),
    })
}

/// (c): a 4 GiB ext4 image filled with about 3 GiB of this machine's /usr, directory by
/// directory in a fixed order, skipping any that would pass the budget.
fn usr_filesystem(raw: &Path) -> Result<()> {
    let mnt = raw.with_extension("mnt");
    std::fs::create_dir_all(&mnt)?;
    let script = r#"
set -euo pipefail
img=$1; mnt=$2; budget=$((3 * 1024 * 1024))
rm -f "$img"; truncate -s 4G "$img"
mkfs.ext4 -q -F -L bench-usr "$img"
mount -o loop "$img" "$mnt"
trap 'umount "$mnt"' EXIT
used=0
for d in /usr/bin /usr/sbin /usr/include /usr/libexec /usr/share/* /usr/lib/*; do
    [ -e "$d" ] && [ ! -L "$d" ] || continue
    s=$(du -sk "$d" | cut -f1)
    if [ $((used + s)) -le $budget ]; then
        mkdir -p "$mnt$(dirname "$d")"
        cp -a "$d" "$mnt$(dirname "$d")/"
        used=$((used + s))
    fi
done
echo "copied ${used} KiB"
"#;
    osie_testkit::netns::run(Command::new("bash").args(["-c", script, "usr-fs"]).arg(raw).arg(&mnt))?;
    let _ = std::fs::remove_dir(&mnt);
    Ok(())
}

/// [`PACKING`] and a hash of `images/pack` itself: a changed packer makes the inputs again.
fn packing_id() -> Result<String> {
    let pack = osie_testkit::workspace_root().join("images/pack");
    let hash = sha256_file(&pack)?;
    Ok(format!("{PACKING} (images/pack {})", hash.get(..12).unwrap_or(&hash)))
}

fn compress(raw: &Path, zst: &Path) -> Result<()> {
    let pack = osie_testkit::workspace_root().join("images/pack");
    let args: Vec<&str> = PACKING.split_whitespace().skip(1).collect();
    osie_testkit::netns::run(Command::new(pack).arg(raw).arg(zst).args(args))
        .with_context(|| format!("compressing {} ({PACKING})", raw.display()))?;
    Ok(())
}

pub(super) fn sha256_file(p: &Path) -> Result<String> {
    let out = osie_testkit::netns::run(Command::new("sha256sum").arg(p))?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string())
}

pub(super) fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

//! What the end-to-end runs need from the build, found in one place, with errors that say
//! which command makes what is missing:
//!
//! | input | made by |
//! |---|---|
//! | `build/boot/{vmlinuz,initramfs.img}` | `scripts/build` |
//! | `build/images/debian-12.{json,raw.zst}` | `images/build` |
//! | `build/tftp/{ipxe.efi,undionly.kpxe}` | `scripts/setup` |
//! | arm64 machines: `build/boot/arm64/{vmlinuz,initramfs.img}` | `scripts/build` |
//! | arm64 machines: `build/tftp/grubaa64.efi`, AAVMF | `scripts/setup` |
//! | arm64 UEFI HTTP boot: `build/tftp/grubaa64-http.efi` (that test alone) | `scripts/setup` |
//! | arm64 machines: `build/images/debian-12-arm64.{json,raw.zst}` (optional: without it they install the x86_64 image's bytes and stop there) | `images/build --arch arm64` |
//! | the `bootsvc` binary | cargo (`cargo build -p bootsvc`; `cargo nextest run --workspace` builds it) |
//!
//! `OSIE_BUILD` moves `build/`; `OSIE_BOOTSVC` names the bootsvc binary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use osie_testkit::{require_file, require_root, require_tools, workspace_root};
use serde_json::Value;

/// The OS image every scenario installs.
pub const IMAGE: &str = "debian-12";
/// The same for arm64 machines (`images/build --arch arm64`).
pub const ARM64_IMAGE: &str = "debian-12-arm64";

/// Programs the harness runs.
pub const TOOLS: [&str; 3] = ["qemu-system-x86_64", "ip", "zstd"];
pub use osie_testkit::qemu::{AAVMF_CODE, AAVMF_VARS, OVMF_CODE, OVMF_VARS};

#[derive(Debug, Clone)]
pub struct Inputs {
    pub build: PathBuf,
    pub bootsvc: PathBuf,
    /// `build/boot`: kernel + initramfs, served as bootsvc's artifacts.
    pub boot: PathBuf,
    pub tftp: PathBuf,
    pub images: PathBuf,
    /// The image manifest (`build/images/debian-12.json`), as `images/build` wrote it.
    pub manifest: Value,
}

impl Inputs {
    /// Everything, or an error naming the first missing input and what makes it.
    pub fn locate() -> Result<Inputs> {
        Inputs::at(&build_dir(), bootsvc_binary()?)
    }

    /// Everything, from the build directory `build` and the bootsvc binary given (for
    /// harnesses that know their own, such as the benchmarks' release build).
    pub fn at(build: &Path, bootsvc: PathBuf) -> Result<Inputs> {
        let build = build.to_path_buf();
        if !bootsvc.is_file() {
            bail!("no bootsvc binary at {} (cargo build -p bootsvc makes it)", bootsvc.display());
        }
        for (f, by) in Self::files(&build) {
            if !f.exists() {
                bail!("{} is missing ({by} makes it)", f.display());
            }
        }
        for f in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(f).is_file() {
                bail!("{f} is missing (scripts/setup installs the ovmf package)");
            }
        }
        let manifest_path = build.join("images").join(format!("{IMAGE}.json"));
        let text =
            std::fs::read_to_string(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
        let manifest: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", manifest_path.display()))?;
        Ok(Inputs {
            boot: build.join("boot"),
            tftp: build.join("tftp"),
            images: build.join("images"),
            build,
            bootsvc,
            manifest,
        })
    }

    /// For a test: root, tools and inputs present, or skip (fail under `OSIE_REQUIRE_ALL=1`)
    /// with the reason. `None` means skipped.
    pub fn for_test(test: &str) -> Option<Inputs> {
        if !require_root(test) || !require_tools(test, &TOOLS) {
            return None;
        }
        let build = build_dir();
        for (f, by) in Self::files(&build) {
            if !require_file(test, &f, by) {
                return None;
            }
        }
        match Inputs::locate() {
            Ok(i) => Some(i),
            // Everything the build makes is there: what is left is the machine's setup or
            // the bootsvc binary, which a test cannot do without.
            Err(e) => panic!("{test}: {e:#}"),
        }
    }

    fn files(build: &Path) -> Vec<(PathBuf, &'static str)> {
        vec![
            (build.join("boot/vmlinuz"), "scripts/build"),
            (build.join("boot/initramfs.img"), "scripts/build"),
            (build.join("images").join(format!("{IMAGE}.json")), "images/build"),
            (build.join("images").join(format!("{IMAGE}.raw.zst")), "images/build"),
            (build.join("tftp/ipxe.efi"), "scripts/setup"),
            (build.join("tftp/undionly.kpxe"), "scripts/setup"),
        ]
    }

    /// What an arm64 machine needs besides ([`Inputs::arm64_files`]): an error naming the
    /// first missing and what makes it.
    pub fn check_arm64(&self) -> Result<()> {
        for (f, by) in Self::arm64_files(&self.build) {
            if !f.exists() {
                bail!("{} is missing ({by} makes it)", f.display());
            }
        }
        Ok(())
    }

    /// For an arm64 test: [`Inputs::for_test`], `qemu-system-aarch64` and the arm64 files,
    /// or skip (fail under `OSIE_REQUIRE_ALL=1`).
    pub fn for_arm64_test(test: &str) -> Option<Inputs> {
        if !require_tools(test, &["qemu-system-aarch64"]) {
            return None;
        }
        let inputs = Inputs::for_test(test)?;
        for (f, by) in Self::arm64_files(&inputs.build) {
            if !require_file(test, &f, by) {
                return None;
            }
        }
        Some(inputs)
    }

    fn arm64_files(build: &Path) -> Vec<(PathBuf, &'static str)> {
        vec![
            (build.join("boot/arm64/vmlinuz"), "scripts/build"),
            (build.join("boot/arm64/initramfs.img"), "scripts/build"),
            (build.join("tftp/grubaa64.efi"), "scripts/setup"),
            (AAVMF_CODE.into(), "scripts/setup (package qemu-efi-aarch64)"),
            (AAVMF_VARS.into(), "scripts/setup (package qemu-efi-aarch64)"),
        ]
    }

    /// The arm64 OS image's name, when the build has one (`images/build --arch arm64`).
    pub fn arm64_image(&self) -> Option<&'static str> {
        let has = |ext: &str| self.images.join(format!("{ARM64_IMAGE}.{ext}")).is_file();
        (has("json") && has("raw.zst")).then_some(ARM64_IMAGE)
    }

    /// The image file (`build/images/debian-12.raw.zst`).
    pub fn image_file(&self) -> PathBuf {
        let file = self.manifest["file"].as_str().unwrap_or("debian-12.raw.zst");
        self.images.join(file)
    }

    /// The image's sha256 as the manifest gives it.
    pub fn image_sha256(&self) -> &str {
        self.manifest["sha256"].as_str().unwrap_or_default()
    }

    /// The same OS as a qcow2 image with zstd-compressed clusters (what `qemu-img convert -c
    /// -o compression_type=zstd` writes from the decompressed image), in an images directory
    /// of its own under `dir` with its manifest (`format: qcow2`): these inputs, serving it
    /// under the same name. About 20 s on 2 cores; needs `qemu-img`.
    pub fn as_qcow2(&self, dir: &Path) -> Result<Inputs> {
        self.derived(dir, "qcow2", "qcow2", |raw, out| {
            let raw = raw.context("qcow2 is made from the raw file")?;
            run(std::process::Command::new("qemu-img")
                .args(["convert", "-W", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd"])
                .arg(raw)
                .arg(out))
            .map(|_| ())
        })
    }

    /// The same disk as one gzip stream (`.raw.gz`, `gzip -1`), as Tinkerbell's image2disk
    /// examples serve it, in an images directory of its own under `dir` with its manifest
    /// (`format: gzip`). About 30 s on this machine; the raw disk never touches the disk here.
    pub fn as_raw_gz(&self, dir: &Path) -> Result<Inputs> {
        self.derived(dir, "gzip", "raw.gz", |_, out| {
            use std::process::{Command, Stdio};
            let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
            let mut unzstd = Command::new("zstd")
                .args(["-d", "-q", "-c"])
                .arg(self.image_file())
                .stdout(Stdio::piped())
                .spawn()
                .context("running zstd -d")?;
            let pipe = unzstd.stdout.take().context("zstd's stdout")?;
            let gz = Command::new("gzip").arg("-1").stdin(pipe).stdout(file).status().context("running gzip -1")?;
            let z = unzstd.wait().context("waiting for zstd -d")?;
            anyhow::ensure!(
                z.success() && gz.success(),
                "zstd -d {} | gzip -1: {z}, {gz}",
                self.image_file().display()
            );
            Ok(())
        })
    }

    /// Inputs serving another form of the image (`{IMAGE}.{ext}`, made by `make` from the raw
    /// file when it asks for one, else from the packed file) under the same name.
    fn derived(
        &self,
        dir: &Path,
        format: &str,
        ext: &str,
        make: impl FnOnce(Option<&Path>, &Path) -> Result<()>,
    ) -> Result<Inputs> {
        let images = dir.join(format!("images-{format}"));
        std::fs::create_dir_all(&images).with_context(|| format!("creating {}", images.display()))?;
        let out = images.join(format!("{IMAGE}.{ext}"));
        let raw_size = self.manifest["raw_size"].as_u64();
        if format == "qcow2" {
            let raw = images.join(format!("{IMAGE}.raw"));
            run(std::process::Command::new("zstd")
                .args(["-d", "-q", "-f", "--sparse", "-o"])
                .arg(&raw)
                .arg(self.image_file()))?;
            let r = make(Some(&raw), &out);
            std::fs::remove_file(&raw)?;
            r?;
        } else {
            make(None, &out)?;
        }
        let sum = run(std::process::Command::new("sha256sum").arg(&out))?;
        let sha256 = sum.split_whitespace().next().context("sha256sum printed nothing")?.to_string();
        let manifest = serde_json::json!({
            "name": IMAGE,
            "file": format!("{IMAGE}.{ext}"),
            "format": format,
            "size": std::fs::metadata(&out)?.len(),
            "raw_size": raw_size,
            "sha256": sha256,
        });
        std::fs::write(images.join(format!("{IMAGE}.json")), manifest.to_string())?;
        Ok(Inputs { images, manifest, ..self.clone() })
    }
}

fn run(cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn build_dir() -> PathBuf {
    std::env::var_os("OSIE_BUILD").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("build"))
}

/// `OSIE_BOOTSVC`, else the `bootsvc` cargo built beside this executable: tests run from
/// `target/<profile>/deps/`, the demo from `target/<profile>/`.
fn bootsvc_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("OSIE_BOOTSVC") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("OSIE_BOOTSVC={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let candidates: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(|d| d.join("bootsvc")).collect();
    candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
        format!(
            "no bootsvc binary at {} (build it: cargo build -p bootsvc, or set OSIE_BOOTSVC)",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
        )
    })
}

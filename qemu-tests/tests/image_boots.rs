//! The OS image that `images/build` makes boots by itself, under SeaBIOS and under OVMF, and
//! cloud-init in it runs the machine's user-data; so does its arm64 build
//! (`images/build --arch arm64`) on QEMU's `virt` machine under AAVMF, the arm64 UEFI.
//!
//! Each test decompresses the image as bootsvc serves it (`build/images/debian-12.raw.zst`,
//! arm64 `debian-12-arm64.raw.zst`; `OSIE_TEST_IMAGE` names another recipe's), writes a NoCloud
//! seed into its root filesystem the way
//! the installer does (ext4 mounted from a loop device, files in
//! `/var/lib/cloud/seed/nocloud/`), and boots it in QEMU (TCG, 1 GiB, virtio disk and NIC)
//! on a bridge in a network namespace of its own, where dnsmasq answers DHCP and a small
//! HTTP server takes the machine's POST. The user-data's runcmd
//! prints a marker on the serial console and posts the machine's network state back, so the
//! test proves: the firmware found GRUB, GRUB the kernel, the initramfs the virtio disk,
//! cloud-init the seed, cloud-init's fallback network config got an address by DHCP, and
//! curl reached a server (what phone-home needs).
//!
//! `image_layout_matches_manifest` (and `…_arm64`) checks the artifact itself: manifest sizes,
//! checksums and architecture, partition numbers and types, filesystem label, the ESP's boot
//! file, no seed baked in.
//!
//! Skipped when the image has not been built (`images/build`); under `OSIE_REQUIRE_ALL=1`
//! that fails instead. Serial console, dnsmasq and QEMU logs of a failed boot are kept in
//! `qemu-tests/artifacts/`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use osie_testkit::qemu::{self, Drive, Nic, Qemu};
use osie_testkit::{require_file, require_root, require_tools, unique, wait_for, workspace_root, ChildGuard, Netns};
use serde_json::Value;

/// The image under test; `OSIE_TEST_IMAGE=debian-12-generic` tests another recipe's image
/// (and `debian-12-generic-arm64` for the arm64 tests).
fn image_name(arch: Arch) -> String {
    let recipe = std::env::var("OSIE_TEST_IMAGE").unwrap_or_else(|_| "debian-12".into());
    match arch {
        Arch::X86_64 => recipe,
        // images/build's name for the recipe built with --arch arm64.
        Arch::Aarch64 => format!("{recipe}-arm64"),
    }
}
/// Boot to cloud-init's final stage takes 1.5 to 3 minutes under TCG on this 2-core
/// machine, depending on what else runs; the limit leaves room for a loaded CI run.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// An arm64 machine under TCG (every instruction translated, no x86 host help) takes longer.
const BOOT_TIMEOUT_ARM64: Duration = Duration::from_secs(1200);

// GPT layout of Debian cloud images, which the image keeps and the installer relies on.
const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
const TYPE_ROOT_ARM64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";
const TYPE_LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
const TYPE_BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// Debian's `qemu-efi-aarch64`: the UEFI of QEMU's arm64 `virt` machine (64 MiB flash
/// images, the variable store copied per machine). The `.ms` store has Microsoft's keys
/// enrolled and Secure Boot enforcing, as servers ship: the image boots through Debian's
/// signed shim, GRUB and kernel, or not at all.
const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
const AAVMF_VARS_SECURE_BOOT: &str = "/usr/share/AAVMF/AAVMF_VARS.ms.fd";

/// The image's architecture, as its manifest says it (`arch`; absent: x86_64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    fn manifest_value(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The serial console the image's kernel command line names, where the user-data writes.
    fn serial_device(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Firmware {
    Bios,
    Uefi,
    /// AAVMF on `qemu-system-aarch64 -M virt -cpu cortex-a57`.
    Arm64Uefi,
}

impl Firmware {
    fn arch(self) -> Arch {
        match self {
            Firmware::Bios | Firmware::Uefi => Arch::X86_64,
            Firmware::Arm64Uefi => Arch::Aarch64,
        }
    }
}

#[test]
fn image_boots_bios() {
    boot_test("image_boots_bios", Firmware::Bios);
}

#[test]
fn image_boots_uefi() {
    boot_test("image_boots_uefi", Firmware::Uefi);
}

#[test]
#[ignore = "needs the arm64 OS image (images/build --arch arm64: most of an hour under emulation); OSIE_ARM64_IMAGE=1 scripts/test runs it"]
fn image_boots_arm64_uefi() {
    boot_test("image_boots_arm64_uefi", Firmware::Arm64Uefi);
}

#[test]
fn image_layout_matches_manifest() {
    layout_test("image_layout_matches_manifest", Arch::X86_64);
}

#[test]
#[ignore = "needs the arm64 OS image (images/build --arch arm64: most of an hour under emulation); OSIE_ARM64_IMAGE=1 scripts/test runs it"]
fn image_layout_matches_manifest_arm64() {
    layout_test("image_layout_matches_manifest_arm64", Arch::Aarch64);
}

fn layout_test(test: &str, arch: Arch) {
    let Some(image) = built_image(test, arch) else { return };
    if !require_root(test) || !require_tools(test, &["zstd", "sha256sum", "sfdisk", "blkid", "mdir", "mount"]) {
        return;
    }
    let scratch = Scratch::new(test).unwrap();
    check_layout(&image, arch, &scratch).unwrap();
}

fn boot_test(test: &str, fw: Firmware) {
    let Some(image) = built_image(test, fw.arch()) else { return };
    let qemu = match fw.arch() {
        Arch::X86_64 => "qemu-system-x86_64",
        Arch::Aarch64 => "qemu-system-aarch64",
    };
    let tools = [qemu, "zstd", "sfdisk", "mount", "dnsmasq", "ip"];
    if !require_root(test) || !require_tools(test, &tools) {
        return;
    }
    if let Firmware::Arm64Uefi = fw {
        for f in [AAVMF_CODE, AAVMF_VARS_SECURE_BOOT] {
            if !require_file(test, Path::new(f), "scripts/setup (package qemu-efi-aarch64)") {
                return;
            }
        }
    }
    let scratch = Scratch::new(test).unwrap();
    if let Err(e) = boot(&image, &scratch, fw) {
        let kept = scratch.keep_logs(test);
        panic!("{test}: {e:#}\nlogs kept in {}", kept.display());
    }
}

/// The built image and its manifest, or `None` (test skipped) when `images/build` has not run.
fn built_image(test: &str, arch: Arch) -> Option<Image> {
    let dir = std::env::var_os("OSIE_BUILD").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("build"));
    let manifest_path = dir.join("images").join(format!("{}.json", image_name(arch)));
    let made_by = match arch {
        Arch::X86_64 => "images/build",
        Arch::Aarch64 => "images/build --arch arm64",
    };
    if !require_file(test, &manifest_path, made_by) {
        return None;
    }
    let text = std::fs::read_to_string(&manifest_path).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let file = manifest["file"].as_str().expect("manifest names its file");
    Some(Image { zst: dir.join("images").join(file), manifest })
}

struct Image {
    zst: PathBuf,
    manifest: Value,
}

impl Image {
    /// Decompress into `dir` as a sparse raw disk the test may change.
    fn decompress_to(&self, dir: &Path) -> Result<PathBuf> {
        let raw = dir.join("disk.raw");
        // --long=31: the decoder window the installer allows, whatever the image was made with.
        run(Command::new("zstd").args(["-d", "-q", "-f", "--long=31", "-o"]).arg(&raw).arg(&self.zst))?;
        Ok(raw)
    }
}

fn boot(image: &Image, scratch: &Scratch, fw: Firmware) -> Result<()> {
    let disk = image.decompress_to(&scratch.dir)?;
    let nonce = unique("m");
    let marker = format!("osie-image-marker {nonce}-42");
    let tty = fw.arch().serial_device();
    // The literal marker is not in the user-data (the shell computes 42), so seeing it on
    // the console means the command ran, not that something echoed the user-data.
    let user_data = format!(
        "#cloud-config\n\
         runcmd:\n\
         \x20 - echo \"osie-image-marker {nonce}-$((6*7))\" > /dev/{tty}\n\
         \x20 - (ls /etc/systemd/network; ip -4 -o addr show scope global) | curl -fsS -m 20 --retry 5 \
         --retry-connrefused --data-binary @- http://192.0.2.1:8080/phone-home/{nonce}\n"
    );
    let meta_data = format!("instance-id: {nonce}\nlocal-hostname: image-test\n");
    seed_nocloud(&disk, &scratch.dir.join("mnt"), &meta_data, &user_data).context("writing the NoCloud seed")?;

    // A bridge in a namespace of our own: dnsmasq answers DHCP, the HTTP server takes the POST.
    let ns = Netns::new()?;
    ns.add_bridge("br0", "192.0.2.1/24")?;
    ns.add_tap("tap0", "br0")?;
    let leases = scratch.dir.join("dnsmasq.leases");
    let dnsmasq_log = std::fs::File::create(scratch.dir.join("dnsmasq.log"))?;
    let _dnsmasq = ChildGuard::spawn(
        "dnsmasq",
        ns.cmd("dnsmasq")
            .args(["--no-daemon", "--conf-file=/dev/null", "--port=0", "--bind-interfaces", "--interface=br0"])
            .args(["--dhcp-range=192.0.2.50,192.0.2.99,255.255.255.0,1h", "--log-dhcp"])
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .stdout(Stdio::from(dnsmasq_log.try_clone()?))
            .stderr(Stdio::from(dnsmasq_log)),
    )?;
    let posts = PostServer::start(&ns)?;

    let serial = scratch.dir.join("serial.log");
    let mut q = Qemu::new(1024, &serial);
    (q.cpus, q.no_reboot) = (Some(1), true);
    // No option ROM: the firmware must boot the disk, not iPXE. The NIC comes first on the
    // bus, the disk after it. AAVMF drives the NIC without a ROM and would try PXE and HTTP
    // boot on it first (minutes under TCG): the disk is its first boot option instead (QEMU's
    // boot order, which AAVMF follows).
    let disk_first = matches!(fw, Firmware::Arm64Uefi).then_some(1);
    q.nic(Nic { tap: "tap0".into(), mac: None, rom: false, bootindex: None }).disk(Drive {
        cache_unsafe: true,
        bootindex: disk_first,
        ..Drive::new(&disk)
    });
    let mut cmd = match fw {
        Firmware::Bios => q.command(&ns),
        Firmware::Uefi => {
            q.firmware = qemu::Firmware::ovmf(&scratch.dir.join("OVMF_VARS.fd"))?;
            q.command(&ns)
        }
        Firmware::Arm64Uefi => arm64_command(&mut q, &ns, &scratch.dir)?,
    };
    let qemu_log = std::fs::File::create(scratch.dir.join("qemu.log"))?;
    cmd.stdout(Stdio::from(qemu_log.try_clone()?)).stderr(Stdio::from(qemu_log));
    let start = Instant::now();
    let mut vm = ChildGuard::spawn("qemu", &mut cmd)?;

    let mut running = Ok(());
    let timeout = match fw.arch() {
        Arch::X86_64 => BOOT_TIMEOUT,
        Arch::Aarch64 => BOOT_TIMEOUT_ARM64,
    };
    let marker_at = wait_for("the user-data's marker on the serial console (cloud-init runcmd)", timeout, || {
        if running.is_ok() {
            running = vm.check_running();
        }
        let console = std::fs::read(&serial).unwrap_or_default();
        if String::from_utf8_lossy(&console).contains(&marker) {
            return Some(Ok(start.elapsed()));
        }
        running.as_ref().err().map(|e| Err(anyhow::anyhow!("{e:#}")))
    })
    .and_then(|r| r)
    .with_context(|| format!("{fw:?} boot: {}", last_phase(&serial)))?;
    let post = wait_for("the POST from the machine's runcmd (network by DHCP)", Duration::from_secs(120), || {
        posts.received().into_iter().find(|(path, _)| path.ends_with(&nonce))
    })
    .with_context(|| format!("{fw:?} boot: {}", last_phase(&serial)))?;
    let post_at = start.elapsed();

    let (_, body) = post;
    ensure!(
        body.contains("10-cloud-init-"),
        "cloud-init's fallback network config was not rendered for systemd-networkd: machine reported {body:?}"
    );
    ensure!(
        body.contains("inet 192.0.2.") && body.contains("dynamic"),
        "the machine's address is not a DHCP lease from the test's dnsmasq: machine reported {body:?}"
    );
    let lease = std::fs::read_to_string(&leases).unwrap_or_default();
    ensure!(lease.contains("192.0.2."), "dnsmasq handed out no lease (leases: {lease:?})");
    if let Firmware::Arm64Uefi = fw {
        // The kernel's own word that the firmware enforced Secure Boot on the chain it ran.
        let console = String::from_utf8_lossy(&std::fs::read(&serial)?).into_owned();
        ensure!(
            console.contains("secureboot: Secure boot enabled"),
            "the arm64 machine booted without Secure Boot enforcing (no \"secureboot: Secure boot enabled\" on the console)"
        );
    }
    eprintln!(
        "{fw:?}: cloud-init runcmd marker on the console {:.1} s after QEMU started, POST received at {:.1} s",
        marker_at.as_secs_f64(),
        post_at.as_secs_f64()
    );
    Ok(())
}

/// `qemu-system-aarch64` for the machine `q` describes: QEMU's `virt` machine with a Cortex-A57
/// (what the arm64 kernel and AAVMF support everywhere; `-cpu max` would add pointer
/// authentication, slow to emulate) under AAVMF enforcing Secure Boot, with its own copy of
/// the variable store in `dir`. (The test kit's machines are x86; its arguments for the rest hold for `virt` too.)
fn arm64_command(q: &mut Qemu, ns: &Netns, dir: &Path) -> Result<Command> {
    let vars = dir.join("AAVMF_VARS.fd");
    std::fs::copy(AAVMF_VARS_SECURE_BOOT, &vars)
        .with_context(|| format!("copying {AAVMF_VARS_SECURE_BOOT} to {}", vars.display()))?;
    (q.machine, q.cpu) = (Some("virt".into()), Some("cortex-a57".into()));
    let mut cmd = ns.cmd("qemu-system-aarch64");
    cmd.args(q.args());
    cmd.args(["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}")]);
    let mut vars_arg = std::ffi::OsString::from("if=pflash,format=raw,unit=1,file=");
    vars_arg.push(&vars);
    cmd.arg("-drive").arg(vars_arg);
    Ok(cmd)
}

/// The last systemd / cloud-init line on the console, to say how far a failed boot came.
fn last_phase(serial: &Path) -> String {
    let console = std::fs::read(serial).unwrap_or_default();
    let console = String::from_utf8_lossy(&console);
    let interesting =
        ["Cloud-init v.", "Reached target", "Booting `", "Linux version", "EFI stub", "BdsDxe", "Booting from"];
    match console.lines().rev().find(|l| interesting.iter().any(|k| l.contains(k))) {
        Some(line) => format!("last boot phase seen on the console: {}", line.trim()),
        None => "nothing recognisable on the serial console (firmware or GRUB did not start)".into(),
    }
}

/// Write a NoCloud seed into partition 1 (the ext4 root) of a raw disk, as the installer does.
fn seed_nocloud(disk: &Path, mnt: &Path, meta_data: &str, user_data: &str) -> Result<()> {
    let root = partition(disk, 1)?;
    std::fs::create_dir_all(mnt)?;
    let m = LoopMount::new(disk, root.start * 512, root.size * 512, mnt)?;
    let seed = m.dir.join("var/lib/cloud/seed/nocloud");
    std::fs::create_dir_all(&seed).with_context(|| format!("creating {}", seed.display()))?;
    std::fs::write(seed.join("meta-data"), meta_data)?;
    std::fs::write(seed.join("user-data"), user_data)?;
    Ok(())
}

fn check_layout(image: &Image, arch: Arch, scratch: &Scratch) -> Result<()> {
    let m = &image.manifest;
    let name = image_name(arch);
    ensure!(m["name"] == name.as_str() && m["format"] == "zstd", "manifest names {name}, format zstd: {m}");
    // Absent means x86_64, as bootsvc reads it.
    let said = m["arch"].as_str().unwrap_or("x86_64");
    ensure!(said == arch.manifest_value(), "manifest arch {said} but the image is {}", arch.manifest_value());
    ensure!(m["checksum_of"] == "compressed", "manifest checksum_of: {m}");
    let size = std::fs::metadata(&image.zst)?.len();
    ensure!(m["size"] == size, "manifest size {} but {} has {size} bytes", m["size"], image.zst.display());
    ensure!(m["sha256"] == sha256(&image.zst)?, "manifest sha256 does not match {}", image.zst.display());

    let disk = image.decompress_to(&scratch.dir)?;
    let raw_size = std::fs::metadata(&disk)?.len();
    ensure!(m["raw_size"] == raw_size, "manifest raw_size {} but the image decompresses to {raw_size}", m["raw_size"]);
    ensure!(m["raw_sha256"] == sha256(&disk)?, "manifest raw_sha256 does not match the decompressed image");

    // Partition numbers 1, 14, 15 (not renumbered), each of its type, root last on the disk;
    // arm64 has no BIOS, so no 14.
    let root = partition(&disk, 1)?;
    let esp = partition(&disk, 15)?;
    let root_type = match arch {
        Arch::X86_64 => TYPE_ROOT_X86_64,
        Arch::Aarch64 => TYPE_ROOT_ARM64,
    };
    ensure!(root.kind == root_type || root.kind == TYPE_LINUX_FS, "partition 1 type {}", root.kind);
    ensure!(esp.kind == TYPE_ESP, "partition 15 type {}", esp.kind);
    ensure!(root.start > esp.start, "root is not the last partition");
    match arch {
        Arch::X86_64 => {
            let bios = partition(&disk, 14)?;
            ensure!(bios.kind == TYPE_BIOS_BOOT, "partition 14 type {}", bios.kind);
            ensure!(root.start > bios.start, "root is not the last partition");
        }
        Arch::Aarch64 => ensure!(partition(&disk, 14).is_err(), "an arm64 image has a partition 14 (BIOS boot)"),
    }

    let probe = |p: &Partition| -> Result<String> {
        let out =
            run(Command::new("blkid").args(["-p", "-o", "export", "-O"]).arg((p.start * 512).to_string()).arg(&disk))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let root_fs = probe(&root)?;
    ensure!(root_fs.contains("TYPE=ext4") && root_fs.contains("LABEL=root"), "partition 1: {root_fs}");
    ensure!(probe(&esp)?.contains("TYPE=vfat"), "partition 15 is not vfat");
    let esp_dir = run(Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", disk.display(), esp.start * 512))
        .arg("::/EFI/BOOT"))?;
    // The removable-media path of the architecture: what firmware without boot entries runs.
    let boot_file = match arch {
        Arch::X86_64 => "BOOTX64",
        Arch::Aarch64 => "BOOTAA64",
    };
    ensure!(String::from_utf8_lossy(&esp_dir.stdout).contains(boot_file), "ESP has no \\EFI\\BOOT\\{boot_file}.EFI");

    // The root filesystem: bootable, and nothing in it that must differ between machines.
    let mnt = scratch.dir.join("mnt");
    std::fs::create_dir_all(&mnt)?;
    let m = LoopMount::new(&disk, root.start * 512, root.size * 512, &mnt)?;
    let grub_cfg = std::fs::read_to_string(m.dir.join("boot/grub/grub.cfg")).context("reading /boot/grub/grub.cfg")?;
    let console = format!("console={},115200", arch.serial_device());
    ensure!(grub_cfg.contains(&console), "kernel command line lacks the serial console {console}: {grub_cfg}");
    ensure!(m.dir.join("vmlinuz").exists() && m.dir.join("initrd.img").exists(), "no /vmlinuz or /initrd.img");
    ensure!(m.dir.join("usr/bin/cloud-init").exists(), "cloud-init is not installed");
    let seed = m.dir.join("var/lib/cloud/seed");
    ensure!(!seed.exists() || std::fs::read_dir(&seed)?.next().is_none(), "a cloud-init seed is baked into the image");
    let host_keys: Vec<_> = std::fs::read_dir(m.dir.join("etc/ssh"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ssh_host_"))
        .collect();
    ensure!(host_keys.is_empty(), "SSH host keys are baked into the image: {host_keys:?}");
    ensure!(std::fs::read(m.dir.join("etc/machine-id"))?.is_empty(), "/etc/machine-id is not empty");
    Ok(())
}

struct Partition {
    start: u64,
    size: u64,
    kind: String,
}

/// Partition `n` of a raw disk's GPT, by its number (sfdisk names it `<disk><n>`).
fn partition(disk: &Path, n: u32) -> Result<Partition> {
    let out = run(Command::new("sfdisk").arg("--json").arg(disk))?;
    let table: Value = serde_json::from_slice(&out.stdout).context("parsing sfdisk --json")?;
    let node = format!("{}{n}", disk.display());
    let parts = table["partitiontable"]["partitions"].as_array().context("sfdisk: no partitions")?;
    let p =
        parts.iter().find(|p| p["node"] == node.as_str()).with_context(|| format!("no partition {n} in {parts:?}"))?;
    Ok(Partition {
        start: p["start"].as_u64().context("start")?,
        size: p["size"].as_u64().context("size")?,
        kind: p["type"].as_str().context("type")?.to_uppercase(),
    })
}

fn sha256(path: &Path) -> Result<String> {
    let out = run(Command::new("sha256sum").arg(path))?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string())
}

fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// An ext4 filesystem inside an image file, mounted through a loop device at an offset;
/// unmounted on drop (the loop device goes with it: `mount -o loop` sets autoclear).
struct LoopMount {
    dir: PathBuf,
}

impl LoopMount {
    fn new(image: &Path, offset: u64, size: u64, dir: &Path) -> Result<LoopMount> {
        run(Command::new("mount")
            .args(["-t", "ext4", "-o"])
            .arg(format!("loop,offset={offset},sizelimit={size}"))
            .arg(image)
            .arg(dir))
        .with_context(|| format!("mounting the root filesystem of {}", image.display()))?;
        Ok(LoopMount { dir: dir.to_path_buf() })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if Command::new("umount").arg(&self.dir).status().map(|s| !s.success()).unwrap_or(true) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A scratch directory for one test (disk copy, logs), removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(test: &str) -> Result<Scratch> {
        let dir = std::env::temp_dir().join(unique(&format!("osie-{test}-")));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch { dir })
    }

    /// Copy the logs (not the disk) to `qemu-tests/artifacts/<test>-<id>/` and return it.
    fn keep_logs(&self, test: &str) -> PathBuf {
        let name = self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| test.into());
        let dest = workspace_root().join("qemu-tests/artifacts").join(name);
        let _ = std::fs::create_dir_all(&dest);
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log" || e == "leases") {
                let _ = std::fs::copy(&path, dest.join(entry.file_name()));
            }
        }
        dest
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP/1.1 server inside a namespace (192.0.2.1:8080) that records each request's path
/// and body and answers 200: what the machine's runcmd posts to.
struct PostServer {
    got: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
}

impl PostServer {
    fn start(ns: &Netns) -> Result<PostServer> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        ns.spawn(move || {
            let listener = TcpListener::bind("192.0.2.1:8080").context("binding 192.0.2.1:8080");
            let listener = match listener {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            listener.set_nonblocking(true)?;
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if let Ok(req) = read_request(conn) {
                            g.lock().unwrap().push(req);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        });
        ready_rx.recv().context("HTTP server thread")?.map_err(anyhow::Error::msg)?;
        Ok(PostServer { got, stop })
    }

    fn received(&self) -> Vec<(String, String)> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for PostServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Read one request (request line, headers, Content-Length body) and answer 200.
fn read_request(mut conn: std::net::TcpStream) -> Result<(String, String)> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = conn.read(&mut chunk)?;
        ensure!(n > 0, "connection closed before the end of the headers");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse()))
        .transpose()?
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = conn.read(&mut chunk)?;
        ensure!(n > 0, "connection closed before the end of the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
    Ok((path, String::from_utf8_lossy(&buf[header_end..header_end + length]).into_owned()))
}

//! `scripts/demo`'s engine: one empty QEMU machine provisioned end to end by bootsvc and the
//! installer, its phases printed as they happen, then the whole timeline relative to
//! power-on. Needs root and the build outputs (`scripts/demo` makes them first). With
//! `--arch arm64` the machine is an arm64 server (QEMU's `virt` board with AAVMF, UEFI PXE →
//! Debian's arm64 GRUB); without the arm64 OS image in the build it installs the x86_64
//! image's bytes and stops at `installed`.
//!
//! Ctrl-C stops it cleanly: QEMU and bootsvc are stopped, the namespace deleted.

use std::collections::HashSet;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use osie_api::Phase;
use osie_qemu_tests::clock::fmt_offset;
use osie_qemu_tests::flow::{self, Limits};
use osie_qemu_tests::inputs::IMAGE;
use osie_qemu_tests::timeline::{Mark, Step, Timeline};
use osie_qemu_tests::{signals, Disk, Firmware, Inputs, Lab, Machine, Record, Spec};

/// Provision one QEMU machine end to end and print its timeline.
#[derive(Debug, Parser)]
#[command(name = "demo")]
struct Args {
    /// Boot with UEFI (OVMF's own PXE client, which loads ipxe.efi over TFTP) instead of
    /// SeaBIOS with QEMU's iPXE NIC ROM.
    #[arg(long, conflicts_with = "firmware")]
    uefi: bool,
    /// The machine's firmware.
    #[arg(long, value_enum, default_value_t = Fw::Bios)]
    firmware: Fw,
    /// The machine's architecture: arm64 is QEMU's `virt` board (Cortex-A57) with AAVMF,
    /// whose UEFI PXE client (arch 11) loads Debian's arm64 GRUB over TFTP (the firmware
    /// options do not apply).
    #[arg(long, value_enum, default_value_t = Arch::X86_64, conflicts_with_all = ["uefi", "firmware"])]
    arch: Arch,
    /// Size of the machine's blank disk, GiB.
    #[arg(long, default_value_t = 4)]
    disk_gib: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Fw {
    /// SeaBIOS with QEMU's iPXE NIC ROM.
    Bios,
    /// OVMF, NIC ROM disabled: UEFI PXE (arch 7) → ipxe.efi over TFTP.
    Uefi,
    /// OVMF, NIC ROM disabled, PXE off: UEFI HTTP boot (arch 16) → ipxe.efi over HTTP.
    UefiHttp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    Arm64,
}

const MAC: &str = "52:54:00:de:00:01";

fn main() -> ExitCode {
    let args = Args::parse();
    signals::install();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let fw = match (args.arch, args.uefi, args.firmware) {
        (Arch::Arm64, _, _) => Firmware::Arm64UefiPxe,
        (_, true, _) | (_, false, Fw::Uefi) => Firmware::UefiPxe,
        (_, false, Fw::Bios) => Firmware::Bios,
        (_, false, Fw::UefiHttp) => Firmware::UefiHttp,
    };
    let inputs = Inputs::locate().context("scripts/demo builds these first")?;
    let (rec, first_boot) = if args.arch == Arch::Arm64 {
        inputs.check_arm64().context("scripts/demo --arch arm64 builds these first")?;
        let image = inputs.arm64_image();
        if image.is_none() {
            println!(
                "no arm64 OS image in {} (images/build --arch arm64): the machine installs the {IMAGE} image's \
                 bytes and the demo stops at `installed`\n",
                inputs.images.display()
            );
        }
        (Record::arm64("demo1", MAC, Lab::address(1), image.unwrap_or(IMAGE)), image.is_some())
    } else {
        (Record::new("demo1", MAC, Lab::address(1)), true)
    };
    let lab = Lab::start("demo", &inputs)?;
    lab.add(&rec)?;
    println!("bootsvc is serving on {} in network namespace {}", osie_qemu_tests::lab::SERVER, lab.site.ns.name());
    println!("  log: {} (JSON)", lab.log().display());
    let manifest = inputs.images.join(format!("{}.json", rec.image_name));
    let size = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|m| m["size"].as_f64())
        .unwrap_or(0.0);
    println!(
        "  machine record demo1: {MAC}, {}/24, netboot allowed, image {} ({:.0} MB)",
        rec.ip,
        rec.image_name,
        size / 1e6
    );
    println!("  user-data prints \"{}\" on the serial console", rec.marker());

    let spec = Spec::new("demo1", MAC, fw);
    let machine_dir = lab.subdir("demo1")?;
    let disk = Disk::blank(&machine_dir, args.disk_gib << 30)?;
    let mut machine = Machine::power_on(&lab, &spec, &disk)?;
    println!("\npowered on: QEMU (TCG), {}, blank {} GiB disk", fw.describe(), args.disk_gib);
    println!("  serial console: {}\n", machine.serial.display());

    let result = provision(&lab, &mut machine, &rec, fw, first_boot);
    let timeline = match result {
        Ok(t) => t,
        Err(e) => {
            lab.failed();
            return Err(e);
        }
    };
    println!("\nTimeline (relative to power-on; from bootsvc's log and events, and the serial console):\n");
    print!("{}", timeline.render());
    println!();
    summary(&timeline);
    machine.power_off();
    let kept = lab.keep_logs();
    println!("\nbootsvc's log, the serial console and the events are in {}", kept.display());
    Ok(())
}

fn provision(lab: &Lab, machine: &mut Machine, rec: &Record, fw: Firmware, first_boot: bool) -> Result<Timeline> {
    let limits = Limits::default();
    let mut w = flow::watch(lab, machine, rec);
    let mut printed = HashSet::new();
    w.on_refresh(move |t| print_new(t, &mut printed));
    flow::install(&mut w, fw, MAC, &limits)?;
    if first_boot {
        flow::first_boot(&mut w, &limits)?;
    }
    Ok(w.timeline().clone())
}

/// Print the marks not printed yet, image-streaming progress only at every quarter.
fn print_new(t: &Timeline, printed: &mut HashSet<String>) {
    for m in &t.marks {
        let key = key(m);
        if printed.contains(&key) {
            continue;
        }
        printed.insert(key);
        if m.step == Step::Dhcp && m.dhcp.as_ref().is_some_and(|d| d.reply.as_deref() == Some("offer")) {
            continue;
        }
        println!("  {:>14}  {:<18} {}", fmt_offset(m.at), m.label, m.detail);
    }
}

/// What identifies a mark for printing once; streaming progress by its quarter.
fn key(m: &Mark) -> String {
    if m.step == Step::Event(Phase::ImageStreaming) {
        let pct: u32 = m.detail.split('%').next().and_then(|p| p.trim().parse().ok()).unwrap_or(0);
        return format!("streaming {}", pct / 25);
    }
    format!("{:?} {} {} {}", m.time, m.label, m.detail, m.step == Step::Console)
}

fn summary(t: &Timeline) {
    let at = |p: Phase| t.event(p).map(|m| m.at);
    let console = |label: &str| t.first(|m| m.step == Step::Console && m.label == label).map(|m| m.at);
    let line = |what: &str, d: Option<std::time::Duration>| {
        if let Some(d) = d {
            println!("  {what:<44} {}", fmt_offset(d));
        }
    };
    line("installer running (booted-installer)", at(Phase::BootedInstaller));
    line("image written and verified (image-verified)", at(Phase::ImageVerified));
    line("install finished, rebooting (installed)", at(Phase::Installed));
    line("user-data ran in the installed OS (console)", console(flow::USER_DATA));
    line("installed OS phoned home (first-boot)", at(Phase::FirstBoot));
}

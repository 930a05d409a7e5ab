//! An arm64 server provisioned end to end (`bootsvc/docs/arm64.md`): QEMU's `virt` board
//! under TCG with a Cortex-A57 and Debian's AAVMF, virtio-net with no option ROM, a blank
//! disk. AAVMF's UEFI PXE (arch 11) → Debian's signed arm64 GRUB over TFTP → the machine's
//! arm64 GRUB configuration → the arm64 kernel and initramfs over TFTP → the installer:
//! disk chosen, image streamed and verified, GPT fixed, cloud-init seeded, a UEFI boot entry
//! only for an arm64 loader, `installed`, with a hardware report that names the Cortex-A57
//! (ACPI boot: no device tree).
//!
//! With the arm64 OS image in the build (`build/images/debian-12-arm64.*`, from
//! `images/build --arch arm64`) the machine then reboots into it: the user-data's marker on
//! the console and the OS's `first-boot` event. Without it (`scripts/test` builds it only with
//! `OSIE_ARM64_IMAGE=1`: most of an hour under emulation), the machine installs the x86_64
//! image's bytes, given by URL (the installer's work is the same bytes either way), and the
//! test stops at `installed`, saying so.
//!
//! (k, HTTP) The same server with AAVMF's PXE switched off, so it UEFI-HTTP-boots (arch 19):
//! the arm64 GRUB with `http` that `scripts/setup` builds (`grubaa64-http.efi`) over HTTP →
//! the entry and the machine's arm64 GRUB configuration over HTTP → the arm64 kernel and
//! initramfs over HTTP, nothing over TFTP → the installer's first event at bootsvc. The test
//! stops there: the install is the same as (k)'s.
//!
//! Logs of a failed run are kept in `qemu-tests/artifacts/<test>/`.

use std::time::Instant;

use osie_api::Phase;
use osie_qemu_tests::flow::{self, Limits};
use osie_qemu_tests::inputs::IMAGE;
use osie_qemu_tests::lab::PUBLIC_URL;
use osie_qemu_tests::record::ImageRef;
use osie_qemu_tests::timeline::Step;
use osie_qemu_tests::{signals, Disk, Firmware, Inputs, Lab, Machine, Record, Spec, Timeline, Watch};
use osie_testkit::require_file;

const DISK_BYTES: u64 = 4 << 30;

fn check<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn k_arm64_uefi_pxe_installs() {
    let test = "k_arm64_uefi_pxe_installs";
    let Some(inputs) = Inputs::for_arm64_test(test) else { return };
    signals::install();
    let mac = "52:54:00:e2:a6:01";
    let image = inputs.arm64_image();
    if image.is_none() {
        eprintln!(
            "{test}: no arm64 OS image in {} (images/build --arch arm64): installing the {IMAGE} image's bytes, \
             stopping at `installed`",
            inputs.images.display()
        );
    }
    let lab = check(Lab::start(test, &inputs));
    let started = Instant::now();
    let (rec, mut machine) = check(arm64_machine(&lab, &inputs, "arm1", mac, Firmware::Arm64UefiPxe));
    let limits = Limits::default();
    let mut w = flow::watch(&lab, &mut machine, &rec);
    check(flow::install(&mut w, Firmware::Arm64UefiPxe, mac, &limits));
    let installed_in = started.elapsed();
    let t = w.timeline().clone();

    // The installer's work, as on x86: the disk it chose, the GPT fixed for the larger disk,
    // the cloud-init seed, and a hardware report that names the CPU.
    let events = check(lab.events(mac));
    for phase in [Phase::DiskSelected, Phase::ImageVerified, Phase::GptFixed, Phase::CloudInitSeeded] {
        let Some(e) = events.iter().find(|e| e.event.phase == phase) else {
            bad(&w, &format!("no {} event", phase.as_str()))
        };
        eprintln!("{test}: {}: {}", phase.as_str(), e.event.message);
    }
    let selected = events.iter().find(|e| e.event.phase == Phase::DiskSelected).map(|e| e.event.message.clone());
    if !selected.as_deref().is_some_and(|m| m.starts_with("/dev/vda (4294967296 bytes")) {
        bad(&w, &format!("disk-selected says {selected:?}, not the 4 GiB virtio disk /dev/vda"));
    }
    let Some(hw) = events.iter().find_map(|e| e.event.hardware.clone()) else { bad(&w, "no hardware report") };
    eprintln!("{test}: hardware: cpu {:?}, memory {} bytes, {} disks", hw.cpu, hw.memory_bytes, hw.disks.len());
    if hw.cpu.model != "ARM Cortex-A57" || hw.cpu.threads != 1 || hw.cpu.cores != 1 {
        bad(&w, &format!("the hardware report's CPU is {:?} (want ARM Cortex-A57, 1 core, 1 thread)", hw.cpu));
    }
    if hw.secure_boot != Some(false) {
        bad(&w, &format!("AAVMF without Secure Boot: the report says {:?}", hw.secure_boot));
    }
    eprintln!(
        "{test}: TCG: installer up at {}, image verified at {}, installed at {} ({:.1} s wall)",
        at(&t, Phase::BootedInstaller),
        at(&t, Phase::ImageVerified),
        at(&t, Phase::Installed),
        installed_in.as_secs_f64()
    );

    // The UEFI boot entry: the image's arm64 loader, never an x64 one (the x86_64 image has
    // none for this machine, and the event says so).
    let installed = events.iter().find(|e| e.event.phase == Phase::Installed).map(|e| e.event.message.clone());
    let installed = installed.unwrap_or_default();
    let want = if image.is_some() { "aa64.efi on partition" } else { "no loader for this machine on the ESP" };
    if !installed.contains(want) || installed.contains("x64.efi on partition") {
        bad(&w, &format!("the installed event should say {want:?}: {installed}"));
    }
    if image.is_none() {
        // The x86_64 image cannot boot here: stop at what the installer did.
        return;
    }
    check(flow::first_boot(&mut w, &limits));
    let t = w.timeline().clone();
    drop(w);
    check(flow::check_provisioned(&lab, &rec, &t));
    eprintln!(
        "{test}: TCG: first-boot at {} ({:.1} s wall)",
        at(&t, Phase::FirstBoot),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn k_arm64_uefi_http_boots_the_installer() {
    let test = "k_arm64_uefi_http_boots_the_installer";
    let Some(inputs) = Inputs::for_arm64_test(test) else { return };
    if !require_file(test, &inputs.tftp.join("grubaa64-http.efi"), "scripts/setup") {
        return;
    }
    signals::install();
    let mac = "52:54:00:e2:a6:02";
    let lab = check(Lab::start(test, &inputs));
    let started = Instant::now();
    let (rec, mut machine) = check(arm64_machine(&lab, &inputs, "arm2", mac, Firmware::Arm64UefiHttp));
    let mut w = flow::watch(&lab, &mut machine, &rec);
    check(flow::arm64_http_to_installer(&mut w, mac, &Limits::default()));
    let up_in = started.elapsed();
    let t = w.timeline().clone();

    let Some(first) = w.events().first().cloned() else { bad(&w, "no event") };
    if first.event.phase != Phase::BootedInstaller {
        bad(&w, &format!("the installer's first event is {}, not {}", first.event.phase, Phase::BootedInstaller));
    }
    drop(w);
    machine.power_off();
    eprintln!("{test}: timeline:\n{}", t.render());
    let grub = t.first(|m| m.detail.starts_with("HTTP grubaa64-http.efi")).map(|m| m.at.as_secs_f64());
    eprintln!(
        "{test}: TCG: grubaa64-http.efi at {:.1} s, kernel at {}, initramfs at {}, installer up at {} ({:.1} s wall)",
        grub.unwrap_or_default(),
        at_step(&t, Step::Kernel),
        at_step(&t, Step::Initrd),
        at(&t, Phase::BootedInstaller),
        up_in.as_secs_f64()
    );
}

/// The lab's arm64 machine `name` with a blank disk, added to bootsvc ([`arm64_record`]) and
/// powered on.
fn arm64_machine(lab: &Lab, inputs: &Inputs, name: &str, mac: &str, fw: Firmware) -> anyhow::Result<(Record, Machine)> {
    let rec = arm64_record(inputs, name, mac);
    lab.add(&rec)?;
    let disk = Disk::blank(&lab.subdir(name)?, DISK_BYTES)?;
    let machine = Machine::power_on(lab, &Spec::new(name, mac, fw), &disk)?;
    Ok((rec, machine))
}

/// The record of the arm64 machine `name`: the arm64 OS image when the build has one, else
/// the x86_64 image's bytes by URL.
fn arm64_record(inputs: &Inputs, name: &str, mac: &str) -> Record {
    let image = inputs.arm64_image();
    let mut rec = Record::arm64(name, mac, Lab::address(1), image.unwrap_or(IMAGE));
    if image.is_none() {
        // By URL: bootsvc refuses an arm64 record naming an x86_64 image by its manifest
        // (it could not boot); a URL's architecture is the operator's word.
        rec.image = ImageRef::Url {
            url: format!("{PUBLIC_URL}/images/{}", inputs.image_file().file_name().unwrap().to_string_lossy()),
            sha256: inputs.image_sha256().to_string(),
            size: inputs.manifest["size"].as_u64().unwrap(),
            raw_size: inputs.manifest["raw_size"].as_u64(),
        };
    }
    rec
}

/// When the first mark of `s` came, relative to power-on.
fn at_step(t: &Timeline, s: Step) -> String {
    t.first(|m| m.step == s).map(|m| format!("{:.1} s", m.at.as_secs_f64())).unwrap_or_else(|| "-".into())
}

/// When `p` came, relative to power-on.
fn at(t: &Timeline, p: Phase) -> String {
    t.event(p).map(|m| format!("{:.1} s", m.at.as_secs_f64())).unwrap_or_else(|| "-".into())
}

/// Fail with what the watch saw (the logs are kept).
fn bad(w: &Watch, what: &str) -> ! {
    panic!("{}", w.fail("the arm64 install", what))
}

//! End-to-end scenarios: real QEMU machines (TCG) network-booted by the real `bootsvc serve`
//! in a namespace of their own, installed by the real installer with the real debian-12
//! image, rebooted into the installed OS. See `qemu-tests/README.md`.
//!
//! | test | firmware | what it proves |
//! |---|---|---|
//! | `a_bios_ipxe_rom_installs_and_first_boots` | SeaBIOS + iPXE NIC ROM | DHCP (class ipxe) → script → kernel + initramfs → install of the image's **qcow2** form (zstd clusters, made in the test with `qemu-img`) → reboot from disk → user-data marker + `first-boot` from the OS; the status page (`/ui/`) watches in headless Chromium: the machine listed, its progress bar moving without a reload, its timeline with every phase once `installed` (screenshots in `qemu-tests/artifacts/status-page/`); the boot trace says `done`, the installer's log is kept to its end |
//! | `b_uefi_pxe_installs_and_first_boots` | OVMF, ROM disabled | in proxy mode beside a site DHCP server (dnsmasq): UEFI PXE (arch 7) → `ipxe.efi` over TFTP → iPXE → the same; the installed OS is leased another address than the installer had, and its first boot is recorded from there |
//! | `c_netboot_not_allowed_boots_its_disk` | SeaBIOS + iPXE NIC ROM | a machine with an OS on its disk and `netboot.allow = false`: no boot file, no installer, its OS runs |
//! | `d_bad_checksum_fails_and_disk_does_not_boot` | SeaBIOS + iPXE NIC ROM | wrong sha256: `failed` with the error chain, netboot kept, the next boot netboots again, the disk's first MiB is not the image's, the disk alone does not boot |
//! | `e_uefi_http_boot_installs_and_first_boots` | OVMF, ROM disabled, PXE off | UEFI HTTP boot (arch 16) → `ipxe.efi` over HTTP → the same as (a), the machine given as Tinkerbell's Hardware, Template and Workflow: image2disk of the image's **`.raw.gz`** form (made in the test; its digest from the manifest of the file the URL names), a writefile and a cexec (chrooted, `/proc` bound) whose markers the first boot prints; a `step` event each |
//! | `i_missing_kernel_is_diagnosed` | SeaBIOS + iPXE NIC ROM | the kernel gone from the artifacts: iPXE fetches its script, the kernel answers 404, and the boot trace's diagnosis names that step (stopped as soon as it does) |
//! | `f_uefi_disk_first_boots_without_the_network` | OVMF enforcing Secure Boot (Microsoft's keys), UEFI PXE, its own variables, no QEMU boot order | Debian's unsigned iPXE is refused by the firmware; the shim/GRUB chain (signed shim, GRUB, kernel; GRUB configuration from bootsvc) installs; `install.uefi.boot_order = "disk-first"`: the installer writes a boot entry for the image's signed shim and puts it first; after the reboot the firmware boots the disk without one DHCP packet, with Secure Boot on |
//! | `j_ipv6_only_uefi_http6_installs_and_first_boots` | three OVMF machines, ROM disabled: node1 PXE off; node2 and node3 PXE over IPv4 off, node3 enforcing Secure Boot | a lab with no IPv4 on the bridge: UEFI HTTP boot over IPv6 (DHCPv6, arch 16, the record's `ip6`) → `ipxe.efi` over HTTP on IPv6 → iPXE's DHCPv6 (router advertisement with M/O and a SLAAC prefix) → its script over IPv6 with bracketed IPv6 URLs → kernel and initramfs over IPv6 → the installer on SLAAC: metadata, events and the image over IPv6 → `installed` → first boot; beside it, node2: UEFI PXE over IPv6 (arch 7, a "DHCP only" offer) → `ipxe.efi` over TFTP on IPv6 → iPXE → the installer's first event; node3: UEFI PXE over IPv6 → shim → Debian's signed GRUB → its configuration, kernel and initramfs over TFTP on IPv6 → the installer's first event (Secure Boot on); both then off |
//!
//! Logs of a failed scenario are kept in `qemu-tests/artifacts/<test>/`.

use std::time::Duration;

use anyhow::{ensure, Context};
use osie_api::Phase;
use osie_qemu_tests::flow::{self, Limits};
use osie_qemu_tests::lab::{Dhcp, PUBLIC_URL, PUBLIC_URL6, SERVER};
use osie_qemu_tests::page::PageWatch;
use osie_qemu_tests::record::ImageRef;
use osie_qemu_tests::timeline::Step;
use osie_qemu_tests::{signals, Disk, Firmware, Inputs, Lab, Machine, Record, Spec};

const DISK_BYTES: u64 = 4 << 30;

/// Fail the test with the error (which already says what never came and where the logs are).
fn check<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

/// Secure Boot's firmware and the shim/GRUB chain's programs are there (else the test is
/// skipped, or fails under `OSIE_REQUIRE_ALL=1`).
fn secure_boot_files(test: &str, inputs: &Inputs) -> bool {
    let files = [
        (std::path::PathBuf::from(osie_testkit::qemu::OVMF_CODE_SECURE_BOOT), "scripts/setup (package ovmf)"),
        (inputs.tftp.join("shimx64.efi"), "scripts/setup"),
        (inputs.tftp.join("grubx64.efi"), "scripts/setup"),
    ];
    files.iter().all(|(f, by)| osie_testkit::require_file(test, f, by))
}

/// Install a blank machine with `fw`, let it boot its OS, and check what bootsvc saw. With
/// `Dhcp::ProxyBesideSite` a site DHCP server (dnsmasq) hands out the addresses and the
/// record has no fixed address. With `page`, the status page watches the install in headless
/// Chromium (`osie_qemu_tests::page`). `image`: which file of the test image it installs.
fn install_and_first_boot(test: &str, fw: Firmware, mac: &str, dhcp: Dhcp, page: bool, image: Form) {
    let Some(inputs) = Inputs::for_test(test) else { return };
    if dhcp == Dhcp::ProxyBesideSite && !osie_testkit::require_tools(test, &["dnsmasq"]) {
        return;
    }
    if page && osie_testkit::browser::chromium().is_none() && !osie_testkit::require_tools(test, &["chromium"]) {
        return;
    }
    signals::install();
    // The qcow2 form is made here from the same image (removed at the end).
    let mut scratch = None;
    let inputs = match image {
        Form::Packed => inputs,
        Form::Qcow2 => {
            let t = std::time::Instant::now();
            let s = scratch.insert(check(Scratch::new(test)));
            let q = check(inputs.as_qcow2(&s.0));
            eprintln!("{test}: the image as qcow2 (zstd clusters, {} bytes) in {:?}", q.manifest["size"], t.elapsed());
            q
        }
        Form::TinkerbellRawGz => {
            let t = std::time::Instant::now();
            let s = scratch.insert(check(Scratch::new(test)));
            let g = check(inputs.as_raw_gz(&s.0));
            eprintln!("{test}: the image as .raw.gz ({} bytes) in {:?}", g.manifest["size"], t.elapsed());
            g
        }
    };
    let lab = check(Lab::start_with(test, &inputs, dhcp));
    let mut rec = Record::new("node1", mac, Lab::address(1));
    rec.fixed_address = dhcp == Dhcp::Reservation;
    if image == Form::TinkerbellRawGz {
        // Tinkerbell's documents, the image by URL without a digest: the manifest of the
        // file it names gives it.
        let url = format!("{PUBLIC_URL}/images/{}", inputs.manifest["file"].as_str().unwrap_or_default());
        check(lab.add_as(&rec, &rec.tinkerbell(SERVER, &url)));
    } else {
        check(lab.add(&rec));
    }
    let watcher = page.then(|| {
        PageWatch::start(&lab, mac).unwrap_or_else(|e| {
            lab.failed();
            panic!("the status page: {e:#}")
        })
    });
    let spec = Spec::new("node1", mac, fw);
    let disk = check(lab.subdir("node1").and_then(|d| Disk::blank(&d, DISK_BYTES)));
    let mut machine = check(Machine::power_on(&lab, &spec, &disk));
    let limits = Limits::default();
    let mut w = flow::watch(&lab, &mut machine, &rec);
    let markers = rec.tinkerbell_markers();
    if image == Form::TinkerbellRawGz {
        w.watch_console(WRITEFILE, &markers[0]);
        w.watch_console(CEXEC, &markers[1]);
    }
    check(flow::install(&mut w, fw, mac, &limits));
    if let Some(p) = watcher {
        let mut phases: Vec<Phase> = check(lab.events(mac)).iter().map(|e| e.event.phase).collect();
        phases.dedup();
        match p.finish(&phases) {
            Ok((samples, shots)) => {
                eprintln!("{test}: the status page followed the install ({} changes seen): {shots:?}", samples.len())
            }
            Err(e) => panic!("{}", w.fail("the status page following the install live", &format!("{e:#}"))),
        }
    }
    let waited = flow::discover_to_script(w.timeline());
    // Where the DISCOVER is bootsvc's to answer (BIOS, reservation mode), nothing may wait.
    if fw == Firmware::Bios && waited.is_none_or(|d| d > flow::DISCOVER_TO_SCRIPT) {
        let why =
            format!("iPXE's DHCP DISCOVER → script request took {waited:?}, more than {:?}", flow::DISCOVER_TO_SCRIPT);
        panic!("{}", w.fail("no idle wait between DHCP and the script", &why));
    }
    eprintln!("{test}: iPXE DHCP DISCOVER → script request: {waited:?}");
    check(flow::first_boot(&mut w, &limits));
    eprintln!("{test}: installed → installed OS's kernel: {:?}", flow::installed_to_os_kernel(w.timeline()));
    if image == Form::TinkerbellRawGz {
        check(template_ran(&lab, &mut w, &rec, &limits));
    }
    let t = w.timeline().clone();
    if let Err(e) = flow::check_provisioned(&lab, &rec, &t) {
        panic!("{}", w.fail("a correctly provisioned machine", &format!("{e:#}")));
    }
    if dhcp == Dhcp::ProxyBesideSite {
        match known_at_its_new_address(&lab, &rec) {
            Ok(how) => eprintln!("{test}: {how}"),
            Err(e) => panic!("{}", w.fail("the installed OS known at its own new address", &format!("{e:#}"))),
        }
    }
    // The boot trace of a healthy install: every step seen, and `done` (first boot). Steps
    // are stored in batches off the request path (up to 250 ms behind the event's answer).
    let mut trace = check(lab.trace(mac));
    let settle = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while trace.diagnosis.health != bootsvc::trace::Health::Done && std::time::Instant::now() < settle {
        std::thread::sleep(std::time::Duration::from_millis(250));
        trace = check(lab.trace(mac));
    }
    let kept = check(lab.keep_trace(mac));
    if trace.diagnosis.health != bootsvc::trace::Health::Done {
        panic!(
            "{}",
            w.fail("the boot trace diagnosed done", &format!("{:?} (trace in {})", trace.diagnosis, kept.display()))
        );
    }
    // The installer's console log, kept whole after the reboot, under the run's id.
    let log: bootsvc::trace::LogView =
        check(lab.cli(&["machine", mac, "log", "--json"]).and_then(|s| Ok(serde_json::from_str(&s)?)));
    let run = check(lab.events(mac)).iter().find_map(|e| e.event.run_id.clone());
    let kept = log.runs.iter().find(|r| Some(&r.run_id) == run.as_ref());
    if !kept.is_some_and(|r| r.lines.iter().any(|l| l.text.contains("event installed"))) {
        let runs: Vec<_> = log.runs.iter().map(|r| (&r.run_id, r.lines.len(), r.dropped)).collect();
        panic!("{}", w.fail("the installer's log kept to its end", &format!("run {run:?}; runs kept {runs:?}")));
    }
    eprintln!("{test}: {}\n{}", fw.describe(), t.render());
    eprintln!("{}", bootsvc::trace::render::trace_text(&trace));
}

/// Which file of the test image the machine installs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `debian-12.raw.zst` as `images/build` packs it.
    Packed,
    /// The same disk as qcow2 with zstd clusters (`Inputs::as_qcow2`).
    Qcow2,
    /// The same disk as `.raw.gz`, installed by a Tinkerbell Hardware, Template (image2disk,
    /// writefile, cexec) and Workflow instead of a native record (`Record::tinkerbell`).
    TinkerbellRawGz,
}

/// Console labels of the Tinkerbell template's markers.
const WRITEFILE: &str = "writefile marker";
const CEXEC: &str = "cexec marker";

/// The Tinkerbell template's actions ran: a `step` event each (the cexec's `exit 0`), and the
/// installed OS printed what the writefile wrote and what the cexec computed in it.
fn template_ran(lab: &Lab, w: &mut osie_qemu_tests::watch::Watch, rec: &Record, limits: &Limits) -> anyhow::Result<()> {
    let steps: Vec<String> =
        lab.events(&rec.mac)?.into_iter().filter(|e| e.event.phase == Phase::Step).map(|e| e.event.message).collect();
    ensure!(steps.len() == 2, "want 2 step events (writefile, cexec), got {steps:#?}");
    ensure!(
        steps[0].starts_with("step 1/2 (write-marker): wrote /etc/osie-tink/writefile-marker"),
        "writefile's event: {}",
        steps[0]
    );
    ensure!(steps[1].starts_with("step 2/2 (cexec-marker): exit 0 in "), "cexec's event: {}", steps[1]);
    let seen =
        |t: &osie_qemu_tests::Timeline, label: &str| t.first(|m| m.step == Step::Console && m.label == label).is_some();
    w.until("the template's writefile and cexec markers printed by the installed OS", limits.first_boot, |t| {
        seen(t, WRITEFILE) && seen(t, CEXEC)
    })?;
    eprintln!("step events:\n  {}", steps.join("\n  "));
    Ok(())
}

/// A directory for this test's own files, readable by bootsvc after it drops privileges;
/// removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(test: &str) -> anyhow::Result<Scratch> {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("osie-e2e-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&d)?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        Ok(Scratch(d))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Proxy mode: the site DHCP server leased the installed OS (systemd-networkd, a DUID client
/// identifier) another address than the firmware and the installer (whose client identifier
/// is the MAC). bootsvc knew that address from the OS's own DHCP REQUEST, stored the first
/// boot from it, and refused nothing on the way.
fn known_at_its_new_address(lab: &Lab, rec: &Record) -> anyhow::Result<String> {
    let events = lab.events(&rec.mac)?;
    let from = |p: Phase| events.iter().find(|e| e.event.phase == p).and_then(|e| e.source);
    let installer = from(Phase::BootedInstaller).context("booted-installer has no source address")?;
    let os = from(Phase::FirstBoot).context("first-boot has no source address")?;
    let asked: Vec<std::net::IpAddr> =
        osie_qemu_tests::bootlog::requested(&lab.log_entries(), &rec.mac).into_iter().map(Into::into).collect();
    ensure!(
        os != installer && asked.first() != Some(&os),
        "the installed OS is at {os}, the installer was at {installer} (addresses asked for: {asked:?}): the \
         scenario needs the OS leased another address"
    );
    ensure!(asked.contains(&installer) && asked.contains(&os), "bootsvc did not see these REQUESTs: {asked:?}");
    let view = lab.machine(&rec.mac)?;
    ensure!(
        view.identity.addresses.iter().any(|a| a.address == os && a.source == "dhcp-request"),
        "bootsvc's view of the machine does not have {os} from its DHCP request: {:?}",
        view.identity.addresses
    );
    ensure!(view.identity.refused.is_empty(), "requests refused on the way: {:?}", view.identity.refused);
    Ok(format!("installer at {installer}, installed OS at {os} (addresses it asked for: {asked:?}), nothing refused"))
}

#[test]
fn a_bios_ipxe_rom_installs_and_first_boots() {
    install_and_first_boot(
        "a_bios_ipxe_rom_installs_and_first_boots",
        Firmware::Bios,
        "52:54:00:e2:0a:01",
        Dhcp::Reservation,
        true,
        Form::Qcow2,
    );
}

#[test]
fn b_uefi_pxe_installs_and_first_boots() {
    install_and_first_boot(
        "b_uefi_pxe_installs_and_first_boots",
        Firmware::UefiPxe,
        "52:54:00:e2:0b:01",
        Dhcp::ProxyBesideSite,
        false,
        Form::Packed,
    );
}

#[test]
fn e_uefi_http_boot_installs_and_first_boots() {
    install_and_first_boot(
        "e_uefi_http_boot_installs_and_first_boots",
        Firmware::UefiHttp,
        "52:54:00:e2:0e:01",
        Dhcp::Reservation,
        false,
        Form::TinkerbellRawGz,
    );
}

/// (c) The disk already holds the OS (the image, with a NoCloud seed beside it); the record
/// does not allow netboot. The machine gets an address but no boot file, iPXE gives up, the
/// disk boots, its OS runs its user-data and gets its own lease; nothing is installed.
#[test]
fn c_netboot_not_allowed_boots_its_disk() {
    let test = "c_netboot_not_allowed_boots_its_disk";
    let Some(inputs) = Inputs::for_test(test) else { return };
    if !osie_testkit::require_tools(test, &["mkfs.vfat", "mcopy"]) {
        return;
    }
    signals::install();
    let mac = "52:54:00:e2:0c:01";
    let lab = check(Lab::start(test, &inputs));
    let mut rec = Record::new("node1", mac, Lab::address(1));
    rec.netboot = false;
    check(lab.add(&rec));
    let dir = check(lab.subdir("node1"));
    let disk = check(Disk::from_image(&dir, &inputs.image_file(), DISK_BYTES));
    let seed = check(Disk::nocloud_seed(
        &dir,
        &format!("instance-id: i-{}\nlocal-hostname: node1\n", rec.nonce),
        &rec.user_data(),
    ));
    let mut spec = Spec::new("node1", mac, Firmware::Bios);
    spec.extra_disks.push(seed);
    let mut machine = check(Machine::power_on(&lab, &spec, &disk));
    let limits = Limits::default();
    let mut w = flow::watch(&lab, &mut machine, &rec);
    check(w.until("DHCP answer without a boot file (netboot not allowed)", limits.firmware, |t| {
        t.first(|m| m.dhcp.as_ref().is_some_and(|d| d.why_not.as_deref() == Some("netboot not allowed"))).is_some()
    }));
    check(w.until("the disk's OS kernel on the console", limits.reboot, |t| {
        t.first(|m| m.step == Step::Console && m.label == flow::OS_KERNEL).is_some()
    }));
    check(w.until("the user-data's marker on the console (cloud-init runcmd)", limits.first_boot, |t| {
        t.first(|m| m.step == Step::Console && m.label == flow::USER_DATA).is_some()
    }));
    check(w.until("a DHCP lease for the OS's own client", limits.first_boot, |t| {
        t.first(|m| m.dhcp.as_ref().is_some_and(|d| d.arch.is_none() && d.reply.as_deref() == Some("ack"))).is_some()
    }));
    let t = w.timeline().clone();
    let bad = |what: &str| panic!("{}", w.fail("a machine left alone", what));
    if let Some(m) = t.first(|m| m.dhcp.as_ref().is_some_and(|d| d.boot_file.is_some())) {
        bad(&format!("bootsvc handed out a boot file: {}", m.detail));
    }
    if let Some(m) = t.first(|m| matches!(m.step, Step::Kernel | Step::Initrd | Step::Image | Step::BootProgram)) {
        bad(&format!("the machine fetched part of the installer: {}", m.detail));
    }
    if let Some(m) = t.first(|m| m.step == Step::Script && m.detail != "kind local-boot") {
        bad(&format!("bootsvc served an iPXE script other than local boot: {}", m.detail));
    }
    let events = check(lab.events(mac));
    if !events.is_empty() {
        bad(&format!("bootsvc stored events for a machine that was not installed: {events:?}"));
    }
    let view = check(lab.machine(mac));
    assert!(!view.netboot.allowed && !view.netboot.allow, "{:?}", view.netboot);
    assert!(w.machine.console().contains("Welcome to") || w.machine.console().contains("Debian"), "the OS booted");
    eprintln!("{test}:\n{}", t.render());
}

/// (d) The record's sha256 does not match the image. The installer streams it all, finds the
/// mismatch, reports `failed` with the error chain and reboots; netboot stays allowed, so the
/// next boot netboots again. The disk never got the image's first MiB (the installer holds
/// it back until the checksum matched, and wiped it first), so the disk alone does not boot.
#[test]
fn d_bad_checksum_fails_and_disk_does_not_boot() {
    let test = "d_bad_checksum_fails_and_disk_does_not_boot";
    let Some(inputs) = Inputs::for_test(test) else { return };
    signals::install();
    let mac = "52:54:00:e2:0d:01";
    let lab = check(Lab::start(test, &inputs));
    let mut rec = Record::new("node1", mac, Lab::address(1));
    let real = inputs.image_sha256().to_string();
    // The real checksum with its first digit changed: right shape, wrong value.
    let wrong = format!("{}{}", if real.starts_with('0') { '1' } else { '0' }, &real[1..]);
    rec.image = ImageRef::Url {
        url: format!("{PUBLIC_URL}/images/{}", inputs.image_file().file_name().unwrap().to_string_lossy()),
        sha256: wrong.clone(),
        size: inputs.manifest["size"].as_u64().unwrap(),
        raw_size: inputs.manifest["raw_size"].as_u64(),
    };
    check(lab.add(&rec));
    let dir = check(lab.subdir("node1"));
    let disk = check(Disk::blank(&dir, DISK_BYTES));
    let spec = Spec::new("node1", mac, Firmware::Bios);
    let mut machine = check(Machine::power_on(&lab, &spec, &disk));
    let limits = Limits::default();
    {
        let mut w = flow::watch(&lab, &mut machine, &rec);
        w.expect_failure = true;
        check(w.phase(Phase::BootedInstaller, limits.firmware + limits.installer));
        check(w.until("the image download", limits.installer, |t| t.first(|m| m.step == Step::Image).is_some()));
        check(w.phase(Phase::Failed, limits.install));
        let t = w.timeline().clone();
        let failed = t.event(Phase::Failed).unwrap().clone();
        let ev = check(lab.events(mac)).into_iter().find(|e| e.event.phase == Phase::Failed).unwrap();
        let chain = ev.event.error.join(" / ");
        if ev.event.error.len() < 2 || !chain.to_lowercase().contains("sha256") || !chain.contains(&wrong[..12]) {
            panic!("{}", w.fail("a failed event with the checksum error chain", &format!("error chain: {chain}")));
        }
        if t.event(Phase::Installed).is_some() || t.event(Phase::ImageVerified).is_some() {
            panic!("{}", w.fail("no verified image", "the image was reported verified or installed"));
        }
        let view = check(lab.machine(mac));
        assert!(view.netboot.allowed && !view.netboot.cleared, "a failure keeps netboot: {:?}", view.netboot);
        assert_eq!(view.state.status, bootsvc::state::Status::Failed);
        // The next boot: the installer reboots after the failure, and the machine netboots
        // again (iPXE fetches the installer's script) instead of starting the disk.
        check(w.until("the next boot fetching the installer's script again", limits.reboot, |t| {
            t.first_after(&failed, |m| m.step == Step::Script && m.detail == "kind installer").is_some()
        }));
        assert!(w.machine.console().contains("osie: INSTALL FAILED"), "the failure is on the console");
        eprintln!("{test}: install run:\n{}", w.timeline().render());
    }
    machine.power_off();

    // The disk as the failed install left it: not the image's first MiB, no partition table.
    let head = check(disk.head(1 << 20));
    let image_head = image_first_mib(&inputs);
    assert_ne!(head, image_head, "the disk starts with the image's first MiB");
    assert_ne!(&head[510..512], &[0x55, 0xaa], "the disk has an MBR boot signature");
    assert_ne!(&head[512..520], b"EFI PART", "the disk has a GPT header");

    // And booted alone (no NIC: nothing but the disk), the firmware finds nothing to boot.
    let mut spec = Spec::new("disk-only", mac, Firmware::Bios);
    spec.nic = false;
    let mut alone = check(Machine::power_on(&lab, &spec, &disk));
    let seen = osie_testkit::wait_for("SeaBIOS to give up on the disk", Duration::from_secs(120), || {
        let c = alone.console();
        (c.contains("not a bootable disk") || c.contains("No bootable device")).then_some(c)
    });
    let console = match seen {
        Ok(c) => c,
        Err(e) => {
            lab.failed();
            panic!("{e:#}; console:\n{}", alone.console());
        }
    };
    check(alone.check_running());
    assert!(!console.contains("GRUB") && !console.contains("Linux version"), "something booted:\n{console}");
    eprintln!("{test}: the disk alone:\n{}", osie_qemu_tests::console::tail(&console, 5));
}

/// The first MiB of the decompressed image.
fn image_first_mib(inputs: &Inputs) -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("zstd -dc --long=31 \"$1\" | head -c 1048576")
        .arg("sh")
        .arg(inputs.image_file())
        .output()
        .unwrap();
    assert_eq!(out.stdout.len(), 1 << 20, "decompressing the image's first MiB");
    out.stdout
}

/// (f) Secure Boot and UEFI boot entries, on one OVMF machine enforcing Secure Boot with
/// Microsoft's keys enrolled (as servers ship), with its own variables file and no QEMU boot
/// order (with one, OVMF reorders its options by it on every boot, which real servers do not):
///
/// 1. given Debian's unsigned iPXE (its record's `netboot.uefi_chain = "ipxe"`), the firmware
///    refuses to start it ("Access Denied"): the check is real. A short boot, then off.
/// 2. given the shim/GRUB chain (`"shim-grub"`): Debian's signed shim and network GRUB over
///    TFTP, the machine's GRUB configuration from bootsvc, the signed kernel (in lockdown,
///    loading signed modules) runs the installer, installed with
///    `install.uefi.boot_order = "disk-first"`: the installer writes a `Boot####` for the
///    image's loader (its signed shim) through efivarfs, puts it first in `BootOrder`, and
///    its `installed` event says so; its hardware report says Secure Boot was on;
/// 3. after the reboot the firmware boots the disk without sending a single DHCP packet
///    (bootsvc logs every one it sees), through the image's signed shim and GRUB, and the
///    installed OS's kernel says Secure Boot is enabled.
#[test]
fn f_uefi_disk_first_boots_without_the_network() {
    let test = "f_uefi_disk_first_boots_without_the_network";
    let Some(inputs) = Inputs::for_test(test) else { return };
    if !secure_boot_files(test, &inputs) {
        return;
    }
    signals::install();
    let mac = "52:54:00:e2:0f:01";
    let lab = check(Lab::start(test, &inputs));
    let mut rec = Record::new("node1", mac, Lab::address(1));
    rec.uefi_boot_order = Some("disk-first");
    rec.uefi_chain = Some("ipxe");
    check(lab.add(&rec));
    let mut spec = Spec::new("node1", mac, Firmware::UefiPxe);
    spec.bootindex = false;
    spec.secure_boot = true;
    let disk = check(lab.subdir("node1").and_then(|d| Disk::blank(&d, DISK_BYTES)));
    let limits = Limits::default();

    // 1. Debian's iPXE is not signed: refused before it runs.
    const DENIED: &str = "firmware refuses to load the boot program";
    let started = std::time::Instant::now();
    {
        let mut machine = check(Machine::power_on(&lab, &spec, &disk));
        let mut w = flow::watch(&lab, &mut machine, &rec);
        w.watch_console(DENIED, ": Access Denied");
        check(w.until("ipxe.efi over TFTP", limits.firmware, |t| flow::tftp_complete(t, "ipxe.efi")));
        check(w.until("the firmware refusing the unsigned ipxe.efi (Secure Boot)", limits.firmware, |t| {
            t.first(|m| m.step == Step::Console && m.label == DENIED).is_some()
        }));
        if let Some(m) = w.timeline().first(|m| m.dhcp.as_ref().is_some_and(|d| d.class == "ipxe")) {
            panic!("{}", w.fail("iPXE never running under Secure Boot", &format!("iPXE sent DHCP: {}", m.detail)));
        }
        drop(w);
        machine.power_off();
    }
    let refused_in = started.elapsed();

    // 2. The signed chain installs.
    rec.uefi_chain = Some("shim-grub");
    check(lab.add(&rec));
    check(osie_testkit::wait_for("bootsvc to load the record's shim-grub chain", Duration::from_secs(20), || {
        lab.machine(mac).ok().filter(|v| v.netboot.uefi_chain == bootsvc::config::UefiChain::ShimGrub)
    }));
    let mut machine = check(Machine::power_on(&lab, &spec, &disk));
    let mut w = flow::watch(&lab, &mut machine, &rec);
    // Only an entry for a disk partition starts from a hard drive path: the one written.
    const ENTRY: &str = "firmware starts the disk entry";
    w.watch_console(ENTRY, "\" from HD(");
    check(flow::install_shim_grub(&mut w, mac, &limits));
    check(w.until("the installed OS's kernel on the console", limits.reboot, |t| {
        t.first(|m| m.step == Step::Console && m.label == flow::OS_KERNEL).is_some()
    }));
    let t = w.timeline().clone();
    let bad = |what: &str| panic!("{}", w.fail("the installed OS booted from its UEFI boot entry", what));
    let console = w.machine.console();
    for (what, needle) in [
        ("the installer's kernel in lockdown", "Kernel is locked down from EFI Secure Boot"),
        ("the installer's kernel: Secure Boot enabled", "secureboot: Secure boot enabled"),
    ] {
        if !console.contains(needle) {
            bad(&format!("{what}: {needle:?} is not on the console"));
        }
    }
    // The installer's hardware report says Secure Boot was on (the firmware's variable).
    let reported = lab.events(mac).ok().and_then(|ev| ev.iter().find_map(|e| e.event.hardware.clone()));
    if reported.as_ref().and_then(|h| h.secure_boot) != Some(true) {
        bad(&format!("the hardware report does not say Secure Boot was on: {:?}", reported.map(|h| h.secure_boot)));
    }
    let Some(installed) = t.event(Phase::Installed) else { panic!("{}", w.fail("an installed event", "none")) };
    if !(installed.detail.contains("BootOrder (disk-first)") && installed.detail.contains("UEFI Boot")) {
        bad(&format!("the installed event does not say which boot entry was written: {}", installed.detail));
    }
    if let Some(m) = t.first_after(installed, |m| m.dhcp.as_ref().is_some_and(|d| d.arch.is_some())) {
        bad(&format!("the firmware went to the network after the install: {}", m.detail));
    }
    // And it was our entry the firmware started, not one of its own for the disk (OVMF's
    // boot manager names each option it starts on the serial console).
    let number = installed.detail.split("UEFI Boot").nth(1).map(|r| r.chars().take(4).collect::<String>());
    let started = number.as_ref().map(|n| format!("BdsDxe: starting Boot{n} "));
    let Some(entry_at) = started.as_ref().and_then(|s| console.find(s.as_str())) else {
        bad(&format!("the console does not show the firmware starting the entry written ({started:?})"))
    };
    // 3. The installed OS's kernel (after the entry started) with Secure Boot on.
    let os = &console[entry_at..];
    if !(os.contains("-cloud-amd64 (") && os.contains("secureboot: Secure boot enabled")) {
        bad("the installed OS's kernel does not say \"secureboot: Secure boot enabled\"");
    }
    let kernel = t.first(|m| m.step == Step::Console && m.label == flow::OS_KERNEL).expect("waited for above");
    let entry = t.first(|m| m.step == Step::Console && m.label == ENTRY).map_or(kernel.at, |m| m.at);
    eprintln!(
        "{test}: the unsigned iPXE refused {:.1} s after power-on\n{}\ninstalled → installed OS's kernel {:.1} s \
         (disk-first, no firmware network, Secure Boot on): the firmware's restart until it starts the entry \
         {:.1} s, then shim, GRUB and the kernel {:.1} s\n{}",
        refused_in.as_secs_f64(),
        installed.detail,
        kernel.at.saturating_sub(installed.at).as_secs_f64(),
        entry.saturating_sub(installed.at).as_secs_f64(),
        kernel.at.saturating_sub(entry).as_secs_f64(),
        t.render()
    );
}

/// (i) The kernel is missing from the artifacts (removed after bootsvc started: `serve`
/// refuses to start without it). The machine gets DHCP and its script, its kernel request
/// answers 404, and the boot trace's diagnosis says so: stuck at the kernel, with the HTTP
/// status. Stopped as soon as the diagnosis is there.
#[test]
fn i_missing_kernel_is_diagnosed() {
    let test = "i_missing_kernel_is_diagnosed";
    let Some(inputs) = Inputs::for_test(test) else { return };
    signals::install();
    let mac = "52:54:00:e2:09:01";
    let lab = check(Lab::start(test, &inputs));
    let artifacts = check(lab.own_artifacts());
    std::fs::remove_file(artifacts.join("vmlinuz")).unwrap();
    let rec = Record::new("node1", mac, Lab::address(1));
    check(lab.add(&rec));
    let spec = Spec::new("node1", mac, Firmware::Bios);
    let disk = check(lab.subdir("node1").and_then(|d| Disk::blank(&d, DISK_BYTES)));
    let machine = check(Machine::power_on(&lab, &spec, &disk));
    let started = std::time::Instant::now();
    let limit = Limits::default().firmware;
    let trace = loop {
        let t = check(lab.trace(mac));
        if t.diagnosis.health == bootsvc::trace::Health::Stuck {
            break t;
        }
        if started.elapsed() > limit {
            lab.failed();
            panic!("no diagnosis within {limit:?}: {:?}\n{}", t.diagnosis, bootsvc::trace::render::trace_text(&t));
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    drop(machine);
    let kept = check(lab.keep_trace(mac));
    let text = bootsvc::trace::render::trace_text(&trace);
    eprintln!("{test}: diagnosed in {:?} (trace kept in {})\n{text}", started.elapsed(), kept.display());
    assert_eq!(trace.diagnosis.at, "kernel vmlinuz refused", "{text}");
    let cause = trace.diagnosis.cause.as_deref().unwrap_or_default();
    assert!(cause.starts_with("kernel vmlinuz answered HTTP 404"), "{text}");
    let kinds: Vec<String> = trace.steps.iter().map(|s| bootsvc::trace::render::describe(s).0).collect();
    assert!(
        kinds.starts_with(&["dhcp".into(), "dhcp".into(), "script".into()]),
        "DHCP and the script came first: {text}"
    );
}

/// (j) An IPv6-only lab (`Dhcp::Ipv6Only`: no IPv4 address on the bridge), three OVMF
/// machines at once:
///
/// - node1, UEFI HTTP boot over IPv6: it gets `http://[2001:db8::1]:8080/ipxe/ipxe.efi` and
///   the record's `ip6` from bootsvc's DHCPv6; iPXE hears bootsvc's router advertisement (M,
///   O, prefix), asks DHCPv6 as iPXE and gets its script URL, fetches the script, the kernel
///   and the initramfs over IPv6 (the script's URLs are IPv6 ones: the kernel is fetched from
///   an IPv6 source); the installer forms its SLAAC address and installs over IPv6 (its events
///   stored from an IPv6 address); the installed OS phones home.
/// - node2, UEFI PXE over IPv6 (arch 7): `tftp://[2001:db8::1]/ipxe.efi` in a "DHCP only"
///   offer (no `PXEClient` class, which made EDK2 look for a boot server and give up with
///   PXE-E16), `ipxe.efi` over TFTP on IPv6, iPXE's script, the installer up over IPv6; then
///   off.
/// - node3, the shim/GRUB chain over IPv6 with Secure Boot enforcing: UEFI PXE over IPv6 gets
///   `tftp://[2001:db8::1]/shimx64.efi`; shim and Debian's signed GRUB over TFTP on IPv6;
///   GRUB reads its configuration and the kernel and initramfs over TFTP on IPv6 from the
///   DHCPv6 reply the firmware cached; the installer up over IPv6; then off.
///
/// Each step is read from bootsvc's log and events in order.
#[test]
fn j_ipv6_only_uefi_http6_installs_and_first_boots() {
    let test = "j_ipv6_only_uefi_http6_installs_and_first_boots";
    let Some(inputs) = Inputs::for_test(test) else { return };
    if !secure_boot_files(test, &inputs) {
        return;
    }
    signals::install();
    let lab = check(Lab::start_with(test, &inputs, Dhcp::Ipv6Only));
    let node = |n: u8, firmware: Firmware, chain: &'static str| {
        let (name, mac, ip6) = (format!("node{n}"), format!("52:54:00:e2:10:0{n}"), format!("2001:db8::2{n}"));
        let mut rec = Record::new(&name, &mac, Lab::address(n));
        rec.fixed_address = false;
        rec.ip6 = Some(ip6.parse().unwrap());
        rec.uefi_chain = Some(chain);
        check(lab.add(&rec));
        let mut spec = Spec::new(&name, &mac, firmware);
        spec.secure_boot = chain == "shim-grub";
        (spec, mac, ip6)
    };
    let (spec1, mac1, ip6_1) = node(1, Firmware::UefiHttp6, "ipxe");
    let (spec2, mac2, ip6_2) = node(2, Firmware::UefiPxe6, "ipxe");
    let (spec3, mac3, ip6_3) = node(3, Firmware::UefiPxe6, "shim-grub");
    let from6 = |l: &str| l.contains("\"[2001:db8:");
    let dhcp6 = |class: &'static str, url: String, ip6: String| -> Seen {
        Box::new(move |l: &str, _: &[_]| {
            l.lines().any(|l| l.contains(&format!("({class})")) && l.contains(&url) && l.contains(&ip6))
        })
    };
    let tftp6 = |file: &'static str, ip6: String| -> Seen {
        Box::new(move |l: &str, _: &[_]| {
            l.lines().any(|l| l.contains("TFTP transfer complete") && l.contains(file) && l.contains(&ip6))
        })
    };
    let ipxe6 = |mac: &str| -> Seen {
        let script = format!("{PUBLIC_URL6}/boot/{mac}.ipxe");
        Box::new(move |l: &str, _: &[_]| l.lines().any(|l| l.contains("(ipxe)") && l.contains(&script)))
    };
    let event6 = |phase: Phase| -> Seen {
        Box::new(move |_: &str, evs: &[bootsvc::state::StoredEvent]| {
            evs.iter().any(|e| e.event.phase == phase && e.source.is_some_and(|s| s.is_ipv6()))
        })
    };
    let tftp_url = |file: &str| format!("tftp://[{}]/{file}", osie_qemu_tests::lab::SERVER6);
    let node1: Vec<(&str, Seen)> = vec![
        (
            "DHCPv6 to OVMF's HTTP boot (uefi-http): the record's ip6 and the ipxe.efi URL",
            dhcp6("uefi-http", format!("{PUBLIC_URL6}/ipxe/ipxe.efi"), ip6_1.clone()),
        ),
        (
            "ipxe.efi over HTTP on IPv6",
            Box::new(move |l: &str, _: &[_]| {
                l.lines().any(|l| l.contains("file served: boot-program ipxe.efi") && from6(l))
            }),
        ),
        ("DHCPv6 to iPXE: its script URL", ipxe6(&mac1)),
        (
            "the iPXE script over IPv6",
            Box::new(move |l: &str, _: &[_]| {
                l.lines().any(|l| l.contains("\"iPXE script\"") && l.contains("installer") && from6(l))
            }),
        ),
        (
            "the kernel and the initramfs over IPv6",
            Box::new(move |l: &str, _: &[_]| {
                l.lines().any(|l| l.contains("file served: artifact initramfs") && from6(l))
                    && l.lines().any(|l| l.contains("file served: artifact vmlinuz") && from6(l))
            }),
        ),
        ("the installer up on IPv6 (booted-installer)", event6(Phase::BootedInstaller)),
        ("the image written and verified over IPv6", event6(Phase::ImageVerified)),
        ("installed", event6(Phase::Installed)),
        ("the installed OS phoned home over IPv6 (first-boot)", event6(Phase::FirstBoot)),
    ];
    let node2: Vec<(&str, Seen)> = vec![
        (
            "DHCPv6 to OVMF's PXE over IPv6 (uefi-pxe): the record's ip6 and the ipxe.efi TFTP URL",
            dhcp6("uefi-pxe", tftp_url("ipxe.efi"), ip6_2.clone()),
        ),
        ("ipxe.efi over TFTP on IPv6", tftp6("ipxe.efi", ip6_2.clone())),
        ("DHCPv6 to iPXE: its script URL", ipxe6(&mac2)),
        ("the installer up on IPv6 (booted-installer)", event6(Phase::BootedInstaller)),
    ];
    let node3: Vec<(&str, Seen)> = vec![
        (
            "DHCPv6 to OVMF's PXE over IPv6 (uefi-pxe): the record's ip6 and the shimx64.efi TFTP URL",
            dhcp6("uefi-pxe", tftp_url("shimx64.efi"), ip6_3.clone()),
        ),
        ("shimx64.efi over TFTP on IPv6", tftp6("shimx64.efi", ip6_3.clone())),
        ("grubx64.efi over TFTP on IPv6", tftp6("grubx64.efi", ip6_3.clone())),
        ("GRUB's entry configuration over TFTP on IPv6", tftp6("grub/grub.cfg", ip6_3.clone())),
        (
            "the machine's GRUB configuration (the installer) over TFTP on IPv6",
            Box::new({
                let mac = mac3.clone();
                move |l: &str, _: &[_]| {
                    l.lines()
                        .any(|l| l.contains("GRUB configuration") && l.contains("\"installer\"") && l.contains(&mac))
                }
            }),
        ),
        (
            "the kernel and the initramfs over TFTP on IPv6",
            Box::new({
                let (k, i) =
                    (tftp6("artifacts/vmlinuz", ip6_3.clone()), tftp6("artifacts/initramfs.img", ip6_3.clone()));
                move |l: &str, e: &[_]| k(l, e) && i(l, e)
            }),
        ),
        ("the installer up on IPv6 (booted-installer)", event6(Phase::BootedInstaller)),
    ];
    let mut watched = Vec::new();
    // A whole install and first boot; a boot to the installer (about 90 s, two minutes at most
    // in the runs so far) fails well before, when PXE over IPv6 falls through to HTTP boot.
    let (install, to_installer) = (Duration::from_secs(1800), Duration::from_secs(420));
    for (spec, mac, steps, limit) in
        [(spec1, mac1, node1, install), (spec2, mac2, node2, to_installer), (spec3, mac3, node3, to_installer)]
    {
        let disk = check(lab.subdir(&spec.name).and_then(|d| Disk::blank(&d, DISK_BYTES)));
        let machine = check(Machine::power_on(&lab, &spec, &disk));
        watched.push(Watched { name: spec.name.clone(), mac, machine: Some(machine), steps, next: 0, limit });
    }
    let started = std::time::Instant::now();
    while watched.iter().any(|w| w.machine.is_some()) {
        let log = lab.log_text();
        for w in watched.iter_mut().filter(|w| w.machine.is_some()) {
            let events = lab.events(&w.mac).unwrap_or_default();
            while w.next < w.steps.len() && (w.steps[w.next].1)(&log, &events) {
                eprintln!("{test}: +{:.1} s {}: {}", started.elapsed().as_secs_f64(), w.name, w.steps[w.next].0);
                w.next += 1;
            }
            if w.next == w.steps.len() {
                if let Some(m) = w.machine.take() {
                    m.power_off();
                }
                continue;
            }
            let machine = w.machine.as_mut().expect("running");
            let broken = machine.check_running().err().or_else(|| lab.check_bootsvc().err());
            if broken.is_some() || signals::requested() || started.elapsed() > w.limit {
                lab.failed();
                panic!(
                    "{test}: {}: waiting for {} ({:.0} s): {}\nbootsvc:\n{}\nconsole:\n{}",
                    w.name,
                    w.steps[w.next].0,
                    started.elapsed().as_secs_f64(),
                    broken.map_or_else(
                        || if signals::requested() { "stopped by a signal" } else { "timed out" }.to_string(),
                        |e| format!("{e:#}")
                    ),
                    osie_qemu_tests::console::tail(&log, 30),
                    osie_qemu_tests::console::tail(&machine.console(), 30)
                );
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

type Seen<'a> = Box<dyn Fn(&str, &[bootsvc::state::StoredEvent]) -> bool + 'a>;

/// One machine of scenario (j), the steps it must show in order, and how far it got; off
/// (`machine` taken) once it showed them all.
struct Watched<'a> {
    name: String,
    mac: String,
    machine: Option<Machine>,
    steps: Vec<(&'a str, Seen<'a>)>,
    next: usize,
    /// From power on to its last step.
    limit: Duration,
}

//! Smoke test of the boot environment: `build/boot/vmlinuz` + `initramfs.img` booted
//! directly by QEMU (`-kernel/-initrd/-append`, TCG) on a bridge in a network namespace with
//! dnsmasq for DHCP and a small HTTP server standing in for bootsvc (`/metadata` gives an
//! install plan whose image 404s, `/events` records what the installer posts).
//!
//! It checks the boot side end to end: modules from coldplug (virtio_pci → virtio_net,
//! virtio_blk), the DHCP lease, the hardware inventory (the virtio disk and the NIC's MAC),
//! the metadata fetch, a `failed` event with the error chain, the chain on the console, and
//! the reboot that follows (`-no-reboot` turns it into QEMU exiting). Serial logs are kept
//! under `qemu-tests/artifacts/` when it fails (always with `OSIE_KEEP_ARTIFACTS=1`).
//!
//! The scenarios: the failure path above; `osie.rescue` keeping a failed machine up; an
//! install that ends in kexec into the installed kernel (not into another disk's system);
//! drivers loaded from xz-compressed modules. The first and third need the install side
//! (`installer::install`, `report`) to be real.
//!
//! `scripts/build` makes `build/boot/`; without it the tests skip (fail under
//! `OSIE_REQUIRE_ALL=1`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osie_api::metadata::{DiskHints, GptPlan};
use osie_api::{ChecksumOf, CloudInit, Event, Finish, Image, ImageFormat, InstallPlan, MacAddr, Metadata, Phase};
use osie_testkit::qemu::{DirectBoot, Drive, Nic, Qemu};
use osie_testkit::{require_root, require_tools, unique, workspace_root, ChildGuard, Netns};

const SERVER: &str = "192.0.2.1";
const PORT: u16 = 8080;
const MAC: &str = "52:54:00:05:0e:01";
const DISK_BYTES: u64 = 2 << 30;
/// Kernel to `/init` is ~6 s under TCG, modules and DHCP a few more, then the 10 s pause
/// before the reboot: a minute is plenty, the limit is for a hung guest.
const BOOT_LIMIT: Duration = Duration::from_secs(240);
/// For every guest kernel here: TCG on a loaded 2-core host can miss the kernel's IO-APIC
/// timer check ("IO-APIC + timer doesn't work" panic), so skip it; and should the kernel
/// panic anyway, reboot at once (QEMU exits, the test fails fast with the panic on record).
const TEST_KERNEL_ARGS: &str = "no_timer_check panic=-1";

/// One request the stand-in bootsvc saw.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    mac_header: Option<String>,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 server in the namespace: `GET /metadata`, `POST /events`, `GET` of
/// the files it was given (an image), 404 for everything else. One thread per connection,
/// `Connection: close`.
struct Bootsvc {
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Bootsvc {
    fn start(ns: &Netns, metadata: String) -> Bootsvc {
        Self::with_files(ns, metadata, HashMap::new())
    }

    fn with_files(ns: &Netns, metadata: String, files: HashMap<String, Vec<u8>>) -> Bootsvc {
        let files = Arc::new(files);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = ns.spawn(move || {
            let l = TcpListener::bind((SERVER, PORT))?;
            l.set_nonblocking(true)?;
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (r, md, f) = (Arc::clone(&r), metadata.clone(), Arc::clone(&files));
                        std::thread::spawn(move || serve(c, &r, &md, &f));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        });
        Bootsvc { requests, stop, thread: Some(thread) }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<Event> {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/events")
            .map(|r| serde_json::from_slice(&r.body).expect("an event that parses as osie_api::Event"))
            .collect()
    }
}

impl Drop for Bootsvc {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    c: TcpStream,
    log: &Mutex<Vec<Request>>,
    metadata: &str,
    files: &HashMap<String, Vec<u8>>,
) -> anyhow::Result<()> {
    c.set_nonblocking(false)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let (mut len, mut mac_header) = (0usize, None);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse()?,
                "x-osie-mac" => mac_header = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let (status, reply): (&str, &[u8]) = match (method.as_str(), path.as_str()) {
        ("GET", "/metadata") => ("200 OK", metadata.as_bytes()),
        ("POST", "/events") => ("200 OK", br#"{"stored":true,"duplicate":false}"#),
        ("GET", p) if files.contains_key(p) => ("200 OK", &files[p]),
        _ => ("404 Not Found", b"not found\n"),
    };
    log.lock().unwrap().push(Request { method, path, mac_header, body });
    let mut w = c;
    write!(w, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", reply.len())?;
    w.write_all(reply)?;
    Ok(())
}

fn metadata(mac: MacAddr) -> String {
    let image = Image {
        url: format!("http://{SERVER}:{PORT}/images/missing.raw.zst"),
        sha256: "0".repeat(64),
        size: None,
        raw_size: None,
        format: ImageFormat::Zstd,
        checksum_of: ChecksumOf::Compressed,
        digest_algo: Default::default(),
    };
    metadata_for(mac, image, Finish::Reboot, DiskHints::default())
}

fn metadata_for(mac: MacAddr, image: Image, finish: Finish, disk: DiskHints) -> String {
    let md = Metadata {
        instance_id: "i-smoke".into(),
        hostname: "smoke".into(),
        mac,
        install: Some(InstallPlan {
            image,
            disk,
            gpt: GptPlan::default(),
            finish,
            uefi: Default::default(),
            steps: Vec::new(),
        }),
        erase: None,
        cloud_init: CloudInit::default(),
        ssh_keys: vec![],
        metadata_base_url: None,
        phone_home_url: None,
    };
    serde_json::to_string(&md).unwrap()
}

/// Where logs go; removed when the test passes, kept (and named) when it fails.
struct Artifacts(PathBuf);

impl Drop for Artifacts {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("OSIE_KEEP_ARTIFACTS").is_some() {
            eprintln!("boot_smoke: logs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn boot_files(test: &str) -> Option<(PathBuf, PathBuf)> {
    let dir = workspace_root().join("build/boot");
    let (k, i) = (dir.join("vmlinuz"), dir.join("initramfs.img"));
    if k.is_file() && i.is_file() {
        return Some((k, i));
    }
    let why = format!("{} has no vmlinuz + initramfs.img (run scripts/build)", dir.display());
    if std::env::var_os("OSIE_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("{test}: {why}");
    }
    eprintln!("SKIP {test}: {why}");
    None
}

fn serial_has(serial: &Path, needle: &str) -> bool {
    std::fs::read_to_string(serial).is_ok_and(|s| s.contains(needle))
}

#[test]
fn installer_boots_gets_a_lease_reports_failure_and_reboots() {
    let test = "installer_boots_gets_a_lease_reports_failure_and_reboots";
    if !require_root(test) || !require_tools(test, &["ip", "dnsmasq", "qemu-system-x86_64"]) {
        return;
    }
    let Some((kernel, initrd)) = boot_files(test) else { return };
    let art = Artifacts(workspace_root().join("qemu-tests/artifacts").join(unique("smoke-")));
    std::fs::create_dir_all(&art.0).unwrap();
    let serial = art.0.join("serial.log");
    let mac: MacAddr = MAC.parse().unwrap();

    let ns = lab();
    let _dnsmasq = ChildGuard::spawn("dnsmasq", &mut dnsmasq(&ns, &art.0)).unwrap();
    let bootsvc = Bootsvc::start(&ns, metadata(mac));

    let (mut vm, _disk) = boot_installer(&ns, &art.0, &kernel, &initrd, &[]);

    // -no-reboot: the installer's reboot after the failure ends QEMU.
    let start = Instant::now();
    let status = wait_exit(&mut vm, &serial);
    let elapsed = start.elapsed();
    let log = std::fs::read_to_string(&serial).unwrap();
    let phase = |needle: &str, what: &str| expect_on_console(&log, &serial, needle, what);
    assert!(status.success(), "QEMU exited with {status}");
    phase("Run /init as init process", "the kernel starting /init");
    phase("osie: installer", "the installer starting as PID 1");
    let modules = log.lines().find(|l| l.starts_with("osie: modules loaded:")).unwrap_or_default().to_string();
    for m in ["virtio_pci", "virtio_net", "virtio_blk"] {
        assert!(modules.split_whitespace().any(|w| w == m), "{m} not loaded by coldplug: {modules:?}");
    }
    let net = log.lines().find(|l| l.starts_with("osie: network ")).unwrap_or_default().to_string();
    assert!(
        net.contains(&format!("({MAC}) 192.0.2.1")) && net.contains("via 192.0.2.1 (dhcp)"),
        "no DHCP lease: {net:?}"
    );
    let leases = std::fs::read_to_string(art.0.join("leases")).unwrap_or_default();
    assert!(leases.contains(MAC), "dnsmasq has no lease for {MAC}: {leases:?}");
    phase(&format!("/dev/vda {DISK_BYTES} B"), "the hardware inventory with the virtio disk");
    phase("osie: INSTALL FAILED", "the failure on the console");
    phase("missing.raw.zst", "the error chain naming the image");
    phase("osie: rebooting", "the reboot after the failure");
    assert!(serial_has(&serial, "osie:   caused by:"), "the console shows the causes, not just the outermost error");

    // What the stand-in bootsvc saw.
    let reqs = bootsvc.requests();
    let md = reqs.iter().find(|r| r.method == "GET" && r.path == "/metadata").expect("metadata was never fetched");
    assert_eq!(md.mac_header.as_deref(), Some(MAC), "X-Osie-Mac on the metadata request");
    assert!(reqs.iter().any(|r| r.path == "/images/missing.raw.zst"), "the image was never requested");
    let events = bootsvc.events();
    assert!(!events.is_empty(), "no events received");
    assert!(events.iter().all(|e| e.machine == mac));
    let first = &events[0];
    let hw = first.hardware.as_ref().expect("the first event carries the hardware inventory");
    assert!(hw.disks.iter().any(|d| d.path == "/dev/vda" && d.size == DISK_BYTES), "{:?}", hw.disks);
    assert!(hw.nics.iter().any(|n| n.mac == mac && n.driver.as_deref() == Some("virtio_net")), "{:?}", hw.nics);
    assert!(hw.cpu.threads >= 1 && hw.memory_bytes > 512 << 20);
    let failed = events.iter().find(|e| e.phase == Phase::Failed).expect("a failed event");
    assert!(failed.error.len() >= 2, "the whole chain, not one line: {:?}", failed.error);
    assert!(failed.error.iter().any(|e| e.contains("missing.raw.zst") || e.contains("404")), "{:?}", failed.error);
    eprintln!("boot_smoke: QEMU booted, failed as planned and rebooted in {:.1} s", elapsed.as_secs_f64());
}

/// A namespace with the bridge (holding the server address) and the tap QEMU's NIC uses.
fn lab() -> Netns {
    let ns = Netns::new().unwrap();
    ns.add_bridge("br0", &format!("{SERVER}/24")).unwrap();
    ns.add_tap("tap0", "br0").unwrap();
    ns
}

/// The installer booting with the test's `osie.*` arguments, a blank 2 GiB virtio disk
/// (`/dev/vda`) and `more` disks after it.
fn boot_installer(ns: &Netns, dir: &Path, kernel: &Path, initrd: &Path, more: &[&Path]) -> (ChildGuard, PathBuf) {
    let disk = dir.join("disk.raw");
    std::fs::File::create(&disk).unwrap().set_len(DISK_BYTES).unwrap();
    let mut q = machine(dir, kernel, initrd, &format!("osie.url=http://{SERVER}:{PORT} osie.mac={MAC}"));
    for d in std::iter::once(disk.as_path()).chain(more.iter().copied()) {
        q.disk(Drive::new(d));
    }
    (ChildGuard::spawn("qemu", &mut command(&q, ns, dir)).unwrap(), disk)
}

/// Fail naming the phase that never came and the last thing the installer said.
fn expect_on_console(log: &str, serial: &Path, needle: &str, what: &str) {
    assert!(log.contains(needle), "{what} never came (no {needle:?} on the console); last: {}", last_osie_line(serial));
}

/// A machine booting the kernel directly, serial to `<dir>/serial.log`, a virtio NIC on
/// `tap0` (no option ROM), `-no-reboot` so a reboot ends the process; QEMU's default devices
/// kept.
fn machine(dir: &Path, kernel: &Path, initrd: &Path, osie_args: &str) -> Qemu {
    let mut q = Qemu::new(1024, &dir.join("serial.log"));
    (q.cpus, q.nodefaults, q.no_reboot) = (Some(1), false, true);
    q.direct = Some(DirectBoot {
        kernel: kernel.to_path_buf(),
        initrd: initrd.to_path_buf(),
        append: format!("console=ttyS0 {TEST_KERNEL_ARGS} {osie_args}"),
    });
    q.nic(Nic { tap: "tap0".into(), mac: Some(MAC.into()), rom: false, bootindex: None });
    q
}

/// QEMU for `q` in `ns`, its output in `<dir>/qemu.out` and `qemu.err`.
fn command(q: &Qemu, ns: &Netns, dir: &Path) -> std::process::Command {
    let mut cmd = q.command(ns);
    cmd.stdout(std::fs::File::create(dir.join("qemu.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("qemu.err")).unwrap());
    cmd
}

/// `osie.rescue`: a failure (here a command line without `osie.mac`) leaves the machine up
/// with the error on the console instead of rebooting. The initramfs has no shell, so it
/// says so and waits.
#[test]
fn rescue_mode_stays_up_after_a_failure() {
    let test = "rescue_mode_stays_up_after_a_failure";
    if !require_root(test) || !require_tools(test, &["ip", "qemu-system-x86_64"]) {
        return;
    }
    let Some((kernel, initrd)) = boot_files(test) else { return };
    let art = Artifacts(workspace_root().join("qemu-tests/artifacts").join(unique("rescue-")));
    std::fs::create_dir_all(&art.0).unwrap();
    let serial = art.0.join("serial.log");
    let ns = lab();
    let q = machine(&art.0, &kernel, &initrd, &format!("osie.url=http://{SERVER}:{PORT} osie.rescue"));
    let mut vm = ChildGuard::spawn("qemu", &mut command(&q, &ns, &art.0)).unwrap();
    osie_testkit::wait_for("the rescue message", BOOT_LIMIT, || {
        serial_has(&serial, "osie.rescue: no shell in this initramfs; staying up").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}; last: {}", last_osie_line(&serial)));
    let log = std::fs::read_to_string(&serial).unwrap();
    assert!(log.contains("osie: INSTALL FAILED"), "{log}");
    assert!(log.contains("caused by: kernel command line has no osie.mac="), "the cause is on the console");
    assert!(!log.contains("osie: rebooting"));
    // Still up a while later: no reboot, no kernel panic (PID 1 did not exit).
    std::thread::sleep(Duration::from_secs(5));
    vm.check_running().unwrap();
    assert!(!serial_has(&serial, "Kernel panic"), "PID 1 must never exit");
}

/// A small OS image to install: GPT, one ext4 partition labelled `root` holding our own
/// kernel and initramfs as `/boot/vmlinuz` and `/boot/initrd.img`, and a grub.cfg whose
/// command line marks the second boot (and, lacking `osie.mac`, makes it fail and reboot).
fn kexec_image(dir: &Path, kernel: &Path, initrd: &Path, mark: &str) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("boot/grub")).unwrap();
    std::fs::copy(kernel, root.join("boot/vmlinuz")).unwrap();
    std::fs::copy(initrd, root.join("boot/initrd.img")).unwrap();
    std::fs::write(
        root.join("boot/grub/grub.cfg"),
        format!(
            "set default=0\nmenuentry 'osie test' {{\n\tlinux /boot/vmlinuz root=LABEL=root ro console=ttyS0 {TEST_KERNEL_ARGS} osie.url=http://{SERVER}:{PORT} {mark}\n\tinitrd /boot/initrd.img\n}}\n"
        ),
    )
    .unwrap();
    let fs = dir.join("root.ext4");
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::File::create(&fs).unwrap().set_len(PART_MIB << 20).unwrap();
    run(std::process::Command::new("mkfs.ext4").args(["-q", "-F", "-L", "root", "-d"]).arg(&root).arg(&fs));
    let img = dir.join("kexec.raw");
    std::fs::File::create(&img).unwrap().set_len((PART_MIB + 2) << 20).unwrap();
    run(std::process::Command::new("sgdisk")
        .args(["-n", &format!("1:2048:+{PART_MIB}M"), "-t", "1:8300", "-c", "1:root"])
        .arg(&img));
    let mut raw = std::fs::read(&img).unwrap();
    let part = std::fs::read(&fs).unwrap();
    raw[1 << 20..(1 << 20) + part.len()].copy_from_slice(&part);
    raw
}

const PART_MIB: u64 = 48;
const KEXEC_MARK: &str = "osie.test-second-boot";
/// On a second disk: another system with a kernel but not this install's seed.
const DECOY_MARK: &str = "osie.test-decoy";

fn sha256_hex(data: &[u8], dir: &Path) -> String {
    let f = dir.join("sha-input");
    std::fs::write(&f, data).unwrap();
    let out = std::process::Command::new("sha256sum").arg(&f).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// A whole install ending in `finish: kexec`: the image is streamed onto the virtio disk,
/// then the installer finds the installed kernel on it and kexecs into it — not into the
/// other system on the second disk, which has a kernel but not this install's seed. The second boot
/// shows our marker on its command line (read from the installed grub.cfg) — without going
/// through the firmware: QEMU runs with `-no-reboot`, so a firmware reboot would end it.
#[test]
fn install_then_kexec_into_the_installed_kernel() {
    let test = "install_then_kexec_into_the_installed_kernel";
    if !require_root(test)
        || !require_tools(test, &["ip", "dnsmasq", "qemu-system-x86_64", "sgdisk", "mkfs.ext4", "sha256sum"])
    {
        return;
    }
    let Some((kernel, initrd)) = boot_files(test) else { return };
    let art = Artifacts(workspace_root().join("qemu-tests/artifacts").join(unique("kexec-")));
    std::fs::create_dir_all(&art.0).unwrap();
    let serial = art.0.join("serial.log");
    let mac: MacAddr = MAC.parse().unwrap();
    let image = kexec_image(&art.0, &kernel, &initrd, KEXEC_MARK);
    let decoy = art.0.join("decoy.raw");
    std::fs::write(&decoy, kexec_image(&art.0.join("decoy"), &kernel, &initrd, DECOY_MARK)).unwrap();
    let sha = sha256_hex(&image, &art.0);
    let spec = Image {
        url: format!("http://{SERVER}:{PORT}/images/kexec.raw"),
        sha256: sha,
        size: Some(image.len() as u64),
        raw_size: Some(image.len() as u64),
        format: ImageFormat::Raw,
        checksum_of: ChecksumOf::Raw,
        digest_algo: Default::default(),
    };

    let ns = lab();
    let _dnsmasq = ChildGuard::spawn("dnsmasq", &mut dnsmasq(&ns, &art.0)).unwrap();
    let files = HashMap::from([("/images/kexec.raw".to_string(), image)]);
    // The decoy is the smaller disk: without the hint it would be the one installed to.
    let hints = DiskHints { path: Some("/dev/vda".into()), ..Default::default() };
    let bootsvc = Bootsvc::with_files(&ns, metadata_for(mac, spec, Finish::Kexec, hints), files);
    let (mut vm, disk) = boot_installer(&ns, &art.0, &kernel, &initrd, &[&decoy]);

    // The second boot fails on purpose (no osie.mac) and reboots: QEMU exits.
    let status = wait_exit(&mut vm, &serial);
    let log = std::fs::read_to_string(&serial).unwrap();
    let phase = |needle: &str, what: &str| expect_on_console(&log, &serial, needle, what);
    assert!(status.success(), "QEMU exited with {status}");
    phase("osie: install finished; next: kexec", "the end of the install");
    phase("osie: kexec into /boot/vmlinuz", "the kexec load");
    assert_eq!(
        log.matches("Run /init as init process").count(),
        2,
        "two boots: the installer, then the kexec'd kernel"
    );
    let second = log.rsplit("Run /init as init process").next().unwrap_or_default();
    let cmdline = log.lines().filter(|l| l.contains("Command line:")).nth(1).unwrap_or_default();
    assert!(!cmdline.contains(DECOY_MARK), "kexec picked the other disk's system: {cmdline:?}");
    assert!(
        cmdline.contains(KEXEC_MARK) && cmdline.contains("root=LABEL=root"),
        "second kernel's command line: {cmdline:?}"
    );
    assert!(
        second.contains("kernel command line has no osie.mac="),
        "the second boot ran our /init from the installed initrd"
    );
    let events = bootsvc.events();
    assert!(
        events.iter().any(|e| e.phase == Phase::Installed),
        "no installed event: {:?}",
        events.iter().map(|e| e.phase).collect::<Vec<_>>()
    );
    // The disk holds the image: its partition table names our root partition.
    let out = std::process::Command::new("sgdisk").arg("-p").arg(&disk).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("root"), "{}", String::from_utf8_lossy(&out.stdout));
}

fn dnsmasq(ns: &Netns, dir: &Path) -> std::process::Command {
    let mut d = ns.cmd("dnsmasq");
    d.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--bind-interfaces",
        "--interface=br0",
        "--user=root",
        "--log-dhcp",
        // No ping-before-offer: saves 3 s per boot, nothing else is on this bridge.
        "--no-ping",
        "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h",
        "--dhcp-option=option:router,192.0.2.1",
        "--dhcp-option=option:dns-server,192.0.2.1",
    ])
    .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
    .stdout(std::fs::File::create(dir.join("dnsmasq.log")).unwrap())
    .stderr(std::fs::File::create(dir.join("dnsmasq.err")).unwrap());
    d
}

/// Wait for QEMU to exit (a reboot under `-no-reboot`), failing after [`BOOT_LIMIT`] with the
/// last thing the installer said.
fn wait_exit(vm: &mut ChildGuard, serial: &Path) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = vm.child.try_wait().unwrap() {
            return st;
        }
        assert!(
            start.elapsed() < BOOT_LIMIT,
            "QEMU still running after {BOOT_LIMIT:?}; last phase on the console: {}",
            last_osie_line(serial)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Modules stored xz-compressed, as distribution kernels ship them: coldplug still loads
/// the drivers (this 6.1 kernel cannot decompress in `finit_module`, so the installer falls
/// back to decompressing and `init_module`), and the machine gets its lease.
#[test]
fn xz_compressed_modules_load() {
    let test = "xz_compressed_modules_load";
    if !require_root(test) || !require_tools(test, &["ip", "dnsmasq", "qemu-system-x86_64"]) {
        return;
    }
    let Some((kernel, _)) = boot_files(test) else { return };
    let art = Artifacts(workspace_root().join("qemu-tests/artifacts").join(unique("xz-")));
    std::fs::create_dir_all(&art.0).unwrap();
    let built = osie_initramfs::image::build(&osie_initramfs::image::Options {
        kernel_root: workspace_root().join("build/kernel/root"),
        release: None,
        init: workspace_root().join("build/boot/installer"),
        // Only what this machine needs: compressing every module takes long in a debug build.
        modules: ["virtio_pci", "virtio_net", "virtio_blk", "ata_piix"].map(String::from).to_vec(),
        compression: osie_initramfs::compress::Compression::Zstd,
        level: Some(3),
        module_compression: osie_initramfs::compress::ModuleCompression::Xz,
    })
    .unwrap();
    let initrd = art.0.join("initramfs-xz.img");
    std::fs::write(&initrd, &built.image).unwrap();
    let serial = art.0.join("serial.log");
    let mac: MacAddr = MAC.parse().unwrap();
    let ns = lab();
    let _dnsmasq = ChildGuard::spawn("dnsmasq", &mut dnsmasq(&ns, &art.0)).unwrap();
    // No install plan: the run ends right after the metadata, with a failure and a reboot.
    let mut md: Metadata = serde_json::from_str(&metadata(mac)).unwrap();
    md.install = None;
    let _bootsvc = Bootsvc::start(&ns, serde_json::to_string(&md).unwrap());
    let (mut vm, _disk) = boot_installer(&ns, &art.0, &kernel, &initrd, &[]);
    let status = wait_exit(&mut vm, &serial);
    let log = std::fs::read_to_string(&serial).unwrap();
    assert!(status.success(), "QEMU exited with {status}");
    let modules = log.lines().find(|l| l.starts_with("osie: modules loaded:")).unwrap_or_default().to_string();
    for m in ["virtio_pci", "virtio_net", "virtio_blk"] {
        assert!(modules.split_whitespace().any(|w| w == m), "{m} not loaded from .ko.xz: {modules:?}");
    }
    expect_on_console(&log, &serial, "(dhcp)", "the DHCP lease");
    expect_on_console(&log, &serial, "osie: rebooting", "the reboot after the failure");
}

/// The last line the installer printed, for failure messages that say where it stopped.
fn last_osie_line(serial: &Path) -> String {
    let log = std::fs::read_to_string(serial).unwrap_or_default();
    if let Some(panic) = log.lines().find(|l| l.contains("Kernel panic")) {
        return panic.to_string();
    }
    log.lines()
        .rev()
        .find(|l| l.starts_with("osie:") || l.contains(" INFO ") || l.contains(" ERROR "))
        .unwrap_or("(nothing from the installer)")
        .to_string()
}

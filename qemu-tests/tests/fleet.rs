//! Issue 12's QEMU scenario: two bootsvc instances on one PostgreSQL (`osie_qemu_tests::fleet`),
//! one BIOS machine (SeaBIOS + iPXE ROM, reservation mode, fixed address). The instance that
//! answered the machine's DHCP and served its iPXE script is SIGKILLed while the image
//! streams; the install completes through the other, the machine boots its OS, and the
//! database holds each phase once (one `installed`, one `first-boot`). See
//! `qemu-tests/README.md`.
//!
//! A scenario of its own rather than a variant of (a): (a) is the one BIOS install on the
//! embedded store, the default an operator starts with, and keeps proving it.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use anyhow::{ensure, Context, Result};
use osie_api::Phase;
use osie_qemu_tests::bootlog::{self, Seen};
use osie_qemu_tests::clock::{fmt_offset, offset, parse_rfc3339};
use osie_qemu_tests::fleet::{self, PEER_URL};
use osie_qemu_tests::flow::{self, Limits};
use osie_qemu_tests::lab::PUBLIC_URL;
use osie_qemu_tests::timeline::Step;
use osie_qemu_tests::{signals, Disk, Firmware, Inputs, Lab, Machine, Record, Spec};

const DISK_BYTES: u64 = 4 << 30;

fn check<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

/// Which instance (0: A, 1: B) acked iPXE's DHCP with its own script URL and served the
/// script; an error when none, or both, did.
fn answering(lab: &Lab, mac: &str) -> Result<usize> {
    let mut who = Vec::new();
    for (i, s) in lab.instances().into_iter().enumerate() {
        let log = bootlog::read(s.log_path());
        let base = if i == 0 { PUBLIC_URL } else { PEER_URL };
        let script = format!("{base}/boot/{mac}.ipxe");
        let acked = log.iter().any(|e| {
            matches!(&e.seen, Seen::Dhcp(d) if d.mac == mac && d.reply.as_deref() == Some("ack")
                && d.class == "ipxe" && d.boot_file.as_deref() == Some(script.as_str()))
        });
        let served =
            log.iter().any(|e| matches!(&e.seen, Seen::Script { mac: m, kind, .. } if m == mac && kind == "installer"));
        if served {
            ensure!(
                acked,
                "instance {} served the script but its log has no DHCP ack to iPXE naming it",
                fleet::name(i)
            );
            who.push(i);
        }
    }
    ensure!(who.len() == 1, "the installer's script was served by {} instances, not one", who.len());
    Ok(who[0])
}

#[test]
fn h_bios_instance_killed_mid_image_installs_through_the_other() {
    let test = "h_bios_instance_killed_mid_image_installs_through_the_other";
    let Some(inputs) = Inputs::for_test(test) else { return };
    signals::install();
    let mac = "52:54:00:e2:0f:01";
    let rec = Record::new("node1", mac, Lab::address(1));
    let Some(lab) = check(Lab::start_fleet(test, &inputs, std::slice::from_ref(&rec))) else { return };
    // Both instances serve the record from the database.
    for s in lab.instances() {
        check(s.admin_cli(&["machine", mac, "show", "--json"]).context("the imported record"));
    }
    let disk = check(lab.subdir("node1").and_then(|d| Disk::blank(&d, DISK_BYTES)));
    let spec = Spec::new("node1", mac, Firmware::Bios);
    let mut machine = check(Machine::power_on(&lab, &spec, &disk));
    let started = Instant::now();
    let limits = Limits::default();
    let mut w = flow::watch(&lab, &mut machine, &rec);

    check(w.until("iPXE script (installer)", limits.firmware, |t| {
        t.first(|m| m.step == Step::Script && m.detail == "kind installer").is_some()
    }));
    let dead = check(answering(&lab, mac));
    let survivor = 1 - dead;
    let (dead_url, survivor_url) = if dead == 0 { (PUBLIC_URL, PEER_URL) } else { (PEER_URL, PUBLIC_URL) };
    check(w.phase(Phase::BootedInstaller, limits.installer));
    // Bytes are flowing from the instance that answered: a progress sample (every 2 s of
    // the stream) with bytes done.
    check(w.phase(Phase::ImageStreaming, limits.install));
    let waiting = Instant::now();
    let streamed = loop {
        let done = w.events().iter().filter_map(|e| e.event.progress.as_ref()).map(|p| p.bytes_done).max();
        if let Some(n) = done.filter(|n| *n > 0) {
            break n;
        }
        if waiting.elapsed() > limits.install {
            panic!("{}", w.fail("an image-streaming sample with bytes done", "not within the install's limit"));
        }
        if let Err(e) = w.refresh() {
            panic!("{}", w.fail("an image-streaming sample with bytes done", &format!("{e:#}")));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let killed_at = SystemTime::now();
    check(lab.kill9(dead));
    let kill_mark = offset(killed_at, w.machine.powered_on);
    eprintln!(
        "{test}: {} SIGKILL to {} ({:.0} MB of the image written)",
        fmt_offset(kill_mark),
        fleet::name(dead),
        streamed as f64 / 1e6
    );
    check(w.phase(Phase::ImageVerified, limits.install));
    check(w.phase(Phase::Installed, limits.installer));
    check(flow::first_boot(&mut w, &limits));
    let t = w.timeline().clone();
    if let Err(e) = flow::check_provisioned(&lab, &rec, &t) {
        panic!("{}", w.fail("a correctly provisioned machine", &format!("{e:#}")));
    }
    let failover = match after_the_kill(&lab, &rec, killed_at, dead_url, survivor_url, survivor) {
        Ok(f) => f,
        Err(e) => panic!("{}", w.fail("the install and first boot through the surviving instance", &format!("{e:#}"))),
    };
    let fb = t.event(Phase::FirstBoot).map(|m| fmt_offset(m.at)).unwrap_or_default();
    eprintln!(
        "{test}: killed {} at {}, the installer on {} {} later, first-boot at {fb}, {} s in all\n{}",
        fleet::name(dead),
        fmt_offset(kill_mark),
        fleet::name(survivor),
        fmt_offset(failover),
        started.elapsed().as_secs(),
        t.render()
    );
}

/// What must hold once the machine phoned home: the image came from the survivor after a
/// failover, each phase is stored once in the database, and the installed OS's DHCP and
/// phone-home went to the survivor. The time from the kill to the first event the survivor
/// stored with the failover note.
fn after_the_kill(
    lab: &Lab,
    rec: &Record,
    killed_at: SystemTime,
    dead_url: &str,
    survivor_url: &str,
    survivor: usize,
) -> Result<std::time::Duration> {
    let events = lab.events(&rec.mac)?;
    let verified = events.iter().find(|e| e.event.phase == Phase::ImageVerified).context("no image-verified")?;
    ensure!(
        verified.event.message.contains(&format!("from {survivor_url}/images/")),
        "the image was not finished from {survivor_url}: {}",
        verified.event.message
    );
    // Resumed where the dead instance's stream stopped, not started over.
    let resumes = verified
        .event
        .message
        .split_once(" resumes, 0 restarts")
        .and_then(|(head, _)| head.rsplit(' ').next().and_then(|n| n.parse::<u32>().ok()));
    ensure!(resumes.is_some_and(|n| n >= 1), "the image was not resumed on {survivor_url}: {}", verified.event.message);
    let note = format!("[failover: {dead_url} failed");
    let noted: Vec<_> = events.iter().filter(|e| e.event.message.contains(&note)).collect();
    ensure!(noted.len() == 1, "{} events carry {note:?}, not one", noted.len());
    let moved = parse_rfc3339(&noted[0].received).context("the noted event's time")?;
    let failover = moved.duration_since(killed_at).context("the failover note came before the kill")?;

    // Each phase once in the database (image-streaming is progress: one or more), whichever
    // instance stored it; an event re-sent after the kill is not stored twice.
    let rows = lab.fleet()?.sql("SELECT phase, count(*) FROM events GROUP BY phase ORDER BY phase")?;
    let counts: BTreeMap<&str, u64> = rows
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(p, n)| Ok((p, n.parse::<u64>().with_context(|| format!("the count {n:?} of {p}"))?)))
        .collect::<Result<_>>()?;
    for p in [Phase::BootedInstaller, Phase::ImageVerified, Phase::Installed, Phase::FirstBoot] {
        ensure!(counts.contains_key(p.as_str()), "no {p} in the database: {counts:?}");
    }
    for (p, n) in &counts {
        ensure!(*n == 1 || *p == Phase::ImageStreaming.as_str(), "{p} stored {n} times: {counts:?}");
    }
    ensure!(!counts.contains_key(Phase::Failed.as_str()), "a failed event: {counts:?}");

    // After the kill the survivor alone answered the machine: the reboot's DHCP (no boot
    // file) and the installed OS's own (no arch option), with the record's address.
    let log = bootlog::read(lab.instances()[survivor].log_path());
    let acks: Vec<_> = log
        .iter()
        .filter(|e| e.time > killed_at)
        .filter_map(|e| match &e.seen {
            Seen::Dhcp(d) if d.mac == rec.mac && d.reply.as_deref() == Some("ack") => Some(d),
            _ => None,
        })
        .collect();
    ensure!(
        acks.iter().any(|d| d.arch.is_none() && d.yiaddr == Some(rec.ip)),
        "the surviving instance did not ack the installed OS's DHCP with {}: {acks:?}",
        rec.ip
    );
    ensure!(acks.iter().all(|d| d.boot_file.is_none() && d.yiaddr == Some(rec.ip)), "after the install: {acks:?}");
    let fb = events.iter().find(|e| e.event.phase == Phase::FirstBoot).context("no first-boot")?;
    ensure!(fb.source == Some(rec.ip.into()), "first-boot from {:?}", fb.source);
    Ok(failover)
}

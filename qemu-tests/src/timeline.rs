//! The timeline of one machine: what bootsvc logged about it (DHCP, TFTP, iPXE script,
//! kernel and initramfs), the events it stored (installer phases, the installed OS's
//! `first-boot`) and lines the harness saw on the serial console, in order, with times
//! relative to power-on. Tests wait on it; `scripts/demo` prints it.
//!
//! [`Timeline::build`] is pure: the sources in, the marks out.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use bootsvc::state::StoredEvent;
use osie_api::Phase;

use crate::bootlog::{Dhcp, Entry, Seen};
use crate::clock::{fmt_offset, offset, parse_rfc3339};

/// What kind of step a mark is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    PowerOn,
    /// A DHCP offer or ack bootsvc sent the machine (details in [`Mark::dhcp`]).
    Dhcp,
    /// The firmware fetched the iPXE binary (TFTP, or HTTP for UEFI HTTP boot).
    BootProgram,
    /// iPXE fetched its script (`/boot/<mac>.ipxe`); the detail says which kind.
    Script,
    Kernel,
    Initrd,
    /// The installer started downloading the OS image.
    Image,
    /// An event bootsvc stored for the machine.
    Event(Phase),
    /// A line the harness watches for showed up on the serial console.
    Console,
}

#[derive(Debug, Clone)]
pub struct Mark {
    /// Since power-on.
    pub at: Duration,
    pub time: SystemTime,
    pub step: Step,
    /// Short name of the step (`DHCP`, `kernel`, `installed`…).
    pub label: String,
    pub detail: String,
    pub dhcp: Option<Dhcp>,
}

/// Which machine, and the names of the files that identify its steps.
#[derive(Debug, Clone)]
pub struct Who {
    pub mac: String,
    /// Its fixed address; `None` in proxy mode, where the addresses it asked the site DHCP
    /// server for (bootsvc logs them) are its addresses.
    pub ip: Option<Ipv4Addr>,
    pub kernel: String,
    pub initrd: String,
}

/// A line seen on the serial console, with when it was first seen.
#[derive(Debug, Clone)]
pub struct ConsoleMark {
    pub time: SystemTime,
    pub label: String,
    pub line: String,
}

#[derive(Debug, Clone)]
pub struct Timeline {
    pub powered_on: SystemTime,
    pub marks: Vec<Mark>,
}

/// Log lines up to this long before power-on still count (clock granularity); older ones
/// are from an earlier machine on the same lab.
const SLACK: Duration = Duration::from_secs(1);

impl Timeline {
    pub fn build(
        powered_on: SystemTime,
        who: &Who,
        log: &[Entry],
        events: &[StoredEvent],
        console: &[ConsoleMark],
    ) -> Timeline {
        let since = powered_on.checked_sub(SLACK).unwrap_or(powered_on);
        let mut marks = vec![mark(powered_on, powered_on, Step::PowerOn, "power on", String::new())];
        let recent: Vec<Entry> = log.iter().filter(|e| e.time >= since).cloned().collect();
        let mut addrs = crate::bootlog::requested(&recent, &who.mac);
        addrs.extend(who.ip);
        for e in &recent {
            if let Some(m) = log_mark(powered_on, who, &addrs, e) {
                marks.push(m);
            }
        }
        for ev in events {
            let Some(time) = parse_rfc3339(&ev.received) else { continue };
            if time < since {
                continue;
            }
            marks.push(mark(powered_on, time, Step::Event(ev.event.phase), ev.event.phase.as_str(), event_detail(ev)));
        }
        for c in console.iter().filter(|c| c.time >= since) {
            marks.push(mark(powered_on, c.time, Step::Console, &c.label, console_detail(&c.line)));
        }
        // Stable: within one instant the sources keep their order (power on first).
        marks.sort_by_key(|m| m.time);
        Timeline { powered_on, marks }
    }

    /// The first mark matching `f`.
    pub fn first(&self, f: impl Fn(&Mark) -> bool) -> Option<&Mark> {
        self.marks.iter().find(|m| f(m))
    }

    /// The first mark matching `f` that comes after `after`.
    pub fn first_after(&self, after: &Mark, f: impl Fn(&Mark) -> bool) -> Option<&Mark> {
        self.marks.iter().find(|m| m.time > after.time && f(m))
    }

    pub fn count(&self, f: impl Fn(&Mark) -> bool) -> usize {
        self.marks.iter().filter(|m| f(m)).count()
    }

    /// The first event of `phase`.
    pub fn event(&self, phase: Phase) -> Option<&Mark> {
        self.first(|m| m.step == Step::Event(phase))
    }

    /// The latest mark, for "how far did it get".
    pub fn last(&self) -> &Mark {
        // `build` always puts the power-on mark first.
        self.marks.last().unwrap_or_else(|| unreachable!("a timeline starts with power on"))
    }

    /// One line per mark. Runs of the same step (image-streaming progress, DHCP offer then
    /// ack) are shown by their last mark only, with the first one's time, so the timeline
    /// reads as phases.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.marks.len() {
            let m = &self.marks[i];
            let mut j = i;
            while j + 1 < self.marks.len() && same_run(m, &self.marks[j + 1]) {
                j += 1;
            }
            let last = &self.marks[j];
            let (from, to) = (fmt_offset(m.at), fmt_offset(last.at));
            let at = if from == to { from } else { format!("{from}…{to}") };
            let _ = writeln!(out, "  {at:>22}  {:<18} {}", last.label, last.detail);
            i = j + 1;
        }
        out
    }
}

fn same_run(a: &Mark, b: &Mark) -> bool {
    match (a.step, b.step) {
        (Step::Event(Phase::ImageStreaming), Step::Event(Phase::ImageStreaming)) => true,
        // DISCOVER/OFFER then REQUEST/ACK of one exchange.
        (Step::Dhcp, Step::Dhcp) => match (&a.dhcp, &b.dhcp) {
            (Some(x), Some(y)) => x.reply.as_deref() == Some("offer") && x.class == y.class && x.arch == y.arch,
            _ => false,
        },
        _ => false,
    }
}

fn mark(powered_on: SystemTime, time: SystemTime, step: Step, label: &str, detail: String) -> Mark {
    Mark { at: offset(time, powered_on), time, step, label: label.to_string(), detail, dhcp: None }
}

fn log_mark(powered_on: SystemTime, who: &Who, addrs: &[Ipv4Addr], e: &Entry) -> Option<Mark> {
    let m = |step, label: &str, detail: String| Some(mark(powered_on, e.time, step, label, detail));
    match &e.seen {
        // Answered, or (proxy mode) left unanswered with a reason: both say where it stands.
        Seen::Dhcp(d) if d.mac == who.mac && (d.reply.is_some() || d.why_not.is_some()) => {
            let client = match (d.arch, d.class.as_str()) {
                (None, _) => "a plain client (no arch option: installer or OS)".to_string(),
                (Some(a), "ipxe") => format!("iPXE, arch {a}"),
                (Some(a), c) => format!("{c}, arch {a}"),
            };
            let to = match (&d.boot_file, &d.why_not) {
                (Some(b), _) => format!("boot file {b}"),
                (None, Some(w)) => format!("no boot file ({w})"),
                (None, None) => "no boot file".to_string(),
            };
            let addr = d.yiaddr.map(|a| a.to_string()).unwrap_or_default();
            let detail = match d.reply.as_deref() {
                Some(reply) => format!("{reply} {addr} to {client}: {to}"),
                None => format!("no answer to {client}: {to}"),
            };
            let mut mk = mark(powered_on, e.time, Step::Dhcp, "DHCP", detail);
            mk.dhcp = Some(d.clone());
            Some(mk)
        }
        Seen::Tftp { client, file, bytes, complete } if addrs.contains(client) => {
            let how = if *complete { "complete" } else { "abandoned (firmware probing its size)" };
            m(Step::BootProgram, "boot program", format!("TFTP {file}: {bytes} bytes, {how}"))
        }
        Seen::Script { mac, kind, .. } if *mac == who.mac => m(Step::Script, "iPXE script", format!("kind {kind}")),
        Seen::File { what, file, peer, bytes } if addrs.contains(peer) => {
            let size = bytes.map(|b| format!(" ({:.1} MB)", b as f64 / 1e6)).unwrap_or_default();
            match what.as_str() {
                "artifact" if *file == who.kernel => m(Step::Kernel, "kernel", format!("{file}{size} over HTTP")),
                "artifact" if *file == who.initrd => m(Step::Initrd, "initramfs", format!("{file}{size} over HTTP")),
                "image" => m(Step::Image, "image download", format!("{file}{size}")),
                "boot-program" => m(Step::BootProgram, "boot program", format!("HTTP {file}{size}")),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A console line without the kernel's `[    1.234567] ` stamp, cut to a readable length.
fn console_detail(line: &str) -> String {
    let l = line.trim();
    let l = match l.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((stamp, rest)) if stamp.trim().parse::<f64>().is_ok() => rest,
        _ => l,
    };
    match l.char_indices().nth(72) {
        Some((i, _)) => format!("{}…", &l[..i]),
        None => l.to_string(),
    }
}

fn event_detail(ev: &StoredEvent) -> String {
    let e = &ev.event;
    let mut s = e.message.clone();
    if let Some(p) = &e.progress {
        let pct = p.percent().map(|p| format!("{p:.0}% ")).unwrap_or_default();
        let rate = p.rate.map(|r| format!(", {:.0} MB/s", r as f64 / 1e6)).unwrap_or_default();
        s = format!("{pct}{:.0} MB{rate}", p.bytes_done as f64 / 1e6);
    }
    if !e.error.is_empty() {
        s = format!("{s} [{}]", e.error.join(": "));
    }
    if let Some(src) = ev.source {
        s = format!("{s} (from {src})");
    }
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootlog::parse_line;
    use osie_api::{Event, MacAddr};
    use std::time::UNIX_EPOCH;

    const MAC: &str = "52:54:00:e2:00:01";

    fn who() -> Who {
        Who {
            mac: MAC.into(),
            ip: Some(Ipv4Addr::new(192, 0, 2, 21)),
            kernel: "vmlinuz".into(),
            initrd: "initramfs.img".into(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_284_000 + secs)
    }

    fn ts(secs: u64) -> String {
        osie_api::time::rfc3339((1_795_284_000 + secs) * 1000)
    }

    fn dhcp(secs: u64, msg: &str, reply: &str, class: &str, arch: &str, boot: &str) -> Entry {
        parse_line(&format!(
            r#"{{"timestamp":"{}","message":"DHCP x","mac":"{MAC}","msg":"{msg}","class":"{class}","arch":"{arch}","reply":"{reply}","yiaddr":"192.0.2.21","boot_file":"{boot}"}}"#,
            ts(secs)
        ))
        .unwrap()
    }

    fn event(secs: u64, phase: Phase) -> StoredEvent {
        StoredEvent {
            n: secs,
            received: ts(secs),
            source: Some(Ipv4Addr::new(192, 0, 2, 21).into()),
            event: Event {
                machine: MAC.parse::<MacAddr>().unwrap(),
                phase,
                progress: None,
                message: String::new(),
                time: ts(secs),
                run_id: None,
                seq: None,
                error: vec![],
                hardware: None,
                erase: None,
            },
        }
    }

    #[test]
    fn orders_sources_and_keeps_only_this_machine() {
        let line = |secs, body: &str| parse_line(&format!(r#"{{"timestamp":"{}",{body}}}"#, ts(secs))).unwrap();
        let log = vec![
            dhcp(2, "discover", "offer", "uefi-pxe", "7", "ipxe.efi"),
            dhcp(3, "request", "ack", "uefi-pxe", "7", "ipxe.efi"),
            line(
                4,
                r#""message":"TFTP transfer complete","client":"192.0.2.21:1","file":"ipxe.efi","bytes":5,"outcome":"complete""#,
            ),
            line(
                4,
                r#""message":"TFTP transfer complete","client":"192.0.2.99:1","file":"ipxe.efi","bytes":5,"outcome":"complete""#,
            ),
            line(6, r#""message":"iPXE script","mac":"52:54:00:e2:00:01","peer":"192.0.2.21:2","kind":"installer""#),
            line(
                7,
                r#""message":"file served","what":"artifact","file":"vmlinuz","peer":"192.0.2.21:3","bytes":"100""#,
            ),
            line(8, r#""message":"file served","what":"artifact","file":"initramfs.img","peer":"192.0.2.21:3""#),
            // Before power-on: another machine's run on the same lab.
            dhcp(0, "request", "ack", "ipxe", "0", "x"),
        ];
        let events = vec![event(20, Phase::BootedInstaller), event(60, Phase::Installed)];
        let console = vec![ConsoleMark { time: at(90), label: "marker".into(), line: "osie marker 42".into() }];
        let t = Timeline::build(at(2), &who(), &log, &events, &console);
        let steps: Vec<Step> = t.marks.iter().map(|m| m.step).collect();
        assert_eq!(
            steps,
            vec![
                Step::PowerOn,
                Step::Dhcp,
                Step::Dhcp,
                Step::BootProgram,
                Step::Script,
                Step::Kernel,
                Step::Initrd,
                Step::Event(Phase::BootedInstaller),
                Step::Event(Phase::Installed),
                Step::Console
            ]
        );
        assert_eq!(t.event(Phase::Installed).unwrap().at, Duration::from_secs(58));
        assert_eq!(t.last().label, "marker");
        let installed = t.event(Phase::Installed).unwrap();
        assert!(t.first_after(installed, |m| m.step == Step::Dhcp).is_none());
        let text = t.render();
        // The offer/ack pair is one line, with both times.
        assert_eq!(text.matches("DHCP").count(), 1, "{text}");
        assert!(
            text.contains("+0.0 s…+1.0 s") && text.contains("ack 192.0.2.21 to uefi-pxe, arch 7: boot file ipxe.efi")
        );
        assert!(text.contains("kernel") && text.contains("vmlinuz (0.0 MB) over HTTP"), "{text}");
    }

    #[test]
    fn proxy_mode_addresses_come_from_the_requests_bootsvc_saw() {
        let line = |secs, body: &str| parse_line(&format!(r#"{{"timestamp":"{}",{body}}}"#, ts(secs))).unwrap();
        let asked = |secs, ip: &str| {
            line(
                secs,
                &format!(r#""message":"DHCP: {MAC} asked for {ip}: an address of n1","mac":"{MAC}","ip":"{ip}""#),
            )
        };
        let tftp = |secs, from: &str| {
            line(
                secs,
                &format!(
                    r#""message":"TFTP transfer complete","client":"{from}:1","file":"ipxe.efi","bytes":5,"outcome":"complete""#
                ),
            )
        };
        let log = vec![
            asked(2, "192.0.2.150"),
            tftp(3, "192.0.2.150"),
            tftp(3, "192.0.2.151"),
            // Netboot cleared: proxy mode leaves the firmware unanswered, and says why.
            line(
                9,
                &format!(
                    r#""message":"DHCP discover from {MAC} ignored: netboot not allowed","mac":"{MAC}","msg":"discover","class":"uefi-pxe","arch":"7","reason":"dhcp-no-boot-file""#
                ),
            ),
        ];
        let who = Who { ip: None, ..who() };
        let t = Timeline::build(at(2), &who, &log, &[], &[]);
        let steps: Vec<Step> = t.marks.iter().map(|m| m.step).collect();
        assert_eq!(steps, [Step::PowerOn, Step::BootProgram, Step::Dhcp], "only its own address's transfer");
        let d = t.marks[2].dhcp.as_ref().unwrap();
        assert_eq!((d.boot_file.as_deref(), d.reply.as_deref()), (None, None));
        assert_eq!(t.marks[2].detail, "no answer to uefi-pxe, arch 7: no boot file (dhcp-no-boot-file)");
    }

    #[test]
    fn console_lines_are_shortened() {
        assert_eq!(
            console_detail("[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0)"),
            "Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) (gcc…"
        );
        assert_eq!(console_detail("  osie-e2e n1 user-data ran: 42 "), "osie-e2e n1 user-data ran: 42");
    }

    #[test]
    fn os_dhcp_and_cleared_netboot_read_plainly() {
        let log = vec![parse_line(&format!(
            r#"{{"timestamp":"{}","message":"DHCP y","mac":"{MAC}","msg":"request","class":"bios-pxe","arch":"-","reply":"ack","yiaddr":"192.0.2.21","boot_file":"none (netboot not allowed)"}}"#,
            ts(5)
        ))
        .unwrap()];
        let t = Timeline::build(at(0), &who(), &log, &[], &[]);
        assert_eq!(
            t.marks[1].detail,
            "ack 192.0.2.21 to a plain client (no arch option: installer or OS): no boot file (netboot not allowed)"
        );
    }
}

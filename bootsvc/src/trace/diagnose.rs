//! Where a machine is, and when it is stuck, the likely cause, read from its boot trace
//! (pure: the steps, the time now and the thresholds of `[trace]`). The rules, in the order
//! they are tried, are listed in `bootsvc/docs/trace.md` ("Diagnosis").

use serde::{Deserialize, Serialize};

use super::{Artifact, Outcome, Step, StoredStep};

/// The thresholds of the rules (`[trace]` in bootsvc.toml; `bootsvc/docs/config.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Offers in a row, never followed by a request, that make "another DHCP server?".
    pub offers_without_request: u32,
    /// Seconds after a boot file, a script or the kernel before the next step is overdue.
    pub next_step_secs: u64,
    /// Seconds after the initramfs was served before the installer's first event is overdue.
    pub installer_secs: u64,
    /// Seconds without an event while the installer runs before it is called stuck.
    pub event_silence_secs: u64,
    /// Seconds after `installed` before the missing phone-home is called out.
    pub first_boot_secs: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            offers_without_request: 4,
            next_step_secs: 60,
            installer_secs: 300,
            event_silence_secs: 900,
            first_boot_secs: 1800,
        }
    }
}

/// How the machine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Nothing seen yet.
    Idle,
    /// Moving: the last step is recent enough.
    Progressing,
    /// Finished: installed and booted, or told to boot from its disk.
    Done,
    /// Stopped at a step; `cause` says what likely went wrong.
    Stuck,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Idle => "idle",
            Health::Progressing => "progressing",
            Health::Done => "done",
            Health::Stuck => "stuck",
        }
    }
}

/// What the trace says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub health: Health,
    /// Where the machine is: its last meaningful step, in words.
    pub at: String,
    /// When stuck: the likely cause.
    #[serde(default)]
    pub cause: Option<String>,
    /// When the step `at` names happened (Unix ms).
    #[serde(default)]
    pub since_ms: Option<u64>,
}

fn secs(ms: u64) -> u64 {
    ms / 1000
}

fn ago(now: u64, at: u64) -> u64 {
    secs(now.saturating_sub(at))
}

/// `steps` oldest first, `now` in Unix ms.
pub fn diagnose(steps: &[StoredStep], now: u64, t: &Thresholds) -> Diagnosis {
    let Some(last) = steps.last() else {
        return Diagnosis { health: Health::Idle, at: "nothing seen yet".into(), cause: None, since_ms: None };
    };
    // The last installer event, unless the machine netbooted again after it (a new attempt:
    // read that one).
    let last_event = steps.iter().rposition(|s| matches!(s.step.step, Step::Event(_)));
    let rebooted_after = |i: usize| {
        steps[i + 1..].iter().any(|s| {
            // A new netboot (not the UEFI firmware's refused `osie-no-netboot.efi` after an
            // install, nor the installed OS's DHCP).
            match &s.step.step {
                Step::Script(x) => x.script == "installer",
                Step::Tftp(x) => x.outcome == Outcome::Complete,
                Step::Download(d) => d.artifact == Artifact::Kernel,
                _ => false,
            }
        })
    };
    match last_event {
        Some(i) if !rebooted_after(i) => return after_event(steps, i, now, t),
        _ => {}
    }
    let start = last_event.map_or(0, |i| i + 1);
    let tail = &steps[start..];
    // The last step that is not DHCP decides; DHCP alone is read for its offers.
    let Some(s) = tail.iter().rev().find(|s| !matches!(s.step.step, Step::Dhcp(_))) else {
        return dhcp_only(tail, last, now, t);
    };
    let at = s.step.at_ms;
    let waited = ago(now, at);
    let stuck = |what: String, cause: String| Diagnosis {
        health: Health::Stuck,
        at: what,
        cause: Some(cause),
        since_ms: Some(at),
    };
    let going = |what: String| Diagnosis { health: Health::Progressing, at: what, cause: None, since_ms: Some(at) };
    match &s.step.step {
        Step::Tftp(x) => {
            let what = format!("TFTP {}", x.file);
            match x.outcome {
                Outcome::Refused => stuck(format!("{what} refused"), format!("TFTP {} refused: {}", x.file, x.reason)),
                Outcome::Abandoned => stuck(
                    format!("{what} abandoned"),
                    format!(
                        "TFTP transfer of {} abandoned at block {} ({} of {} bytes): {}",
                        x.file,
                        x.block,
                        x.bytes,
                        x.size.map_or("?".into(), |s| s.to_string()),
                        x.reason
                    ),
                ),
                Outcome::Complete if waited > t.next_step_secs => stuck(
                    format!("{what} loaded"),
                    format!("boot file {} loaded {waited} s ago and no iPXE script was fetched: did iPXE start (console)? does it reach the HTTP service?", x.file),
                ),
                Outcome::Complete => going(format!("{what} loaded")),
            }
        }
        Step::Script(x) => {
            let what = format!("iPXE script served ({})", x.script);
            match x.script.as_str() {
                "local" | "exit" => Diagnosis { health: Health::Done, at: format!("{what}: boots from its disk"), cause: None, since_ms: Some(at) },
                "refused" => stuck(what, format!("the script was refused (HTTP {}): see the machine's record", x.status)),
                "installer" if waited > t.next_step_secs => stuck(
                    what,
                    format!("script fetched {waited} s ago but no kernel requested: the script failed in iPXE (console), or the kernel URL is unreachable from the machine"),
                ),
                _ => going(what),
            }
        }
        Step::Download(d) => {
            let what = format!("{} {}", d.artifact.as_str(), d.path);
            match d.outcome {
                Outcome::Refused => stuck(
                    format!("{what} refused"),
                    format!("{} {} answered HTTP {}: {} (missing from the artifacts?)", d.artifact.as_str(), d.path, d.status, d.reason),
                ),
                Outcome::Abandoned => stuck(
                    format!("{what} cut"),
                    format!(
                        "{} cut at {:.0} % ({} of {} bytes): {}",
                        d.artifact.as_str(),
                        d.percent(),
                        d.bytes,
                        d.size.map_or("?".into(), |s| s.to_string()),
                        d.reason
                    ),
                ),
                Outcome::Complete => match d.artifact {
                    Artifact::Kernel if waited > t.next_step_secs => stuck(
                        format!("{what} served"),
                        format!("kernel served {waited} s ago and no initramfs requested: the script failed after the kernel (console)"),
                    ),
                    Artifact::Initramfs if waited > t.installer_secs => stuck(
                        format!("{what} served"),
                        format!("initramfs served {waited} s ago and no installer event since: the kernel or the installer did not start, or cannot reach bootsvc (console: panic? no network driver?)"),
                    ),
                    _ => going(format!("{what} served")),
                },
            }
        }
        Step::Metadata(m) if waited > t.installer_secs => stuck(
            format!("metadata read ({})", m.path),
            format!("metadata read {waited} s ago and no installer event since: the installer cannot send events (see its log)"),
        ),
        Step::Metadata(m) => going(format!("metadata read ({})", m.path)),
        // Events were handled above; DHCP is skipped by the search.
        Step::Event(_) | Step::Dhcp(_) => going("?".into()),
    }
}

/// Only DHCP in the current attempt: offers never followed by a request point at another
/// DHCP server answering first; otherwise say what the last answer was.
fn dhcp_only(tail: &[StoredStep], last: &StoredStep, now: u64, t: &Thresholds) -> Diagnosis {
    let mut offers = 0u32;
    for s in tail.iter().rev() {
        let Step::Dhcp(d) = &s.step.step else { break };
        match (d.message.as_str(), d.answer.as_deref()) {
            ("discover", Some(a)) if a.ends_with("offer") => offers += 1,
            ("discover", _) => {}
            _ => break,
        }
    }
    let Step::Dhcp(d) = &last.step.step else { unreachable_dhcp() };
    let at = format!(
        "DHCP {} → {}{}",
        d.message,
        d.answer.as_deref().unwrap_or("no answer"),
        if d.reason.is_empty() { String::new() } else { format!(" ({})", d.reason) }
    );
    let since_ms = Some(last.step.at_ms);
    if offers >= t.offers_without_request.max(1) {
        return Diagnosis {
            health: Health::Stuck,
            at,
            cause: Some(format!(
                "{offers} offers never followed by a request: another DHCP server answering first, or the offer does not reach the machine (VLAN, relay)"
            )),
            since_ms,
        };
    }
    if d.answer.is_none() && d.reason.contains("not allowed") {
        // The installed OS (or firmware after the install) asking for an address only.
        return Diagnosis { health: Health::Done, at, cause: None, since_ms };
    }
    let _ = now;
    Diagnosis { health: Health::Progressing, at, cause: None, since_ms }
}

fn unreachable_dhcp() -> ! {
    unreachable!("dhcp_only is called with DHCP steps only")
}

/// The installer has spoken: where it is, and whether it went quiet.
fn after_event(steps: &[StoredStep], i: usize, now: u64, t: &Thresholds) -> Diagnosis {
    let Step::Event(e) = &steps[i].step.step else { unreachable!("an event step") };
    let at_ms = steps[i].step.at_ms;
    let waited = ago(now, at_ms);
    let pct = e.percent.map(|p| format!(" {p:.0} %")).unwrap_or_default();
    let at = format!("installer: {}{pct}", e.phase);
    let d = |health, cause: Option<String>| Diagnosis { health, at: at.clone(), cause, since_ms: Some(at_ms) };
    match e.phase.as_str() {
        // Deprovisioned: the disks are erased and the machine powered off.
        "first-boot" | "deprovisioned" => d(Health::Done, None),
        "failed" => d(Health::Stuck, Some(format!("the installer failed: {}", e.message))),
        "installed" => {
            // The installed OS's own DHCP after `installed` shows it booted at least that far.
            let dhcp_after = steps[i + 1..].iter().any(|s| matches!(s.step.step, Step::Dhcp(_)));
            if waited > t.first_boot_secs {
                let seen = if dhcp_after { "its DHCP was seen, " } else { "no DHCP from it either, " };
                d(
                    Health::Stuck,
                    Some(format!(
                        "no phone-home {waited} s after installed: {seen}check the installed OS's console and cloud-init's phone_home"
                    )),
                )
            } else {
                d(Health::Progressing, None)
            }
        }
        "power" => d(Health::Progressing, None),
        _ if waited > t.event_silence_secs => d(
            Health::Stuck,
            Some(format!("no installer event for {waited} s since {}{pct}: see the installer's log (`bootsvc machine <mac> log`)", e.phase)),
        ),
        _ => d(Health::Progressing, None),
    }
}

#[cfg(test)]
mod tests;

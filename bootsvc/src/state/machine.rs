//! What bootsvc remembers about one machine, and how an event changes it (pure).

use osie_api::{Event, Phase, Progress};
use serde::{Deserialize, Serialize};

/// Where a machine stands. Stored as JSON in the state store; fields are additive.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MachineState {
    #[serde(default)]
    pub status: Status,
    /// Phase of the last event acted on.
    #[serde(default)]
    pub phase: Option<Phase>,
    /// Progress of the current phase, when it reports any.
    #[serde(default)]
    pub progress: Option<Progress>,
    #[serde(default)]
    pub last_event: Option<EventSummary>,
    /// The error chain of the last `failed` event.
    #[serde(default)]
    pub last_error: Vec<String>,
    /// A finished install took netboot away (one-shot install) until a reinstall.
    #[serde(default)]
    pub netboot_cleared: bool,
    /// Installer run the last events came from.
    #[serde(default)]
    pub run_id: Option<String>,
    /// `seq` of the last event of `run_id` acted on: an older event of the same run that
    /// arrives late (delayed in the network, sent in parallel) is stored but changes nothing.
    #[serde(default)]
    pub last_seq: Option<u64>,
    #[serde(default)]
    pub installed_at: Option<String>,
    #[serde(default)]
    pub first_boot_at: Option<String>,
    #[serde(default)]
    pub reinstall_requested_at: Option<String>,
    /// An operator asked for the machine's disks to be erased: its next netboots run the
    /// installer in erase mode until a `deprovisioned` event (or a reinstall) ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprovision: Option<Deprovision>,
    /// When the last deprovisioning finished (`deprovisioned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprovisioned_at: Option<String>,
    /// Events stored for this machine; also the next event's number.
    #[serde(default)]
    pub events: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// No event yet.
    #[default]
    New,
    Installing,
    Installed,
    Failed,
    /// An operator allowed netboot again after an install.
    ReinstallPending,
    /// An operator asked for the disks to be erased; the machine has not netbooted yet.
    DeprovisionPending,
    /// The installer is erasing the disks.
    Erasing,
    /// Every disk erased; no boot file until a reinstall.
    Deprovisioned,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Installing => "installing",
            Status::Installed => "installed",
            Status::Failed => "failed",
            Status::ReinstallPending => "reinstall-pending",
            Status::DeprovisionPending => "deprovision-pending",
            Status::Erasing => "erasing",
            Status::Deprovisioned => "deprovisioned",
        }
    }
}

/// A deprovisioning asked for and not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deprovision {
    pub requested_at: String,
    /// Erase removable disks too.
    #[serde(default)]
    pub removable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSummary {
    pub phase: Phase,
    #[serde(default)]
    pub message: String,
    /// When the sender says it happened.
    pub time: String,
    /// When bootsvc stored it.
    pub received: String,
}

impl MachineState {
    /// The state after `ev`, received at `now` (RFC 3339).
    pub fn apply(&self, ev: &Event, now: &str) -> MachineState {
        let mut s = self.clone();
        s.events += 1;
        s.last_event = Some(EventSummary {
            phase: ev.phase,
            message: ev.message.clone(),
            time: ev.time.clone(),
            received: now.into(),
        });
        if matches!(ev.phase, Phase::Unknown | Phase::Power) {
            // Stored and shown, never acted on (a power action says nothing of the install).
            return s;
        }
        let same_run = ev.run_id.is_some() && ev.run_id == s.run_id;
        if let (true, Some(seq), Some(last)) = (same_run, ev.seq, s.last_seq) {
            if seq < last {
                // Older than what this run already reported: the state stays where it is.
                return s;
            }
        }
        if s.phase != Some(ev.phase) {
            s.progress = None;
        }
        if ev.progress.is_some() {
            s.progress = ev.progress.clone();
        }
        s.phase = Some(ev.phase);
        if ev.run_id.is_some() {
            s.run_id = ev.run_id.clone();
            s.last_seq = ev.seq;
        }
        let erasing = s.deprovision.is_some();
        match ev.phase {
            // An install that was running when the erase was asked for: netboot stays
            // allowed, so the next boot erases.
            Phase::Installed if erasing => {
                s.status = Status::DeprovisionPending;
                s.installed_at = Some(now.into());
            }
            Phase::Installed => {
                s.status = Status::Installed;
                s.netboot_cleared = true;
                s.installed_at = Some(now.into());
                s.last_error.clear();
            }
            Phase::Deprovisioned if erasing => {
                s.status = Status::Deprovisioned;
                s.netboot_cleared = true;
                s.deprovision = None;
                s.deprovisioned_at = Some(now.into());
                s.last_error.clear();
            }
            // Nobody asked (or a reinstall came first): nothing to act on.
            Phase::Deprovisioned => {}
            Phase::Failed => {
                // Netboot stays allowed (and a deprovisioning pending): the next boot tries
                // again.
                s.status = Status::Failed;
                s.last_error = ev.error.clone();
            }
            Phase::FirstBoot => s.first_boot_at = Some(now.into()),
            Phase::BootedInstaller => {
                s.status = if erasing { Status::Erasing } else { Status::Installing };
                s.last_error.clear();
            }
            _ if erasing => s.status = Status::Erasing,
            _ => {
                if !matches!(s.status, Status::Installed | Status::Deprovisioned) {
                    s.status = Status::Installing;
                }
            }
        }
        s
    }

    /// The state after an operator asked for a reinstall.
    pub fn reinstall(&self, now: &str) -> MachineState {
        let mut s = self.clone();
        s.netboot_cleared = false;
        s.status = Status::ReinstallPending;
        s.reinstall_requested_at = Some(now.into());
        s.deprovision = None;
        s
    }

    /// The state after an operator asked for the disks to be erased: netboot allowed, and
    /// the installer told to erase ([`Deprovision`]).
    pub fn deprovision(&self, now: &str, removable: bool) -> MachineState {
        let mut s = self.clone();
        s.netboot_cleared = false;
        s.status = Status::DeprovisionPending;
        s.deprovision = Some(Deprovision { requested_at: now.into(), removable });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(phase: Phase) -> Event {
        Event {
            machine: "52:54:00:00:00:01".parse().unwrap(),
            phase,
            progress: None,
            message: String::new(),
            time: "2026-01-01T00:00:00Z".into(),
            run_id: Some("r1".into()),
            seq: Some(0),
            error: Vec::new(),
            hardware: None,
            erase: None,
        }
    }

    #[test]
    fn install_run_clears_netboot_once() {
        let s = MachineState::default();
        let s = s.apply(&ev(Phase::BootedInstaller), "t1");
        assert_eq!(s.status, Status::Installing);
        let mut streaming = ev(Phase::ImageStreaming);
        streaming.progress = Some(Progress { bytes_done: 5, bytes_total: Some(10), ..Default::default() });
        let s = s.apply(&streaming, "t2");
        assert_eq!(s.progress.as_ref().unwrap().percent(), Some(50.0));
        let s = s.apply(&ev(Phase::ImageVerified), "t3");
        assert!(s.progress.is_none(), "progress belongs to its phase");
        let s = s.apply(&ev(Phase::Installed), "t4");
        assert_eq!((s.status, s.netboot_cleared, s.installed_at.as_deref()), (Status::Installed, true, Some("t4")));
        let s = s.apply(&ev(Phase::FirstBoot), "t5");
        assert_eq!((s.status, s.first_boot_at.as_deref()), (Status::Installed, Some("t5")));
        assert_eq!(s.events, 5);
        let s = s.reinstall("t6");
        assert_eq!((s.status, s.netboot_cleared), (Status::ReinstallPending, false));
    }

    #[test]
    fn deprovisioning_erases_once_then_waits_for_a_reinstall() {
        let installed = MachineState::default().apply(&ev(Phase::Installed), "t0");
        let s = installed.deprovision("t1", true);
        assert_eq!((s.status, s.netboot_cleared), (Status::DeprovisionPending, false));
        assert_eq!(s.deprovision, Some(Deprovision { requested_at: "t1".into(), removable: true }));
        let mut r2 = ev(Phase::BootedInstaller);
        r2.run_id = Some("r2".into());
        let s = s.apply(&r2, "t2");
        assert_eq!(s.status, Status::Erasing);
        let mut erased = ev(Phase::DiskErased);
        erased.run_id = Some("r2".into());
        erased.seq = Some(1);
        let s = s.apply(&erased, "t3");
        assert_eq!(s.status, Status::Erasing);
        // A failure keeps the erase pending and netboot allowed: the next boot erases again.
        let mut f = ev(Phase::Failed);
        f.run_id = Some("r2".into());
        f.seq = Some(2);
        let failed = s.apply(&f, "t4");
        assert_eq!(
            (failed.status, failed.netboot_cleared, failed.deprovision.is_some()),
            (Status::Failed, false, true)
        );
        let mut done = ev(Phase::Deprovisioned);
        done.run_id = Some("r3".into());
        let s = failed.apply(&done, "t5");
        assert_eq!((s.status, s.netboot_cleared, s.deprovision.as_ref()), (Status::Deprovisioned, true, None));
        assert_eq!(s.deprovisioned_at.as_deref(), Some("t5"));
        // The installed OS's late phone-home changes nothing.
        let s = s.apply(&ev(Phase::FirstBoot), "t6");
        assert_eq!((s.status, s.netboot_cleared), (Status::Deprovisioned, true));
        let s = s.reinstall("t7");
        assert_eq!((s.status, s.netboot_cleared, s.deprovision.as_ref()), (Status::ReinstallPending, false, None));
    }

    #[test]
    fn an_install_ending_after_the_erase_was_asked_for_does_not_cancel_it() {
        let s = MachineState::default().apply(&ev(Phase::BootedInstaller), "t0").deprovision("t1", false);
        let mut done = ev(Phase::Installed);
        done.seq = Some(5);
        let s = s.apply(&done, "t2");
        assert_eq!((s.status, s.netboot_cleared, s.deprovision.is_some()), (Status::DeprovisionPending, false, true));
        // `deprovisioned` from a machine nobody asked to erase is recorded, not acted on.
        let s = MachineState::default().apply(&ev(Phase::Installed), "t").apply(&ev(Phase::Deprovisioned), "t2");
        assert_eq!((s.status, s.netboot_cleared, s.deprovisioned_at), (Status::Installed, true, None));
        // A reinstall asked for in the middle of an erase wins over its late `deprovisioned`.
        let s = MachineState::default().deprovision("t1", false).reinstall("t2");
        let s = s.apply(&ev(Phase::Deprovisioned), "t3");
        assert_eq!((s.status, s.netboot_cleared), (Status::ReinstallPending, false));
    }

    #[test]
    fn failure_keeps_netboot_and_the_error() {
        let mut f = ev(Phase::Failed);
        f.error = vec!["writing image".into(), "disk full".into()];
        let s = MachineState::default().apply(&f, "t");
        assert_eq!(s.status, Status::Failed);
        assert!(!s.netboot_cleared);
        assert_eq!(s.last_error.len(), 2);
    }

    #[test]
    fn a_late_event_of_the_same_run_changes_nothing() {
        let at = |phase, seq| {
            let mut e = ev(phase);
            e.seq = Some(seq);
            e
        };
        let s = MachineState::default().apply(&at(Phase::BootedInstaller, 0), "t0");
        let s = s.apply(&at(Phase::ImageStreaming, 5), "t1");
        let s = s.apply(&at(Phase::Installed, 9), "t2");
        // seq 3 (failed? streaming?) arrives after the end: counted, not acted on.
        let late = s.apply(&at(Phase::Failed, 3), "t3");
        assert_eq!((late.status, late.phase, late.events), (Status::Installed, Some(Phase::Installed), 4));
        assert_eq!(late.last_event.as_ref().unwrap().phase, Phase::Failed, "shown as the last received");
        // A new run starts over whatever its numbers.
        let mut next = at(Phase::BootedInstaller, 0);
        next.run_id = Some("r2".into());
        let s2 = late.apply(&next, "t4");
        assert_eq!((s2.status, s2.last_seq, s2.run_id.as_deref()), (Status::Installing, Some(0), Some("r2")));
    }

    #[test]
    fn unknown_phases_are_recorded_not_acted_on() {
        let s = MachineState::default().apply(&ev(Phase::Installed), "t");
        let s2 = s.apply(&ev(Phase::Unknown), "t2");
        assert_eq!(s2.phase, Some(Phase::Installed));
        assert_eq!(s2.last_event.as_ref().unwrap().phase, Phase::Unknown);
        assert_eq!(s2.events, 2);
    }
}

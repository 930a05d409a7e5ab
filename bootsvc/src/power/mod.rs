//! Power and boot control through a machine's BMC (the record's `bmc`): Redfish
//! ([`redfish`], documents in [`redfish_json`]) or IPMI over LAN ([`ipmi`], through
//! `ipmitool`). `bootsvc/docs/power.md` is the reference for operators.
//!
//! [`perform`] runs one [`Action`] against one BMC and returns a [`Report`]: what was sent,
//! what the BMC answered, the power state and the system's identity, and the error if it
//! failed. It records nothing itself: the admin API (`crate::http::power`) stores each
//! report in the machine's event timeline, since it holds the storage and knows who asked.
//!
//! This module is a room of its own: it reads the inventory's `bmc` and credentials file,
//! and nothing but the admin wiring imports it. Credentials are read per action (a rotated
//! password needs no reload) and never put into a step, an error or a log line.

pub mod ipmi;
pub mod redfish;
pub mod redfish_json;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::inventory::bmc::{Bmc, Credentials, Protocol};
use redfish_json::Reset;

/// What an operator asks of a machine's BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Read the power state (and, over Redfish, the system's identity).
    Status,
    On,
    /// Hard off.
    Off,
    /// Ask the OS to shut down (ACPI).
    Shutdown,
    /// Off and on again (only on, if it was off).
    Cycle,
    /// Boot from the network next time, once.
    Netboot,
    /// Netboot once, then cycle (or power on): what `reinstall --power` does after allowing
    /// netboot.
    Reinstall,
    /// The same after asking for a deprovisioning: the machine netboots into the erase.
    Deprovision,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Status => "status",
            Action::On => "on",
            Action::Off => "off",
            Action::Shutdown => "shutdown",
            Action::Cycle => "cycle",
            Action::Netboot => "netboot",
            Action::Reinstall => "reinstall",
            Action::Deprovision => "deprovision",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        [
            Action::Status,
            Action::On,
            Action::Off,
            Action::Shutdown,
            Action::Cycle,
            Action::Netboot,
            Action::Reinstall,
            Action::Deprovision,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// Changes something on the machine (and so goes into its timeline).
    pub fn changes(&self) -> bool {
        *self != Action::Status
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerState {
    On,
    Off,
    PoweringOn,
    PoweringOff,
    #[default]
    Unknown,
}

impl PowerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::PoweringOn => "powering-on",
            PowerState::PoweringOff => "powering-off",
            PowerState::Unknown => "unknown",
        }
    }
}

/// The system as its BMC describes it (Redfish; IPMI says nothing of it here).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SystemInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// One exchange with the BMC: what was sent (never a password), what it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub sent: String,
    pub answer: String,
}

/// Why an action failed, by kind (the admin API maps it to a status code, the operator to
/// a fix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The record's `bmc` or its credentials file (bootsvc's side).
    Config,
    /// No connection (nothing listens, no route).
    Unreachable,
    /// The BMC did not answer in time.
    Timeout,
    /// Its certificate did not verify.
    Tls,
    /// It refused the credentials.
    Auth,
    /// It refused the request (4xx) or the action is not offered.
    Refused,
    /// It failed (5xx).
    Bmc,
    /// Its answer made no sense.
    Garbage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerError {
    pub kind: ErrorKind,
    pub message: String,
}

impl PowerError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> PowerError {
        PowerError { kind, message: message.into() }
    }
}

impl std::fmt::Display for PowerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What one action did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub action: Action,
    pub protocol: Protocol,
    /// The BMC's address as the record gives it.
    pub bmc: String,
    /// The power state read before acting (unknown if it could not be read).
    pub power: PowerState,
    #[serde(default)]
    pub system: SystemInfo,
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PowerError>,
}

impl Report {
    /// One line for the event timeline: the action, each exchange, the outcome.
    pub fn summary(&self) -> String {
        let steps: Vec<String> = self.steps.iter().map(|s| format!("{} -> {}", s.sent, s.answer)).collect();
        let end = match &self.error {
            Some(e) => format!("FAILED ({:?}): {}", e.kind, e.message),
            None => "done".into(),
        };
        format!(
            "{} via {} {} (power was {}): {}; {end}",
            self.action.as_str(),
            self.protocol.as_str(),
            self.bmc,
            self.power.as_str(),
            steps.join("; ")
        )
    }
}

/// Time left for one action: every request's timeout is cut to it, retries stop at it.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    until: Instant,
    per_request: Duration,
}

impl Budget {
    pub fn new(total: Duration, per_request: Duration) -> Budget {
        Budget { until: Instant::now() + total, per_request }
    }

    /// The timeout of the next request, `None` when the time is up.
    pub fn next(&self) -> Option<Duration> {
        self.left().map(|l| l.min(self.per_request))
    }

    /// All the time left, `None` when it is up.
    pub fn left(&self) -> Option<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        (left >= Duration::from_millis(200)).then_some(left)
    }
}

/// How many tries an idempotent request gets, and the pause before the next.
pub const TRIES: u32 = 3;
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 << attempt.min(4))
}

/// Run `action` on `bmc` within `total`. Never panics on what the BMC sends; every failure
/// is in the report, with the steps that were done before it.
pub async fn perform(bmc: &Bmc, action: Action, total: Duration) -> Report {
    let mut r = Report {
        action,
        protocol: bmc.protocol,
        bmc: bmc.address.clone(),
        power: PowerState::Unknown,
        system: SystemInfo::default(),
        steps: Vec::new(),
        error: None,
    };
    let budget = Budget::new(total, Duration::from_secs(bmc.timeout_secs));
    let creds = match Credentials::read(&bmc.credentials) {
        Ok(c) => c,
        Err(e) => {
            r.error = Some(PowerError::new(ErrorKind::Config, format!("reading the BMC credentials: {e}")));
            return r;
        }
    };
    let result = match bmc.protocol {
        Protocol::Redfish => redfish::perform(bmc, &creds, action, budget, &mut r).await,
        Protocol::Ipmi => ipmi::perform(bmc, &creds, action, budget, &mut r).await,
    };
    if let Err(e) = result {
        r.error = Some(e);
    }
    r
}

/// The reset an action needs, given the power state read before.
fn reset_for(action: Action) -> Option<Reset> {
    match action {
        Action::On => Some(Reset::On),
        Action::Off => Some(Reset::Off),
        Action::Shutdown => Some(Reset::GracefulOff),
        Action::Cycle | Action::Reinstall | Action::Deprovision => Some(Reset::Cycle),
        Action::Status | Action::Netboot => None,
    }
}

/// Sets the one-time network boot before resetting.
fn netboots(action: Action) -> bool {
    matches!(action, Action::Netboot | Action::Reinstall | Action::Deprovision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions() {
        for a in ["status", "on", "off", "shutdown", "cycle", "netboot", "reinstall", "deprovision"] {
            assert_eq!(Action::parse(a).map(|a| a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("reboot"), None);
        assert!(!Action::Status.changes() && Action::Netboot.changes());
        assert_eq!(reset_for(Action::Reinstall), Some(Reset::Cycle));
        assert!(netboots(Action::Reinstall) && !netboots(Action::Cycle));
        assert_eq!(reset_for(Action::Deprovision), Some(Reset::Cycle));
        assert!(netboots(Action::Deprovision));
    }

    #[test]
    fn summary_line() {
        let r = Report {
            action: Action::Cycle,
            protocol: Protocol::Redfish,
            bmc: "https://192.0.2.5".into(),
            power: PowerState::On,
            system: SystemInfo::default(),
            steps: vec![Step { sent: "POST /x {\"ResetType\":\"ForceRestart\"}".into(), answer: "204".into() }],
            error: Some(PowerError::new(ErrorKind::Auth, "401: bad credentials")),
        };
        assert_eq!(
            r.summary(),
            "cycle via redfish https://192.0.2.5 (power was on): POST /x {\"ResetType\":\"ForceRestart\"} -> 204; FAILED (Auth): 401: bad credentials"
        );
    }

    #[test]
    fn budget_cuts_timeouts() {
        let b = Budget::new(Duration::from_secs(2), Duration::from_secs(10));
        assert!(b.next().unwrap() <= Duration::from_secs(2));
        let b = Budget::new(Duration::from_millis(100), Duration::from_secs(10));
        assert_eq!(b.next(), None);
        assert!(backoff(0) < backoff(1) && backoff(9) == backoff(4));
    }
}

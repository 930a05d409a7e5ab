//! IPMI 2.0 over LAN (lanplus) through `ipmitool`, one subprocess per command: chassis power
//! status/on/off/soft/cycle and `chassis bootdev pxe` (next boot only; `options=efiboot` in
//! UEFI mode).
//!
//! Why a subprocess: no maintained Rust crate does RMCP+ (the IPMI crates on crates.io are
//! in-band `/dev/ipmi0` drivers or unmaintained), while `ipmitool` is packaged by every
//! distribution and is what Ironic and MAAS drive. The password goes to it in its
//! environment (`-E`, `IPMI_PASSWORD`), never on its command line (which `ps` shows).
//! Its output is read by pure functions ([`power_state`], [`classify`]).

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::redfish_json::Reset;
use super::{netboots, reset_for, Action, Budget, ErrorKind, PowerError, PowerState, Report, Step};
use crate::inventory::bmc::{host_port, Bmc, BootMode, Credentials, IPMI_PORT};

type Result<T> = std::result::Result<T, PowerError>;

/// The program run; tests may point it elsewhere with `OSIE_IPMITOOL`.
fn program() -> String {
    std::env::var("OSIE_IPMITOOL").unwrap_or_else(|_| "ipmitool".into())
}

struct Ipmi<'a> {
    host: String,
    port: u16,
    creds: &'a Credentials,
    timeout_secs: u64,
    budget: Budget,
}

/// Run `action` (see [`super::perform`]), its steps into `r`.
pub async fn perform(bmc: &Bmc, creds: &Credentials, action: Action, budget: Budget, r: &mut Report) -> Result<()> {
    let (host, port) = host_port(&bmc.address, IPMI_PORT).map_err(|e| PowerError::new(ErrorKind::Config, e))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let ipmi = Ipmi { host, port, creds, timeout_secs: bmc.timeout_secs, budget };
    let out = ipmi.run(&["chassis", "power", "status"], r).await?;
    r.power = power_state(&out).ok_or_else(|| {
        PowerError::new(ErrorKind::Garbage, format!("chassis power status: unexpected answer {out:?}"))
    })?;
    if netboots(action) {
        let mut args = vec!["chassis", "bootdev", "pxe"];
        if bmc.boot_mode == BootMode::Uefi {
            args.push("options=efiboot");
        }
        ipmi.run(&args, r).await?;
    }
    if let Some(reset) = reset_for(action) {
        let cmd = power_command(reset, r.power);
        match ipmi.run(&["chassis", "power", cmd], r).await {
            // Not every BMC does a power cycle (VirtualBMC does not); a hard reset reboots
            // the machine just as well for the one-time boot to take effect.
            Err(e) if cmd == "cycle" && e.kind == ErrorKind::Refused => {
                ipmi.run(&["chassis", "power", "reset"], r).await?;
            }
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// The `chassis power` subcommand for a reset, given the state before.
pub fn power_command(reset: Reset, before: PowerState) -> &'static str {
    match (reset, before) {
        (Reset::On, _) | (Reset::Cycle, PowerState::Off) => "on",
        (Reset::Off, _) => "off",
        (Reset::GracefulOff, _) => "soft",
        (Reset::Cycle, _) => "cycle",
    }
}

/// `Chassis Power is on` → on.
pub fn power_state(out: &str) -> Option<PowerState> {
    let l = out.lines().find(|l| l.starts_with("Chassis Power is "))?;
    match l.trim_start_matches("Chassis Power is ").trim() {
        "on" => Some(PowerState::On),
        "off" => Some(PowerState::Off),
        _ => None,
    }
}

/// What ipmitool's failure means. RMCP+ runs over UDP, so "no answer" and "refused the
/// session" look alike to it; a refused password says so in the RAKP exchange.
pub fn classify(stderr: &str) -> (ErrorKind, &'static str) {
    let s = stderr.to_ascii_lowercase();
    if s.contains("rakp") || s.contains("unauthorized") || s.contains("invalid user") || s.contains("password") {
        (ErrorKind::Auth, "the BMC refused the credentials")
    } else if s.contains("unable to establish") || s.contains("no response") || s.contains("connection refused") {
        (
            ErrorKind::Unreachable,
            "no IPMI session: is the address right and the BMC reachable (UDP), the user allowed lanplus?",
        )
    } else if s.contains("not supported") || s.contains("invalid") || s.contains("failed") {
        (ErrorKind::Refused, "the BMC refused the command")
    } else {
        (ErrorKind::Bmc, "ipmitool failed")
    }
}

impl Ipmi<'_> {
    async fn run(&self, args: &[&str], r: &mut Report) -> Result<String> {
        let sent = format!("ipmitool {}", args.join(" "));
        let Some(left) = self.budget.left() else {
            return Err(PowerError::new(ErrorKind::Timeout, format!("{sent}: out of time for this action")));
        };
        // ipmitool waits `-N` seconds per packet and resends once (`-R 1`); a session takes
        // a few packets. Let it give up by itself (its message says why), within the time
        // left for the action.
        let per_try = self.timeout_secs.min(left.as_secs()).max(1);
        let left = left.min(Duration::from_secs(self.timeout_secs * 4 + 2));
        let mut cmd = Command::new(program());
        // -v: the RAKP exchange's messages, by which a refused password shows (without it,
        // it and a silent BMC fail alike).
        cmd.args([
            "-v",
            "-I",
            "lanplus",
            "-H",
            &self.host,
            "-p",
            &self.port.to_string(),
            "-U",
            &self.creds.username,
            "-E",
        ])
        .args(["-N", &per_try.to_string(), "-R", "1"])
        .args(args)
        .env("IPMI_PASSWORD", &self.creds.password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let out = match tokio::time::timeout(left, cmd.output()).await {
            Err(_) => {
                r.steps.push(Step { sent: sent.clone(), answer: "no answer in time".into() });
                return Err(PowerError::new(
                    ErrorKind::Timeout,
                    format!("{sent}: no answer within {} s (bmc.timeout_secs)", left.as_secs()),
                ));
            }
            Ok(Err(e)) => {
                return Err(PowerError::new(
                    ErrorKind::Config,
                    format!("{sent}: running {}: {e} (is ipmitool installed?)", program()),
                ))
            }
            Ok(Ok(o)) => o,
        };
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let stderr = meaningful(&String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            r.steps.push(Step { sent, answer: one_line(&stdout) });
            return Ok(stdout);
        }
        let (kind, meaning) = classify(&stderr);
        r.steps.push(Step { sent: sent.clone(), answer: one_line(&stderr) });
        Err(PowerError::new(kind, format!("{sent}: {meaning}: {}", one_line(&stderr))))
    }
}

/// ipmitool's stderr without what `-v` adds on every run.
pub fn meaningful(stderr: &str) -> String {
    const NOISE: [&str; 5] = [
        "Loading IANA PEN Registry",
        "Using best available cipher suite",
        "Running Get VSO Capabilities",
        "Invalid completion code received: Invalid command",
        "Discovered IPMB address",
    ];
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !NOISE.iter().any(|n| l.starts_with(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn one_line(s: &str) -> String {
    let l: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    l.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_power_status() {
        assert_eq!(power_state("Chassis Power is on\n"), Some(PowerState::On));
        assert_eq!(power_state("Chassis Power is off"), Some(PowerState::Off));
        assert_eq!(power_state("Chassis Power Control: Up/On"), None);
        assert_eq!(power_state(""), None);
    }

    #[test]
    fn commands_for_resets() {
        assert_eq!(power_command(Reset::Cycle, PowerState::Off), "on");
        assert_eq!(power_command(Reset::Cycle, PowerState::On), "cycle");
        assert_eq!(power_command(Reset::GracefulOff, PowerState::On), "soft");
    }

    #[test]
    fn verbose_noise_is_dropped() {
        let e = "Loading IANA PEN Registry...\nUsing best available cipher suite 3\n\n\
                 Running Get VSO Capabilities my_addr 0x20, transit 0, target 0x20\n\
                 Invalid completion code received: Invalid command\nDiscovered IPMB address 0x0\n\
                 Set Chassis Power Control to Cycle failed: Invalid data field in request\n";
        assert_eq!(meaningful(e), "Set Chassis Power Control to Cycle failed: Invalid data field in request");
        assert_eq!(classify(&meaningful(e)).0, ErrorKind::Refused);
    }

    #[test]
    fn failures_are_classified() {
        // ipmitool 1.8.19 -v against VirtualBMC: a wrong password, an unknown user, nothing there.
        let bad_password = "Loading IANA PEN Registry...\nUsing best available cipher suite 3\n\n\
                            > RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session";
        assert_eq!(classify(bad_password).0, ErrorKind::Auth);
        let bad_user =
            "> Error: no response from RAKP 1 message\nSet Session Privilege Level to ADMINISTRATOR failed\n\
                        Error: Unable to establish IPMI v2 / RMCP+ session";
        assert_eq!(classify(bad_user).0, ErrorKind::Auth);
        assert_eq!(classify("Error: Unable to establish IPMI v2 / RMCP+ session").0, ErrorKind::Unreachable);
        assert_eq!(
            classify("Set Chassis Power Control to Cycle failed: Command not supported in present state").0,
            ErrorKind::Refused
        );
    }
}

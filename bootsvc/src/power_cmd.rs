//! The CLI's power commands, through the admin API (the serving bootsvc holds the BMC
//! credentials and drives the BMC): `bootsvc machine <mac> power …`, `bootsvc machine <mac>
//! reinstall|deprovision --power`, and `bootsvc reinstall|deprovision [--power] --parallel N
//! MAC…` for many machines at once, a line per machine as each finishes and a summary of the
//! failures.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::stream::{self, StreamExt};

use osie_api::Phase;

use crate::admin_client::Client;
use crate::http::admin::MachineView;
use crate::http::power::PowerAnswer;

/// Who is asking, for the machine's timeline: the login name (the one behind `sudo`),
/// else the name of the user the CLI runs as.
pub fn who() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .or_else(|| nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.name))
        .unwrap_or_else(|| format!("uid {}", nix::unistd::getuid()))
}

/// One answer for a person: `node1 (52:54:…): cycle done; power was on` or the failure.
pub fn answer_line(a: &PowerAnswer) -> String {
    let r = &a.report;
    let head = format!("{} ({})", a.hostname, a.mac);
    match &r.error {
        Some(e) => format!("{head}: {} FAILED: {}", r.action.as_str(), e.message),
        None if r.action == crate::power::Action::Status => {
            let s = &r.system;
            let ident: Vec<&str> =
                [&s.manufacturer, &s.model, &s.serial, &s.bios_version].iter().filter_map(|x| x.as_deref()).collect();
            let ident = if ident.is_empty() { String::new() } else { format!(" [{}]", ident.join(", ")) };
            format!("{head}: power {}{ident}", r.power.as_str())
        }
        None => format!("{head}: {} done (power was {})", r.action.as_str(), r.power.as_str()),
    }
}

/// Did the machine netboot after the power action recorded at `since` (its event's
/// `received`)? `Ok(phase)`: an installer event came after it. `Err(what was seen)`: not yet;
/// what bootsvc last saw of the machine (its last event, the addresses it knows it by).
pub fn netboot_seen(v: &MachineView, since: &str) -> Result<Phase, String> {
    if let Some(e) = &v.state.last_event {
        let installer = !matches!(e.phase, Phase::Power | Phase::FirstBoot | Phase::Unknown);
        if installer && e.received.as_str() > since {
            return Ok(e.phase);
        }
    }
    let last = match &v.state.last_event {
        Some(e) if e.received.as_str() > since => format!("last event {} at {}", e.phase, e.received),
        Some(e) => format!("no event since the power action (the last: {} at {})", e.phase, e.received),
        None => "no event ever".into(),
    };
    let addrs: Vec<String> = v.identity.addresses.iter().map(|a| format!("{} ({})", a.address, a.source)).collect();
    let addrs = if addrs.is_empty() { "none".to_string() } else { addrs.join(", ") };
    // The boot trace says how far the machine got (DHCP, TFTP, script, kernel…) and why it
    // may be stuck: the step an operator looks for first.
    let trace = match &v.diagnosis {
        Some(d) => match &d.cause {
            Some(c) => format!("; the boot trace: {} ({c})", d.at),
            None => format!("; the boot trace: {}", d.at),
        },
        None => String::new(),
    };
    Err(format!("{last}{trace}; addresses bootsvc knows it by: {addrs}"))
}

/// Wait up to `secs` for the machine to netboot after the power action just done: the
/// installer's first event. The error says so, with what bootsvc last saw.
pub async fn wait_netboot(client: &Client, mac: &str, secs: u64) -> Result<Phase, String> {
    let v = client.machine(mac).await.map_err(|e| format!("{e:#}"))?;
    // The power action is the machine's last event now: everything after it is the boot.
    let since = v.state.last_event.map(|e| e.received).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let seen = match client.machine(mac).await {
            Ok(v) => netboot_seen(&v, &since),
            Err(e) => Err(format!("{e:#}")),
        };
        match seen {
            Ok(p) => return Ok(p),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("did not netboot within {secs} s after the power action: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// Which machines a bulk command acts on, by their record: its `site`, and every label
/// asked for. Empty: every machine.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Selector {
    pub site: Option<String>,
    pub labels: Vec<(String, String)>,
}

impl Selector {
    /// From `--site` and `--label KEY=VALUE`s, each checked as a record's would be.
    pub fn parse(site: Option<&str>, labels: &[String]) -> Result<Selector> {
        if let Some(s) = site {
            crate::checks::site_name(s).map_err(|e| anyhow::anyhow!("--site: {e}"))?;
        }
        let labels = labels
            .iter()
            .map(|l| {
                let (k, v) = l
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--label {l:?}: give KEY=VALUE (for example rack=r12)"))?;
                crate::checks::label_key(k)
                    .and_then(|_| crate::checks::label_value(v))
                    .map_err(|e| anyhow::anyhow!("--label {l:?}: {e}"))?;
                Ok((k.to_string(), v.to_string()))
            })
            .collect::<Result<_>>()?;
        Ok(Selector { site: site.map(str::to_string), labels })
    }

    pub fn is_empty(&self) -> bool {
        self.site.is_none() && self.labels.is_empty()
    }

    pub fn matches(&self, m: &MachineView) -> bool {
        self.site.as_ref().is_none_or(|s| m.site.as_ref() == Some(s))
            && self.labels.iter().all(|(k, v)| m.labels.get(k) == Some(v))
    }

    /// `site fra1, label rack=r12`.
    pub fn describe(&self) -> String {
        let site = self.site.iter().map(|s| format!("site {s}"));
        let labels = self.labels.iter().map(|(k, v)| format!("label {k}={v}"));
        site.chain(labels).collect::<Vec<_>>().join(", ")
    }
}

/// The machines a selector chooses: their boot MACs and a line naming them.
pub struct Chosen {
    pub macs: Vec<String>,
    pub line: String,
}

/// Ask the serving instance for every machine and keep those `sel` chooses; none is an
/// error (a typo in a label must not look like success).
pub async fn choose(client: &Client, sel: &Selector) -> Result<Chosen> {
    let all = client.machines().await?;
    let chosen: Vec<&MachineView> = all.iter().filter(|m| sel.matches(m)).collect();
    if chosen.is_empty() {
        anyhow::bail!("no machine matches {} (of {} machines)", sel.describe(), all.len());
    }
    let names: Vec<&str> = chosen.iter().map(|m| m.hostname.as_str()).collect();
    Ok(Chosen {
        macs: chosen.iter().filter_map(|m| m.macs.first()).map(|m| m.to_string()).collect(),
        line: format!(
            "{} machine{} with {}: {}",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            sel.describe(),
            names.join(", ")
        ),
    })
}

/// What a command asks of a machine: an install, or an erase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Reinstall,
    Deprovision { removable: bool },
}

impl Intent {
    /// Ask for it (netboot allowed, and what the next netboot does).
    pub async fn ask(self, client: &Client, mac: &str) -> Result<MachineView> {
        match self {
            Intent::Reinstall => client.reinstall(mac).await,
            Intent::Deprovision { removable } => client.deprovision(mac, removable).await,
        }
    }

    /// Ask for it, then boot the machine from the network through its BMC.
    pub async fn ask_power(self, client: &Client, mac: &str, by: &str) -> Result<PowerAnswer> {
        match self {
            Intent::Reinstall => client.reinstall_power(mac, by).await,
            Intent::Deprovision { removable } => client.deprovision_power(mac, by, removable).await,
        }
    }

    /// What was done, after the machine's name.
    pub fn done(self) -> &'static str {
        match self {
            Intent::Reinstall => "netboot allowed again; its next boot reinstalls it",
            Intent::Deprovision { removable: false } => {
                "deprovisioning asked for; its next boot erases every disk (not removable ones) and powers off"
            }
            Intent::Deprovision { removable: true } => {
                "deprovisioning asked for; its next boot erases every disk (removable ones too) and powers off"
            }
        }
    }
}

/// What happened to one machine of a bulk run.
struct Outcome {
    line: String,
    failed: bool,
}

/// `bootsvc reinstall|deprovision [--power] --parallel N MAC…`.
pub async fn bulk(
    client: &Client,
    intent: Intent,
    macs: &[String],
    parallel: usize,
    power: bool,
    wait: Option<u64>,
) -> Result<ExitCode> {
    let by = who();
    let total = macs.len();
    let started = Instant::now();
    let mut done = 0;
    let mut failures = Vec::new();
    let mut results = stream::iter(macs.iter().cloned())
        .map(|mac| {
            let by = by.clone();
            async move {
                let t = Instant::now();
                let (line, failed) = if power {
                    match intent.ask_power(client, &mac, &by).await {
                        Ok(a) if a.report.error.is_none() && wait.is_some() => {
                            match wait_netboot(client, &mac, wait.unwrap_or_default()).await {
                                Ok(p) => (format!("{}; netbooted: the installer is at {p}", answer_line(&a)), false),
                                Err(e) => (format!("{}; FAILED: {e}", answer_line(&a)), true),
                            }
                        }
                        Ok(a) => (answer_line(&a), a.report.error.is_some()),
                        Err(e) => (format!("{mac}: FAILED: {e:#}"), true),
                    }
                } else {
                    match intent.ask(client, &mac).await {
                        Ok(m) => (format!("{} ({mac}): {}", m.hostname, intent.done()), false),
                        Err(e) => (format!("{mac}: FAILED: {e:#}"), true),
                    }
                };
                Outcome { line: format!("{line} [{:.1} s]", t.elapsed().as_secs_f64()), failed }
            }
        })
        .buffer_unordered(parallel.max(1));
    while let Some(o) = results.next().await {
        done += 1;
        println!("[{done}/{total}] {}", o.line);
        if o.failed {
            failures.push(o);
        }
    }
    println!(
        "{total} machine{}: {} done, {} failed, in {:.1} s",
        if total == 1 { "" } else { "s" },
        total - failures.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!("Failed:");
    for f in &failures {
        println!("  {}", f.line);
    }
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::admin::NetbootView;
    use crate::identity::{IdentityView, KnownAddress};
    use crate::state::{EventSummary, MachineState};

    fn view(last: Option<(Phase, &str)>) -> MachineView {
        MachineView {
            hostname: "n1".into(),
            instance_id: "i-1".into(),
            macs: vec!["52:54:00:00:00:01".parse().unwrap()],
            ip: None,
            source: "n1.json".into(),
            site: None,
            labels: Default::default(),
            netboot: NetbootView { allow: true, cleared: false, allowed: true, uefi_chain: Default::default() },
            state: MachineState {
                last_event: last.map(|(phase, received)| EventSummary {
                    phase,
                    message: String::new(),
                    time: received.into(),
                    received: received.into(),
                }),
                ..Default::default()
            },
            identity: IdentityView {
                addresses: vec![KnownAddress {
                    address: "192.0.2.21".parse().unwrap(),
                    source: "lease".into(),
                    mac: None,
                }],
                refused: vec![],
            },
            diagnosis: None,
        }
    }

    #[test]
    fn selectors_choose_by_site_and_every_label() {
        let mut m = view(None);
        m.site = Some("fra1".into());
        m.labels = [("rack".to_string(), "r12".to_string()), ("role".to_string(), "db".to_string())].into();
        let sel = |site: Option<&str>, labels: &[&str]| {
            Selector::parse(site, &labels.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert!(sel(None, &[]).unwrap().matches(&m), "no selector: every machine");
        assert!(sel(Some("fra1"), &["rack=r12"]).unwrap().matches(&m));
        assert!(sel(None, &["rack=r12", "role=db"]).unwrap().matches(&m));
        assert!(!sel(None, &["rack=r12", "role=web"]).unwrap().matches(&m), "all labels must match");
        assert!(!sel(Some("ams1"), &[]).unwrap().matches(&m));
        assert!(!sel(None, &["rack=r1"]).unwrap().matches(&m), "values compare whole");
        m.site = None;
        assert!(!sel(Some("fra1"), &[]).unwrap().matches(&m), "no site in the record: not chosen by --site");
        assert_eq!(sel(Some("fra1"), &["rack=r12"]).unwrap().describe(), "site fra1, label rack=r12");
        let e = sel(None, &["rack"]).unwrap_err().to_string();
        assert!(e.contains("give KEY=VALUE"), "{e}");
        let e = sel(None, &["-x=1"]).unwrap_err().to_string();
        assert!(e.contains("not a label key"), "{e}");
        let e = sel(Some("FRA"), &[]).unwrap_err().to_string();
        assert!(e.starts_with("--site: \"FRA\" is not a site name"), "{e}");
    }

    #[test]
    fn netboot_is_an_installer_event_after_the_power_action() {
        let since = "2026-12-06T01:50:21.349Z";
        assert_eq!(
            netboot_seen(&view(Some((Phase::BootedInstaller, "2026-12-06T01:51:05.684Z"))), since),
            Ok(Phase::BootedInstaller)
        );
        assert_eq!(
            netboot_seen(&view(Some((Phase::ImageStreaming, "2026-12-06T01:51:09.000Z"))), since),
            Ok(Phase::ImageStreaming)
        );
        let e = netboot_seen(&view(Some((Phase::Power, since))), since).unwrap_err();
        assert!(e.starts_with("no event since the power action (the last: power at"), "{e}");
        assert!(e.ends_with("addresses bootsvc knows it by: 192.0.2.21 (lease)"), "{e}");
        let mut v = view(Some((Phase::Power, since)));
        v.diagnosis = Some(crate::trace::Diagnosis {
            health: crate::trace::Health::Stuck,
            at: "TFTP undionly.kpxe abandoned at block 12".into(),
            cause: Some("the transfer stopped".into()),
            since_ms: None,
        });
        let e = netboot_seen(&v, since).unwrap_err();
        assert!(
            e.contains("; the boot trace: TFTP undionly.kpxe abandoned at block 12 (the transfer stopped); addresses"),
            "the last boot-chain step seen: {e}"
        );
        let e = netboot_seen(&view(Some((Phase::Installed, "2026-12-06T01:40:00.000Z"))), since).unwrap_err();
        assert!(e.contains("no event since"), "an older install is not this boot: {e}");
        let e = netboot_seen(&view(Some((Phase::FirstBoot, "2026-12-06T01:59:00.000Z"))), since).unwrap_err();
        assert!(e.starts_with("last event first-boot"), "the old OS booted, not the installer: {e}");
    }
}

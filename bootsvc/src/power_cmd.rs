//! The CLI's power commands, through the admin API (the serving bootsvc holds the BMC
//! credentials and drives the BMC): `bootsvc machine <mac> power …`, `bootsvc machine <mac>
//! reinstall --power`, and `bootsvc reinstall [--power] --parallel N MAC…` for many machines
//! at once, a line per machine as each finishes and a summary of the failures.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use futures_util::stream::{self, StreamExt};

use crate::admin_client::Client;
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

/// What happened to one machine of a bulk run.
struct Outcome {
    line: String,
    failed: bool,
}

/// `bootsvc reinstall [--power] --parallel N MAC…`.
pub async fn bulk(client: &Client, macs: &[String], parallel: usize, power: bool) -> Result<ExitCode> {
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
                    match client.reinstall_power(&mac, &by).await {
                        Ok(a) => (answer_line(&a), a.report.error.is_some()),
                        Err(e) => (format!("{mac}: FAILED: {e:#}"), true),
                    }
                } else {
                    match client.reinstall(&mac).await {
                        Ok(m) => (format!("{} ({mac}): netboot allowed again", m.hostname), false),
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

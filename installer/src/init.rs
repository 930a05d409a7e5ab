//! PID-1 duties when the installer runs as `/init` in the initramfs: the orchestration of
//! one boot. Each step lives in its own module; this file only puts them in order.
//!
//! 1. API filesystems, stdio on the console, logging ([`crate::pid1`]).
//! 2. The kernel command line ([`osie_api::BootParams`]).
//! 3. Kernel modules for every device present, repeated until no new device appears; wait
//!    for the boot NIC and a disk ([`crate::modules`]). Filesystem and crypto modules load
//!    on demand: the kernel runs `/sbin/modprobe`, which is this binary.
//! 4. The boot NIC up, by DHCP or `osie.ip=` ([`crate::net`]).
//! 5. The hardware inventory ([`crate::hardware`]) and the install itself
//!    ([`crate::install::run`]).
//! 6. What the metadata says at the end: reboot, power off, kexec ([`crate::finish`]); after
//!    an erase (deprovisioning), power off.
//!
//! Any error or panic goes to [`crate::pid1::failure::fail`]: report `failed`, print the
//! chain, reboot after a pause or stay up with `osie.rescue`. PID 1 never exits.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use osie_api::cmdline::{KEY_DEBUG, KEY_RESCUE};
use osie_api::{BootParams, MacAddr, Metadata, Phase};

use crate::install::{self, InstallRequest};
use crate::logging::say;
use crate::modules::{coldplug, Loader};
use crate::net::{self, NetOptions};
use crate::pid1::failure::fail;
use crate::report::Reporter;
use crate::servers::Servers;
use crate::{bootentry, finish, hardware, pid1};

/// How long to wait for the boot NIC's driver to show the NIC.
const NIC_WAIT: Duration = Duration::from_secs(60);
/// How long to wait for at least one disk before going on (the install reports "no disk").
const DISK_WAIT: Duration = Duration::from_secs(20);

/// Entry when running as PID 1. Never returns: it reboots, powers off or kexecs.
pub fn main() -> ! {
    std::panic::set_hook(Box::new(|info| say(&format!("osie: PANIC: {info}"))));
    // `run` catches panics of the install itself (and reports them); this catches the rest,
    // so that nothing unwinds out of PID 1 (the kernel would panic).
    let _ = std::panic::catch_unwind(|| {
        run();
    });
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    fail(anyhow!("the installer panicked (the message is above)"), None, flag(&cmdline, KEY_RESCUE))
}

fn run() -> ! {
    let mounted = pid1::mounts::mount_early();
    let console = pid1::console::attach();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    // Known before the full parse, so a broken command line can still be inspected.
    let (rescue, debug) = (flag(&cmdline, KEY_RESCUE), flag(&cmdline, KEY_DEBUG));
    init_logging(debug);
    say(&format!("osie: installer {} starting as PID 1", env!("CARGO_PKG_VERSION")));
    if let Err(e) = console {
        tracing::warn!("console: {e:#}");
    }
    if let Err(e) = mounted {
        fail(e.context("mounting the API filesystems"), None, rescue);
    }
    pid1::reaper::spawn();
    let params = match BootParams::parse(&cmdline) {
        Ok(p) => p,
        Err(e) => fail(anyhow!(e).context("reading the kernel command line"), None, rescue),
    };
    let servers = match Servers::new(params.urls().iter().map(|u| u.to_string()).collect()) {
        Ok(s) => s,
        Err(e) => fail(e.context("reading the kernel command line"), None, rescue),
    };
    if servers.urls().len() > 1 {
        say(&format!("osie: bootsvc instances, in order: {}", servers.urls().join(" ")));
    }
    let reporter = Arc::new(Reporter::new(&servers, params.mac));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| boot(&params, &servers, &reporter)));
    match outcome {
        Ok(Ok(md)) if md.erase.is_some() => {
            // Deprovisioned (reported by the erase): the machine stays off.
            say("osie: disks erased; powering off");
            finish::power_off()
        }
        Ok(Ok(md)) => {
            let action = md.install.as_ref().map(|p| p.finish).unwrap_or_default();
            say(&format!("osie: install finished; next: {}", format!("{action:?}").to_lowercase()));
            let report = |msg: String| {
                reporter.event(Phase::Installed, msg);
                reporter.flush_within(Duration::from_secs(5));
            };
            finish::finish(action, &md.instance_id, &report)
        }
        Ok(Err(e)) => fail(e, Some(reporter), params.rescue),
        Err(p) => {
            let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
            fail(anyhow!("the installer panicked: {}", msg.unwrap_or_default()), Some(reporter), params.rescue)
        }
    }
}

fn boot(params: &BootParams, servers: &Servers, reporter: &Reporter) -> Result<Metadata> {
    let started = Instant::now();
    let mut loader = Loader::for_running_kernel().context("reading the initramfs module index")?;
    if let Err(e) = pid1::mounts::set_modprobe() {
        tracing::warn!("on-demand module loading is off: {e:#}");
    }
    let loaded = coldplug::run(&mut loader, Path::new("/sys"), Duration::from_millis(300), 30).names;
    wait_until("the boot NIC", params.mac.to_string(), NIC_WAIT, &mut loader, || nic_present(params.mac))
        .with_context(|| format!("no network interface with MAC {} (osie.mac) appeared", params.mac))?;
    if wait_until("a disk", String::new(), DISK_WAIT, &mut loader, || !hardware::disks(Path::new("/sys")).is_empty())
        .is_err()
    {
        tracing::warn!("no disk after {} s; going on (the install will say which disk it wanted)", DISK_WAIT.as_secs());
    }
    let mut all: Vec<String> = loaded;
    all.sort();
    say(&format!("osie: modules loaded: {}", all.join(" ")));
    say(&format!("osie: devices ready in {:.1} s", started.elapsed().as_secs_f64()));

    // bootsvc over IPv6 (`osie.url=http://[…]`): SLAAC, the address bootsvc knows by its
    // EUI-64; otherwise DHCP or `osie.ip=`.
    let net = if params.wants_ipv6() {
        net::bring_up6(params.mac, &NetOptions::default())
    } else {
        net::bring_up(params.mac, params.ip.as_ref(), &NetOptions::default())
    }
    .with_context(|| format!("bringing up the boot NIC {}", params.mac))?;
    say(&format!("osie: network {net}"));
    if let Some(lease) = net.lease.clone() {
        net::dhcp_client::spawn_renewal(net.ifname.clone(), params.mac, lease);
    }

    // The hardware report reads whether Secure Boot is on from efivarfs.
    if Path::new("/sys/firmware/efi").is_dir() {
        if let Err(e) = bootentry::esp::mount_efivarfs() {
            tracing::warn!("Secure Boot state unknown: {e:#}");
        }
    }
    let hw = hardware::collect();
    say(&format!(
        "osie: hardware: {} x {} threads, {} MiB, disks [{}], nics [{}]",
        hw.cpu.sockets,
        hw.cpu.threads,
        hw.memory_bytes >> 20,
        hw.disks.iter().map(|d| format!("{} {} B", d.path, d.size)).collect::<Vec<_>>().join(", "),
        hw.nics
            .iter()
            .map(|n| format!("{} {} {}", n.name, n.mac, n.driver.as_deref().unwrap_or("-")))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    // The first event of the run: bootsvc learns the installer is up (and the hardware)
    // before the metadata fetch, which may wait.
    reporter.set_hardware(hw);
    reporter.event(
        Phase::BootedInstaller,
        format!(
            "installer {} up in {:.1} s; network {net}",
            env!("CARGO_PKG_VERSION"),
            started.elapsed().as_secs_f64()
        ),
    );
    let req = InstallRequest { servers: servers.clone(), mac: params.mac, disk: None, hardware: None };
    install::run(&req, reporter)
}

/// Poll `ready`, re-running coldplug between looks (a late device may need a driver).
fn wait_until(
    what: &str,
    detail: String,
    wait: Duration,
    loader: &mut Loader,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    let mut said = false;
    while !ready() {
        if start.elapsed() >= wait {
            anyhow::bail!("timed out after {} s waiting for {what} {detail}", wait.as_secs());
        }
        if !said && start.elapsed() > Duration::from_secs(2) {
            say(&format!("osie: waiting for {what} {detail}"));
            said = true;
        }
        coldplug::run(loader, Path::new("/sys"), Duration::from_millis(100), 3);
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

/// A boolean `osie.*` key set on `cmdline` (`key` or `key=1`), read without the full parse.
fn flag(cmdline: &str, key: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == key || w.strip_prefix(key) == Some("=1"))
}

fn nic_present(mac: MacAddr) -> bool {
    hardware::nics(Path::new("/sys")).iter().any(|n| n.mac == mac)
}

/// Logs to the console with the time since boot, no colours (serial consoles); each line
/// also goes to bootsvc ([`crate::logging::Tee`]).
fn init_logging(debug: bool) {
    let filter = if debug { "debug" } else { "info" };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(crate::logging::Tee::default)
        .with_ansi(false)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_before_the_full_parse() {
        assert!(flag("console=ttyS0 osie.rescue", KEY_RESCUE));
        assert!(flag("osie.rescue=1 osie.mac=nonsense", KEY_RESCUE));
        assert!(!flag("osie.rescue=0", KEY_RESCUE));
        assert!(!flag("osie.rescuer", KEY_RESCUE));
        assert!(flag("osie.debug", KEY_DEBUG));
    }
}

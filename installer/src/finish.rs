//! The end of a run: sync, then reboot, power off, or `kexec_file_load` the installed
//! kernel (skipping firmware POST), as the metadata's `install.finish` says. Kexec falls back
//! to a reboot when anything about it fails.

pub mod kexec;

use std::time::Duration;

use nix::sys::reboot::{reboot as sys_reboot, RebootMode};
use osie_api::Finish;

use crate::logging::say;

/// Carry out `action`; `instance_id` picks this install's root for kexec. Never returns.
pub fn finish(action: Finish, instance_id: &str) -> ! {
    match action {
        Finish::Reboot => reboot(),
        Finish::Poweroff => power_off(),
        Finish::Kexec => {
            match kexec::load_installed(instance_id) {
                Ok(loaded) => {
                    say(&format!("osie: kexec into {} ({})", loaded.kernel.display(), loaded.cmdline));
                    settle();
                    let e = sys_reboot(RebootMode::RB_KEXEC).unwrap_err();
                    say(&format!("osie: kexec reboot failed: {e}; rebooting through the firmware"));
                }
                Err(e) => say(&format!("osie: kexec not possible: {e:#}; rebooting through the firmware")),
            }
            reboot()
        }
    }
}

/// Sync and reboot through the firmware.
pub fn reboot() -> ! {
    say("osie: rebooting");
    settle();
    let e = sys_reboot(RebootMode::RB_AUTOBOOT).unwrap_err();
    hang(&format!("reboot failed: {e}"))
}

pub fn power_off() -> ! {
    say("osie: powering off");
    settle();
    let e = sys_reboot(RebootMode::RB_POWER_OFF).unwrap_err();
    hang(&format!("power off failed: {e}"))
}

/// Flush filesystems and give the console a moment to drain.
fn settle() {
    nix::unistd::sync();
    std::thread::sleep(Duration::from_millis(200));
}

fn hang(why: &str) -> ! {
    say(&format!("osie: {why}; halting here"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

//! The end of a run: sync, then reboot, power off, or `kexec_file_load` the installed
//! kernel (skipping firmware POST), as the metadata's `install.finish` says. Kexec falls back
//! to a reboot when anything about it fails, and says why in an event: under UEFI Secure Boot
//! the kernel is locked down and loads only a kernel signed by a key it trusts (Debian's
//! signed kernels are), refusing any other with `EKEYREJECTED` (or `EPERM`).

pub mod kexec;

use std::time::Duration;

use nix::sys::reboot::{reboot as sys_reboot, RebootMode};
use osie_api::Finish;

use crate::logging::say;

/// Carry out `action`; `instance_id` picks this install's root for kexec; `report` sends an
/// event (and waits a moment for it to go out) when kexec falls back to a reboot. Never
/// returns.
pub fn finish(action: Finish, instance_id: &str, report: &dyn Fn(String)) -> ! {
    match action {
        Finish::Reboot => reboot(),
        Finish::Poweroff => power_off(),
        Finish::Kexec => {
            let why = match kexec::load_installed(instance_id) {
                Ok(loaded) => {
                    say(&format!("osie: kexec into {} ({})", loaded.kernel.display(), loaded.cmdline));
                    settle();
                    let e = sys_reboot(RebootMode::RB_KEXEC).unwrap_err();
                    format!("kexec reboot failed: {e}")
                }
                Err(e) => {
                    let secure_boot = crate::hardware::secure_boot(std::path::Path::new("/sys")) == Some(true);
                    kexec_refusal(&e, secure_boot)
                }
            };
            let msg = format!("finish: {why}; rebooting through the firmware instead");
            say(&format!("osie: {msg}"));
            report(msg);
            reboot()
        }
    }
}

/// Why kexec could not load the installed kernel, in words an operator can act on.
pub fn kexec_refusal(e: &anyhow::Error, secure_boot: bool) -> String {
    let errno = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()).and_then(|io| io.raw_os_error());
    match errno {
        Some(libc::EKEYREJECTED | libc::EPERM) if secure_boot => format!(
            "kexec refused: Secure Boot is on and the kernel is locked down, it loads only a kernel signed by a \
             key it trusts, and the installed one is not ({e:#}); use a signed kernel (Debian's are) or finish = \
             reboot"
        ),
        _ => format!("kexec not possible: {e:#}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_under_secure_boot_says_so() {
        let rejected = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EKEYREJECTED))
            .context("kexec_file_load /run/osie/kexec-root/boot/vmlinuz");
        let why = kexec_refusal(&rejected, true);
        assert!(why.contains("Secure Boot is on") && why.contains("signed"), "{why}");
        assert!(why.contains("kexec_file_load"), "the error chain stays: {why}");
        let why = kexec_refusal(&rejected, false);
        assert!(why.starts_with("kexec not possible") && !why.contains("Secure Boot"), "{why}");
        let other = anyhow::anyhow!("no installed kernel found");
        assert_eq!(kexec_refusal(&other, true), "kexec not possible: no installed kernel found");
    }
}

//! The way out when the install cannot go on: report `failed` with the whole error chain,
//! print it on the console, then reboot after a pause — or, with `osie.rescue`, stay up
//! for inspection. Never returns: PID 1 must not exit.

use std::sync::Arc;
use std::time::Duration;

use crate::logging::say;
use crate::report::Reporter;

/// How long the console shows the error before the machine reboots.
pub const PAUSE_BEFORE_REBOOT: Duration = Duration::from_secs(10);
/// Reporting must not hold the machine hostage when bootsvc is unreachable.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// The error and its causes, outermost first (what `failed` events carry).
pub fn chain(err: &anyhow::Error) -> Vec<String> {
    err.chain().map(|c| c.to_string()).collect()
}

/// The console text for a failure.
pub fn render(err: &anyhow::Error) -> String {
    let mut s = String::from("osie: INSTALL FAILED\n");
    for (i, c) in chain(err).iter().enumerate() {
        if i == 0 {
            s.push_str(&format!("osie:   error: {c}\n"));
        } else {
            s.push_str(&format!("osie:   caused by: {c}\n"));
        }
    }
    s
}

/// Report (bounded in time), print, then reboot or stay up.
pub fn fail(err: anyhow::Error, reporter: Option<Arc<Reporter>>, rescue: bool) -> ! {
    tracing::error!("install failed: {err:#}");
    say(&render(&err));
    let err = Arc::new(err);
    if let Some(r) = reporter {
        let (tx, rx) = std::sync::mpsc::channel();
        let e = Arc::clone(&err);
        let spawned = std::thread::Builder::new().name("report-failed".into()).spawn(move || {
            r.failed(&e);
            let _ = tx.send(());
        });
        if spawned.is_ok() && rx.recv_timeout(REPORT_TIMEOUT).is_err() {
            say("osie: could not report the failure to bootsvc in time");
        }
    }
    if rescue {
        stay_up();
    }
    say(&format!(
        "osie: rebooting in {} s (add osie.rescue to the kernel command line to stay up)",
        PAUSE_BEFORE_REBOOT.as_secs()
    ));
    std::thread::sleep(PAUSE_BEFORE_REBOOT);
    crate::finish::reboot()
}

/// `osie.rescue`: a shell on the console if the initramfs has one, else wait forever.
fn stay_up() -> ! {
    let shell = ["/bin/sh", "/bin/busybox"].into_iter().find(|p| std::path::Path::new(p).exists());
    match shell {
        Some(sh) => loop {
            say(&format!("osie: osie.rescue: starting {sh}; the machine stays up"));
            let mut cmd = std::process::Command::new(sh);
            if sh.ends_with("busybox") {
                cmd.arg("sh");
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = child.wait();
                }
                Err(e) => {
                    say(&format!("osie: cannot start {sh}: {e}"));
                    break;
                }
            }
        },
        None => say("osie: osie.rescue: no shell in this initramfs; staying up (inspect from outside, or power-cycle)"),
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn renders_the_whole_chain_outermost_first() {
        let e = Err::<(), _>(std::io::Error::other("connection refused"))
            .context("GET http://192.0.2.1:8080/metadata")
            .context("fetching metadata")
            .unwrap_err();
        assert_eq!(chain(&e), ["fetching metadata", "GET http://192.0.2.1:8080/metadata", "connection refused"]);
        let r = render(&e);
        assert!(r.starts_with("osie: INSTALL FAILED\n"));
        assert!(r.contains("error: fetching metadata\n"));
        assert!(r.ends_with("caused by: connection refused\n"), "{r}");
    }
}

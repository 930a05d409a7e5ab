//! Reaping: orphans are re-parented to PID 1 and stay zombies until it waits for them.
//!
//! A plain `waitpid(-1)` loop would steal the exit status of children that other code
//! started with `std::process::Command` and waits for itself. So the reaper peeks
//! (`waitid(…, WNOWAIT)`), gives the owner a grace period to collect its child, and only
//! then reaps what is still a zombie.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How long a zombie may wait for its own parent code before the reaper takes it.
pub const GRACE: Duration = Duration::from_secs(2);

/// Start the reaper thread (for the life of the process).
pub fn spawn() {
    let r = std::thread::Builder::new().name("reaper".into()).spawn(|| loop {
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                std::thread::sleep(GRACE);
                if let Ok(st) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    if st != WaitStatus::StillAlive {
                        tracing::debug!(pid = pid.as_raw(), "reaped {st:?}");
                    }
                }
            }
            // No children at all: nothing to do until some appear.
            Err(Errno::ECHILD) => std::thread::sleep(Duration::from_secs(1)),
            Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!("reaper: waitid: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    });
    if let Err(e) = r {
        tracing::warn!("cannot start the reaper thread: {e}");
    }
}

/// Reap one specific child right away (ours, e.g. the rescue shell).
pub fn reap(pid: Pid) -> Option<WaitStatus> {
    waitpid(pid, None).ok()
}

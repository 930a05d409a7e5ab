//! Child processes that die with the test.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Kills (SIGKILL) and reaps its child on drop.
pub struct ChildGuard {
    pub child: Child,
    what: String,
}

impl ChildGuard {
    pub fn spawn(what: &str, cmd: &mut Command) -> Result<ChildGuard> {
        let child = cmd.stdin(Stdio::null()).spawn().with_context(|| format!("starting {what}: {cmd:?}"))?;
        Ok(ChildGuard { child, what: what.to_string() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Error if the process has already exited (it should be serving).
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited early with {st}", self.what);
        }
        Ok(())
    }

    /// Send a signal (e.g. `libc::SIGTERM`) without waiting.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` every 50 ms until it returns `Some`, or fail after `timeout` saying `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

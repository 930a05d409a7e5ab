//! A `run` step: the command chrooted into the mounted installed system, with the
//! installer's `/proc`, `/sys`, `/dev` (recursively: `/dev/pts`, `/dev/shm`) and `/run`
//! bound in; standard output and error in one pipe, logged line by line and its end kept
//! for the event; killed with its whole process group at the timeout, and whatever it left
//! running killed when it exits (as a container's end would).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use osie_api::steps::Run;

use super::root::{plain_dir, Root};

/// Bytes of output kept for the event and the error.
pub const TAIL: usize = 2048;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The installer's `/proc`, `/sys`, `/dev`, `/run` bound into a root; unbound on drop.
pub struct Binds {
    targets: Vec<PathBuf>,
}

impl Binds {
    pub fn new(root: &Root, dir: &Path) -> Result<Binds> {
        let mut b = Binds { targets: Vec::new() };
        // `/run` alone, not recursively: the installed root is itself mounted under /run.
        for (name, flags) in [
            ("proc", MsFlags::MS_BIND | MsFlags::MS_REC),
            ("sys", MsFlags::MS_BIND | MsFlags::MS_REC),
            ("dev", MsFlags::MS_BIND | MsFlags::MS_REC),
            ("run", MsFlags::MS_BIND),
        ] {
            let fd = plain_dir(root, name)?;
            // Mounted through the descriptor: on exactly the directory checked above.
            let target = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            let src = PathBuf::from("/").join(name);
            mount(Some(&src), &target, None::<&str>, flags, None::<&str>)
                .with_context(|| format!("binding {} into the installed system", src.display()))?;
            b.targets.push(dir.join(name));
        }
        Ok(b)
    }
}

impl Drop for Binds {
    fn drop(&mut self) {
        for t in self.targets.iter().rev() {
            if let Err(e) = umount2(t, MntFlags::MNT_DETACH) {
                tracing::warn!("unmounting {}: {e}", t.display());
            }
        }
    }
}

/// How a command ended.
#[derive(Debug)]
pub struct Outcome {
    /// `None`: killed at the timeout.
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    /// The last [`TAIL`] bytes of its output (lossy UTF-8, starting at a line when it can).
    pub tail: String,
    pub timeout: Duration,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// `exit 0`, `exit 3`, `killed by signal 9`, `timed out after 5 s (killed)`.
    pub fn describe(&self) -> String {
        match self.status {
            None => format!("timed out after {} s (killed)", self.timeout.as_secs()),
            Some(s) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => format!("{s}"),
            },
        }
    }
}

/// Run `r` chrooted into `dir` (already holding the [`Binds`]); `label` prefixes its log
/// lines.
pub fn run(dir: &Path, r: &Run, label: &str) -> Result<Outcome> {
    let (rd, wr) = nix::unistd::pipe().context("creating the output pipe")?;
    let wr2: OwnedFd = wr.try_clone().context("duplicating the output pipe")?;
    let mut cmd = Command::new(&r.command[0]);
    cmd.args(&r.command[1..])
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .envs(&r.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(wr))
        .stderr(Stdio::from(wr2))
        .process_group(0);
    let root = dir.to_path_buf();
    // SAFETY: chroot and chdir are async-signal-safe system calls; the path is copied to
    // the stack (nix does for paths this short), no lock is taken.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::chroot(&root)?;
            nix::unistd::chdir("/")?;
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {:?} in the installed system", r.command[0]))?;
    // Our copies of the write ends go with the command, so the reader sees the end.
    drop(cmd);
    let pgid = Pid::from_raw(child.id() as i32);
    let tail = Arc::new(Mutex::new(Tail::default()));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let reader = {
        let tail = Arc::clone(&tail);
        let label = label.to_string();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(std::fs::File::from(rd));
            let mut buf = Vec::new();
            while lines.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf);
                tracing::info!("{label}: {}", line.trim_end());
                if let Ok(mut t) = tail.lock() {
                    t.push(&buf);
                }
                buf.clear();
            }
            let _ = done_tx.send(());
        })
    };
    let timeout = Duration::from_secs(r.timeout_secs);
    let status = loop {
        if let Some(s) = child.try_wait().context("waiting for the command")? {
            break Some(s);
        }
        if started.elapsed() >= timeout {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    // What it left running (a daemon it started) goes with it.
    let _ = killpg(pgid, Signal::SIGKILL);
    // A process that left the group may still hold the pipe: do not wait for it forever.
    if done_rx.recv_timeout(Duration::from_secs(2)).is_ok() {
        let _ = reader.join();
    }
    let tail = tail.lock().map(|t| t.text()).unwrap_or_default();
    Ok(Outcome { status, elapsed, tail, timeout })
}

/// The last [`TAIL`] bytes seen.
#[derive(Default)]
struct Tail {
    buf: VecDeque<u8>,
    dropped: bool,
}

impl Tail {
    fn push(&mut self, b: &[u8]) {
        self.buf.extend(b);
        while self.buf.len() > TAIL {
            self.buf.pop_front();
            self.dropped = true;
        }
    }

    fn text(&self) -> String {
        let v: Vec<u8> = self.buf.iter().copied().collect();
        let s = String::from_utf8_lossy(&v).into_owned();
        // Cut to a whole line when the start was dropped.
        let s = match (self.dropped, s.find('\n')) {
            (true, Some(i)) if i + 1 < s.len() => format!("…{}", &s[i + 1..]),
            (true, _) => format!("…{s}"),
            _ => s,
        };
        s.trim_end().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_from_a_line_start() {
        let mut t = Tail::default();
        t.push(b"one\ntwo\n");
        assert_eq!(t.text(), "one\ntwo");
        for i in 0..1000 {
            t.push(format!("line {i}\n").as_bytes());
        }
        let s = t.text();
        assert!(s.starts_with("…line ") && s.ends_with("line 999"), "{s}");
        assert!(s.len() <= TAIL + 4);
        assert!(!s.contains("one"));
    }
}

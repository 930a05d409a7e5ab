//! Where the time goes: CPU seconds of processes (by PID, by network namespace), of the
//! calling thread, and of commands run to completion (`wait4`'s rusage, which includes
//! every descendant the command waited for, so a shell pipeline counts whole).

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// User and system CPU seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub user: f64,
    pub sys: f64,
}

impl Cpu {
    pub fn total(&self) -> f64 {
        self.user + self.sys
    }

    pub fn since(&self, before: Cpu) -> Cpu {
        Cpu { user: (self.user - before.user).max(0.0), sys: (self.sys - before.sys).max(0.0) }
    }
}

impl std::ops::Add for Cpu {
    type Output = Cpu;
    fn add(self, o: Cpu) -> Cpu {
        Cpu { user: self.user + o.user, sys: self.sys + o.sys }
    }
}

fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU time of process `pid` (all its threads, and its children that exited and were
/// reaped: tftpd-hpa forks one per transfer) so far; `None` once it is gone.
pub fn pid_cpu(pid: i32) -> Option<Cpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) are space-separated; utime,
    // stime, cutime, cstime are fields 14–17, i.e. the 12th–15th after the parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = ticks();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).map(|v| v / t);
    Some(Cpu { user: n(11)? + n(13)?, sys: n(12)? + n(14)? })
}

/// CPU time of every process now in the network namespace `ns` (`ip netns pids`): a server
/// with its workers (nginx), or all the clients.
pub fn netns_cpu(ns: &osie_testkit::Netns) -> Cpu {
    ns.pids().into_iter().filter_map(pid_cpu).fold(Cpu::default(), |a, b| a + b)
}

/// CPU time of the calling thread (a load generator running on its own thread).
pub fn thread_cpu() -> Cpu {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    rusage_cpu(&ru)
}

fn rusage_cpu(ru: &libc::rusage) -> Cpu {
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Cpu { user: tv(ru.ru_utime), sys: tv(ru.ru_stime) }
}

/// A command run to completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ran {
    pub seconds: f64,
    pub cpu: Cpu,
    /// Peak resident memory of the largest process, KiB.
    pub max_rss_kib: u64,
    #[serde(skip)]
    pub status: Option<ExitStatus>,
}

/// Run `cmd` (stdout and stderr to `log`), wait for it with `wait4` and return its wall
/// time and the CPU time of it and its waited-for descendants. Fails unless it exits 0,
/// quoting the end of the log.
pub fn run_measured(cmd: &mut Command, log: &Path, what: &str) -> Result<Ran> {
    use std::os::unix::process::ExitStatusExt;
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let start = Instant::now();
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {what}: {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: getrusage-style out parameter, zero-initialised.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child; `child` is never waited on through std.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).with_context(|| format!("waiting for {what}"));
        }
    }
    std::mem::forget(child);
    let seconds = start.elapsed().as_secs_f64();
    let status = ExitStatus::from_raw(status);
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        bail!("{what} failed ({status}): {cmd:?}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    Ok(Ran { seconds, cpu: rusage_cpu(&ru), max_rss_kib: ru.ru_maxrss as u64, status: Some(status) })
}

/// Many commands started at once (clients of a load test) and waited for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RanMany {
    /// First start → last exit.
    pub seconds: f64,
    /// Sum over the commands.
    pub cpu: Cpu,
    /// Exit statuses other than 0, with the end of their output.
    pub failures: Vec<String>,
}

/// Start every command (output to `logs/<n>.log`), then wait for all with `wait4`.
pub fn run_many(cmds: Vec<Command>, logs: &Path) -> Result<RanMany> {
    use std::os::unix::process::ExitStatusExt;
    std::fs::create_dir_all(logs)?;
    let start = Instant::now();
    let mut pids = Vec::with_capacity(cmds.len());
    for (n, mut cmd) in cmds.into_iter().enumerate() {
        let log = logs.join(format!("{n}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        pids.push((child.id() as libc::pid_t, log));
        std::mem::forget(child);
    }
    let mut r = RanMany::default();
    for (pid, log) in pids {
        let mut status = 0;
        // SAFETY: zero-initialised out parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: waiting for our own child, never waited on through std.
            let w = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if w == pid {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("waiting for a client");
            }
        }
        r.cpu = r.cpu + rusage_cpu(&ru);
        let st = ExitStatus::from_raw(status);
        if !st.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            r.failures.push(format!("{st}: {}", text.lines().last().unwrap_or("")));
        }
    }
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

/// Wall time and CPU of a closure run on this thread.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Cpu) {
    let (t0, c0) = (Instant::now(), thread_cpu());
    let v = f();
    (v, t0.elapsed(), thread_cpu().since(c0))
}

/// System calls made by a process (all threads) while `work` runs: `strace -c -f -p`,
/// attached first, detached after. Tracing slows the process down several times: use the
/// counts (calls per request), never the times measured under it.
pub fn syscall_counts<T>(pid: i32, out: &Path, work: impl FnOnce() -> T) -> Result<(T, Vec<(String, u64)>)> {
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-o"])
        .arg(out)
        .args(["-p", &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting strace")?;
    // strace says "Process N attached" on stderr for each thread; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let v = work();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    let _ = strace.wait();
    let text = std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    Ok((v, parse_strace_summary(&text)))
}

/// `(syscall, calls)` rows of an `strace -c` summary, most calls first, without `total`.
pub fn parse_strace_summary(text: &str) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            if t.len() < 5 || !t[0].chars().next().is_some_and(|c| c.is_ascii_digit()) {
                return None;
            }
            let name = *t.last()?;
            let calls = t.get(3)?.parse().ok()?;
            (name != "total").then(|| (name.to_string(), calls))
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_cpu_is_read() {
        let me = std::process::id() as i32;
        let before = pid_cpu(me).unwrap();
        // Spin for 150 ms of this thread's CPU time (not wall time: on a loaded machine the
        // thread may be off its core for most of a wall-clock interval).
        let ((), _, cpu) = timed(|| {
            let c0 = thread_cpu();
            let mut x = 0u64;
            while thread_cpu().since(c0).total() < 0.15 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        });
        assert!(cpu.total() > 0.05, "{cpu:?}");
        assert!(pid_cpu(me).unwrap().total() >= before.total());
        assert!(pid_cpu(i32::MAX).is_none());
    }

    #[test]
    fn commands_are_measured_whole_and_failures_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let ran = run_measured(
            Command::new("sh").args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done | cat; echo done"]),
            &log,
            "busy loop",
        )
        .unwrap();
        assert!(ran.cpu.total() > 0.0 && ran.seconds > 0.0, "{ran:?}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "done\n");
        let e = run_measured(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]), &log, "failing").unwrap_err();
        assert!(format!("{e:#}").contains("oops"), "{e:#}");
    }

    #[test]
    fn strace_summaries_parse() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
------ ----------- ----------- --------- --------- ----------------\n\
 60.00    0.000600           3       200           sendto\n\
 30.00    0.000300           1       300        12 recvfrom\n\
 10.00    0.000100          10        10           write\n\
------ ----------- ----------- --------- --------- ----------------\n\
100.00    0.001000           1       510        12 total\n";
        assert_eq!(
            parse_strace_summary(text),
            vec![("recvfrom".to_string(), 300), ("sendto".to_string(), 200), ("write".to_string(), 10)]
        );
    }
}

//! A CPU quota for a server under test: a cgroup whose processes together get at most
//! `cores` of CPU time (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`). The fleet storm
//! gives each bootsvc instance its own, as if each ran on its own host, so that "two
//! instances ÷ one" measures whether the instances add up rather than how many cores this
//! machine has.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

const PERIOD_US: u64 = 100_000;

pub struct CpuLimit {
    dir: PathBuf,
}

impl CpuLimit {
    /// A new cgroup `name` limited to `cores` (for example 0.5: half of one core).
    pub fn new(name: &str, cores: f64) -> Result<CpuLimit> {
        if !(cores > 0.0 && cores <= 64.0) {
            bail!("a CPU limit of {cores} cores: give a number above 0");
        }
        let quota = ((cores * PERIOD_US as f64) as u64).max(1000);
        let v2 = PathBuf::from("/sys/fs/cgroup");
        let v1 = PathBuf::from("/sys/fs/cgroup/cpu");
        let (dir, file, value) = if v2.join("cgroup.controllers").exists() {
            let enabled = std::fs::read_to_string(v2.join("cgroup.subtree_control")).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "cpu") {
                std::fs::write(v2.join("cgroup.subtree_control"), "+cpu")
                    .context("enabling the cpu controller in /sys/fs/cgroup/cgroup.subtree_control")?;
            }
            (v2.join(name), "cpu.max", format!("{quota} {PERIOD_US}"))
        } else if v1.join("cpu.cfs_quota_us").exists() {
            (v1.join(name), "cpu.cfs_quota_us", quota.to_string())
        } else {
            bail!("no cgroup CPU controller at /sys/fs/cgroup (v2) or /sys/fs/cgroup/cpu (v1)");
        };
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).with_context(|| format!("creating the cgroup {}", dir.display()))?;
        if file == "cpu.cfs_quota_us" {
            std::fs::write(dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())
                .with_context(|| format!("setting {}/cpu.cfs_period_us", dir.display()))?;
        }
        std::fs::write(dir.join(file), &value)
            .with_context(|| format!("setting {}/{file} to {value}", dir.display()))?;
        Ok(CpuLimit { dir })
    }

    /// Move process `pid` (all its threads, and what it starts later) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving process {pid} into {}", self.dir.display()))
    }
}

impl CpuLimit {
    /// Scheduler periods so far, and in how many of them the quota stopped the processes
    /// (`cpu.stat`: `nr_periods`, `nr_throttled`).
    pub fn throttled(&self) -> (u64, u64) {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).unwrap_or_default();
        let field = |name: &str| stat.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0);
        (field("nr_periods "), field("nr_throttled "))
    }
}

impl Drop for CpuLimit {
    /// The cgroup goes once its processes have exited (the caller stops them first).
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("warning: could not remove the cgroup {}", self.dir.display());
    }
}

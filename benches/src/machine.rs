//! What the figures were measured on: CPU, cores, memory, kernel, the disk under `build/`,
//! the load average, and the versions of every tool compared.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub hypervisor: bool,
    pub ram_gib: f64,
    pub kernel: String,
    pub os: String,
    /// The block device and filesystem under the benchmark's working directory.
    pub disk: String,
    /// 1-minute load average when the run started and when it ended.
    pub load_start: f64,
    pub load_end: f64,
    pub date: String,
    /// `tool: version` for every program compared.
    pub versions: Vec<(String, String)>,
    /// Each item waited for the load average to drop below this (if set)…
    #[serde(default)]
    pub load_threshold: Option<f64>,
    /// …for at most this many minutes.
    #[serde(default)]
    pub load_wait_minutes: u64,
}

/// Look at this machine. `work` is where the loop devices' backing files live.
pub fn describe(work: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_default();
    Machine {
        cpu_model: field("model name"),
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        hypervisor: field("flags").split_whitespace().any(|f| f == "hypervisor"),
        ram_gib: mem_kib / 1024.0 / 1024.0,
        kernel: output("uname", &["-r"]),
        os,
        disk: disk_kind(work),
        load_start: load_average(),
        load_end: 0.0,
        date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        versions: Vec::new(),
        load_threshold: None,
        load_wait_minutes: 0,
    }
}

/// Wait until the 1-minute load average is below `threshold`, checking every 15 s, for at
/// most `max`; returns the load when it gave up or got there.
pub fn wait_for_quiet(threshold: f64, max: std::time::Duration) -> f64 {
    let start = std::time::Instant::now();
    let mut said = false;
    loop {
        let l = load_average();
        if l < threshold || start.elapsed() >= max {
            return l;
        }
        if !said {
            eprintln!("   waiting for the load average ({l:.2}) to drop below {threshold} (at most {max:?})");
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_secs(15));
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// "vda (virtio, rotational=1, 256 GiB), ext4" for the filesystem holding `path`.
pub fn disk_kind(path: &Path) -> String {
    let src = output("findmnt", &["-no", "SOURCE,FSTYPE", "-T", &path.to_string_lossy()]);
    let mut it = src.split_whitespace();
    let (dev, fs) = (it.next().unwrap_or("?").to_string(), it.next().unwrap_or("?").to_string());
    let name = dev.trim_start_matches("/dev/").to_string();
    // Partitions: the parent holds the queue attributes.
    let base = ["/sys/block", "/sys/class/block"]
        .iter()
        .map(|d| Path::new(d).join(&name))
        .find(|p| p.exists())
        .map(|p| if p.join("partition").exists() { p.join("..") } else { p });
    let Some(base) = base else { return format!("{dev}, {fs}") };
    let read = |f: &str| std::fs::read_to_string(base.join(f)).map(|s| s.trim().to_string()).unwrap_or_default();
    let driver = std::fs::canonicalize(base.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let sectors: f64 = read("size").parse().unwrap_or(0.0);
    format!(
        "{dev} ({}{}rotational={}, {:.0} GiB), {fs}",
        if driver.is_empty() { String::new() } else { format!("{driver}, ") },
        match read("device/model") {
            m if m.is_empty() => String::new(),
            m => format!("{m}, "),
        },
        read("queue/rotational"),
        sectors * 512.0 / (1u64 << 30) as f64,
    )
}

/// First line of a command's output (stdout, else stderr), or "" if it cannot run.
pub fn output(prog: &str, args: &[&str]) -> String {
    match Command::new(prog).args(args).output() {
        Ok(o) => {
            let s = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&s).lines().next().unwrap_or_default().trim().to_string()
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_this_machine() {
        let m = describe(Path::new("/"));
        assert!(m.cores >= 1);
        assert!(m.ram_gib > 0.1);
        assert!(!m.kernel.is_empty());
        assert!(m.load_start >= 0.0);
        assert!(!m.disk.is_empty());
    }
}

//! The servers under test, each started as an operator would run it, inside the server side
//! of a [`Lab`] (two network namespaces joined by a veth): bootsvc, dnsmasq (DHCP or TFTP),
//! kea-dhcp4 (memfile), tftpd-hpa, nginx. One server runs at a time, so the CPU time of the
//! server namespace is the server's.
//!
//! Configurations are written to the lab's directory and kept for the report to quote;
//! bootsvc's is written by the test kit (`osie_testkit::site::Config`), the one writer of
//! `bootsvc.toml` for every test site. Each server runs as a [`Server`] here, so all are
//! started, measured and stopped alike.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use osie_testkit::dhcp::packet;
use osie_testkit::site::{
    self,
    config::{Artifacts, Database, Dhcp, Pool, Tftp},
};
use osie_testkit::{ChildGuard, Pair};

use crate::measure::{self, Cpu};

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const HTTP_PORT: u16 = 8080;

/// A server namespace and a client namespace joined by a veth, and a directory for
/// configurations and logs.
pub struct Lab {
    pub pair: Pair,
    pub dir: PathBuf,
}

impl Lab {
    /// Server at 192.0.2.1/24, clients at 192.0.2.2/24.
    pub fn new(dir: &Path) -> Result<Lab> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let pair = Pair::new(&format!("{SERVER_IP}/24")).context("creating the lab's namespaces")?;
        pair.client.ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", &pair.client_if])?;
        Ok(Lab { pair, dir: dir.to_path_buf() })
    }

    /// CPU time of everything running in the server namespace.
    pub fn server_cpu(&self) -> Cpu {
        measure::netns_cpu(&self.pair.server)
    }

    /// A file in the lab's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn spawn(&self, name: &str, prog: &str, args: &[String], envs: &[(&str, &Path)]) -> Result<Server> {
        let log = self.path(&format!("{name}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = self.pair.server.cmd(prog);
        cmd.args(args).stdout(out.try_clone()?).stderr(out);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let guard = ChildGuard::spawn(name, &mut cmd)?;
        Ok(Server { name: name.to_string(), guard: Some(guard), log, command: format_command(prog, args) })
    }

    /// bootsvc with only the services asked for on.
    pub fn bootsvc(&self, bin: &Path, opts: &BootsvcOptions) -> Result<Server> {
        let d = self.path("bootsvc");
        let _ = std::fs::remove_dir_all(&d);
        for sub in ["inventory", "state", "tftp", "artifacts"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        let artifacts = opts.artifacts.clone().unwrap_or_else(|| d.join("artifacts"));
        for f in ["vmlinuz", "initramfs.img"] {
            if !artifacts.join(f).exists() {
                std::fs::write(artifacts.join(f), b"placeholder")?;
            }
        }
        let tftp = opts.tftp_root.clone().unwrap_or_else(|| d.join("tftp"));
        for (n, r) in opts.reservations.iter().enumerate() {
            let rec = serde_json::json!({
                "hostname": format!("m{n:05}"),
                "macs": [r.mac],
                "ip": { "address": r.ip, "prefix": 24, "gateway": SERVER_IP, "dns": [SERVER_IP] },
                "netboot": { "allow": true },
                "install": { "image": { "url": "http://192.0.2.1:8080/images/x.raw.zst",
                    "sha256": "0000000000000000000000000000000000000000000000000000000000000000" } },
            });
            std::fs::write(d.join(format!("inventory/m{n:05}.json")), rec.to_string())?;
        }
        for (n, mac) in opts.pool_machines.iter().enumerate() {
            let rec = serde_json::json!({
                "hostname": format!("p{n:05}"),
                "macs": [mac],
                "netboot": { "allow": true },
                "install": { "image": { "url": "http://192.0.2.1:8080/images/x.raw.zst",
                    "sha256": "0000000000000000000000000000000000000000000000000000000000000000" } },
            });
            std::fs::write(d.join(format!("inventory/p{n:05}.json")), rec.to_string())?;
        }
        // bootsvc.toml from the test kit's writer, as every test site writes it.
        let mut c = site::Config::new(&self.pair.server_if, SERVER_IP);
        let dhcp = !opts.reservations.is_empty() || !opts.pool_machines.is_empty();
        c.dhcp = Dhcp { enabled: Some(dhcp), lease_secs: Some(600), ..Dhcp::default() };
        c.dhcp.pool = opts.pool.map(|(start, end)| Pool { start, end, prefix: 24, gateway: Some(SERVER_IP) });
        // The benchmark's clients share one address; up to 50 of them fetch at once.
        c.tftp = Tftp { enabled: Some(opts.tftp_root.is_some()), root: tftp, max_transfers_per_client: Some(64) };
        c.http.listen = SocketAddrV4::new(SERVER_IP, HTTP_PORT);
        c.http.public_url = format!("http://{SERVER_IP}:{HTTP_PORT}");
        c.artifacts = Artifacts { dir: artifacts.clone(), images_dir: artifacts, kernel_args: None };
        c.state_dir = d.join("state");
        c.inventory_dir = d.join("inventory");
        c.database = opts.database.as_deref().map(Database::new);
        let conf = c.write(&d)?;
        if opts.database.is_some() {
            let conf = conf.to_string_lossy();
            let inventory = d.join("inventory");
            for args in [
                vec!["db", "migrate", "--config", &conf],
                vec!["db", "import", &inventory.to_string_lossy(), "--config", &conf],
            ] {
                let out = Command::new(bin)
                    .args(&args)
                    .output()
                    .with_context(|| format!("running bootsvc {}", args[..2].join(" ")))?;
                if !out.status.success() {
                    bail!("bootsvc {}: {}", args[..2].join(" "), String::from_utf8_lossy(&out.stderr).trim());
                }
            }
        }
        self.spawn(
            "bootsvc",
            &bin.to_string_lossy(),
            &["serve".into(), "--config".into(), conf.display().to_string()],
            &[],
        )
    }

    /// dnsmasq as a DHCP server with the reservations (`dhcp-host`), DNS off, boot file
    /// `undionly.kpxe` as bootsvc gives to these clients.
    pub fn dnsmasq_dhcp(&self, reservations: &[Reservation]) -> Result<Server> {
        let hosts = self.path("dnsmasq-hosts");
        let mut s = String::new();
        for r in reservations {
            let _ = writeln!(s, "{},{}", r.mac, r.ip);
        }
        std::fs::write(&hosts, s)?;
        let mut args = self.dnsmasq_common("dnsmasq-dhcp");
        args.extend([
            "--dhcp-range=192.0.2.0,static,255.255.255.0,10m".into(),
            format!("--dhcp-hostsfile={}", hosts.display()),
            "--dhcp-boot=undionly.kpxe,,192.0.2.1".into(),
            "--dhcp-option=3,192.0.2.1".into(),
            "--dhcp-option=6,192.0.2.1".into(),
            "--dhcp-authoritative".into(),
            format!("--dhcp-leasefile={}", self.path("dnsmasq.leases").display()),
        ]);
        let _ = std::fs::remove_file(self.path("dnsmasq.leases"));
        self.spawn("dnsmasq", "dnsmasq", &args, &[])
    }

    /// dnsmasq as a TFTP server only (`--enable-tftp`).
    pub fn dnsmasq_tftp(&self, root: &Path) -> Result<Server> {
        let mut args = self.dnsmasq_common("dnsmasq-tftp");
        args.extend(["--enable-tftp".into(), format!("--tftp-root={}", root.display())]);
        self.spawn("dnsmasq", "dnsmasq", &args, &[])
    }

    fn dnsmasq_common(&self, name: &str) -> Vec<String> {
        vec![
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            format!("--interface={}", self.pair.server_if),
            "--bind-interfaces".into(),
            "--user=root".into(),
            format!("--pid-file={}", self.path(&format!("{name}.pid")).display()),
            format!("--log-facility={}", self.path(&format!("{name}-facility.log")).display()),
        ]
    }

    /// kea-dhcp4 with a memfile lease database (persisted, as shipped), the reservations
    /// in the subnet, raw sockets (it must hear broadcasts from clients without an address).
    /// `threads`: `None` for kea's default (single-threaded in 2.2), or the thread pool size
    /// with multi-threading on.
    pub fn kea(&self, reservations: &[Reservation], threads: Option<u32>) -> Result<Server> {
        let leases = self.path("kea-leases4.csv");
        let _ = std::fs::remove_file(&leases);
        let res: Vec<_> = reservations
            .iter()
            .map(|r| serde_json::json!({ "hw-address": r.mac, "ip-address": r.ip.to_string() }))
            .collect();
        let mt = match threads {
            Some(n) => {
                serde_json::json!({ "enable-multi-threading": true, "thread-pool-size": n, "packet-queue-size": 64 })
            }
            None => serde_json::json!({ "enable-multi-threading": false }),
        };
        let cfg = serde_json::json!({ "Dhcp4": {
            "interfaces-config": { "interfaces": [self.pair.server_if], "dhcp-socket-type": "raw" },
            "lease-database": { "type": "memfile", "persist": true, "name": leases, "lfc-interval": 3600 },
            "multi-threading": mt,
            "valid-lifetime": 600,
            "authoritative": true,
            "next-server": SERVER_IP.to_string(),
            "boot-file-name": "undionly.kpxe",
            "subnet4": [{
                "id": 1,
                "subnet": "192.0.2.0/24",
                "option-data": [
                    { "name": "routers", "data": SERVER_IP.to_string() },
                    { "name": "domain-name-servers", "data": SERVER_IP.to_string() },
                ],
                "reservations": res,
            }],
            "loggers": [{
                "name": "kea-dhcp4",
                "output_options": [{ "output": self.path("kea-dhcp4.log") }],
                "severity": "INFO",
            }],
        }});
        let conf = self.path("kea-dhcp4.conf");
        std::fs::write(&conf, serde_json::to_string_pretty(&cfg)?)?;
        let run = self.path("kea-run");
        std::fs::create_dir_all(&run)?;
        self.spawn(
            "kea-dhcp4",
            "kea-dhcp4",
            &["-c".into(), conf.display().to_string()],
            &[("KEA_PIDFILE_DIR", &run), ("KEA_LOCKFILE_DIR", &run)],
        )
    }

    /// tftpd-hpa, as its Debian default (`--secure`), in the foreground.
    pub fn tftpd_hpa(&self, root: &Path) -> Result<Server> {
        let args = vec![
            "--foreground".into(),
            "--listen".into(),
            "--user".into(),
            "root".into(),
            "--address".into(),
            format!("{SERVER_IP}:69"),
            "--secure".into(),
            root.display().to_string(),
        ];
        self.spawn("tftpd-hpa", "in.tftpd", &args, &[])
    }

    /// nginx serving `root` on port 8080 with the settings of Debian's default site
    /// (`sendfile on`, `tcp_nopush on`, access log on, one worker per core).
    pub fn nginx(&self, root: &Path) -> Result<Server> {
        let d = self.path("nginx");
        std::fs::create_dir_all(&d)?;
        let conf = d.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                r#"worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
    sendfile on;
    tcp_nopush on;
    types {{ }}
    default_type application/octet-stream;
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    server {{
        listen {SERVER_IP}:{HTTP_PORT};
        root {root};
        location / {{ }}
    }}
}}
"#,
                d = d.display(),
                root = root.display(),
            ),
        )?;
        self.spawn(
            "nginx",
            "nginx",
            &[
                "-e".into(),
                d.join("error.log").display().to_string(),
                "-c".into(),
                conf.display().to_string(),
                "-g".into(),
                "daemon off;".into(),
            ],
            &[],
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct BootsvcOptions {
    /// DHCP on with these machines (fixed addresses) in the inventory; off when empty.
    pub reservations: Vec<Reservation>,
    /// TFTP on with this root.
    pub tftp_root: Option<PathBuf>,
    /// Served under /artifacts/ (HTTP is always on).
    pub artifacts: Option<PathBuf>,
    /// Machines without a fixed address (these MACs), given addresses from `pool`.
    pub pool_machines: Vec<String>,
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    /// The machines, state and leases in PostgreSQL at this URL (migrated and the records
    /// imported with `bootsvc db` before the start) instead of files and the embedded store.
    pub database: Option<String>,
}

/// A machine with a fixed address.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub mac: String,
    pub ip: Ipv4Addr,
}

/// `n` reservations: MACs from [`osie_testkit::dhcp::packet::nth_mac`], addresses 192.0.2.3 on
/// (at most 250: the documentation range's /24 is all there is).
pub fn reservations(n: u32) -> Result<Vec<Reservation>> {
    if n > 250 {
        bail!("at most 250 reservations fit in 192.0.2.0/24 beside the server and the client, not {n}");
    }
    Ok((0..n)
        .map(|i| Reservation {
            mac: packet::mac_string(&packet::nth_mac(i)),
            ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 0, 2, 3)) + i),
        })
        .collect())
}

/// A running server; stopped (SIGTERM, then SIGKILL after 5 s) on drop.
pub struct Server {
    pub name: String,
    guard: Option<ChildGuard>,
    pub log: PathBuf,
    /// The command line, as the report quotes it.
    pub command: String,
}

impl Server {
    pub fn pid(&self) -> i32 {
        self.guard.as_ref().map_or(0, |g| g.pid() as i32)
    }

    /// Error (with the end of its log) if it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(g) = self.guard.as_mut() {
            if let Err(e) = g.check_running() {
                bail!("{e:#}\n{}", self.log_tail(20));
            }
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// Stop it and wait until it is gone.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.signal(libc::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if g.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(g); // SIGKILL
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn format_command(prog: &str, args: &[String]) -> String {
    let quote = |s: &str| {
        if s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c)) {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once(prog.to_string()).chain(args.iter().map(|a| quote(a))).collect::<Vec<_>>().join(" ")
}

/// Run `cmd` to completion inside `ns` (forked from a thread that entered it, so no
/// `ip netns exec` in between); error with its output unless it exits 0.
pub fn run_in(ns: &osie_testkit::Netns, mut cmd: Command) -> Result<std::process::Output> {
    let what = format!("{cmd:?}");
    let out = ns
        .spawn(move || cmd.stdin(Stdio::null()).output().context("starting it"))
        .join()
        .map_err(|_| anyhow::anyhow!("thread running {what} panicked"))?
        .with_context(|| what.clone())?;
    if !out.status.success() {
        bail!(
            "{what} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(out)
}

/// Kill anything still running in `ns` (nginx workers outliving their master).
pub fn kill_all(ns: &osie_testkit::Netns) {
    for pid in ns.pids() {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Run `prog --version`-style probes for the report.
pub fn version(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).stdin(Stdio::null()).output();
    match out {
        Ok(o) => {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text).lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
        }
        Err(_) => "not installed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_documentation_range() {
        let r = reservations(250).unwrap();
        assert_eq!(r[0].ip, Ipv4Addr::new(192, 0, 2, 3));
        assert_eq!(r[249].ip, Ipv4Addr::new(192, 0, 2, 252));
        assert_eq!(r[1].mac, "02:0b:00:00:00:01");
        assert!(reservations(251).is_err());
    }

    #[test]
    fn commands_are_quoted_for_a_shell() {
        assert_eq!(format_command("nginx", &["-g".into(), "daemon off;".into()]), "nginx -g 'daemon off;'");
    }
}

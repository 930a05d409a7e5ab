//! Item 4, HTTP artifacts: one large file to 1 and 50 concurrent connections (wrk) from
//! bootsvc (`/artifacts/`) and nginx (Debian's default site settings: sendfile, tcp_nopush)
//! serving the same directory, the two servers' runs interleaved, each with a fresh process.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{Ctx, Record, SuiteResult};
use crate::measure;
use crate::servers::{self, BootsvcOptions, Lab, Server, HTTP_PORT, SERVER_IP};

#[derive(Clone, Copy, PartialEq)]
enum Which {
    Bootsvc,
    Nginx,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Bootsvc => "bootsvc",
            Which::Nginx => "nginx",
        }
    }

    fn path(self, file: &str) -> String {
        match self {
            Which::Bootsvc => format!("/artifacts/{file}"),
            Which::Nginx => format!("/{file}"),
        }
    }
}

pub fn run(ctx: &Ctx, out: &mut SuiteResult) -> Result<()> {
    let dir = ctx.scratch("http")?;
    let root = dir.join("artifacts");
    std::fs::create_dir_all(&root)?;
    let (file, size) = if ctx.quick { ("1MB.bin", 1_000_000u64) } else { ("100MB.bin", 100_000_000u64) };
    super::tftp::write_file(&root.join(file), size)?;
    let conns: &[usize] = if ctx.quick { &[1, 4] } else { &[1, 50] };
    let secs = if ctx.quick { 1 } else { 5 };
    let lab = Lab::new(&dir)?;
    out.notes.push(format!(
        "A {size}-byte file of pseudo-random bytes, in the page cache, served from the server namespace; `wrk` \
         in the client namespace over the veth ({secs} s per run; MB/s from wrk's Transfer/sec, bytes read \
         including partial bodies at the end). Both servers use every core (nginx `worker_processes auto`, \
         bootsvc's tokio runtime) and log every request. Runs alternate between the servers, each run with a \
         freshly started server (the CPU a server is charged for depends on where the kernel runs the \
         receiving side's work over the veth, a placement that sticks to a process)."
    ));
    // Runs alternate between the servers, each run with a freshly started one: the CPU a
    // server is charged for depends on where the kernel runs the receiving side's softirq
    // work over the veth (in the server's context when it transmits on the other core than
    // wrk's), a placement that sticks to a process for its lifetime. Fresh, interleaved
    // processes sample it alike for both servers, and a quieter or busier spell of the
    // shared machine falls on both.
    let servers = [Which::Bootsvc, Which::Nginx];
    let cases: Vec<usize> = conns
        .iter()
        .copied()
        .filter(|c| ctx.wants(&format!("{} MB file, {c} connection(s)", size / 1_000_000)))
        .collect();
    let mut recs: Vec<Vec<Record>> = servers
        .iter()
        .map(|w| {
            cases
                .iter()
                .map(|c| {
                    Record::new(
                        "http",
                        &format!("{} MB file, {c} connection(s)", size / 1_000_000),
                        w.name(),
                        *w == Which::Bootsvc,
                    )
                })
                .collect()
        })
        .collect();
    let args_for = |which: Which, c: usize| {
        let threads = c.min(2);
        let url = format!("http://{SERVER_IP}:{HTTP_PORT}{}", which.path(file));
        vec![format!("-t{threads}"), format!("-c{c}"), format!("-d{secs}s"), "--timeout".into(), "60s".into(), url]
    };
    for run in 0..ctx.runs {
        for (si, &which) in servers.iter().enumerate() {
            eprintln!("-- HTTP run {}: {}", run + 1, which.name());
            let mut srv = start(ctx, &lab, which, &root)?;
            let path = which.path(file);
            wait_ready(&lab, &path, size).with_context(|| format!("{}: {}", which.name(), srv.log_tail(20)))?;
            for (ci, &c) in cases.iter().enumerate() {
                let rec = &mut recs[si][ci];
                let args = args_for(which, c);
                if run == 0 {
                    rec.commands.push(srv.command.clone());
                    rec.commands.push(format!("wrk {}", args.join(" ")));
                }
                srv.check_running()?;
                let before = lab.server_cpu();
                let t0 = std::time::Instant::now();
                let mut cmd = Command::new("wrk");
                cmd.args(&args);
                let o = servers::run_in(&lab.pair.client, cmd)?;
                let wall = t0.elapsed().as_secs_f64();
                let cpu = lab.server_cpu().since(before);
                let text = String::from_utf8_lossy(&o.stdout);
                let bps = transfer_per_sec(&text).with_context(|| format!("wrk said:\n{text}"))?;
                if text.contains("Non-2xx") {
                    bail!("{}: wrk saw error answers:\n{text}", which.name());
                }
                if let Some(l) = text.lines().find(|l| l.contains("Socket errors")) {
                    rec.evidence.push(format!("wrk: {}", l.trim()));
                }
                rec.runs.push(BTreeMap::from([
                    ("mb_per_sec".into(), bps / 1e6),
                    ("server_cpu_s".into(), cpu.total()),
                    ("server_user_s".into(), cpu.user),
                    ("server_sys_s".into(), cpu.sys),
                    ("server_cores".into(), cpu.total() / wall),
                    ("server_cpu_s_per_gb".into(), cpu.total() / (bps * wall / 1e9)),
                ]));
                eprintln!("   {c} conn: {:.0} MB/s", bps / 1e6);
            }
            srv.stop();
            servers::kill_all(&lab.pair.server);
        }
    }
    if !ctx.quick && ctx.only.is_none() {
        for (si, &which) in servers.iter().enumerate() {
            let srv = start(ctx, &lab, which, &root)?;
            let path = which.path(file);
            wait_ready(&lab, &path, size).with_context(|| format!("{}: {}", which.name(), srv.log_tail(20)))?;
            let trace = dir.join(format!("strace-{}.txt", which.name()));
            let n = 5usize;
            let (r, counts) = measure::syscall_counts(srv.pid(), &trace, || {
                let p = path.clone();
                let server = SocketAddrV4::new(SERVER_IP, HTTP_PORT);
                lab.pair
                    .client
                    .spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                        rt.block_on(async {
                            for _ in 0..n {
                                osie_testkit::http::get(server, &p, None, &[], Duration::from_secs(120), None).await?;
                            }
                            anyhow::Ok(())
                        })
                    })
                    .join()
                    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
            })?;
            r.context("the traced downloads")?;
            let mb = (size * n as u64) as f64 / 1e6;
            let total: u64 = counts.iter().map(|c| c.1).sum();
            let top: Vec<String> = counts.iter().take(5).map(|(k, c)| format!("{k} {:.1}", *c as f64 / mb)).collect();
            let text = format!(
                "{}: {:.1} system calls per MB served (strace -c -f, {n} downloads): {}",
                which.name(),
                total as f64 / mb,
                top.join(", ")
            );
            for rec in recs[si].iter_mut() {
                rec.evidence.push(text.clone());
            }
            srv.stop();
            servers::kill_all(&lab.pair.server);
        }
    }
    for rec in recs.into_iter().flatten() {
        eprintln!("   {} {}: median {:.0} MB/s", rec.tool, rec.case, rec.median("mb_per_sec").unwrap_or(0.0));
        out.records.push(rec);
    }
    Ok(())
}

fn start(ctx: &Ctx, lab: &Lab, which: Which, root: &std::path::Path) -> Result<Server> {
    match which {
        Which::Bootsvc => lab.bootsvc(
            &ctx.bootsvc,
            &BootsvcOptions { artifacts: Some(root.to_path_buf()), ..BootsvcOptions::default() },
        ),
        Which::Nginx => lab.nginx(root),
    }
}

fn wait_ready(lab: &Lab, path: &str, size: u64) -> Result<()> {
    let path = path.to_string();
    lab.pair
        .client
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let server = SocketAddrV4::new(SERVER_IP, HTTP_PORT);
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                loop {
                    match osie_testkit::http::get(server, &path, None, &[], Duration::from_secs(30), None).await {
                        Ok(g) if g.bytes == size => return Ok(()),
                        Ok(g) => bail!("GET {path}: {} bytes, expected {size}", g.bytes),
                        Err(e) if std::time::Instant::now() > deadline => return Err(e),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

/// wrk's `Transfer/sec:  1.23GB` (binary units) in bytes per second.
pub fn transfer_per_sec(text: &str) -> Option<f64> {
    let v = text.lines().find_map(|l| l.trim().strip_prefix("Transfer/sec:"))?.trim();
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let mult = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024f64.powi(4),
        _ => return None,
    };
    Some(num.parse::<f64>().ok()? * mult)
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_units() {
        let t = "Running 5s test\n  2 threads\nRequests/sec:     10.00\nTransfer/sec:      1.50GB\n";
        assert_eq!(super::transfer_per_sec(t), Some(1.5 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(super::transfer_per_sec("Transfer/sec: 512.00KB"), Some(512.0 * 1024.0));
        assert_eq!(super::transfer_per_sec("nothing"), None);
    }
}

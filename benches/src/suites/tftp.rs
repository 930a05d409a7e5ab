//! Item 3, TFTP: a 1 MB and a 50 MB file to 1, 10 and 50 concurrent clients (curl, atftp;
//! blksize 1468; windowsize 1 and 16) from bootsvc, dnsmasq (`--enable-tftp`) and tftpd-hpa.
//! Clients are real processes started at once in the client namespace; throughput is all
//! bytes over first start → last exit.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{Ctx, Record, SuiteResult};
use crate::measure;
use crate::servers::{self, BootsvcOptions, Lab, Server, SERVER_IP};
use osie_testkit::tftp::{fetch, FetchOptions};

#[derive(Clone, Copy, PartialEq)]
enum Which {
    Bootsvc,
    Dnsmasq,
    TftpdHpa,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Bootsvc => "bootsvc",
            Which::Dnsmasq => "dnsmasq",
            Which::TftpdHpa => "tftpd-hpa",
        }
    }
}

#[derive(Clone, Copy)]
struct Client {
    name: &'static str,
    prog: &'static str,
    window: u16,
}

const CLIENTS: [Client; 3] = [
    Client { name: "curl", prog: "curl", window: 1 },
    Client { name: "atftp", prog: "atftp", window: 1 },
    Client { name: "atftp windowsize 16", prog: "atftp", window: 16 },
];

impl Client {
    fn command(&self, file: &str, out: &str) -> Command {
        let mut c = Command::new(self.prog);
        match self.prog {
            "curl" => {
                c.args(["-sS", "--tftp-blksize", "1468", "-o", out]).arg(format!("tftp://{SERVER_IP}/{file}"));
            }
            _ => {
                c.args(["--get", "-r", file, "-l", out, "--option", "blksize 1468"]);
                if self.window > 1 {
                    c.args(["--option", &format!("windowsize {}", self.window)]);
                }
                c.arg(SERVER_IP.to_string());
            }
        }
        c
    }

    fn command_text(&self, file: &str) -> String {
        let c = self.command(file, "/dev/null");
        std::iter::once(c.get_program().to_string_lossy().into_owned())
            .chain(c.get_args().map(|a| {
                let a = a.to_string_lossy();
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.into_owned()
                }
            }))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub fn run(ctx: &Ctx, out: &mut SuiteResult) -> Result<()> {
    let dir = ctx.scratch("tftp")?;
    let root = dir.join("root");
    std::fs::create_dir_all(&root)?;
    let files: Vec<(String, u64)> = if ctx.quick {
        vec![("100KB".into(), 100_000)]
    } else {
        vec![("1MB".into(), 1_000_000), ("50MB".into(), 50_000_000)]
    };
    for (name, size) in &files {
        write_file(&root.join(name), *size)?;
    }
    let concurrency: &[usize] = if ctx.quick { &[1, 4] } else { &[1, 10, 50] };
    let lab = Lab::new(&dir)?;
    out.notes.push(
        "Files of pseudo-random bytes in one root, served by each server in turn from the server namespace; \
         clients are real processes started together in the client namespace (output to /dev/null), over a \
         veth (MTU 1500, so blksize 1468 is the largest unfragmented block). MB/s is the sum of all clients' \
         bytes over first start → last exit. Every client is checked byte for byte once per server before the \
         timed runs. dnsmasq allows 50 concurrent transfers by default (`--tftp-max`)."
            .into(),
    );
    for which in [Which::Bootsvc, Which::Dnsmasq, Which::TftpdHpa] {
        eprintln!("-- TFTP: {}", which.name());
        let mut srv = start(ctx, &lab, which, &root)?;
        wait_ready(&lab, &files[0].0).with_context(|| format!("{}: {}", which.name(), srv.log_tail(20)))?;
        let granted = granted_window(&lab, &files[0].0);
        verify_clients(&lab, &root, &files[0].0, &dir).with_context(|| which.name().to_string())?;
        for (file, size) in &files {
            for &n in concurrency {
                for client in CLIENTS {
                    let case = format!("{file} × {n}, {}", client.name);
                    if !ctx.wants(&case) {
                        continue;
                    }
                    let mut rec = Record::new("tftp", &case, which.name(), which == Which::Bootsvc);
                    rec.commands.push(srv.command.clone());
                    rec.commands.push(format!("{n} × {}", client.command_text(file)));
                    if client.window > 1 {
                        rec.evidence.push(format!("windowsize 16 asked, granted: {granted}"));
                    }
                    for _ in 0..ctx.runs {
                        srv.check_running()?;
                        let before = lab.server_cpu();
                        let cmds = (0..n).map(|_| client.command(file, "/dev/null")).collect();
                        let logs = dir.join("client-logs");
                        let ran = lab
                            .pair
                            .client
                            .spawn(move || measure::run_many(cmds, &logs))
                            .join()
                            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
                        let cpu = lab.server_cpu().since(before);
                        if !ran.failures.is_empty() {
                            bail!(
                                "{} {case}: {} client(s) failed: {}",
                                which.name(),
                                ran.failures.len(),
                                ran.failures[0]
                            );
                        }
                        let bytes = (*size * n as u64) as f64;
                        rec.runs.push(BTreeMap::from([
                            ("mb_per_sec".into(), bytes / ran.seconds / 1e6),
                            ("seconds".into(), ran.seconds),
                            ("server_cpu_s".into(), cpu.total()),
                            ("server_cores".into(), cpu.total() / ran.seconds),
                            ("server_cpu_s_per_gb".into(), cpu.total() / (bytes / 1e9)),
                            ("client_cpu_s".into(), ran.cpu.total()),
                            ("client_cores".into(), ran.cpu.total() / ran.seconds),
                        ]));
                    }
                    eprintln!("   {case}: {:.1} MB/s", rec.median("mb_per_sec").unwrap_or(0.0));
                    out.records.push(rec);
                }
            }
        }
        if !ctx.quick && ctx.only.is_none() {
            let (file, size) = files.last().cloned().unwrap_or_default();
            let trace = dir.join(format!("strace-{}.txt", which.name()));
            let client = CLIENTS[0];
            let (r, counts) = measure::syscall_counts(srv.pid(), &trace, || {
                servers::run_in(&lab.pair.client, client.command(&file, "/dev/null"))
            })?;
            r.context("the traced transfer")?;
            let blocks = (size as f64 / 1468.0).ceil();
            let total: u64 = counts.iter().map(|c| c.1).sum();
            let top: Vec<String> =
                counts.iter().take(5).map(|(name, c)| format!("{name} {:.2}", *c as f64 / blocks)).collect();
            let text = format!(
                "{}: {:.2} system calls per 1468-byte block (strace -c -f, one {file} transfer with curl): {}",
                which.name(),
                total as f64 / blocks,
                top.join(", ")
            );
            for rec in out.records.iter_mut().filter(|r| r.tool == which.name()) {
                rec.evidence.push(text.clone());
            }
        }
        srv.stop();
        servers::kill_all(&lab.pair.server);
    }
    Ok(())
}

fn start(ctx: &Ctx, lab: &Lab, which: Which, root: &Path) -> Result<Server> {
    match which {
        Which::Bootsvc => lab.bootsvc(
            &ctx.bootsvc,
            &BootsvcOptions { tftp_root: Some(root.to_path_buf()), ..BootsvcOptions::default() },
        ),
        Which::Dnsmasq => lab.dnsmasq_tftp(root),
        Which::TftpdHpa => lab.tftpd_hpa(root),
    }
}

/// Deterministic pseudo-random content (no compression anywhere makes it cheaper).
pub fn write_file(path: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ size;
    let mut left = size;
    let mut block = vec![0u8; 1 << 16];
    while left > 0 {
        for c in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn with_runtime<T: Send + 'static>(
    lab: &Lab,
    f: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    lab.pair
        .client
        .spawn(move || tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f))
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

fn wait_ready(lab: &Lab, file: &str) -> Result<()> {
    let file = file.to_string();
    with_runtime(lab, async move {
        let opts = FetchOptions { timeout: Duration::from_millis(300), retries: 30, ..FetchOptions::default() };
        fetch(SocketAddrV4::new(SERVER_IP, 69), &file, &opts, None).await.map(|_| ())
    })
}

/// What the server grants when asked for windowsize 16 (RFC 7440): "16", or "no (1)".
fn granted_window(lab: &Lab, file: &str) -> String {
    let file = file.to_string();
    let r = with_runtime(lab, async move {
        let opts = FetchOptions { windowsize: Some(16), ..FetchOptions::default() };
        fetch(SocketAddrV4::new(SERVER_IP, 69), &file, &opts, None).await
    });
    match r {
        Ok(f) if f.windowsize > 1 => f.windowsize.to_string(),
        Ok(_) => "no (the OACK leaves it out: lock-step, 1)".into(),
        Err(e) => format!("unknown ({e:#})"),
    }
}

/// Each client fetches the file once into a file; it must be the original.
fn verify_clients(lab: &Lab, root: &Path, file: &str, dir: &Path) -> Result<()> {
    let want = std::fs::read(root.join(file))?;
    for c in CLIENTS {
        let out: PathBuf = dir.join("verify.out");
        let _ = std::fs::remove_file(&out);
        servers::run_in(&lab.pair.client, c.command(file, &out.to_string_lossy()))?;
        if std::fs::read(&out)? != want {
            bail!("{} fetched a file that differs from {}", c.name, root.join(file).display());
        }
    }
    Ok(())
}

//! Network namespaces for tests, made with `ip netns` and removed on drop together with every
//! process still running inside them.
//!
//! Only 192.0.2.0/24 and 198.51.100.0/24 (documentation ranges) are used inside; nothing
//! is routed out of the namespace.

use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

use crate::unique;

/// Prefix of every namespace the tests create; `scripts/test` removes leftovers by it.
pub const PREFIX: &str = "osie-t-";

pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace with `lo` up.
    pub fn new() -> Result<Netns> {
        let name = format!("{PREFIX}{}", unique(""));
        run(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> <args…>`
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
            .with_context(|| format!("ip -n {} {}", self.name, args.join(" ")))?;
        Ok(())
    }

    /// A `Command` that runs `prog` inside the namespace.
    pub fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(prog);
        c
    }

    /// Run `prog args…` inside the namespace to completion; error (with its stderr) unless it
    /// exits 0.
    pub fn run(&self, prog: &str, args: &[&str]) -> Result<Output> {
        run(self.cmd(prog).args(args)).with_context(|| format!("in {}: {prog} {}", self.name, args.join(" ")))
    }

    /// A bridge with an address, up. QEMU taps are attached to it with [`Netns::add_tap`].
    pub fn add_bridge(&self, br: &str, cidr: &str) -> Result<()> {
        self.ip(&["link", "add", br, "type", "bridge", "forward_delay", "0"])?;
        self.ip(&["addr", "add", cidr, "dev", br])?;
        self.ip(&["link", "set", br, "up"])
    }

    /// A tap device attached to `bridge`, up, ready for `-netdev tap,ifname=<tap>`.
    pub fn add_tap(&self, tap: &str, bridge: &str) -> Result<()> {
        self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
        self.ip(&["link", "set", tap, "master", bridge])?;
        self.ip(&["link", "set", tap, "up"])
    }

    /// A veth from this namespace into `other`, both ends up: this end a port of `bridge`
    /// when given, the far end with `mac` (set before it goes up) and `cidr` when given.
    /// The ends' names, here and there.
    pub fn veth(
        &self,
        other: &Netns,
        bridge: Option<&str>,
        mac: Option<&str>,
        cidr: Option<&str>,
    ) -> Result<(String, String)> {
        let (here, there) = (unique("vh"), unique("vt"));
        self.ip(&["link", "add", &here, "type", "veth", "peer", "name", &there, "netns", other.name()])?;
        if let Some(br) = bridge {
            self.ip(&["link", "set", &here, "master", br])?;
        }
        self.ip(&["link", "set", &here, "up"])?;
        if let Some(mac) = mac {
            other.ip(&["link", "set", &there, "address", mac])?;
        }
        if let Some(c) = cidr {
            other.ip(&["addr", "add", c, "dev", &there])?;
        }
        other.ip(&["link", "set", &there, "up"])?;
        Ok((here, there))
    }

    /// Run `f` on a new thread that has entered this namespace: sockets it creates (for
    /// example a current-thread tokio runtime serving DHCP) live in the namespace, while the
    /// rest of the test stays outside.
    pub fn spawn<F, T>(&self, f: F) -> std::thread::JoinHandle<Result<T>>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let f_ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns on a valid fd; it changes only this thread's network namespace.
            if unsafe { libc::setns(f_ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            f()
        })
    }

    /// PIDs of processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// Two namespaces joined by a veth pair: a `server` side and a `client` side, each end up,
/// the server end addressed. Like a server and a machine on one L2 segment.
pub struct Pair {
    pub server: Netns,
    pub client: Netns,
    pub server_if: String,
    pub client_if: String,
}

impl Pair {
    /// `server_cidr` goes on the server's end, e.g. `192.0.2.1/24`.
    pub fn new(server_cidr: &str) -> Result<Pair> {
        let server = Netns::new()?;
        let client = Netns::new()?;
        let server_if = unique("vs");
        let client_if = unique("vc");
        server.ip(&["link", "add", &server_if, "type", "veth", "peer", "name", &client_if, "netns", client.name()])?;
        server.ip(&["addr", "add", server_cidr, "dev", &server_if])?;
        server.ip(&["link", "set", &server_if, "up"])?;
        client.ip(&["link", "set", &client_if, "up"])?;
        Ok(Pair { server, client, server_if, client_if })
    }

    /// MAC address of the client's interface.
    pub fn client_mac(&self) -> Result<String> {
        let out = self.client.run("cat", &[&format!("/sys/class/net/{}/address", self.client_if)])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Set the client's MAC (before any DHCP), e.g. to match an inventory record.
    pub fn set_client_mac(&self, mac: &str) -> Result<()> {
        self.client.ip(&["link", "set", &self.client_if, "address", mac])
    }
}

/// Run a command to completion; error with its stderr unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{:?} exited with {}: {}", cmd, out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// Remove namespaces left behind by killed test runs (their `Drop` never ran).
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = line.split_whitespace().next().filter(|n| n.starts_with(PREFIX)) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

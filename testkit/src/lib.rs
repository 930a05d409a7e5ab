//! Test helpers shared by osie's crates.
//!
//! The network namespaces, the processes started inside them and the loop devices made here
//! clean up on `Drop`, also when a test panics. These are shared by every later run on the
//! machine, so a leak would break the next run, not just this one.
//!
//! Tests that need root or tools the machine may lack call [`require_root`] /
//! [`require_tools`]: outside CI they skip with a message; with `OSIE_REQUIRE_ALL=1` (set by
//! `scripts/test`) a missing prerequisite fails the test instead, so CI never passes by
//! skipping.
//!
//! [`modgraph`] finds import cycles between a crate's modules (each crate's tests call it),
//! [`crates`] dependency loops between the workspace's crates.
//!
//! [`site`]: a bootsvc site (namespace, `bootsvc.toml`, the real `bootsvc serve`, LAN
//! hosts). Clients, as machines talk: [`dhcp`] (many machines over one socket, and the real
//! udhcpc and dhclient), [`tftp`], [`http`]; [`sock`] makes their UDP sockets. [`qemu`]:
//! the command line of a test machine (firmware, NIC ROM, disks, serial, `fw_cfg`).
//! [`bmc`]: BMCs for the power tests (a private libvirtd with a QEMU domain, sushy-tools'
//! Redfish emulator, VirtualBMC, misbehaving HTTP BMCs). [`browser`]: headless Chromium
//! driven through its DevTools protocol (the status page's tests).

pub mod bmc;
pub mod browser;
pub mod crates;
pub mod dhcp;
pub mod gpg;
pub mod http;
pub mod loopdev;
pub mod modgraph;
pub mod netns;
pub mod postgres;
pub mod proc;
pub mod qemu;
pub mod site;
pub mod sock;
pub mod tftp;

pub use loopdev::LoopDev;
pub use netns::{Netns, Pair};
pub use proc::{wait_for, ChildGuard};

use std::path::PathBuf;

/// True when running as root. When not, and `OSIE_REQUIRE_ALL` is unset, prints why the test
/// is skipped and returns false; with `OSIE_REQUIRE_ALL=1` it panics.
pub fn require_root(test: &str) -> bool {
    if nix_is_root() {
        return true;
    }
    skip_or_fail(test, "needs root (network namespaces, loop devices)")
}

/// True when every program is on `PATH`; otherwise skip (or fail under `OSIE_REQUIRE_ALL`).
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| which(t).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    skip_or_fail(test, &format!("missing tools {missing:?} (scripts/setup installs them)"))
}

/// True when `path` exists (a build output such as an OS image); otherwise skip, or fail
/// under `OSIE_REQUIRE_ALL`, saying which command makes it.
pub fn require_file(test: &str, path: &std::path::Path, made_by: &str) -> bool {
    if path.exists() {
        return true;
    }
    skip_or_fail(test, &format!("{} is missing ({made_by} makes it)", path.display()))
}

fn skip_or_fail(test: &str, why: &str) -> bool {
    if std::env::var_os("OSIE_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("{test}: {why}, and OSIE_REQUIRE_ALL=1 forbids skipping");
    }
    eprintln!("SKIP {test}: {why}");
    false
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Full path of a program on `PATH` (also the sbin directories, which a non-login root
/// shell may lack).
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(1).map(PathBuf::from).unwrap_or(here)
}

/// A name unique to this process and call, for namespaces, interfaces and temp files.
/// Interface names are limited to 15 bytes, so keep `prefix` short.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{n:x}", std::process::id() % 0x10000)
}

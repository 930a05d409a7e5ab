//! Real DHCP clients run inside a test namespace: busybox udhcpc and ISC dhclient. Each
//! runs a hook script that saves the environment of the lease it got; [`env_value`] reads
//! it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::{unique, wait_for, ChildGuard, Netns};

/// A udhcpc/dhclient hook script that saves the environment of a successful lease.
fn env_script(dir: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let p = dir.join(format!("hook-{}.sh", unique("")));
    let body = format!(
        "#!/bin/sh\ncase \"$1$reason\" in bound|renew|BOUND|RENEW|REBOOT|BOUND6|REBOOT6) env > {out}.tmp && mv {out}.tmp {out} ;; esac\nexit 0\n",
        out = out.display()
    );
    std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", p.display()))?;
    Ok(p)
}

/// Run busybox udhcpc once on `iface`; the environment of its lease.
pub fn udhcpc(ns: &Netns, iface: &str, dir: &Path, extra: &[&str]) -> anyhow::Result<String> {
    let out = dir.join(unique("udhcpc-env"));
    let script = env_script(dir, &out)?;
    let script_s = script.to_string_lossy().to_string();
    let mut args = vec!["-f", "-q", "-n", "-t", "4", "-T", "1", "-i", iface, "-s", &script_s];
    args.extend_from_slice(&["-O", "bootfile", "-O", "hostname"]);
    args.extend_from_slice(extra);
    ns.run("udhcpc", &args)?;
    Ok(std::fs::read_to_string(&out)?)
}

/// ISC dhclient in the foreground until it is bound; `old_lease` makes it start in
/// INIT-REBOOT, asking for that address first.
pub fn dhclient(ns: &Netns, iface: &str, dir: &Path, old_lease: Option<&str>) -> anyhow::Result<String> {
    let out = dir.join(unique("dhclient-env"));
    let script = env_script(dir, &out)?;
    let conf = dir.join(unique("dhclient.conf"));
    std::fs::write(
        &conf,
        "request subnet-mask, routers, domain-name-servers, host-name, bootfile-name, dhcp-server-identifier;\n\
         timeout 20;\nretry 1;\ninitial-interval 1;\n",
    )?;
    let leases = dir.join(unique("dhclient.leases"));
    let lease_text = match old_lease {
        Some(ip) => format!(
            "lease {{\n  interface \"{iface}\";\n  fixed-address {ip};\n  option subnet-mask 255.255.255.0;\n  \
             option dhcp-server-identifier 192.0.2.1;\n  renew 4 2037/01/01 00:00:01;\n  \
             rebind 4 2037/01/01 00:00:01;\n  expire 4 2037/01/01 00:00:01;\n}}\n"
        ),
        None => String::new(),
    };
    std::fs::write(&leases, lease_text)?;
    until_bound(ns, "-4", iface, dir, Files { conf: &conf, script: &script, leases: &leases, out: &out }, 30)
}

/// ISC `dhclient -6` in the foreground until it is bound, with `duid` (hex) as its DUID when
/// given; it asks for the boot file URL and sends architecture 16 (option 61), as UEFI HTTP
/// boot over IPv6 does. The environment its script saw on `BOUND6`; `None` when it got no
/// lease within its timeout. The script only records; it configures nothing.
pub fn dhclient6(ns: &Netns, iface: &str, dir: &Path, duid: Option<&str>) -> Option<String> {
    let out = dir.join(unique("dhclient6-env"));
    let script = env_script(dir, &out).ok()?;
    let conf = dir.join(unique("dhclient6.conf"));
    std::fs::write(
        &conf,
        "option dhcp6.arch code 61 = unsigned integer 16;\nsend dhcp6.arch 16;\n\
         also request dhcp6.bootfile-url;\ntimeout 8;\ninitial-interval 1;\n",
    )
    .ok()?;
    let leases = dir.join(unique("dhclient6.leases"));
    // dhclient takes its DUID from the lease file's `default-duid` (octal-escaped bytes).
    let lease_text = duid.map_or_else(String::new, |hex| {
        let octal: String = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("the DUID is given in hex"))
            .map(|b| format!("\\{b:03o}"))
            .collect();
        format!("default-duid \"{octal}\";\n")
    });
    std::fs::write(&leases, lease_text).ok()?;
    until_bound(ns, "-6", iface, dir, Files { conf: &conf, script: &script, leases: &leases, out: &out }, 12).ok()
}

/// The files one dhclient run reads and writes.
struct Files<'a> {
    conf: &'a Path,
    script: &'a Path,
    leases: &'a Path,
    /// Where its hook script saves the lease's environment.
    out: &'a Path,
}

/// Run dhclient (`-4` or `-6`) in the foreground on `iface` until its hook script has saved
/// a lease, at most `secs` seconds; the client is stopped either way.
fn until_bound(ns: &Netns, family: &str, iface: &str, dir: &Path, f: Files<'_>, secs: u64) -> anyhow::Result<String> {
    let pid = dir.join(unique("dhclient.pid"));
    let _c = ChildGuard::spawn(
        "dhclient",
        ns.cmd("dhclient")
            .args([family, "-d", "-1", "-v", "-cf"])
            .arg(f.conf)
            .arg("-sf")
            .arg(f.script)
            .arg("-lf")
            .arg(f.leases)
            .arg("-pf")
            .arg(&pid)
            .arg(iface)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )?;
    wait_for(&format!("dhclient {family} to be bound"), Duration::from_secs(secs), || {
        std::fs::read_to_string(f.out).ok()
    })
}

/// `KEY=value` lines (as the hook scripts above write them) → the value of `key`.
pub fn env_value(env: &str, key: &str) -> Option<String> {
    env.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')).map(str::to_string))
}

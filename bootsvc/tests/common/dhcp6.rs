//! DHCPv6 clients and bootsvc's DHCPv6 server for the tests that run them over real sockets
//! (`dhcp6_clients.rs`, `flood.rs`): ISC `dhclient -6` run once in a host's namespace, and
//! the site's config with `[dhcp6]` on.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use osie_testkit::{wait_for, Netns};

use super::Site;

/// Turn DHCPv6 on for `site` (not yet started) with `address` as bootsvc's IPv6 address.
/// The boot file URLs are IPv6, so HTTP listens on `[::]` (`check` refuses it otherwise).
pub fn enable(site: &Site, address: &str) {
    let mut text =
        std::fs::read_to_string(&site.config).unwrap().replace("listen = \"192.0.2.1:8080\"", "listen = \"[::]:8080\"");
    text.push_str(&format!("\n[dhcp6]\nenabled = true\naddress = \"{address}\"\n"));
    std::fs::write(&site.config, text).unwrap();
}

/// `dhclient -6` once on `iface`, with `duid` (hex) as its DUID when given: the
/// environment its script saw on `BOUND6`, or `None` when it got no lease within its
/// timeout. The script only records; it configures nothing.
pub fn dhclient6(ns: &Netns, iface: &str, dir: &Path, name: &str, duid: Option<&str>) -> Option<String> {
    let out = dir.join(format!("{name}.env"));
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$reason\" in BOUND6|REBOOT6) env > {}.tmp && mv {0}.tmp {0};; esac\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let conf = dir.join(format!("{name}.conf"));
    // Option 61 = 16: what UEFI HTTP boot over IPv6 sends, so bootsvc answers with its boot
    // file URL and vendor class.
    std::fs::write(
        &conf,
        "option dhcp6.arch code 61 = unsigned integer 16;\nsend dhcp6.arch 16;\n\
         also request dhcp6.bootfile-url;\ntimeout 8;\ninitial-interval 1;\n",
    )
    .unwrap();
    let leases = dir.join(format!("{name}.leases"));
    // dhclient takes its DUID from the lease file's `default-duid` (octal-escaped bytes).
    let lease_text = duid.map_or_else(String::new, |hex| {
        let octal: String = (0..hex.len() / 2)
            .map(|i| format!("\\{:03o}", u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()))
            .collect();
        format!("default-duid \"{octal}\";\n")
    });
    std::fs::write(&leases, lease_text).unwrap();
    let mut child = ns
        .cmd("dhclient")
        .args(["-6", "-d", "-1", "-v", "-cf"])
        .arg(&conf)
        .arg("-sf")
        .arg(&script)
        .arg("-lf")
        .arg(&leases)
        .arg("-pf")
        .arg(dir.join(format!("{name}.pid")))
        .arg(iface)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let got = wait_for("dhclient -6 to be bound", Duration::from_secs(12), || std::fs::read_to_string(&out).ok()).ok();
    // The child is ours: end it by its own id.
    let _ = child.kill();
    let _ = child.wait();
    got
}

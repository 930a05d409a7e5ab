//! What a netbooting machine is told, beyond its DHCP boot file: the rules the iPXE scripts
//! (`http/boot`) and the GRUB configurations ([`grub`]) share (why a machine is sent to its
//! disk, the installer's kernel command line, which architecture's kernel and initramfs).

pub mod grub;

use osie_api::MacAddr;

use crate::arch::Arch;
use crate::config::Config;
use crate::inventory::Machine;
use crate::ipxe;
use crate::state::MachineState;
use crate::storage::netboot_allowed;

/// Why a MAC no record names boots from its disk.
pub fn unknown(mac: MacAddr) -> String {
    format!("no machine with MAC {mac} in the inventory")
}

/// Why `m` may not netboot now, if it may not.
pub fn refused(m: &Machine, state: &MachineState, mac: MacAddr) -> Option<String> {
    if netboot_allowed(m, state) {
        return None;
    }
    Some(if m.netboot.allow && state.status == crate::state::Status::Deprovisioned {
        format!(
            "{} is deprovisioned (disks erased), netboot was cleared (bootsvc machine {mac} reinstall installs it again)",
            m.hostname
        )
    } else if m.netboot.allow {
        format!("{} is installed, netboot was cleared (bootsvc machine {mac} reinstall allows it again)", m.hostname)
    } else {
        format!("netboot is not allowed for {}", m.hostname)
    })
}

/// How a caller reached bootsvc, which decides the host of every URL it is given: a machine
/// that came over IPv6 is given `http.public_url6` (bracketed IPv6), one over IPv4 (or an
/// IPv4-mapped address on a dual-stack listener) `http.public_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    V4,
    V6,
}

impl Via {
    /// The family of `peer`'s address (IPv4-mapped IPv6 counts as IPv4).
    pub fn of(peer: std::net::SocketAddr) -> Via {
        match peer.ip() {
            std::net::IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => Via::V6,
            _ => Via::V4,
        }
    }
}

/// This instance's base URL for a caller that came `via`: `http.public_url6` for IPv6 when
/// there is one (`Config::public_url6`), else `http.public_url`. No trailing slash.
pub fn own_url(cfg: &Config, via: Via) -> String {
    match (via, cfg.public_url6()) {
        (Via::V6, Some(u)) => u,
        _ => cfg.http.public_url.trim_end_matches('/').to_string(),
    }
}

/// `osie.url`: this instance's base URL for the caller ([`own_url`]), then each of
/// `http.peers`, without trailing slashes.
pub fn base_urls(cfg: &Config, via: Via) -> Vec<String> {
    std::iter::once(own_url(cfg, via))
        .chain(cfg.http.peers.iter().map(|u| u.trim_end_matches('/').to_string()))
        .collect()
}

/// The installer's kernel command line for `m` booting from `mac`, reached `via`.
pub fn installer_args(cfg: &Config, m: &Machine, mac: MacAddr, via: Via) -> Result<Vec<String>, ipxe::Unsafe> {
    let osie_url = base_urls(cfg, via).join(",");
    ipxe::installer_args(&osie_url, &cfg.artifacts.kernel_args, m.netboot.kernel_args.as_deref(), mac)
}

/// The installer's kernel and initramfs for `arch` machines, relative to `artifacts.dir`
/// (and to `/artifacts/` over HTTP and TFTP): `artifacts.kernel` and `artifacts.initrd`, under
/// `arm64/` for arm64 (`docs/arm64.md`). The architecture is the one DHCP chose for the
/// request's boot program (`dhcp/classify.rs`), carried in the script's or configuration's
/// path, never guessed here.
pub fn artifacts(cfg: &Config, arch: Arch) -> (String, String) {
    let a = &cfg.artifacts;
    (format!("{}{}", arch.subdir(), a.kernel), format!("{}{}", arch.subdir(), a.initrd))
}

/// What the tests of the iPXE and GRUB decisions share: a config with a serial console, a
/// record from JSON, a MAC.
#[cfg(test)]
pub(crate) mod testing {
    use crate::config::Config;
    use crate::inventory::Entry;

    pub fn cfg() -> Config {
        let mut c = crate::config::sample();
        c.artifacts.kernel_args = "console=ttyS0,115200n8".into();
        c
    }

    pub fn entry(json: &str) -> Entry {
        crate::inventory::load::test_entry(json)
    }

    pub const MAC: &str = "52:54:00:00:00:01";
}

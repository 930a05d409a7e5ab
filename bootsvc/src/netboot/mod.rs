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
    Some(if m.netboot.allow {
        format!("{} is installed, netboot was cleared (bootsvc machine {mac} reinstall allows it again)", m.hostname)
    } else {
        format!("netboot is not allowed for {}", m.hostname)
    })
}

/// `osie.url`: this instance's `public_url`, then each of `http.peers`, without trailing
/// slashes.
pub fn base_urls(cfg: &Config) -> Vec<&str> {
    std::iter::once(cfg.http.public_url.as_str())
        .chain(cfg.http.peers.iter().map(String::as_str))
        .map(|u| u.trim_end_matches('/'))
        .collect()
}

/// The installer's kernel command line for `m` booting from `mac`.
pub fn installer_args(cfg: &Config, m: &Machine, mac: MacAddr) -> Result<Vec<String>, ipxe::Unsafe> {
    let osie_url = base_urls(cfg).join(",");
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

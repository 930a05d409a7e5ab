//! Which GRUB configuration a request gets, over TFTP and HTTP alike: the rules of the iPXE
//! script (`http/boot.rs`), with identification on top.
//!
//! - [`grub::ENTRY_FILE`]: the same for every caller ([`grub::entry`]).
//! - a machine's file names the architecture of the GRUB asking (`boot/<mac>.grub`,
//!   `boot/arm64/<mac>.grub`, as the entry sends it by `$grub_cpu`): its installer names
//!   that architecture's kernel and initramfs.
//! - `boot/<mac>.grub` asked from an address that is not `<mac>`'s machine's (the identity
//!   rule of `docs/security.md`), or for an unknown MAC: exactly what an unknown machine
//!   gets, so a neighbour learns nothing by asking (the refusal is logged);
//! - netboot not allowed, or cleared by a finished install: leave GRUB (the disk boots);
//! - the record's own `netboot.grub_config`, as written;
//! - otherwise the installer ([`super::installer`]) with the same command line as iPXE's.

use std::net::IpAddr;

use osie_api::MacAddr;

use super::Via;
use crate::arch::Arch;
use crate::config::Config;
use crate::grub::{self, Name};
use crate::identity::Identity;
use crate::inventory::Entry;
use crate::state::MachineState;
use crate::storage::Storage;

/// A configuration and what kind it is (for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub kind: &'static str,
    pub config: String,
    /// Why the machine is sent to its disk, or why its configuration could not be rendered.
    pub why: Option<String>,
}

/// The machine's configuration for a GRUB of `arch`, from its record and state
/// (identification already done), for a machine that reached bootsvc `via`.
pub fn choose(cfg: &Config, entry: Option<&Entry>, state: &MachineState, mac: MacAddr, arch: Arch, via: Via) -> Choice {
    let Some(entry) = entry else { return unknown(mac, None) };
    let m = &entry.machine;
    if let Some(why) = super::refused(m, state, mac) {
        return Choice { kind: "local-boot", config: grub::local_boot(&why), why: Some(why) };
    }
    if let Some(c) = &m.netboot.grub_config {
        return Choice { kind: "custom", config: grub::custom(c), why: None };
    }
    let banner = format!("{} ({mac})", m.hostname);
    let (kernel, initrd) = super::artifacts(cfg, arch);
    let rendered = super::installer_args(cfg, m, mac, via).and_then(|args| {
        grub::installer(&grub::Installer { kernel: &kernel, initrd: &initrd, args: &args, banner: &banner, mac, arch })
    });
    match rendered {
        Ok(config) => Choice { kind: "installer", config, why: None },
        // Validation refuses such records; this is the last line of defence.
        Err(e) => {
            let why = format!("{}: cannot render its GRUB configuration: {e}", entry.source.describe());
            Choice { kind: "error", config: grub::local_boot("configuration error"), why: Some(why) }
        }
    }
}

/// What an unknown MAC gets; `why` (for the log) when it is another reason.
fn unknown(mac: MacAddr, why: Option<String>) -> Choice {
    let told = super::unknown(mac);
    Choice { kind: "unknown", config: grub::local_boot(&told), why: Some(why.unwrap_or(told)) }
}

/// The answer to a request of `name` from `source` (identified as for metadata: IPv4 or
/// IPv6, `crate::identity`).
pub fn answer(cfg: &Config, storage: &dyn Storage, identity: &Identity, name: Name, source: IpAddr) -> Choice {
    let (mac, arch) = match name {
        Name::Entry => return Choice { kind: "entry", config: grub::entry(), why: None },
        Name::Machine(mac, arch) => (mac, arch),
    };
    let snap = storage.snapshot();
    let Some(entry) = snap.by_mac(&mac) else {
        return match storage.other_site(&mac) {
            Some(site) => {
                let why = format!("{mac} is a machine of site {site}: that site's instances serve it");
                Choice { kind: "other-site", config: grub::local_boot(&why), why: Some(why) }
            }
            None => unknown(mac, None),
        };
    };
    let ip = crate::identity::unmap(source);
    if let Err(why) = identity.check(storage, &snap, &entry.machine, ip) {
        let m = &entry.machine;
        identity.refused(m, ip, "grub", &why);
        let why = format!("{ip} asked for the GRUB configuration of {} ({mac}): refused: {why}", m.hostname);
        let mut c = unknown(mac, Some(why));
        c.kind = "not-identified";
        return c;
    }
    let via = if ip.is_ipv6() { Via::V6 } else { Via::V4 };
    choose(cfg, Some(entry), &storage.state_of(&entry.machine), mac, arch, via)
}

/// Log one answer (TFTP and HTTP alike).
pub fn log(c: &Choice, name: Name, peer: &dyn std::fmt::Display, via: &'static str) {
    let (mac, arch) = match name {
        Name::Entry => return tracing::debug!(%peer, via, "GRUB entry configuration"),
        Name::Machine(m, arch) => (m, arch.as_str()),
    };
    match (&c.why, c.kind) {
        (Some(why), "error") => tracing::error!(%mac, %peer, via, arch, why, "GRUB configuration"),
        (Some(why), "not-identified") => {
            tracing::warn!(%mac, %peer, via, arch, kind = c.kind, why, "GRUB configuration")
        }
        (Some(why), _) => tracing::info!(%mac, %peer, via, arch, kind = c.kind, why, "GRUB configuration"),
        (None, _) => tracing::info!(%mac, %peer, via, arch, kind = c.kind, "GRUB configuration"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::netboot::testing::{cfg, entry, MAC};

    #[test]
    fn known_allowed_machine_gets_the_installer() {
        let e = entry(&format!(
            r#"{{"hostname":"n1","macs":["{MAC}"],"netboot":{{"allow":true,"kernel_args":"osie.debug osie.url=http://evil"}}}}"#
        ));
        let c = choose(&cfg(), Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V4);
        assert_eq!(c.kind, "installer", "{:?}", c.why);
        let linux = c.config.lines().find(|l| l.starts_with("if linux ")).unwrap();
        assert_eq!(
            linux,
            "if linux '/artifacts/vmlinuz' 'console=ttyS0,115200n8' 'osie.debug' 'osie.url=http://evil' \
             'osie.url=http://192.0.2.1:8080' 'osie.mac=52:54:00:00:00:01'; then"
        );
        let words = linux.trim_start_matches("if linux ").trim_end_matches("; then").replace('\'', "");
        let params = osie_api::BootParams::parse(&words).unwrap();
        assert_eq!(params.url, "http://192.0.2.1:8080", "our osie.url comes last and wins");
    }

    #[test]
    fn unknown_disallowed_installed_and_custom() {
        let mac: MacAddr = MAC.parse().unwrap();
        let c = choose(&cfg(), None, &MachineState::default(), mac, Arch::X86_64, Via::V4);
        assert_eq!(c.kind, "unknown");
        assert!(c.config.ends_with("\nexit\n") && !c.config.contains("linux"), "{}", c.config);

        let e = entry(&format!(r#"{{"hostname":"n1","macs":["{MAC}"]}}"#));
        let c = choose(&cfg(), Some(&e), &MachineState::default(), mac, Arch::X86_64, Via::V4);
        assert_eq!(c.kind, "local-boot");
        assert!(c.why.unwrap().contains("not allowed"));

        let e = entry(&format!(r#"{{"hostname":"n1","macs":["{MAC}"],"netboot":{{"allow":true}}}}"#));
        let installed = MachineState { netboot_cleared: true, ..Default::default() };
        let c = choose(&cfg(), Some(&e), &installed, mac, Arch::X86_64, Via::V4);
        assert_eq!(c.kind, "local-boot");
        assert!(c.why.unwrap().contains("reinstall"));

        let e = entry(&format!(
            r#"{{"hostname":"n1","macs":["{MAC}"],"netboot":{{"allow":true,"grub_config":"echo hi\nexit","ipxe_script":"shell"}}}}"#
        ));
        let c = choose(&cfg(), Some(&e), &MachineState::default(), mac, Arch::X86_64, Via::V4);
        assert_eq!((c.kind, c.config.as_str()), ("custom", "echo hi\nexit\n"));
    }

    #[test]
    fn each_architecture_gets_its_own_files_whatever_the_record_says() {
        let mac: MacAddr = MAC.parse().unwrap();
        for record in ["x86_64", "aarch64"] {
            let e =
                entry(&format!(r#"{{"hostname":"n1","macs":["{MAC}"],"arch":"{record}","netboot":{{"allow":true}}}}"#));
            for (arch, kernel, initrd, again) in [
                (Arch::X86_64, "'/artifacts/vmlinuz'", "'/artifacts/initramfs.img'", "/boot/52:54:00:00:00:01.grub"),
                (
                    Arch::Aarch64,
                    "'/artifacts/arm64/vmlinuz'",
                    "'/artifacts/arm64/initramfs.img'",
                    "/boot/arm64/52:54:00:00:00:01.grub",
                ),
            ] {
                let c = choose(&cfg(), Some(&e), &MachineState::default(), mac, arch, Via::V4);
                assert_eq!(c.kind, "installer", "{:?}", c.why);
                assert!(c.config.contains(&format!("if linux {kernel} ")), "{record} {arch:?}: {}", c.config);
                assert!(c.config.contains(&format!("if initrd {initrd};")), "{record} {arch:?}: {}", c.config);
                assert!(c.config.ends_with(&format!("configfile {again}\n")), "{record} {arch:?}: {}", c.config);
                let other = if arch == Arch::X86_64 { "arm64/" } else { "'/artifacts/vmlinuz'" };
                assert!(!c.config.contains(other), "{record} {arch:?}: {}", c.config);
            }
        }
    }

    #[test]
    fn unrenderable_records_boot_locally() {
        let e = entry(&format!(
            r#"{{"hostname":"n1","macs":["{MAC}"],"netboot":{{"allow":true,"kernel_args":"quiet';reboot;'"}}}}"#
        ));
        let c = choose(&cfg(), Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V4);
        assert_eq!(c.kind, "error");
        assert!(!c.config.contains("reboot") && !c.config.contains("linux"), "{}", c.config);
    }
}

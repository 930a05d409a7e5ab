//! `GET /boot/{mac}.ipxe`: what a machine's iPXE runs next; `GET /boot/arm64/{mac}.ipxe` the
//! same for an arm64 iPXE (DHCP hands out the path of the iPXE's own architecture). (`GET
//! /boot/[arm64/]{mac}.grub` and `GET /grub/grub.cfg`, GRUB's, are answered by
//! `netboot::grub`.) The choice is a pure function ([`choose`]) of the config,
//! the machine's record and its state, and the script's architecture:
//!
//! - unknown MAC, or netboot not allowed (by the record, or cleared by a finished install):
//!   a script that exits to the next boot device (the local disk);
//! - the record's own inline script, or a `chain` to its script URL;
//! - otherwise the installer: kernel and initramfs from `/artifacts/` (`/artifacts/arm64/`
//!   for arm64), with
//!   `artifacts.kernel_args`, the machine's `netboot.kernel_args`, then `osie.url` and
//!   `osie.mac` (last, so nothing before can override them). With `http.peers`, `osie.url`
//!   lists this instance's `public_url` then each peer's, and the kernel and initramfs are
//!   fetched from the peers in turn when this instance's cannot be.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use osie_api::MacAddr;

use super::AppState;
use crate::arch::Arch;
use crate::config::Config;
use crate::grub;
use crate::inventory::Entry;
use crate::ipxe;
use crate::netboot::{self, Via};
use crate::state::MachineState;
use crate::trace::{ScriptStep, Step};

/// A script and what kind it is (for logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub kind: &'static str,
    pub script: String,
    /// Why the machine is sent to its local disk, or why its script could not be rendered.
    pub why: Option<String>,
}

/// `arch`: the architecture of the boot program asking (its files are named); `via`: how the
/// machine reached bootsvc, the host of every URL in its script (`netboot::Via`).
pub fn choose(cfg: &Config, entry: Option<&Entry>, state: &MachineState, mac: MacAddr, arch: Arch, via: Via) -> Choice {
    let Some(entry) = entry else {
        let why = netboot::unknown(mac);
        return Choice { kind: "unknown", script: ipxe::local_boot(&why), why: Some(why) };
    };
    let m = &entry.machine;
    if let Some(why) = netboot::refused(m, state, mac) {
        return Choice { kind: "local-boot", script: ipxe::local_boot(&why), why: Some(why) };
    }
    let banner = format!("{} ({mac})", m.hostname);
    if let Some(s) = &m.netboot.ipxe_script {
        return Choice { kind: "custom", script: ipxe::custom(s), why: None };
    }
    let rendered = match &m.netboot.ipxe_script_url {
        Some(url) => ipxe::chain(url, &banner).map(|s| ("chain", s)),
        None => installer_script(cfg, entry, mac, arch, &banner, via).map(|s| ("installer", s)),
    };
    match rendered {
        Ok((kind, script)) => Choice { kind, script, why: None },
        // Validation refuses such records; this is the last line of defence.
        Err(e) => {
            let why = format!("{}: cannot render its script: {e}", entry.source.describe());
            Choice { kind: "error", script: ipxe::local_boot("configuration error"), why: Some(why) }
        }
    }
}

fn installer_script(
    cfg: &Config,
    entry: &Entry,
    mac: MacAddr,
    arch: Arch,
    banner: &str,
    via: Via,
) -> Result<String, ipxe::Unsafe> {
    let urls = netboot::base_urls(cfg, via);
    let args = netboot::installer_args(cfg, &entry.machine, mac, via)?;
    let (kernel, initrd) = netboot::artifacts(cfg, arch);
    let files = |b: &str| (format!("{b}/artifacts/{kernel}"), format!("{b}/artifacts/{initrd}"));
    let (kernel_url, initrd_url) = files(&urls[0]);
    let fallbacks: Vec<(String, String)> = urls[1..].iter().map(|p| files(p)).collect();
    ipxe::installer(&ipxe::Installer {
        kernel_url: &kernel_url,
        initrd_url: &initrd_url,
        fallbacks: &fallbacks,
        args: &args,
        banner,
    })
}

pub async fn script(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
) -> Response {
    let path = format!("boot/{file}");
    if let Some(name) = grub::parse_name(&path) {
        return grub_config(&app, peer, name);
    }
    let Some((mac, arch)) = ipxe::parse_script_path(&path) else {
        return (StatusCode::NOT_FOUND, "expected /boot/[arm64/]<mac>.ipxe or /boot/[arm64/]<mac>.grub\n")
            .into_response();
    };
    let snap = app.storage.snapshot();
    let entry = snap.by_mac(&mac);
    let state = entry.map(|e| app.storage.state_of(&e.machine)).unwrap_or_default();
    let mut choice = choose(&app.cfg, entry, &state, mac, arch, Via::of(peer));
    if let (None, Some(site)) = (entry, app.storage.other_site(&mac)) {
        let why = format!("{mac} is a machine of site {site}: that site's instances serve it");
        choice = Choice { kind: "other-site", script: ipxe::local_boot(&why), why: Some(why) };
    }
    let host = entry.map(|e| e.machine.hostname.as_str()).unwrap_or("-");
    let arch = arch.as_str();
    match (&choice.why, choice.kind) {
        (Some(why), "error") => tracing::error!(%mac, host, %peer, arch, why, "iPXE script"),
        (Some(why), _) => tracing::info!(%mac, host, %peer, arch, kind = choice.kind, why, "iPXE script"),
        (None, _) => tracing::info!(%mac, host, %peer, arch, kind = choice.kind, "iPXE script"),
    }
    // A script fetch identifies nobody: anyone who knows the MAC can fetch the script
    // (docs/security.md). Nothing is stored in the machine's state; the boot trace notes the
    // fetch with its source address (a claim, as a DHCP request is: docs/trace.md).
    if let Some(t) = &app.tracer {
        let script = match choice.kind {
            "local-boot" => "local",
            "error" => "refused",
            k => k,
        };
        let step = Step::Script(ScriptStep { script: script.to_string(), status: 200 });
        t.step(mac, Some(peer.ip()), None, step);
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], choice.script)
        .into_response()
}

/// `GET /grub/grub.cfg`: what GRUB reads first (`grub::entry`).
pub async fn grub_entry(State(app): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    grub_config(&app, peer, grub::Name::Entry)
}

/// A GRUB configuration (`netboot::grub`): identified like the TFTP request for it.
fn grub_config(app: &AppState, peer: SocketAddr, name: grub::Name) -> Response {
    let c = netboot::grub::answer(&app.cfg, &*app.storage, &app.identity, name, peer.ip());
    netboot::grub::log(&c, name, &peer, "http");
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], c.config)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use osie_api::BootParams;

    use crate::netboot::testing::{cfg, entry, MAC};

    #[test]
    fn known_allowed_machine_gets_the_installer() {
        let e = entry(&format!(
            r#"{{"hostname":"n1","macs":["{MAC}"],"netboot":{{"allow":true,"kernel_args":"osie.debug osie.url=http://evil"}}}}"#
        ));
        let c = choose(&cfg(), Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V4);
        assert_eq!(c.kind, "installer");
        let kernel = c.script.lines().find(|l| l.starts_with("kernel ")).unwrap();
        assert_eq!(
            kernel,
            "kernel --name vmlinuz http://192.0.2.1:8080/artifacts/vmlinuz initrd=initrd console=ttyS0,115200n8 \
             osie.debug osie.url=http://evil osie.url=http://192.0.2.1:8080 osie.mac=52:54:00:00:00:01 || goto osie_failed"
        );
        let params = BootParams::parse(kernel).unwrap();
        assert_eq!(params.url, "http://192.0.2.1:8080", "our osie.url comes last and wins");
        assert!(params.debug);
        assert!(c.script.contains("initrd --name initrd http://192.0.2.1:8080/artifacts/initramfs.img"));
    }

    #[test]
    fn peers_go_into_osie_url_and_the_fetches() {
        let mut cfg = cfg();
        cfg.http.peers = vec!["http://192.0.2.2:8080/".into(), "http://192.0.2.3:8080".into()];
        let e = entry(&format!(
            r#"{{"hostname":"n1","macs":["{MAC}"],"netboot":{{"allow":true,"kernel_args":"osie.url=http://evil"}}}}"#
        ));
        let c = choose(&cfg, Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V4);
        assert_eq!(c.kind, "installer", "{:?}", c.why);
        let kernels: Vec<&str> = c.script.lines().filter(|l| l.starts_with("kernel ")).collect();
        assert_eq!(kernels.len(), 1, "one line, the fallbacks after `||`: {}", c.script);
        let tries: Vec<&str> = kernels[0].split(" || ").collect();
        assert_eq!(tries.len(), 4, "{}", kernels[0]);
        for (t, host) in tries.iter().zip(["192.0.2.1", "192.0.2.2", "192.0.2.3"]) {
            assert!(
                t.starts_with(&format!("kernel --name vmlinuz http://{host}:8080/artifacts/vmlinuz initrd=initrd ")),
                "{t}"
            );
            let params = BootParams::parse(t).unwrap();
            assert_eq!(params.urls(), ["http://192.0.2.1:8080", "http://192.0.2.2:8080", "http://192.0.2.3:8080"]);
        }
        assert_eq!(tries[3], "goto osie_failed");
        assert!(
            c.script.contains(
                "\ninitrd --name initrd http://192.0.2.1:8080/artifacts/initramfs.img || initrd --name initrd \
                 http://192.0.2.2:8080/artifacts/initramfs.img || initrd --name initrd \
                 http://192.0.2.3:8080/artifacts/initramfs.img || goto osie_failed\n"
            ),
            "{}",
            c.script
        );
    }

    #[test]
    fn machines_over_ipv6_get_ipv6_urls() {
        let mut cfg = cfg();
        cfg.http.listen = "[::]:8080".parse().unwrap();
        cfg.dhcp6.address = Some("2001:db8::1".parse().unwrap());
        cfg.http.peers = vec!["http://192.0.2.2:8080".into()];
        let e = entry(&format!(r#"{{"hostname":"n1","macs":["{MAC}"],"netboot":{{"allow":true}}}}"#));
        let c = choose(&cfg, Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V6);
        let kernel = c.script.lines().find(|l| l.starts_with("kernel ")).unwrap();
        assert!(kernel.starts_with("kernel --name vmlinuz http://[2001:db8::1]:8080/artifacts/vmlinuz "), "{kernel}");
        let params = BootParams::parse(kernel.split(" || ").next().unwrap()).unwrap();
        assert_eq!(params.urls(), ["http://[2001:db8::1]:8080", "http://192.0.2.2:8080"]);
        // IPv4 (and IPv4-mapped) callers of the same listener: `public_url`.
        let c = choose(&cfg, Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V4);
        assert!(c.script.contains(" osie.url=http://192.0.2.1:8080,http://192.0.2.2:8080 "), "{}", c.script);
        assert_eq!(Via::of("[::ffff:192.0.2.9]:4000".parse().unwrap()), Via::V4);
        assert_eq!(Via::of("[2001:db8::9]:4000".parse().unwrap()), Via::V6);
        // An explicit `public_url6` wins over the one made from `dhcp6.address`.
        cfg.http.public_url6 = Some("http://[2001:db8::80]:80/".into());
        let c = choose(&cfg, Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V6);
        assert!(c.script.contains(" osie.url=http://[2001:db8::80]:80,http://192.0.2.2:8080 "), "{}", c.script);
    }

    #[test]
    fn the_script_names_the_files_of_its_architecture_whatever_the_record_says() {
        let mut cfg = cfg();
        cfg.http.peers = vec!["http://192.0.2.2:8080".into()];
        for record in ["x86_64", "aarch64"] {
            let e =
                entry(&format!(r#"{{"hostname":"n1","macs":["{MAC}"],"arch":"{record}","netboot":{{"allow":true}}}}"#));
            let x86 = choose(&cfg, Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V4);
            let arm = choose(&cfg, Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::Aarch64, Via::V4);
            for (c, want, not) in
                [(&x86, "/artifacts/vmlinuz ", "/arm64/"), (&arm, "/artifacts/arm64/vmlinuz ", "/artifacts/vmlinuz")]
            {
                assert_eq!(c.kind, "installer", "{:?}", c.why);
                let fetches: Vec<&str> =
                    c.script.lines().filter(|l| l.starts_with("kernel ") || l.starts_with("initrd ")).collect();
                assert_eq!(fetches.len(), 2, "{}", c.script);
                // Every try (this instance's and the peer's) names the script's architecture.
                assert_eq!(fetches[0].matches(want).count(), 2, "{record}: {}", c.script);
                assert!(!c.script.contains(not), "{record}: {}", c.script);
            }
            assert_eq!(arm.script.matches("/artifacts/arm64/initramfs.img").count(), 2, "{}", arm.script);
        }
    }

    #[test]
    fn unknown_and_disallowed_machines_boot_locally() {
        let c = choose(&cfg(), None, &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V4);
        assert_eq!(c.kind, "unknown");
        assert!(c.script.ends_with("\nexit\n") && !c.script.contains("kernel"), "{}", c.script);

        let e = entry(&format!(r#"{{"hostname":"n1","macs":["{MAC}"]}}"#));
        let c = choose(&cfg(), Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V4);
        assert_eq!(c.kind, "local-boot");
        assert!(c.why.unwrap().contains("not allowed"));

        let e = entry(&format!(r#"{{"hostname":"n1","macs":["{MAC}"],"netboot":{{"allow":true}}}}"#));
        let installed = MachineState { netboot_cleared: true, ..Default::default() };
        let c = choose(&cfg(), Some(&e), &installed, MAC.parse().unwrap(), Arch::X86_64, Via::V4);
        assert_eq!(c.kind, "local-boot");
        assert!(c.why.unwrap().contains("reinstall"));
    }

    #[test]
    fn custom_script_and_chain() {
        let e =
            entry(&format!(r#"{{"hostname":"n1","macs":["{MAC}"],"netboot":{{"allow":true,"ipxe_script":"shell"}}}}"#));
        let c = choose(&cfg(), Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V4);
        assert_eq!((c.kind, c.script.as_str()), ("custom", "#!ipxe\nshell\n"));
        let e = entry(&format!(
            r#"{{"hostname":"n1","macs":["{MAC}"],"netboot":{{"allow":true,"ipxe_script_url":"http://192.0.2.9/s.ipxe"}}}}"#
        ));
        let c = choose(&cfg(), Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V4);
        assert_eq!(c.kind, "chain");
        assert!(c.script.contains("\nchain --autofree http://192.0.2.9/s.ipxe || goto osie_failed\n"));
    }

    #[test]
    fn unrenderable_records_boot_locally() {
        // Validation would refuse this; rendering must not emit it either.
        let e = entry(&format!(
            r#"{{"hostname":"n1","macs":["{MAC}"],"netboot":{{"allow":true,"kernel_args":"quiet\nchain http://evil/"}}}}"#
        ));
        let c = choose(&cfg(), Some(&e), &MachineState::default(), MAC.parse().unwrap(), Arch::X86_64, Via::V4);
        assert_eq!(c.kind, "error");
        assert!(!c.script.contains("evil") && !c.script.contains("kernel"), "{}", c.script);
    }
}

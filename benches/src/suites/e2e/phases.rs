//! The provisioning timeline cut into phases: the milestones of one machine's run (times
//! since power-on, from bootsvc's log, its stored events and the serial console, as
//! `osie_qemu_tests::Timeline` puts them together), and each phase as the time between two
//! milestones. Pure: a timeline in, figures out.

use std::collections::BTreeMap;
use std::time::Duration;

use osie_api::Phase;
use osie_qemu_tests::flow::{OS_KERNEL, USER_DATA};
use osie_qemu_tests::timeline::{Mark, Step, Timeline};

/// A point of the run every provisioning passes, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    PowerOn,
    /// bootsvc's first DHCP offer to the iPXE ROM.
    IpxeOffer,
    /// bootsvc acked the iPXE ROM's DHCP request with the script URL.
    IpxeDhcp,
    /// iPXE fetched its script (`/boot/<mac>.ipxe`, kind installer).
    Script,
    /// The initramfs was served (the kernel is fetched first).
    KernelInitrd,
    Event(Phase),
    /// After `installed`: the first DHCP ack without a boot file (netboot cleared).
    RebootDhcp,
    /// The installed OS's kernel banner on the console.
    OsKernel,
    /// After the OS's kernel: the first DHCP ack (the OS's own client).
    OsDhcp,
    /// The user-data's marker on the console (cloud-init runcmd).
    UserData,
}

impl Milestone {
    /// The figure's key (`at_<key>_s`).
    pub fn key(self) -> &'static str {
        match self {
            Milestone::PowerOn => "power_on",
            Milestone::IpxeOffer => "ipxe_offer",
            Milestone::IpxeDhcp => "ipxe_dhcp",
            Milestone::Script => "script",
            Milestone::KernelInitrd => "kernel_initrd",
            Milestone::Event(Phase::BootedInstaller) => "booted_installer",
            Milestone::Event(Phase::Metadata) => "metadata",
            Milestone::Event(Phase::DiskWiped) => "disk_wiped",
            Milestone::Event(Phase::ImageVerified) => "image_verified",
            Milestone::Event(Phase::Installed) => "installed",
            Milestone::Event(Phase::FirstBoot) => "first_boot",
            Milestone::Event(_) => "other_event",
            Milestone::RebootDhcp => "reboot_dhcp",
            Milestone::OsKernel => "os_kernel",
            Milestone::OsDhcp => "os_dhcp",
            Milestone::UserData => "user_data",
        }
    }

    /// When the milestone was reached, since power-on; `None` when it never was.
    pub fn at(self, t: &Timeline) -> Option<Duration> {
        let to_ipxe = |m: &Mark, reply: &str| {
            m.dhcp
                .as_ref()
                .is_some_and(|d| d.class == "ipxe" && d.boot_file.is_some() && d.reply.as_deref() == Some(reply))
        };
        let ack = |m: &Mark| m.dhcp.as_ref().is_some_and(|d| d.reply.as_deref() == Some("ack"));
        let console = |label: &str| t.first(|m| m.step == Step::Console && m.label == label).map(|m| m.at);
        match self {
            Milestone::PowerOn => Some(Duration::ZERO),
            Milestone::IpxeOffer => t.first(|m| to_ipxe(m, "offer")).map(|m| m.at),
            Milestone::IpxeDhcp => t.first(|m| to_ipxe(m, "ack")).map(|m| m.at),
            Milestone::Script => t.first(|m| m.step == Step::Script && m.detail == "kind installer").map(|m| m.at),
            Milestone::KernelInitrd => t.first(|m| m.step == Step::Initrd).map(|m| m.at),
            Milestone::Event(p) => t.event(p).map(|m| m.at),
            Milestone::RebootDhcp => {
                let installed = t.event(Phase::Installed)?;
                t.first_after(installed, |m| ack(m) && m.dhcp.as_ref().is_some_and(|d| d.boot_file.is_none()))
                    .map(|m| m.at)
            }
            Milestone::OsKernel => console(OS_KERNEL),
            Milestone::OsDhcp => {
                let kernel = t.first(|m| m.step == Step::Console && m.label == OS_KERNEL)?;
                t.first_after(kernel, ack).map(|m| m.at)
            }
            Milestone::UserData => console(USER_DATA),
        }
    }
}

/// A phase: from one milestone to the next, what it is, and what bounds its time.
pub struct PhaseSpec {
    pub key: &'static str,
    pub name: &'static str,
    pub from: Milestone,
    pub to: Milestone,
    pub limit: &'static str,
}

/// The phases of a BIOS provisioning run (SeaBIOS + QEMU's iPXE NIC ROM), in order; each
/// starts where the previous one ends, so their durations add up to the total.
pub const PHASES: [PhaseSpec; 14] = [
    PhaseSpec {
        key: "firmware_offer",
        name: "power-on → first DHCP offer to iPXE",
        from: Milestone::PowerOn,
        to: Milestone::IpxeOffer,
        limit: "SeaBIOS POST and the iPXE ROM's start and link-up under TCG; bootsvc answers a DISCOVER in well \
                under a millisecond (item 2)",
    },
    PhaseSpec {
        key: "ipxe_dhcp",
        name: "offer → ack with the script URL",
        from: Milestone::IpxeOffer,
        to: Milestone::IpxeDhcp,
        limit: "iPXE's DHCP: it keeps collecting offers (ProxyDHCP) for a while after the first before it sends \
                its REQUEST; bootsvc acks at once",
    },
    PhaseSpec {
        key: "script",
        name: "DHCP → iPXE script fetched",
        from: Milestone::IpxeDhcp,
        to: Milestone::Script,
        limit: "iPXE's own network configuration after DHCP before it runs the boot file (its IPv6 \
                autoconfiguration wait on a network without routers), then one HTTP GET",
    },
    PhaseSpec {
        key: "kernel_initrd",
        name: "script → kernel + initramfs fetched",
        from: Milestone::Script,
        to: Milestone::KernelInitrd,
        limit: "iPXE's HTTP client over the emulated virtio NIC (TCG CPU), not bootsvc (item 4 serves GB/s)",
    },
    PhaseSpec {
        key: "installer_boot",
        name: "initramfs → installer running (booted-installer)",
        from: Milestone::KernelInitrd,
        to: Milestone::Event(Phase::BootedInstaller),
        limit: "the kernel's decompression and boot under TCG (emulated CPU), module loading, the installer's DHCP",
    },
    PhaseSpec {
        key: "metadata",
        name: "booted-installer → metadata",
        from: Milestone::Event(Phase::BootedInstaller),
        to: Milestone::Event(Phase::Metadata),
        limit: "one HTTP GET of the metadata; the event's delivery",
    },
    PhaseSpec {
        key: "disk",
        name: "metadata → disk selected and wiped",
        from: Milestone::Event(Phase::Metadata),
        to: Milestone::Event(Phase::DiskWiped),
        limit: "sysfs scan and zeroing the old signature areas: a few small virtio-blk writes",
    },
    PhaseSpec {
        key: "image",
        name: "disk-wiped → image streamed and verified (image-verified)",
        from: Milestone::Event(Phase::DiskWiped),
        to: Milestone::Event(Phase::ImageVerified),
        limit: "see the split below: the installer's own stage timings",
    },
    PhaseSpec {
        key: "finish",
        name: "image-verified → installed (GPT, cloud-init seed)",
        from: Milestone::Event(Phase::ImageVerified),
        to: Milestone::Event(Phase::Installed),
        limit: "GPT fix-up and the cloud-init seed written into the installed system (small disk writes, a \
                partition table re-read)",
    },
    PhaseSpec {
        key: "reboot_dhcp",
        name: "installed → DHCP ack after the reboot (no boot file)",
        from: Milestone::Event(Phase::Installed),
        to: Milestone::RebootDhcp,
        limit: "the reboot: SeaBIOS POST and the iPXE ROM's DHCP again under TCG (with its wait for more offers)",
    },
    PhaseSpec {
        key: "os_kernel",
        name: "DHCP without boot file → installed OS's kernel",
        from: Milestone::RebootDhcp,
        to: Milestone::OsKernel,
        limit: "iPXE giving up on the network, SeaBIOS booting the disk, GRUB loading the OS's kernel (TCG)",
    },
    PhaseSpec {
        key: "os_dhcp",
        name: "OS kernel → the OS's own DHCP ack",
        from: Milestone::OsKernel,
        to: Milestone::OsDhcp,
        limit: "the Debian cloud image's kernel and early userspace under TCG (emulated CPU): systemd up to the \
                network (cloud-init's local stage first)",
    },
    PhaseSpec {
        key: "os_boot",
        name: "OS's DHCP → cloud-init ran the user-data",
        from: Milestone::OsDhcp,
        to: Milestone::UserData,
        limit: "cloud-init's network, config and final stages under TCG (Python on the emulated CPU), runcmd",
    },
    PhaseSpec {
        key: "phone_home",
        name: "user-data → first-boot event (phone home)",
        from: Milestone::UserData,
        to: Milestone::Event(Phase::FirstBoot),
        limit: "cloud-init's final stage: modules after runcmd, then phone_home's POST",
    },
];

/// The figures of one run: `at_<milestone>_s` for every milestone reached, `<phase>_s` for
/// every phase whose ends were both reached, and `total_s` (power-on → first-boot).
pub fn figures(t: &Timeline) -> BTreeMap<String, f64> {
    let mut f = BTreeMap::new();
    for p in &PHASES {
        for m in [p.from, p.to] {
            if let Some(at) = m.at(t) {
                f.insert(format!("at_{}_s", m.key()), at.as_secs_f64());
            }
        }
        if let (Some(a), Some(b)) = (p.from.at(t), p.to.at(t)) {
            // Sources are polled; a phase never runs backwards.
            f.insert(format!("{}_s", p.key), b.saturating_sub(a).as_secs_f64());
        }
    }
    if let Some(end) = Milestone::Event(Phase::FirstBoot).at(t) {
        f.insert("total_s".into(), end.as_secs_f64());
    }
    f
}

/// The milestones a complete run must have reached, by name, that this one did not.
pub fn missing(t: &Timeline) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = PHASES.iter().map(|p| p.to).filter(|m| m.at(t).is_none()).map(|m| m.key()).collect();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use osie_qemu_tests::bootlog::Dhcp;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_284_000)
    }

    fn mark(ms: u64, step: Step, label: &str, detail: &str) -> Mark {
        let at = Duration::from_millis(ms);
        Mark { at, time: t0() + at, step, label: label.into(), detail: detail.into(), dhcp: None }
    }

    fn dhcp(ms: u64, reply: &str, class: &str, boot: Option<&str>) -> Mark {
        let mut m = mark(ms, Step::Dhcp, "DHCP", "");
        m.dhcp = Some(Dhcp {
            mac: "52:54:00:be:00:01".into(),
            msg: if reply == "ack" { "request" } else { "discover" }.into(),
            reply: Some(reply.into()),
            class: class.into(),
            arch: Some(0),
            yiaddr: None,
            boot_file: boot.map(String::from),
            why_not: None,
        });
        m
    }

    fn ev(ms: u64, p: Phase) -> Mark {
        mark(ms, Step::Event(p), p.as_str(), "")
    }

    /// A whole BIOS run, as the harness's timeline holds it, times in ms since power-on.
    fn whole_run() -> Timeline {
        let url = Some("http://192.0.2.1:8080/boot/52:54:00:be:00:01.ipxe");
        let marks = vec![
            mark(0, Step::PowerOn, "power on", ""),
            dhcp(2_500, "offer", "ipxe", url),
            dhcp(3_100, "ack", "ipxe", url),
            mark(16_000, Step::Script, "iPXE script", "kind installer"),
            mark(17_000, Step::Kernel, "kernel", ""),
            mark(19_400, Step::Initrd, "initramfs", ""),
            ev(31_000, Phase::BootedInstaller),
            ev(31_300, Phase::Metadata),
            ev(31_500, Phase::DiskSelected),
            ev(31_900, Phase::DiskWiped),
            ev(40_000, Phase::ImageStreaming),
            ev(50_900, Phase::ImageVerified),
            ev(51_400, Phase::GptFixed),
            ev(52_000, Phase::Installed),
            // The installer's own DHCP (no arch) came before `installed`: not the reboot's.
            dhcp(30_000, "ack", "plain", None),
            dhcp(58_000, "offer", "ipxe", None),
            dhcp(60_000, "ack", "ipxe", None),
            mark(84_000, Step::Console, OS_KERNEL, "Linux version 6.1.0-cloud-amd64"),
            dhcp(120_000, "offer", "plain", None),
            dhcp(121_000, "ack", "plain", None),
            mark(170_000, Step::Console, USER_DATA, "osie-e2e x user-data ran: 42"),
            ev(172_500, Phase::FirstBoot),
        ];
        let mut marks = marks;
        marks.sort_by_key(|m| m.time);
        Timeline { powered_on: t0(), marks }
    }

    #[test]
    fn phases_are_the_gaps_between_milestones() {
        let f = figures(&whole_run());
        let get = |k: &str| f.get(k).copied().unwrap_or_else(|| panic!("no {k} in {f:?}"));
        // The offer ends the firmware's start, the ack iPXE's DHCP.
        assert_eq!(get("firmware_offer_s"), 2.5);
        assert_eq!(get("at_ipxe_dhcp_s"), 3.1);
        assert!((get("ipxe_dhcp_s") - 0.6).abs() < 1e-9);
        assert!((get("script_s") - 12.9).abs() < 1e-9);
        assert!((get("kernel_initrd_s") - 3.4).abs() < 1e-9);
        assert!((get("installer_boot_s") - 11.6).abs() < 1e-9);
        assert!((get("image_s") - 19.0).abs() < 1e-9);
        // The reboot's DHCP is the first ack without a boot file after `installed`.
        assert_eq!(get("at_reboot_dhcp_s"), 60.0);
        assert_eq!(get("reboot_dhcp_s"), 8.0);
        assert_eq!(get("os_kernel_s"), 24.0);
        // The OS's DHCP is the first ack after its kernel, not the installer's before it.
        assert_eq!(get("os_dhcp_s"), 37.0);
        assert_eq!(get("os_boot_s"), 49.0);
        assert_eq!(get("phone_home_s"), 2.5);
        assert_eq!(get("total_s"), 172.5);
        // The phases tile the run: their sum is the total.
        let sum: f64 = PHASES.iter().map(|p| get(&format!("{}_s", p.key))).sum();
        assert!((sum - 172.5).abs() < 1e-6, "{sum}");
        assert!(missing(&whole_run()).is_empty());
    }

    #[test]
    fn a_run_that_stopped_early_has_only_the_phases_it_finished() {
        let mut t = whole_run();
        let cut = t.marks.iter().position(|m| m.step == Step::Event(Phase::Installed)).unwrap();
        t.marks.truncate(cut);
        let f = figures(&t);
        assert!(f.contains_key("image_s"));
        for k in ["finish_s", "reboot_dhcp_s", "os_boot_s", "total_s", "at_installed_s"] {
            assert!(!f.contains_key(k), "{k} in {f:?}");
        }
        assert_eq!(missing(&t), ["installed", "reboot_dhcp", "os_kernel", "os_dhcp", "user_data", "first_boot"]);
    }
}

//! A QEMU machine on a lab's network: TCG (no KVM here), a virtio NIC on its own tap that
//! boots first, a virtio disk that boots second, the serial console in a file (the command
//! line from the test kit's `osie_testkit::qemu`).
//!
//! Firmware, as real servers have it:
//! - [`Firmware::Bios`]: SeaBIOS with QEMU's default virtio NIC ROM, which is an iPXE build
//!   (Debian's `ipxe-qemu`), so the machine is iPXE from its first DHCP request. SeaBIOS and
//!   the ROM print on the serial port (`etc/sercon-port`).
//! - [`Firmware::UefiPxe`]: OVMF with the NIC ROM disabled (`romfile=`), so OVMF's own UEFI
//!   PXE client (arch 7) does DHCP and fetches `ipxe.efi` over TFTP, as a UEFI server does.
//! - [`Firmware::UefiHttp`]: the same with OVMF's PXE boot options switched off
//!   (`opt/org.tianocore/IPv{4,6}PXESupport=n`), which leaves UEFI HTTP boot (arch 16,
//!   `HTTPClient`) as its first network boot option.
//! - [`Firmware::UefiHttp6`]: OVMF with both PXE options off, for an IPv6-only network: its
//!   HTTP boot over IPv4 finds no DHCP server (about a minute), then UEFI HTTP boot over IPv6
//!   (DHCPv6, arch 16, `ipxe.efi` over HTTP on IPv6).
//! - [`Firmware::UefiPxe6`]: OVMF with PXE over IPv4 off, for an IPv6-only network: its
//!   first boot option is UEFI PXE over IPv6 (DHCPv6, arch 7, the boot file over TFTP on
//!   IPv6).
//! - [`Firmware::Arm64UefiPxe`]: an arm64 server: QEMU's `virt` board, a Cortex-A57 and
//!   AAVMF, the NIC ROM disabled, so AAVMF's UEFI PXE client (arch 11) boots.
//! - [`Firmware::Arm64UefiHttp`]: the same with AAVMF's PXE boot options switched off (the
//!   same `opt/org.tianocore/…` switches as OVMF's), which leaves UEFI HTTP boot (arch 19,
//!   `HTTPClient`) as its network boot option.
//!
//! Each machine has its own copy of OVMF's variable store, so boot entries OVMF writes do not
//! leak between machines. The machine dies with its [`Machine`] (QEMU is killed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use osie_testkit::netns::run;
use osie_testkit::qemu::{self, ovmf, Drive, Nic, Qemu};
use osie_testkit::ChildGuard;

use crate::lab::Lab;
use crate::signals;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    UefiPxe,
    UefiHttp,
    UefiHttp6,
    UefiPxe6,
    Arm64UefiPxe,
    Arm64UefiHttp,
}

impl Firmware {
    pub fn describe(&self) -> &'static str {
        match self {
            Firmware::Bios => "SeaBIOS with QEMU's iPXE NIC ROM",
            Firmware::UefiPxe => "OVMF, NIC ROM disabled: UEFI PXE (arch 7)",
            Firmware::UefiHttp => "OVMF, NIC ROM disabled, PXE off: UEFI HTTP boot (arch 16)",
            Firmware::UefiHttp6 => "OVMF, NIC ROM disabled, PXE off: UEFI HTTP boot over IPv6 (DHCPv6, arch 16)",
            Firmware::UefiPxe6 => "OVMF, NIC ROM disabled, PXE over IPv4 off: UEFI PXE over IPv6 (DHCPv6, arch 7)",
            Firmware::Arm64UefiPxe => "arm64 virt (Cortex-A57), AAVMF, NIC ROM disabled: UEFI PXE (arch 11)",
            Firmware::Arm64UefiHttp => {
                "arm64 virt (Cortex-A57), AAVMF, NIC ROM disabled, PXE off: UEFI HTTP boot (arch 19)"
            }
        }
    }

    pub fn is_uefi(&self) -> bool {
        !matches!(self, Firmware::Bios)
    }

    /// An arm64 `virt` machine with AAVMF.
    pub fn is_arm64(&self) -> bool {
        matches!(self, Firmware::Arm64UefiPxe | Firmware::Arm64UefiHttp)
    }
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub mac: String,
    pub firmware: Firmware,
    pub memory_mb: u32,
    pub cpus: u32,
    /// Without a NIC the machine can only boot its disk.
    pub nic: bool,
    /// More disks after the boot disk (not bootable), e.g. a NoCloud seed.
    pub extra_disks: Vec<Disk>,
    /// `bootindex` on the NIC (1) and the disk (2). Without it OVMF keeps the `BootOrder`
    /// in its variables as the installer set it: with it, OVMF reorders its boot options by
    /// QEMU's boot order on every boot (a thing of QEMU, not of real servers).
    pub bootindex: bool,
    /// UEFI only: OVMF enforcing Secure Boot with Microsoft's keys enrolled.
    pub secure_boot: bool,
}

impl Spec {
    pub fn new(name: &str, mac: &str, firmware: Firmware) -> Spec {
        Spec {
            name: name.to_string(),
            mac: mac.to_string(),
            firmware,
            memory_mb: 1024,
            cpus: 1,
            nic: true,
            extra_disks: Vec::new(),
            bootindex: true,
            secure_boot: false,
        }
    }
}

/// A raw disk image file, sparse.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
}

impl Disk {
    /// An empty disk of `bytes` (all zeros, no blocks allocated).
    pub fn blank(dir: &Path, bytes: u64) -> Result<Disk> {
        let path = dir.join("disk.raw");
        let f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        f.set_len(bytes).with_context(|| format!("sizing {}", path.display()))?;
        Ok(Disk { path })
    }

    /// A disk that already holds the OS image (as a finished install leaves it, less the
    /// cloud-init seed), sparse, grown to `bytes`.
    pub fn from_image(dir: &Path, image: &Path, bytes: u64) -> Result<Disk> {
        let path = dir.join("disk.raw");
        let out = Command::new("zstd")
            .args(["-d", "-q", "-f", "--sparse", "--long=31", "-o"])
            .arg(&path)
            .arg(image)
            .output()
            .context("running zstd")?;
        if !out.status.success() {
            bail!("zstd -d {}: {}", image.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        let f = std::fs::OpenOptions::new().write(true).open(&path)?;
        if f.metadata()?.len() < bytes {
            f.set_len(bytes).with_context(|| format!("growing {}", path.display()))?;
        }
        Ok(Disk { path })
    }

    /// A small FAT disk labelled `CIDATA` holding `meta-data` and `user-data`: cloud-init's
    /// NoCloud seed on a disk of its own (made with mkfs.vfat and mtools, no mount).
    pub fn nocloud_seed(dir: &Path, meta_data: &str, user_data: &str) -> Result<Disk> {
        let path = dir.join("seed.img");
        let f = std::fs::File::create(&path)?;
        f.set_len(4 << 20)?;
        drop(f);
        run(Command::new("mkfs.vfat").args(["-n", "CIDATA"]).arg(&path))?;
        for (name, text) in [("meta-data", meta_data), ("user-data", user_data)] {
            let src = dir.join(name);
            std::fs::write(&src, text)?;
            run(Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(&path)
                .arg(&src)
                .arg(format!("::{name}")))?;
        }
        Ok(Disk { path })
    }

    /// The first `n` bytes as the machine would read them.
    pub fn head(&self, n: usize) -> Result<Vec<u8>> {
        use std::io::Read;
        let mut buf = vec![0u8; n];
        let mut f = std::fs::File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        f.read_exact(&mut buf).with_context(|| format!("reading {}", self.path.display()))?;
        Ok(buf)
    }
}

pub struct Machine {
    pub spec: Spec,
    pub dir: PathBuf,
    pub serial: PathBuf,
    pub disk: Disk,
    /// When QEMU was started: the timeline's zero.
    pub powered_on: SystemTime,
    qemu: ChildGuard,
}

impl Machine {
    /// Start QEMU in the lab's namespace on a new tap.
    pub fn power_on(lab: &Lab, spec: &Spec, disk: &Disk) -> Result<Machine> {
        let dir = lab.subdir(&spec.name)?;
        let serial = dir.join("serial.log");
        let mut q = if spec.firmware.is_arm64() {
            Qemu::aarch64(spec.memory_mb, &serial, &dir.join("AAVMF_VARS.fd"))?
        } else {
            let mut q = Qemu::new(spec.memory_mb, &serial);
            q.machine = Some(
                match (spec.firmware.is_uefi(), spec.secure_boot) {
                    (true, true) => "q35,smm=on",
                    (true, false) => "q35",
                    (false, _) => "pc",
                }
                .into(),
            );
            q.cpu = Some("max".into());
            q
        };
        q.name = Some(spec.name.clone());
        q.cpus = Some(spec.cpus);
        // The machine's data lives as long as the test (cache=unsafe); the file stays sparse
        // as the installer zeroes runs of the image.
        let index = |i: u32| spec.bootindex.then_some(i);
        q.disk(Drive { cache_unsafe: true, sparse: true, bootindex: index(2), ..Drive::new(&disk.path) });
        for d in &spec.extra_disks {
            q.disk(Drive { cache_unsafe: true, ..Drive::new(&d.path) });
        }
        if spec.nic {
            let tap = lab.add_tap()?;
            let rom = !spec.firmware.is_uefi();
            q.nic(Nic { tap, mac: Some(spec.mac.clone()), rom, bootindex: index(1) });
        }
        match spec.firmware {
            Firmware::Bios => q.firmware = qemu::Firmware::seabios_on_serial(&dir.join("sercon-port"))?,
            Firmware::UefiPxe | Firmware::UefiHttp | Firmware::UefiHttp6 | Firmware::UefiPxe6 => {
                let vars = dir.join("OVMF_VARS.fd");
                q.firmware = if spec.secure_boot {
                    qemu::Firmware::ovmf_secure_boot(&vars)?
                } else {
                    qemu::Firmware::ovmf(&vars)?
                };
                q.fw_cfg = if spec.firmware == Firmware::UefiHttp6 {
                    // An IPv6-only network: HTTP boot (IPv4, which fails, then IPv6).
                    vec![ovmf::IPV4_PXE_OFF.into(), ovmf::IPV6_PXE_OFF.into()]
                } else if spec.firmware == Firmware::UefiPxe6 {
                    // An IPv6-only network: PXE over IPv6 first.
                    vec![ovmf::IPV4_PXE_OFF.into()]
                } else {
                    // An IPv4-only provisioning network, as the lab is.
                    let mut v = vec![ovmf::IPV6_OFF.into(), ovmf::IPV6_PXE_OFF.into()];
                    if spec.firmware == Firmware::UefiHttp {
                        v.push(ovmf::IPV4_PXE_OFF.into());
                    }
                    v
                };
            }
            Firmware::Arm64UefiPxe => q.fw_cfg = vec![ovmf::IPV6_OFF.into(), ovmf::IPV6_PXE_OFF.into()],
            Firmware::Arm64UefiHttp => {
                q.fw_cfg = vec![ovmf::IPV6_OFF.into(), ovmf::IPV6_PXE_OFF.into(), ovmf::IPV4_PXE_OFF.into()]
            }
        }
        let mut cmd = q.command(&lab.site.ns);
        let qemu_log = std::fs::File::create(dir.join("qemu.log"))?;
        cmd.stdout(Stdio::from(qemu_log.try_clone()?)).stderr(Stdio::from(qemu_log));
        std::fs::write(dir.join("qemu-command.txt"), format!("{cmd:?}\n"))?;
        let powered_on = SystemTime::now();
        let qemu = ChildGuard::spawn(&format!("QEMU ({})", spec.name), signals::guard_child(&mut cmd))?;
        Ok(Machine { spec: spec.clone(), dir, serial, disk: disk.clone(), powered_on, qemu })
    }

    /// The serial console so far, as plain text.
    pub fn console(&self) -> String {
        crate::console::read(&self.serial)
    }

    /// An error when QEMU is no longer running (it should be until powered off), with what
    /// it printed.
    pub fn check_running(&mut self) -> Result<()> {
        self.qemu.check_running().with_context(|| {
            let log = std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default();
            format!("QEMU output: {}", log.trim())
        })
    }

    /// Pull the plug: kill QEMU and wait for it.
    pub fn power_off(mut self) {
        let _ = self.qemu.child.kill();
        let _ = self.qemu.child.wait();
    }
}

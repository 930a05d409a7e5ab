//! QEMU command lines for test machines: one description ([`Qemu`]) → the arguments of
//! `qemu-system-x86_64` or `qemu-system-aarch64` ([`Target`]), so every test starts its
//! machines the same way (TCG, no display, the serial console in a file) and says only what
//! differs: the firmware, the NIC and whether its option ROM runs, the disks, a kernel booted
//! directly, `fw_cfg` switches. An arm64 machine ([`Qemu::aarch64`]) is QEMU's `virt` board
//! with AAVMF (Debian's `qemu-efi-aarch64`), the UEFI firmware ARM servers have.
//!
//! Devices appear on the PCI bus in the order they are added ([`Qemu::disk`], [`Qemu::nic`]),
//! which is the order the guest enumerates them in.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::Netns;

/// Debian's `ovmf` package.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The Secure Boot build (needs SMM) and a variable store with Microsoft's keys enrolled and
/// Secure Boot enforcing: firmware as servers ship it.
pub const OVMF_CODE_SECURE_BOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
pub const OVMF_VARS_SECURE_BOOT: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// Debian's `qemu-efi-aarch64` package: the UEFI firmware of QEMU's arm64 `virt` machine.
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
pub const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

/// Which QEMU: the emulated machine's architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    #[default]
    X86_64,
    Aarch64,
}

impl Target {
    pub fn program(self) -> &'static str {
        match self {
            Target::X86_64 => "qemu-system-x86_64",
            Target::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The serial console's name for the Linux kernel (`console=`): the 8250 of a PC, the
    /// PL011 of `virt`.
    pub fn console(self) -> &'static str {
        match self {
            Target::X86_64 => "ttyS0",
            Target::Aarch64 => "ttyAMA0",
        }
    }
}

/// `fw_cfg` switches of OVMF's network stack (AAVMF is the same EDK II code and reads them
/// too).
pub mod ovmf {
    /// No IPv6 at all: OVMF reaches the disk right after its IPv4 network options fail (each
    /// IPv6 one would first wait out DHCPv6).
    pub const IPV6_OFF: &str = "name=opt/org.tianocore/IPv6Support,string=n";
    pub const IPV6_PXE_OFF: &str = "name=opt/org.tianocore/IPv6PXESupport,string=n";
    /// With both PXE options off, UEFI HTTP boot (IPv4) is the first network boot option.
    pub const IPV4_PXE_OFF: &str = "name=opt/org.tianocore/IPv4PXESupport,string=n";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's SeaBIOS; with `sercon`, a file holding the serial port SeaBIOS (and the option
    /// ROMs it runs) print on ([`Firmware::seabios_on_serial`]).
    SeaBios { sercon: Option<PathBuf> },
    /// OVMF with the machine's own copy of the variable store ([`Firmware::ovmf`]), so boot
    /// entries OVMF writes do not leak between machines.
    Ovmf { vars: PathBuf },
    /// OVMF enforcing Secure Boot with Microsoft's keys ([`Firmware::ovmf_secure_boot`]); the
    /// machine needs SMM (`q35,smm=on`).
    OvmfSecureBoot { vars: PathBuf },
    /// AAVMF (arm64 `virt` machines) with the machine's own copy of its variable store
    /// ([`Firmware::aavmf`]).
    Aavmf { vars: PathBuf },
}

impl Firmware {
    /// SeaBIOS printing on COM1 (0x3f8): the port is written to `sercon`.
    pub fn seabios_on_serial(sercon: &Path) -> Result<Firmware> {
        std::fs::write(sercon, 0x3f8u16.to_le_bytes()).with_context(|| format!("writing {}", sercon.display()))?;
        Ok(Firmware::SeaBios { sercon: Some(sercon.to_path_buf()) })
    }

    /// OVMF with a fresh copy of its variable store at `vars`.
    pub fn ovmf(vars: &Path) -> Result<Firmware> {
        std::fs::copy(OVMF_VARS, vars).with_context(|| format!("copying {OVMF_VARS} to {}", vars.display()))?;
        Ok(Firmware::Ovmf { vars: vars.to_path_buf() })
    }

    /// AAVMF with a fresh copy of its variable store at `vars` (64 MiB, as the flash).
    pub fn aavmf(vars: &Path) -> Result<Firmware> {
        std::fs::copy(AAVMF_VARS, vars).with_context(|| format!("copying {AAVMF_VARS} to {}", vars.display()))?;
        Ok(Firmware::Aavmf { vars: vars.to_path_buf() })
    }

    /// OVMF enforcing Secure Boot, with a fresh copy of its variable store (Microsoft's keys
    /// enrolled) at `vars`.
    pub fn ovmf_secure_boot(vars: &Path) -> Result<Firmware> {
        std::fs::copy(OVMF_VARS_SECURE_BOOT, vars)
            .with_context(|| format!("copying {OVMF_VARS_SECURE_BOOT} to {}", vars.display()))?;
        Ok(Firmware::OvmfSecureBoot { vars: vars.to_path_buf() })
    }
}

/// A raw disk image on a virtio-blk device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    pub path: PathBuf,
    /// `cache=unsafe`: flushes are not forced to the host disk (the data lives as long as
    /// the test).
    pub cache_unsafe: bool,
    /// `discard=unmap,detect-zeroes=unmap`: the file stays sparse as the guest zeroes runs.
    pub sparse: bool,
    pub bootindex: Option<u32>,
}

impl Drive {
    pub fn new(path: &Path) -> Drive {
        Drive { path: path.to_path_buf(), cache_unsafe: false, sparse: false, bootindex: None }
    }
}

/// A virtio NIC on a tap device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub tap: String,
    /// `None`: QEMU's default MAC.
    pub mac: Option<String>,
    /// Run the NIC's option ROM (Debian's `ipxe-qemu`: the machine is iPXE from its first
    /// DHCP); off (`romfile=`), the firmware's own network stack boots, or nothing does.
    pub rom: bool,
    pub bootindex: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Device {
    Disk(Drive),
    Nic(Nic),
}

/// A kernel booted directly (`-kernel`, `-initrd`, `-append`), no firmware boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
}

/// One machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qemu {
    /// Which `qemu-system-*` runs it.
    pub target: Target,
    pub name: Option<String>,
    /// `-machine` (`pc`, `q35`); `None`: QEMU's default (`pc`).
    pub machine: Option<String>,
    /// `-cpu`; `None`: QEMU's default.
    pub cpu: Option<String>,
    pub memory_mb: u32,
    /// `-smp`; `None`: one CPU, unsaid.
    pub cpus: Option<u32>,
    /// `-nodefaults`: no default VGA, IDE CD-ROM, floppy, parallel port.
    pub nodefaults: bool,
    /// `-no-reboot`: a reboot ends QEMU.
    pub no_reboot: bool,
    /// The serial console's file.
    pub serial: PathBuf,
    pub firmware: Firmware,
    pub direct: Option<DirectBoot>,
    /// `-boot` (`n`: the network first).
    pub boot: Option<String>,
    /// `-fw_cfg` entries besides the firmware's own (see [`ovmf`]).
    pub fw_cfg: Vec<String>,
    devices: Vec<Device>,
}

impl Qemu {
    /// SeaBIOS, `memory_mb`, the serial console in `serial`, no devices yet.
    pub fn new(memory_mb: u32, serial: &Path) -> Qemu {
        Qemu {
            target: Target::X86_64,
            name: None,
            machine: None,
            cpu: None,
            memory_mb,
            cpus: None,
            nodefaults: true,
            no_reboot: false,
            serial: serial.to_path_buf(),
            firmware: Firmware::SeaBios { sercon: None },
            direct: None,
            boot: None,
            fw_cfg: Vec::new(),
            devices: Vec::new(),
        }
    }

    /// An arm64 server: QEMU's `virt` board with a Cortex-A57 and AAVMF (its variable store
    /// copied to `vars`), `memory_mb`, the serial console (the PL011, `ttyAMA0`) in `serial`,
    /// no devices yet.
    pub fn aarch64(memory_mb: u32, serial: &Path, vars: &Path) -> Result<Qemu> {
        Ok(Qemu {
            target: Target::Aarch64,
            machine: Some("virt".into()),
            cpu: Some("cortex-a57".into()),
            firmware: Firmware::aavmf(vars)?,
            ..Qemu::new(memory_mb, serial)
        })
    }

    /// The next PCI device: a disk.
    pub fn disk(&mut self, drive: Drive) -> &mut Qemu {
        self.devices.push(Device::Disk(drive));
        self
    }

    /// The next PCI device: a NIC.
    pub fn nic(&mut self, nic: Nic) -> &mut Qemu {
        self.devices.push(Device::Nic(nic));
        self
    }

    /// The arguments of [`Target::program`].
    pub fn args(&self) -> Vec<OsString> {
        let mut a = Args::default();
        if let Some(n) = &self.name {
            a.push(&["-name", n]);
        }
        a.push(&["-accel", "tcg"]);
        if let Some(m) = &self.machine {
            a.push(&["-machine", m]);
        }
        if let Some(c) = &self.cpu {
            a.push(&["-cpu", c]);
        }
        a.push(&["-m", &self.memory_mb.to_string()]);
        if let Some(n) = self.cpus {
            a.push(&["-smp", &n.to_string()]);
        }
        if self.nodefaults {
            a.push(&["-nodefaults"]);
        }
        a.push(&["-display", "none", "-monitor", "none"]);
        if self.no_reboot {
            a.push(&["-no-reboot"]);
        }
        a.pair("-serial", file_arg("file:", &self.serial));
        match &self.firmware {
            Firmware::SeaBios { sercon: Some(f) } => a.pair("-fw_cfg", file_arg("name=etc/sercon-port,file=", f)),
            Firmware::SeaBios { sercon: None } => {}
            Firmware::Ovmf { vars } => {
                a.push(&["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}")]);
                a.pair("-drive", file_arg("if=pflash,format=raw,unit=1,file=", vars));
            }
            Firmware::OvmfSecureBoot { vars } => {
                // Only SMM code may write the variable store: the OS cannot switch Secure Boot off.
                a.push(&["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                a.push(&["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE_SECURE_BOOT}")]);
                a.pair("-drive", file_arg("if=pflash,format=raw,unit=1,file=", vars));
            }
            Firmware::Aavmf { vars } => {
                a.push(&["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}")]);
                a.pair("-drive", file_arg("if=pflash,format=raw,unit=1,file=", vars));
            }
        }
        for f in &self.fw_cfg {
            a.push(&["-fw_cfg", f]);
        }
        if let Some(d) = &self.direct {
            a.pair("-kernel", d.kernel.clone().into_os_string());
            a.pair("-initrd", d.initrd.clone().into_os_string());
            a.push(&["-append", &d.append]);
        }
        let (mut disks, mut nics) = (0, 0);
        for d in &self.devices {
            match d {
                Device::Disk(drive) => {
                    let id = format!("disk{disks}");
                    disks += 1;
                    let mut opts = format!(",format=raw,if=none,id={id}");
                    if drive.cache_unsafe {
                        opts += ",cache=unsafe";
                    }
                    if drive.sparse {
                        opts += ",discard=unmap,detect-zeroes=unmap";
                    }
                    let mut file = file_arg("file=", &drive.path);
                    file.push(opts);
                    a.pair("-drive", file);
                    a.push(&["-device", &format!("virtio-blk-pci,drive={id}{}", bootindex(drive.bootindex))]);
                }
                Device::Nic(nic) => {
                    let id = format!("net{nics}");
                    nics += 1;
                    a.push(&["-netdev", &format!("tap,id={id},ifname={},script=no,downscript=no", nic.tap)]);
                    let mac = nic.mac.as_ref().map(|m| format!(",mac={m}")).unwrap_or_default();
                    let rom = if nic.rom { "" } else { ",romfile=" };
                    a.push(&["-device", &format!("virtio-net-pci,netdev={id}{mac}{}{rom}", bootindex(nic.bootindex))]);
                }
            }
        }
        if let Some(b) = &self.boot {
            a.push(&["-boot", b]);
        }
        a.0
    }

    /// The command, to run inside `ns` (where the taps are).
    pub fn command(&self, ns: &Netns) -> Command {
        let mut cmd = ns.cmd(self.target.program());
        cmd.args(self.args());
        cmd
    }
}

fn bootindex(i: Option<u32>) -> String {
    i.map(|i| format!(",bootindex={i}")).unwrap_or_default()
}

/// `prefix` followed by a path, which need not be UTF-8.
fn file_arg(prefix: &str, path: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path);
    s
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push(&mut self, args: &[&str]) {
        self.0.extend(args.iter().map(OsString::from));
    }

    /// `flag value`, the value not necessarily UTF-8.
    fn pair(&mut self, flag: &str, value: OsString) {
        self.0.extend([OsString::from(flag), value]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(q: &Qemu) -> String {
        q.args().iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn a_seabios_machine_with_its_nic_rom_boots_the_network_first() {
        let mut q = Qemu::new(512, Path::new("/t/serial.log"));
        q.firmware = Firmware::SeaBios { sercon: Some("/t/sercon-port".into()) };
        q.nic(Nic { tap: "tp0".into(), mac: Some("52:54:00:00:00:01".into()), rom: true, bootindex: None });
        q.boot = Some("n".into());
        assert_eq!(
            line(&q),
            "-accel tcg -m 512 -nodefaults -display none -monitor none -serial file:/t/serial.log \
             -fw_cfg name=etc/sercon-port,file=/t/sercon-port \
             -netdev tap,id=net0,ifname=tp0,script=no,downscript=no -device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01 \
             -boot n"
        );
    }

    #[test]
    fn an_ovmf_machine_has_its_own_variables_its_switches_and_devices_in_order() {
        let mut q = Qemu::new(1024, Path::new("/m/serial.log"));
        (q.name, q.machine, q.cpu, q.cpus) = (Some("node1".into()), Some("q35".into()), Some("max".into()), Some(1));
        q.firmware = Firmware::Ovmf { vars: "/m/OVMF_VARS.fd".into() };
        q.fw_cfg = vec![ovmf::IPV6_OFF.into(), ovmf::IPV4_PXE_OFF.into()];
        q.disk(Drive { cache_unsafe: true, sparse: true, bootindex: Some(2), ..Drive::new(Path::new("/m/disk.raw")) })
            .disk(Drive { cache_unsafe: true, ..Drive::new(Path::new("/m/seed.img")) })
            .nic(Nic { tap: "tap0".into(), mac: Some("52:54:00:00:00:02".into()), rom: false, bootindex: Some(1) });
        let l = line(&q);
        for part in [
            "-name node1 -accel tcg -machine q35 -cpu max -m 1024 -smp 1 -nodefaults",
            &format!("-drive if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            "-drive if=pflash,format=raw,unit=1,file=/m/OVMF_VARS.fd",
            "-fw_cfg name=opt/org.tianocore/IPv6Support,string=n -fw_cfg name=opt/org.tianocore/IPv4PXESupport,string=n",
            "-drive file=/m/disk.raw,format=raw,if=none,id=disk0,cache=unsafe,discard=unmap,detect-zeroes=unmap \
             -device virtio-blk-pci,drive=disk0,bootindex=2 \
             -drive file=/m/seed.img,format=raw,if=none,id=disk1,cache=unsafe -device virtio-blk-pci,drive=disk1 \
             -netdev tap,id=net0,ifname=tap0,script=no,downscript=no \
             -device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:02,bootindex=1,romfile=",
        ] {
            assert!(l.contains(part), "{part:?} not in {l}");
        }
        assert!(!l.contains("sercon") && !l.contains("-kernel"), "{l}");
    }

    #[test]
    fn an_arm64_machine_is_virt_with_aavmf() {
        let dir = std::env::temp_dir().join(format!("osie-qemu-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vars = dir.join("AAVMF_VARS.fd");
        // Without qemu-efi-aarch64 (scripts/setup installs it) only the copy of the variables
        // fails: the command line is the same.
        let mut q = Qemu::aarch64(1024, Path::new("/a/serial.log"), &vars).unwrap_or_else(|e| {
            assert!(!Path::new(AAVMF_VARS).exists(), "{e:#}");
            let q = Qemu::new(1024, Path::new("/a/serial.log"));
            let firmware = Firmware::Aavmf { vars: vars.clone() };
            Qemu {
                target: Target::Aarch64,
                machine: Some("virt".into()),
                cpu: Some("cortex-a57".into()),
                firmware,
                ..q
            }
        });
        q.disk(Drive::new(Path::new("/a/disk.raw"))).nic(Nic {
            tap: "tap0".into(),
            mac: Some("52:54:00:00:00:03".into()),
            rom: false,
            bootindex: Some(1),
        });
        assert_eq!(q.target.program(), "qemu-system-aarch64");
        assert_eq!(q.target.console(), "ttyAMA0");
        let l = line(&q);
        for part in [
            "-accel tcg -machine virt -cpu cortex-a57 -m 1024 -nodefaults",
            &format!("-drive if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}"),
            &format!("-drive if=pflash,format=raw,unit=1,file={}", vars.display()),
            "-device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:03,bootindex=1,romfile=",
        ] {
            assert!(l.contains(part), "{part:?} not in {l}");
        }
        assert!(!l.contains("OVMF") && !l.contains("sercon"), "{l}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_kernel_booted_directly_with_the_defaults_kept() {
        let mut q = Qemu::new(1024, Path::new("/s/serial.log"));
        (q.nodefaults, q.no_reboot, q.cpus) = (false, true, Some(1));
        q.direct = Some(DirectBoot {
            kernel: "/b/vmlinuz".into(),
            initrd: "/b/initrd".into(),
            append: "console=ttyS0".into(),
        });
        q.nic(Nic { tap: "tap0".into(), mac: None, rom: false, bootindex: None })
            .disk(Drive::new(Path::new("/s/d.raw")));
        assert_eq!(
            line(&q),
            "-accel tcg -m 1024 -smp 1 -display none -monitor none -no-reboot -serial file:/s/serial.log \
             -kernel /b/vmlinuz -initrd /b/initrd -append console=ttyS0 \
             -netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=net0,romfile= \
             -drive file=/s/d.raw,format=raw,if=none,id=disk0 -device virtio-blk-pci,drive=disk0"
        );
    }
}

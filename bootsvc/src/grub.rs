//! GRUB configurations for the shim/GRUB chain (`bootsvc/docs/secure-boot.md`), rendered as
//! pure functions, as [`crate::ipxe`] renders iPXE scripts; `netboot::grub` decides which one
//! a request gets.
//!
//! How Debian's signed network GRUB (`grubnetx64.efi.signed`, 2.06) finds its
//! configuration: its embedded prefix is `/grub` on the device it was loaded from
//! (`(tftp,<next-server>)` after UEFI PXE), and its embedded configuration sources
//! `$prefix/x86_64-efi/grub.cfg` if that exists, else `$prefix/grub.cfg`. bootsvc answers
//! [`ENTRY_FILE`] with [`entry`], the same for every machine, which loads the machine's own
//! file [`machine_file`] (`boot/${net_default_mac}.grub`) from the same server. That GRUB
//! has no `http` module built in (and loads none under Secure Boot), so TFTP is its only
//! network protocol: the kernel and initramfs come over TFTP too, as
//! `artifacts/<artifacts.kernel>` and `artifacts/<artifacts.initrd>`.
//!
//! GRUB reads a configuration like a shell (`grub-core/script/yylex.l`): words split on
//! blanks; `$name` and `${name}` expanded outside single quotes; `;`, `&`, `|`, `<`, `>`,
//! `{`, `}`, `#` and newlines separate commands or start comments. Inside single quotes
//! nothing is special but the closing quote. So every value put into a configuration here is
//! one single-quoted word ([`quote`]): an iPXE-safe word ([`ipxe::check_word`]: printable
//! ASCII, no blank, no backslash) without a `'`. Free text (banners) is reduced to a
//! harmless character set. An operator's whole custom configuration is served as written.
//!
//! ARM64 UEFI PXE gets Debian's signed network GRUB for arm64 ([`GRUB_ARM64_EFI`],
//! `docs/arm64.md`) directly. It has the same prefix and embedded configuration (its
//! `$prefix/arm64-efi/grub.cfg` test fails over TFTP as the x64 one's does), so it reads
//! [`ENTRY_FILE`] too: the entry sends a GRUB built for arm64 (`$grub_cpu`, set by GRUB
//! itself) to `boot/arm64/${net_default_mac}.grub`, whose installer names `artifacts/arm64/…`,
//! and any other to `boot/${net_default_mac}.grub`. The GRUB that runs is the one DHCP chose
//! from the firmware's architecture, so the files it is sent to are of that architecture.
//!
//! ARM64 UEFI HTTP boot gets [`GRUB_ARM64_HTTP_EFI`] instead, a GRUB with `http` built by
//! `scripts/setup`. Loaded from `{public_url}/ipxe/…`, its root is `(http,<server>:<port>)`
//! and its prefix `/grub` there, so it reads the same [`ENTRY_FILE`] and machine file over
//! HTTP. Every name here is absolute on GRUB's root (`/artifacts/…`, `/boot/…`), never
//! naming a protocol, so each GRUB fetches them by the protocol it was booted by: TFTP after
//! UEFI PXE, HTTP after UEFI HTTP boot.

use osie_api::MacAddr;

use crate::arch::Arch;
use crate::ipxe;

/// Why a value cannot go into a configuration.
pub type Unsafe = String;

/// Debian's signed shim (`shim-signed`), the chain's first program (the DHCP boot file); it
/// loads [`GRUB_EFI`] from the same directory (TFTP) or URL path (HTTP).
pub const SHIM_EFI: &str = "shimx64.efi";
/// Debian's signed network GRUB (`grub-efi-amd64-signed`'s `grubnetx64.efi.signed`), under
/// the name shim loads.
pub const GRUB_EFI: &str = "grubx64.efi";
/// Debian's signed network GRUB for arm64 (`grub-efi-arm64-signed`'s
/// `grubnetaa64.efi.signed`), the DHCP boot file of ARM64 UEFI PXE, under the name
/// Debian's arm64 shim would load.
pub const GRUB_ARM64_EFI: &str = "grubaa64.efi";
/// The arm64 GRUB of UEFI HTTP boot (DHCP arch 19): built by `scripts/setup` with
/// `grub-mkimage` from `grub-efi-arm64-bin`'s modules, with `http` and an embedded
/// configuration that reads [`ENTRY_FILE`] over HTTP from the server it was loaded from.
/// Unsigned (`docs/arm64.md`).
pub const GRUB_ARM64_HTTP_EFI: &str = "grubaa64-http.efi";
/// The name the TFTP root is asked for, as the jail should read it. Shim booted over IPv6
/// asks for `/grubx64.efi`: it puts GRUB's name after the last `/` of the boot file URL's path
/// (`tftp://[addr]/shimx64.efi`), the leading `/` kept (`extract_tftp_info` in shim's
/// `netboot.c`), where over IPv4 it asks for `grubx64.efi` beside the DHCP boot file name.
/// That one absolute name is the root's `grubx64.efi`; every other absolute name is left to
/// the jail, which refuses it unless it names the root itself (`bootsvc/docs/tftp.md`).
pub fn tftp_root_name(name: &str) -> &str {
    match name.strip_prefix('/') {
        Some(GRUB_EFI) => GRUB_EFI,
        _ => name,
    }
}

/// Where Debian's signed GRUB looks for its configuration (under its prefix `/grub`).
pub const ENTRY_FILE: &str = "grub/grub.cfg";
/// Where the installer's kernel and initramfs are served over TFTP (`artifacts/<name>`), as
/// over HTTP.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// The name of `mac`'s own configuration for a GRUB of `arch`, relative to the server's
/// root: `boot/<mac>.grub`, `boot/arm64/<mac>.grub`.
pub fn machine_file(mac: MacAddr, arch: Arch) -> String {
    format!("boot/{}{mac}.grub", arch.subdir())
}

/// What a requested name is, if bootsvc makes it rather than reads it from a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// [`ENTRY_FILE`].
    Entry,
    /// `boot/<mac>.grub`, `boot/arm64/<mac>.grub`.
    Machine(MacAddr, Arch),
}

/// Read a TFTP file name or HTTP path (a leading `/` allowed). `None`: not a GRUB name.
pub fn parse_name(name: &str) -> Option<Name> {
    let name = name.strip_prefix('/').unwrap_or(name);
    if name == ENTRY_FILE {
        return Some(Name::Entry);
    }
    let (arch, rest) = Arch::split_path(name.strip_prefix("boot/")?);
    let mac = rest.strip_suffix(".grub")?;
    mac.parse().ok().map(|m| Name::Machine(m, arch))
}

/// `w` as one single-quoted GRUB word, if it can be one.
pub fn quote(w: &str) -> Result<String, Unsafe> {
    ipxe::check_word(w)?;
    if w.contains('\'') {
        return Err("contains \"'\" (GRUB would end the quoted word there)".into());
    }
    Ok(format!("'{w}'"))
}

/// Kernel arguments (written as one string) that can go into a GRUB configuration: safe
/// words ([`ipxe::split_args`]) that [`quote`] accepts.
pub fn check_args(args: &str) -> Result<(), Unsafe> {
    for a in ipxe::split_args(args)? {
        quote(&a).map_err(|e| format!("argument {a:?} {e}"))?;
    }
    Ok(())
}

/// The configuration every machine's GRUB reads first: it loads the machine's own for the
/// GRUB's architecture (`grub_cpu`: `arm64` or `x86_64`, GRUB's build target) by the MAC
/// GRUB booted from (`net_default_mac`, lower case with colons, as bootsvc names it), from
/// the same server. When that cannot be read, GRUB exits to the firmware, which goes on to
/// its next boot option.
pub fn entry() -> String {
    let mut s = String::from("# osie (bootsvc): load this machine's own configuration\n");
    s += "if [ \"${grub_cpu}\" = \"arm64\" ]; then\n";
    s += &format!("  configfile /{}\n", machine_file_of_this_grub(Arch::Aarch64));
    s += "else\n";
    s += &format!("  configfile /{}\n", machine_file_of_this_grub(Arch::X86_64));
    s += "fi\n";
    s += &echo("no configuration for this machine, leaving GRUB");
    s += "exit\n";
    s
}

/// [`machine_file`] with the MAC left to GRUB (`${net_default_mac}`).
fn machine_file_of_this_grub(arch: Arch) -> String {
    format!("boot/{}${{net_default_mac}}.grub", arch.subdir())
}

/// The installer boot from the server GRUB was loaded from (over TFTP or HTTP, as GRUB was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installer<'a> {
    /// `artifacts.kernel`, `artifacts.initrd`, under `artifacts/` (`arm64/…` for arm64).
    pub kernel: &'a str,
    pub initrd: &'a str,
    /// Kernel command-line words.
    pub args: &'a [String],
    /// Shown on the console, e.g. `node1 (52:54:00:00:00:01)`.
    pub banner: &'a str,
    /// The machine's own file: read again when the installer cannot be loaded.
    pub mac: MacAddr,
    pub arch: Arch,
}

/// The installer's configuration. When the kernel or initramfs cannot be loaded (or the
/// kernel's signature is refused under Secure Boot), it says so and reads its configuration
/// again from bootsvc after 10 s (which may by then say something else).
pub fn installer(i: &Installer) -> Result<String, Unsafe> {
    let kernel = quote(&format!("/{ARTIFACTS_DIR}/{}", i.kernel)).map_err(|e| format!("kernel {:?} {e}", i.kernel))?;
    let initrd = quote(&format!("/{ARTIFACTS_DIR}/{}", i.initrd)).map_err(|e| format!("initrd {:?} {e}", i.initrd))?;
    let mut linux = format!("linux {kernel}");
    for a in i.args {
        linux.push(' ');
        linux += &quote(a).map_err(|e| format!("kernel argument {a:?} {e}"))?;
    }
    let mut s = String::from("# osie (bootsvc): the installer\n");
    s += &echo(&format!("installing {}", i.banner));
    s += &format!("if {linux}; then\n");
    s += &format!("  if initrd {initrd}; then\n");
    s += "    boot\n";
    s += "  fi\n";
    s += "fi\n";
    s += &echo("could not load the installer, trying again in 10 seconds");
    s += "sleep 10\n";
    s += &format!("configfile /{}\n", machine_file(i.mac, i.arch));
    Ok(s)
}

/// The operator's own configuration, as written (ending in a newline).
pub fn custom(config: &str) -> String {
    let mut s = config.to_string();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Leave GRUB: back through shim to the firmware, which boots its next option (the disk).
pub fn local_boot(reason: &str) -> String {
    let mut s = echo(&format!("{reason}, booting from local disk"));
    s += "exit\n";
    s
}

/// An `echo 'osie: …'` line whose text cannot be anything but text.
fn echo(text: &str) -> String {
    format!("echo 'osie: {}'\n", ipxe::banner_text(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr::new([0x52, 0x54, 0, 0, 0, 1]);

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The words of a GRUB command line as GRUB reads them (single quotes only: all we emit).
    fn words(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '\'' => quoted = !quoted,
                ' ' if !quoted => {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                }
                _ => cur.push(c),
            }
        }
        assert!(!quoted, "unbalanced quote in {line:?}");
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("grub/grub.cfg"), Some(Name::Entry));
        assert_eq!(parse_name("/grub/grub.cfg"), Some(Name::Entry));
        assert_eq!(parse_name("boot/52:54:00:00:00:01.grub"), Some(Name::Machine(MAC, Arch::X86_64)));
        assert_eq!(parse_name("/boot/52:54:00:00:00:01.grub"), Some(Name::Machine(MAC, Arch::X86_64)));
        assert_eq!(parse_name("/boot/arm64/52:54:00:00:00:01.grub"), Some(Name::Machine(MAC, Arch::Aarch64)));
        assert_eq!(machine_file(MAC, Arch::X86_64), "boot/52:54:00:00:00:01.grub");
        assert_eq!(machine_file(MAC, Arch::Aarch64), "boot/arm64/52:54:00:00:00:01.grub");
        for other in [
            "grub/x86_64-efi/grub.cfg",
            "grub/arm64-efi/grub.cfg",
            "boot/52:54:00:00:00:01.ipxe",
            "boot/nonsense.grub",
            "grubx64.efi",
            "boot/arm64/arm64/52:54:00:00:00:01.grub",
            "boot/x86_64/52:54:00:00:00:01.grub",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn shim_over_ipv6_asks_for_grub_with_a_leading_slash() {
        assert_eq!(tftp_root_name("/grubx64.efi"), "grubx64.efi");
        assert_eq!(tftp_root_name("grubx64.efi"), "grubx64.efi");
        // Nothing else is re-rooted: the jail judges it as asked.
        for other in ["/shimx64.efi", "/etc/passwd", "//grubx64.efi", "/grubx64.efi/x", "/x/grubx64.efi", "/"] {
            assert_eq!(tftp_root_name(other), other);
        }
    }

    #[test]
    fn installer_config_shape() {
        let a = args(&["console=ttyS0,115200n8", "osie.url=http://192.0.2.1:8080", "osie.mac=52:54:00:00:00:01"]);
        let s = installer(&Installer {
            kernel: "vmlinuz",
            initrd: "initramfs.img",
            args: &a,
            banner: "node1 (52:54:00:00:00:01)",
            mac: MAC,
            arch: Arch::X86_64,
        })
        .unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[1], "echo 'osie: installing node1 (52:54:00:00:00:01)'");
        let linux = lines[2].strip_prefix("if ").and_then(|l| l.strip_suffix("; then")).unwrap();
        assert_eq!(
            words(linux),
            args(&[
                "linux",
                "/artifacts/vmlinuz",
                "console=ttyS0,115200n8",
                "osie.url=http://192.0.2.1:8080",
                "osie.mac=52:54:00:00:00:01"
            ])
        );
        assert_eq!(lines[3], "  if initrd '/artifacts/initramfs.img'; then");
        assert_eq!(lines[4], "    boot");
        assert_eq!(lines.last(), Some(&"configfile /boot/52:54:00:00:00:01.grub"));
    }

    #[test]
    fn hostile_values_are_refused() {
        for bad in ["a'b", "'", "x\ny", "a b", "${x}", "a\\", "#x", ""] {
            assert!(quote(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(quote("$HOME").unwrap(), "'$HOME'", "inside single quotes GRUB expands nothing");
        let a = args(&["quiet", "a';reboot;'"]);
        let i = Installer { kernel: "vmlinuz", initrd: "i", args: &a, banner: "x", mac: MAC, arch: Arch::X86_64 };
        assert!(installer(&i).is_err());
        let i = Installer { kernel: "v'; reboot", initrd: "i", args: &[], banner: "x", mac: MAC, arch: Arch::X86_64 };
        assert!(installer(&i).is_err());
    }

    #[test]
    fn hostile_banners_stay_one_echo() {
        for evil in ["n1'\nreboot", "n1 ; reboot", "${net_default_ip}", "n1 #", "n1\\", "n1' || '"] {
            let s = local_boot(evil);
            let lines: Vec<&str> = s.lines().collect();
            assert_eq!(lines.len(), 2, "{s}");
            assert!(lines[0].starts_with("echo 'osie: ") && lines[0].ends_with('\''), "{s}");
            assert_eq!(lines[0].matches('\'').count(), 2, "{s}");
            assert!(!s.contains('$') && !s.contains(';'), "{s}");
            assert_eq!(lines[1], "exit");
        }
    }

    #[test]
    fn entry_loads_the_machine_file_of_the_grub_architecture_then_leaves() {
        let s = entry();
        // An arm64 GRUB the arm64 file, any other the x86_64 one; never both.
        assert!(
            s.contains(
                "\nif [ \"${grub_cpu}\" = \"arm64\" ]; then\n  configfile /boot/arm64/${net_default_mac}.grub\n\
                 else\n  configfile /boot/${net_default_mac}.grub\nfi\n"
            ),
            "{s}"
        );
        assert!(s.ends_with("\nexit\n"), "{s}");
    }

    #[test]
    fn arm64_installer_names_arm64_files_and_reads_its_arm64_file_again() {
        let a = args(&["osie.mac=52:54:00:00:00:01"]);
        let s = installer(&Installer {
            kernel: "arm64/vmlinuz",
            initrd: "arm64/initramfs.img",
            args: &a,
            banner: "n1",
            mac: MAC,
            arch: Arch::Aarch64,
        })
        .unwrap();
        assert!(s.contains("if linux '/artifacts/arm64/vmlinuz' 'osie.mac=52:54:00:00:00:01'; then\n"), "{s}");
        assert!(s.contains("  if initrd '/artifacts/arm64/initramfs.img'; then\n"), "{s}");
        assert!(s.ends_with("configfile /boot/arm64/52:54:00:00:00:01.grub\n"), "{s}");
    }

    #[test]
    fn custom_configs_are_served_as_written() {
        assert_eq!(custom("echo hi\nexit"), "echo hi\nexit\n");
        assert_eq!(custom("exit\n"), "exit\n");
    }
}

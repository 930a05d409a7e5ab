//! `kexec_file_load` into the installed system: find the root filesystem holding
//! `/boot/vmlinuz*` — the one carrying this install's cloud-init seed when several disks hold
//! a system — take its command line from `grub.cfg` (or build `root=UUID=…`), load kernel
//! and initrd. The caller then reboots with `RB_KEXEC`.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// `KEXEC_FILE_NO_INITRAMFS`
const NO_INITRAMFS: libc::c_ulong = 4;
/// The syscall's number: the libc crate names it for x86_64 musl but not for aarch64 musl
/// (294 in the kernel's generic table, include/uapi/asm-generic/unistd.h).
#[cfg(target_arch = "aarch64")]
const SYS_KEXEC_FILE_LOAD: libc::c_long = 294;
#[cfg(not(target_arch = "aarch64"))]
const SYS_KEXEC_FILE_LOAD: libc::c_long = libc::SYS_kexec_file_load;
const MOUNT_AT: &str = "/run/osie/kexec-root";
/// Where the installer seeds cloud-init (NoCloud); its meta-data names the instance.
const SEED_META: &str = "var/lib/cloud/seed/nocloud/meta-data";

#[derive(Debug)]
pub struct Loaded {
    pub kernel: PathBuf,
    pub cmdline: String,
}

/// What one partition holds, as far as kexec cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub dev: PathBuf,
    /// Its seed's meta-data names this install's instance id.
    pub ours: bool,
}

/// Find the installed kernel and load it for kexec. `instance_id` (from the metadata)
/// tells this install's root apart from other systems on other disks.
pub fn load_installed(instance_id: &str) -> Result<Loaded> {
    let mut found = Vec::new();
    let mut tried = Vec::new();
    for part in partitions(Path::new("/sys/class/block")) {
        let dev = PathBuf::from("/dev").join(&part);
        match with_mounted(&dev, |root| Ok(has_kernel(root).then(|| seed_names(root, instance_id)))) {
            Ok(Some(ours)) => found.push(Candidate { dev, ours }),
            Ok(None) => tried.push(format!("{}: no /boot/vmlinuz*", dev.display())),
            Err(e) => tried.push(format!("{}: {e:#}", dev.display())),
        }
    }
    let Some(pick) = choose(&found)? else {
        bail!(
            "no partition holds an installed kernel (tried: {})",
            if tried.is_empty() { "none".into() } else { tried.join("; ") }
        )
    };
    let dev = pick.dev.clone();
    with_mounted(&dev, |root| load_from(root, &dev))
}

/// The partition to boot: the one seeded by this install; failing that the only one with a
/// kernel. Several unseeded systems are ambiguous: booting the wrong one is worse than a
/// firmware reboot.
pub fn choose(found: &[Candidate]) -> Result<Option<&Candidate>> {
    if let Some(c) = found.iter().find(|c| c.ours) {
        return Ok(Some(c));
    }
    match found {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => bail!(
            "several partitions hold a kernel and none carries this install's cloud-init seed: {}",
            many.iter().map(|c| c.dev.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn has_kernel(root: &Path) -> bool {
    pick_kernel(&boot_listing(root)).is_some()
}

/// Whether the NoCloud seed under `root` names `instance_id` (quoted or not).
pub fn seed_names(root: &Path, instance_id: &str) -> bool {
    let meta = std::fs::read_to_string(root.join(SEED_META)).unwrap_or_default();
    meta.lines().any(|l| {
        l.trim().strip_prefix("instance-id:").is_some_and(|v| v.trim().trim_matches(['"', '\'']) == instance_id)
    })
}

fn boot_listing(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("boot"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Partition names (`vda1`, `nvme0n1p2`) from sysfs, sorted.
pub fn partitions(class_block: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(class_block)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("partition").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Mount `dev` read-only (ext4, xfs or btrfs), run `f` on it, unmount.
fn with_mounted<T>(dev: &Path, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    std::fs::create_dir_all(MOUNT_AT).context("creating the kexec mount point")?;
    let mounted = ["ext4", "xfs", "btrfs"]
        .iter()
        .any(|fstype| mount(Some(dev), MOUNT_AT, Some(*fstype), MsFlags::MS_RDONLY, None::<&str>).is_ok());
    if !mounted {
        bail!("not an ext4, xfs or btrfs filesystem");
    }
    let r = f(Path::new(MOUNT_AT));
    let _ = umount2(MOUNT_AT, MntFlags::MNT_DETACH);
    r
}

fn load_from(root: &Path, dev: &Path) -> Result<Loaded> {
    let boot = root.join("boot");
    let Some((kernel, initrd)) = pick_kernel(&boot_listing(root)) else {
        bail!("{} has no /boot/vmlinuz* any more", dev.display())
    };
    let grub = std::fs::read_to_string(boot.join("grub/grub.cfg")).unwrap_or_default();
    let current = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let root_arg = match grub_cmdline(&grub) {
        Some(args) => args,
        None => {
            let mut sb = vec![0u8; 2048];
            let uuid = std::fs::File::open(dev)
                .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut sb, 0))
                .ok()
                .and_then(|()| ext4_uuid(&sb));
            match uuid {
                Some(u) => format!("root=UUID={u} ro"),
                None => format!("root={} ro", dev.display()),
            }
        }
    };
    let cmdline = with_console(&root_arg, &current);
    let kpath = boot.join(&kernel);
    let kf = std::fs::File::open(&kpath).with_context(|| format!("opening {}", kpath.display()))?;
    let initrd_f = match &initrd {
        Some(i) => Some(std::fs::File::open(boot.join(i)).with_context(|| format!("opening initrd {i}"))?),
        None => None,
    };
    let c = CString::new(cmdline.clone()).context("command line holds a NUL byte")?;
    let flags = if initrd_f.is_some() { 0 } else { NO_INITRAMFS };
    // SAFETY: kexec_file_load reads the two fds and `len` bytes of the NUL-terminated
    // command line, all valid for the duration of the call.
    let r = unsafe {
        libc::syscall(
            SYS_KEXEC_FILE_LOAD,
            kf.as_raw_fd(),
            initrd_f.as_ref().map_or(-1, |f| f.as_raw_fd()),
            c.as_bytes_with_nul().len() as libc::c_ulong,
            c.as_ptr(),
            flags,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("kexec_file_load {}", kpath.display()));
    }
    Ok(Loaded { kernel: PathBuf::from("/boot").join(kernel), cmdline })
}

/// The kernel and initrd to boot from a `/boot` listing: Debian's `vmlinuz`/`initrd.img`
/// symlinks when present, else the highest-versioned `vmlinuz-<ver>` and its
/// `initrd.img-<ver>`.
pub fn pick_kernel(names: &[String]) -> Option<(String, Option<String>)> {
    let has = |n: &str| names.iter().any(|x| x == n);
    if has("vmlinuz") {
        return Some(("vmlinuz".into(), has("initrd.img").then(|| "initrd.img".into())));
    }
    let mut versions: Vec<&str> = names.iter().filter_map(|n| n.strip_prefix("vmlinuz-")).collect();
    versions.sort_by_key(|v| version_key(v));
    let v = versions.last()?;
    let initrd = format!("initrd.img-{v}");
    Some((format!("vmlinuz-{v}"), has(&initrd).then_some(initrd)))
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok()).collect()
}

/// Arguments of the first `linux` line in a grub.cfg (the default entry in Debian's
/// generated file), without the kernel path and without words naming grub variables.
pub fn grub_cmdline(cfg: &str) -> Option<String> {
    let line = cfg.lines().map(str::trim).find(|l| l.starts_with("linux ") || l.starts_with("linux\t"))?;
    let mut words = line.split_whitespace().skip(2).filter(|w| !w.contains('$'));
    let args: Vec<&str> = words.by_ref().collect();
    args.iter().any(|a| a.starts_with("root=")).then(|| args.join(" "))
}

/// Carry the installer's `console=` arguments over when the installed command line has
/// none, so the serial console keeps showing the boot.
pub fn with_console(installed: &str, current: &str) -> String {
    if installed.split_whitespace().any(|w| w.starts_with("console=")) {
        return installed.to_string();
    }
    let mut s = installed.to_string();
    for c in current.split_whitespace().filter(|w| w.starts_with("console=")) {
        s.push(' ');
        s.push_str(c);
    }
    s
}

/// The filesystem UUID of an ext2/3/4 filesystem from its first 2 KiB.
pub fn ext4_uuid(head: &[u8]) -> Option<String> {
    let sb = head.get(1024..2048)?;
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return None;
    }
    let u = &sb[0x68..0x78];
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn chooses_this_installs_root_or_the_only_one() {
        let c = |d: &str, ours| Candidate { dev: PathBuf::from(d), ours };
        assert_eq!(choose(&[]).unwrap(), None);
        assert_eq!(choose(&[c("/dev/vda1", false)]).unwrap(), Some(&c("/dev/vda1", false)));
        let two = [c("/dev/sda1", false), c("/dev/vda1", true)];
        assert_eq!(choose(&two).unwrap(), Some(&c("/dev/vda1", true)));
        let err = choose(&[c("/dev/sda1", false), c("/dev/vda1", false)]).unwrap_err().to_string();
        assert!(err.contains("/dev/sda1, /dev/vda1"), "{err}");
    }

    #[test]
    fn seed_meta_data_names_the_instance() {
        let d = tempfile::tempdir().unwrap();
        assert!(!seed_names(d.path(), "i-1"));
        let meta = d.path().join(SEED_META);
        std::fs::create_dir_all(meta.parent().unwrap()).unwrap();
        std::fs::write(&meta, "instance-id: \"i-1\"\nlocal-hostname: \"n1\"\n").unwrap();
        assert!(seed_names(d.path(), "i-1"));
        assert!(!seed_names(d.path(), "i-10"));
        std::fs::write(&meta, "local-hostname: n1\ninstance-id: i-10\n").unwrap();
        assert!(seed_names(d.path(), "i-10"));
    }

    #[test]
    fn picks_symlinks_or_the_newest_kernel() {
        assert_eq!(
            pick_kernel(&s(&["vmlinuz", "initrd.img", "vmlinuz-6.1.0-9-amd64"])),
            Some(("vmlinuz".into(), Some("initrd.img".into())))
        );
        assert_eq!(
            pick_kernel(&s(&["vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64", "initrd.img-6.1.0-10-amd64", "grub"])),
            Some(("vmlinuz-6.1.0-10-amd64".into(), Some("initrd.img-6.1.0-10-amd64".into())))
        );
        assert_eq!(pick_kernel(&s(&["vmlinuz-6.1.0-9-amd64"])), Some(("vmlinuz-6.1.0-9-amd64".into(), None)));
        assert_eq!(pick_kernel(&s(&["grub", "config-6.1"])), None);
    }

    #[test]
    fn grub_cfg_gives_the_default_entrys_arguments() {
        let cfg = "set default=0\nmenuentry 'Debian' {\n\tinsmod ext2\n\tlinux\t/boot/vmlinuz-6.1.0-10-amd64 root=UUID=4b8e ro console=ttyS0 $vt_handoff quiet\n\tinitrd /boot/initrd.img\n}\nmenuentry 'old' {\n\tlinux /boot/vmlinuz-old root=/dev/sda1\n}\n";
        assert_eq!(grub_cmdline(cfg).as_deref(), Some("root=UUID=4b8e ro console=ttyS0 quiet"));
        assert_eq!(grub_cmdline("menuentry x {\n linux /vmlinuz quiet\n}"), None, "no root= is not usable");
        assert_eq!(grub_cmdline(""), None);
    }

    #[test]
    fn console_is_carried_over_only_when_missing() {
        assert_eq!(
            with_console("root=UUID=x ro", "osie.url=http://x console=tty0 console=ttyS0,115200"),
            "root=UUID=x ro console=tty0 console=ttyS0,115200"
        );
        assert_eq!(with_console("root=UUID=x console=ttyS1", "console=ttyS0"), "root=UUID=x console=ttyS1");
    }

    #[test]
    fn reads_the_uuid_mkfs_ext4_wrote() {
        if !osie_testkit::require_tools("reads_the_uuid_mkfs_ext4_wrote", &["mkfs.ext4"]) {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("fs.img");
        std::fs::File::create(&img).unwrap().set_len(8 << 20).unwrap();
        let uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let st = std::process::Command::new("mkfs.ext4").args(["-q", "-F", "-U", uuid]).arg(&img).status().unwrap();
        assert!(st.success());
        let head = std::fs::read(&img).unwrap();
        assert_eq!(ext4_uuid(&head[..2048]).as_deref(), Some(uuid));
        assert_eq!(ext4_uuid(&[0u8; 2048]), None);
    }
}

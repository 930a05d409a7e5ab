//! The API filesystems the kernel does not mount for an initramfs.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

/// One mount PID 1 makes: `(source, target, fstype, flags, data)`.
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
}

/// In order: `/dev/pts` needs `/dev`.
pub fn early() -> Vec<Mount> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    vec![
        Mount { source: "proc", target: "/proc", fstype: "proc", flags: nosuid_nodev_noexec, data: None },
        Mount { source: "sysfs", target: "/sys", fstype: "sysfs", flags: nosuid_nodev_noexec, data: None },
        Mount {
            source: "devtmpfs",
            target: "/dev",
            fstype: "devtmpfs",
            flags: MsFlags::MS_NOSUID,
            data: Some("mode=0755"),
        },
        Mount {
            source: "devpts",
            target: "/dev/pts",
            fstype: "devpts",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: Some("gid=5,mode=0620,ptmxmode=0666"),
        },
        // No `nodev` on /run and /tmp: the installer makes partition nodes there (mknod) when
        // it cannot rely on udev, and opening a device through a nodev mount is EACCES.
        Mount { source: "tmpfs", target: "/run", fstype: "tmpfs", flags: MsFlags::MS_NOSUID, data: Some("mode=0755") },
        Mount { source: "tmpfs", target: "/tmp", fstype: "tmpfs", flags: MsFlags::MS_NOSUID, data: Some("mode=1777") },
    ]
}

/// Mount everything in [`early`], creating the mount points. A filesystem that is already
/// mounted there (EBUSY) is fine: the kernel may have mounted devtmpfs itself
/// (`CONFIG_DEVTMPFS_MOUNT`).
pub fn mount_early() -> Result<()> {
    for m in early() {
        let target = Path::new(m.target);
        std::fs::create_dir_all(target).with_context(|| format!("creating mount point {}", m.target))?;
        match mount(Some(m.source), target, Some(m.fstype), m.flags, m.data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => return Err(e).with_context(|| format!("mounting {} on {}", m.fstype, m.target)),
        }
    }
    // Tools and libraries expect these to exist.
    for (link, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, link);
    }
    Ok(())
}

/// Where the kernel finds `modprobe` for on-demand loads (`request_module`): the installer
/// itself, through the `/sbin/modprobe -> /init` symlink the initramfs carries.
pub const MODPROBE: &str = "/sbin/modprobe";

/// Point the kernel at [`MODPROBE`] (the default path, set explicitly in case the kernel was
/// built with another one).
pub fn set_modprobe() -> Result<()> {
    if !Path::new(MODPROBE).exists() {
        tracing::warn!("{MODPROBE} is missing: the kernel cannot load filesystem modules on demand");
        return Ok(());
    }
    std::fs::write("/proc/sys/kernel/modprobe", MODPROBE).context("setting /proc/sys/kernel/modprobe")
}

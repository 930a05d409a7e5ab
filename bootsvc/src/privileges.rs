//! Giving up root once the privileged ports are bound.
//!
//! `serve` binds HTTP, DHCP 67/4011 and TFTP 69 as root, reads the admin token (which may
//! stay readable by root only), then calls [`drop_privileges`] while the process still has a
//! single thread: capabilities are per thread on Linux, so a drop after the async runtime
//! started its workers would leave them privileged. From then on bootsvc needs no privilege
//! at all: its sockets are bound, DHCP answers by broadcast from an ordinary UDP socket with
//! `SO_BROADCAST` (no raw socket, so no `CAP_NET_RAW`), and files are read and the state
//! written under the new identity.
//!
//! - `[security] user` (and optionally `group`, else the user's primary group): the
//!   supplementary groups become that one group, then real, effective and saved gid and uid
//!   are switched; the kernel clears every capability on leaving uid 0.
//! - No user: bootsvc stays uid 0 but holds no capability: the bounding set is emptied (not
//!   even an `execve` could bring one back), the ambient set cleared, and the effective,
//!   permitted and inheritable sets zeroed. uid 0 without `CAP_DAC_OVERRIDE` still reads
//!   root's own files, but not other users' files their permissions do not open to it.
//!
//! Either way `no_new_privs` is set, and a switch back to root is tried and must fail.
//! [`check_state_dir`] then proves the state directory is writable under the new identity,
//! with an error that says what to change, rather than failing at the first event.

use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::unistd::{self, Gid, Uid};

use crate::config::Security;

/// Who bootsvc runs as after [`drop_privileges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The configured user's name, or `None` when bootsvc stays uid 0 without capabilities.
    pub user: Option<String>,
    pub uid: Uid,
    pub gid: Gid,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.user {
            Some(u) => write!(f, "user {u} (uid {}, gid {})", self.uid, self.gid),
            None => write!(f, "uid {} without capabilities", self.uid),
        }
    }
}

/// Create the state directory when it is missing, owned by the configured user, so that user
/// can write it after the drop (its parent, e.g. `/var/lib`, usually belongs to root).
pub fn prepare_state_dir(dir: &Path, sec: &Security) -> Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating state directory {}", dir.display()))?;
    if let Some((user, gid)) = sec.resolve()? {
        unistd::chown(dir, Some(user.uid), Some(gid))
            .with_context(|| format!("giving state directory {} to user {}", dir.display(), user.name))?;
    }
    Ok(())
}

/// Switch to the configured user, or drop every capability; see the module docs. Must be
/// called while the process has one thread.
pub fn drop_privileges(sec: &Security) -> Result<Identity> {
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1);
    if threads != 1 {
        bail!("dropping privileges with {threads} threads running: capabilities are per thread, the others would keep theirs");
    }
    let target = sec.resolve()?;
    let root = unistd::geteuid().is_root();
    match &target {
        Some((user, gid)) if root => {
            drop_bounding_set()?;
            unistd::setgroups(&[*gid]).context("setting the supplementary groups")?;
            unistd::setresgid(*gid, *gid, *gid).with_context(|| format!("switching to gid {gid}"))?;
            unistd::setresuid(user.uid, user.uid, user.uid)
                .with_context(|| format!("switching to user {} (uid {})", user.name, user.uid))?;
        }
        Some((user, _)) if unistd::geteuid() == user.uid => {}
        Some((user, _)) => bail!(
            "security.user = {:?}: bootsvc runs as uid {}, not as root, so it cannot switch to uid {}",
            user.name,
            unistd::geteuid(),
            user.uid
        ),
        None => {
            if root {
                drop_bounding_set()?;
            }
        }
    }
    clear_capabilities()?;
    nix::sys::prctl::set_no_new_privs().context("setting no_new_privs")?;
    if target.is_some() && root {
        if unistd::geteuid().is_root() {
            bail!("still uid 0 after switching users");
        }
        if unistd::setuid(Uid::from_raw(0)).is_ok() {
            bail!("could switch back to root after dropping privileges");
        }
    }
    Ok(Identity { user: target.map(|(u, _)| u.name), uid: unistd::geteuid(), gid: unistd::getegid() })
}

/// Fail clearly unless `who` can create files in `dir` and write every file already there
/// (the event store, the lease file).
pub fn check_state_dir(dir: &Path, who: &Identity) -> Result<()> {
    let fix = match &who.user {
        Some(u) => format!("give it to that user: chown -R {u} {}", dir.display()),
        None => format!("make it writable by uid 0 without CAP_DAC_OVERRIDE: chown -R root {}", dir.display()),
    };
    let probe = dir.join(format!(".bootsvc-write-test-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => bail!("state.dir {} is not writable by {who}: {e}; {fix}", dir.display()),
    }
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("state.dir {}: listing it as {who}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_file())
            && unistd::access(&path, unistd::AccessFlags::W_OK | unistd::AccessFlags::R_OK).is_err()
        {
            bail!("state.dir: {} is not writable by {who}; {fix}", path.display());
        }
    }
    Ok(())
}

/// `CAP_LAST_CAP` of the running kernel.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

/// Empty the bounding set (needs `CAP_SETPCAP`, which root has before the drop).
fn drop_bounding_set() -> Result<()> {
    for cap in 0..=last_cap() {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: a capability this kernel does not know.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e).with_context(|| format!("dropping capability {cap} from the bounding set"));
            }
        }
    }
    Ok(())
}

/// `struct __user_cap_header_struct` / `__user_cap_data_struct` (linux/capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Ambient set cleared, effective, permitted and inheritable sets zeroed (this thread: the
/// only one).
fn clear_capabilities() -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        // EINVAL: a kernel before 4.3, which has no ambient set.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e).context("clearing the ambient capabilities");
        }
    }
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [CapData::default(); 2];
    // SAFETY: capset with a valid header and the two data words version 3 expects.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("clearing the capability sets (capset)");
    }
    Ok(())
}

/// A hex field (`CapEff:`, `CapBnd:`…) of a `/proc/…/status` file.
pub fn status_hex(file: &str, key: &str) -> Result<u64> {
    let s = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let v = s.lines().find_map(|l| l.strip_prefix(key)).with_context(|| format!("{file} has no {key}"))?.trim();
    u64::from_str_radix(v, 16).with_context(|| format!("{file}: {key} {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_drop_with_threads_running() {
        // The test harness runs this on a thread of its own: more than one thread.
        let e = drop_privileges(&Security::default()).unwrap_err();
        assert!(e.to_string().contains("threads running"), "{e}");
        assert_ne!(status_hex("/proc/self/status", "CapBnd:").unwrap(), 0, "nothing was dropped");
    }
}

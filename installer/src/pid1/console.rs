//! stdio on `/dev/console`. The kernel opens it for `/init` when the initramfs has the node;
//! after devtmpfs is mounted over `/dev` we reopen it so fds 0-2 are the real console
//! whatever the kernel gave us.

use std::os::fd::AsRawFd;

use anyhow::{Context, Result};

pub fn attach() -> Result<()> {
    let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/console").context("opening /dev/console")?;
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; `f` stays open for the call.
        if unsafe { libc::dup2(f.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("dup2 /dev/console to fd {fd}"));
        }
    }
    // Become the session leader with the console as controlling terminal, so a rescue shell
    // gets job control and Ctrl-C.
    // SAFETY: setsid and ioctl(TIOCSCTTY) on fd 0 have no memory-safety preconditions.
    unsafe {
        libc::setsid();
        libc::ioctl(0, libc::TIOCSCTTY, 1);
    }
    Ok(())
}

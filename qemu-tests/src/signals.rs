//! Stopping cleanly. The first SIGINT (Ctrl-C) or SIGTERM (nextest's timeout) only sets a
//! flag, which every wait checks, so the run unwinds through its guards: QEMU killed,
//! bootsvc stopped, logs kept, namespace deleted. A second signal ends the process at once.
//!
//! Children started through [`guard_child`] are in a process group of their own, so the
//! terminal's Ctrl-C reaches only this process, which then stops them in order; and they
//! get SIGKILL when this process dies, so even a `kill -9` of the harness leaves no QEMU
//! running.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
    // SAFETY: signal() is async-signal-safe; SIG_DFL is a valid disposition. The next
    // signal gets the default action (terminate).
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
}

/// Route SIGINT and SIGTERM to the flag.
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic and calls signal(), both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// True once a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Start `cmd` in its own process group, and have the kernel kill it when this process dies.
pub fn guard_child(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: between fork and exec only prctl, which is async-signal-safe, is called.
    // PR_SET_PDEATHSIG survives the exec of `ip netns exec` and its exec of the program.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

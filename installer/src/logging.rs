//! Logs to the console (stderr), as text (`RUST_LOG` overrides the level), and [`say`] for
//! words that must reach the console whatever the logger does. Both are also handed to
//! [`crate::logship`], which sends them to bootsvc.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Tee::default)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Write straight to the console, bypassing any logger: for the last words before a reboot.
pub fn say(msg: &str) {
    use std::io::Write;
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{msg}");
    let _ = e.flush();
    crate::logship::tap().push(msg);
}

/// One event's output: to stderr as it is written, and its lines to the log shipper when
/// the event is done (the logger makes one writer per event). Both loggers use it: this
/// module's and PID 1's (`crate::init`).
#[derive(Default)]
pub struct Tee {
    text: Vec<u8>,
}

impl std::io::Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        crate::logship::tap().push(&String::from_utf8_lossy(&self.text));
    }
}

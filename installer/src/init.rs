//! PID-1 duties when the installer runs as `/init` in the initramfs.

/// Entry when running as PID 1. Never returns: it reboots, powers off or kexecs.
pub fn main() -> ! {
    eprintln!("installer: init not implemented yet");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

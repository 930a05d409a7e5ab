fn main() {
    // The kernel runs /sbin/modprobe (a symlink to /init in the initramfs) to load modules
    // on demand, e.g. fs-ext4 when the installed root is mounted.
    if let Some(code) = installer::modules::modprobe::dispatch() {
        std::process::exit(code);
    }
    // As /init in the initramfs the kernel starts us as PID 1 with no arguments.
    if std::process::id() == 1 {
        installer::init::main();
    }
    std::process::exit(installer::cli::main());
}

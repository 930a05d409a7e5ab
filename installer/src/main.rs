fn main() {
    // As /init in the initramfs the kernel starts us as PID 1 with no arguments.
    if std::process::id() == 1 {
        installer::init::main();
    }
    std::process::exit(installer::cli::main());
}

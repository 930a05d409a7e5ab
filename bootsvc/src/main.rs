fn main() -> std::process::ExitCode {
    bootsvc::cli::main()
}

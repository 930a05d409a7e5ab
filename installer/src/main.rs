fn main() {
    eprintln!("installer: not built yet");
    std::process::exit(2);
}

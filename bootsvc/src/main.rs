fn main() {
    eprintln!("bootsvc: not built yet");
    std::process::exit(2);
}

//! Replays every kept input (`corpus/<target>/*`) through its target without libFuzzer, so
//! the properties are checked on every test run, on stable Rust, in seconds:
//! `cargo test --manifest-path bootsvc/fuzz/Cargo.toml`.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut n = 0;
    for f in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = f.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| run(&data));
        assert!(r.is_ok(), "{target}: {} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus in {}", dir.display());
    eprintln!("{target}: {n} inputs pass");
}

#[test]
fn dhcp() {
    replay("dhcp", bootsvc_fuzz::targets::dhcp::run);
}

#[test]
fn dhcp6() {
    replay("dhcp6", bootsvc_fuzz::targets::dhcp6::run);
}

#[test]
fn identity() {
    replay("identity", bootsvc_fuzz::targets::identity::run);
}

#[test]
fn identity6() {
    replay("identity6", bootsvc_fuzz::targets::identity6::run);
}

#[test]
fn ra() {
    replay("ra", bootsvc_fuzz::targets::ra::run);
}

#[test]
fn tftp() {
    replay("tftp", bootsvc_fuzz::targets::tftp::run);
}

#[test]
fn api_json() {
    replay("api_json", bootsvc_fuzz::targets::api_json::run);
}

#[test]
fn inventory() {
    replay("inventory", bootsvc_fuzz::targets::inventory::run);
}

#[test]
fn ipxe() {
    replay("ipxe", bootsvc_fuzz::targets::ipxe::run);
}

#[test]
fn qcow2() {
    replay("qcow2", bootsvc_fuzz::targets::qcow2::run);
}

/// The qcow2 seeds made with qemu-img (plain, zlib, zstd, v2, extended L2) are accepted, so the
/// oracle is really run on them; the layer over a backing file is refused.
#[test]
fn qcow2_seeds_are_parsed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/qcow2");
    let (mut ok, mut refused) = (0, 0);
    for f in std::fs::read_dir(dir).unwrap() {
        match bootsvc_fuzz::targets::qcow2::plan(&std::fs::read(f.unwrap().path()).unwrap()) {
            Some(_) => ok += 1,
            None => refused += 1,
        }
    }
    assert!(ok >= 5 && refused >= 1, "{ok} accepted, {refused} refused");
}

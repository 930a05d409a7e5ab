//! bootsvc's modules import each other in one direction only: each can be read knowing the
//! modules below it (`osie_testkit::modgraph` says how edges are found). The workspace's
//! other library crates are held to the same rule here (the installer has its own test).

use std::path::{Path, PathBuf};

fn src(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join(krate).join("src")
}

#[test]
fn no_import_cycles_between_modules() {
    let src = src("bootsvc");
    osie_testkit::modgraph::assert_no_cycles(&src);
    // The check sees the real structure, so it could fail: the privilege drop reads the
    // `[security]` settings (which config validation looks up without it), and both
    // inventory readers build the record source.
    let edges = osie_testkit::modgraph::edges(&src).unwrap();
    let has =
        |level: &str, from: &str, to: &str| edges.iter().any(|e| e.level == level && e.from == from && e.to == to);
    assert!(
        has("crate", "privileges", "config")
            && has("crate", "serve", "privileges")
            && has("inventory", "load", "source")
            && has("inventory", "tinkerbell", "source")
            && has("dhcp", "server", "reply"),
        "{edges:#?}"
    );
}

#[test]
fn the_other_library_crates_have_no_import_cycles() {
    for krate in ["api", "initramfs", "qemu-tests", "testkit", "benches", "soak"] {
        osie_testkit::modgraph::assert_no_cycles(&src(krate));
    }
}

//! Shared by the harness's tests.

use std::path::PathBuf;
use std::process::Command;

/// bootsvc's binary from this workspace, built if needed (debug: no figures are kept).
pub fn bootsvc() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo).args(["build", "-q", "-p", "bootsvc", "--bin", "bootsvc"]).status().unwrap();
    assert!(st.success(), "building bootsvc");
    // target/debug/deps/<test>-… → target/debug/bootsvc
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("bootsvc");
    assert!(p.is_file(), "{} missing", p.display());
    p
}

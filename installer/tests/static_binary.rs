//! The binary that goes into the initramfs is static: no loader, no libc on the target.

use std::process::Command;

#[test]
fn release_binary_is_statically_linked() {
    if !osie_testkit::require_tools("release_binary_is_statically_linked", &["file"]) {
        return;
    }
    let root = osie_testkit::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // A no-op when scripts/test or the initramfs builder already built it — provided the
    // environment is theirs: the test runner's CARGO_MANIFEST_DIR & co. would make build
    // scripts (ring's) rerun and rebuild half the tree.
    let mut cmd = Command::new(cargo);
    for (k, _) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))) {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
            cmd.env_remove(&k);
        }
    }
    let st = cmd
        .current_dir(&root)
        .args(["build", "--profile", "release-installer", "--target", "x86_64-unknown-linux-musl", "-p", "installer"])
        .status()
        .expect("running cargo");
    assert!(st.success(), "building the release installer failed");
    let bin = root.join("target/x86_64-unknown-linux-musl/release-installer/installer");
    let out = Command::new("file").arg(&bin).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("statically linked"), "{text}");
    let size = std::fs::metadata(&bin).unwrap().len();
    eprintln!("{}: {size} bytes", bin.display());
    assert!(size < 16 << 20, "the installer grew to {size} bytes");
}

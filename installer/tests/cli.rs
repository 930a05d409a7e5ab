//! The command mode's surface: `--help` says what each command does, `disks` explains
//! refusals.

mod support;

use support::*;

#[test]
fn help_names_every_command_and_option() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_installer")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for w in ["install", "write-image", "disks"] {
        assert!(text.contains(w), "{w} missing from --help:\n{text}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_installer")).args(["install", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for w in ["--metadata-url", "--mac", "--disk", "--no-events", "--candidate"] {
        assert!(text.contains(w), "{w} missing from install --help:\n{text}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_installer"))
        .args(["install", "--mac", "nope", "--metadata-url", "http://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn disks_lists_loop_devices_with_their_refusals() {
    if !disk_prereqs("disks_lists_loop_devices_with_their_refusals") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dev = loopdev(dir.path(), 8 * MIB, 512);
    let name = dev.path.display().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_installer"))
        .args(["disks", "--min-size", "16777216"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("{name} not listed:\n{text}"));
    assert!(line.contains("8388608") && line.contains("too small") && line.contains("loop device"), "{line}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_installer")).args(["disks", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().any(|d| d["disk"]["path"] == name.as_str() && d["disk"]["size"] == 8 * MIB));
}

//! The soak in short, for CI: five installs at once through the faulty proxy, with bootsvc
//! killed and restarted during them. Builds bootsvc and the installer first (debug).

use std::path::PathBuf;
use std::time::Duration;

#[test]
fn five_installs_under_faults() {
    let t = "five_installs_under_faults";
    if !osie_testkit::require_root(t)
        || !osie_testkit::require_tools(
            t,
            &["sgdisk", "mkfs.ext4", "zstd", "e2fsck", "debugfs", "tc", "curl", "losetup"],
        )
    {
        return;
    }
    let root = osie_testkit::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-p", "bootsvc", "-p", "installer", "--bins"])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success(), "building bootsvc and the installer");
    let work = tempfile::Builder::new().prefix("osie-soak-").tempdir().unwrap();
    let opts = osie_soak::run::Options {
        installs: 5,
        concurrency: 5,
        seed: 42,
        faults: true,
        kill_every: Some(Duration::from_secs(3)),
        bootsvc: target.join("debug/bootsvc"),
        installer: target.join("debug/installer"),
        work: work.path().to_path_buf(),
        read_timeout: 2.0,
    };
    let (outcomes, summary) = osie_soak::run::run(&opts).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap());
    for o in &outcomes {
        assert!(o.ok(), "install {}: {}", o.machine, serde_json::to_string_pretty(o).unwrap());
    }
    assert!(summary.clean(), "{summary:?}");
    assert_eq!(summary.installs, 5);
    assert!(summary.installed >= 1, "at least one install got through the faults");
    assert!(summary.bootsvc_kills >= 1, "bootsvc was killed during the installs");
}

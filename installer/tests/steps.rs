//! `install.steps` end to end: `installer install` onto a loop device with a real ext4 root
//! filesystem that holds a shell (the host's busybox and the libraries it needs), steps
//! that write a file and run commands chrooted into it, a step that fails, and paths that
//! try to leave the installed root.

mod support;

use std::path::Path;
use std::process::Command;

use osie_api::Phase;
use serde_json::json;
use support::http::{File, Server};
use support::*;

const MAC: &str = "52:54:00:12:34:57";

/// A root filesystem (ext4, 4 KiB blocks) with `/bin/sh` (busybox and its libraries, copied
/// from the host as `ldd` lists them), users, and an absolute symlink `/escape` → `/tmp`.
fn root_fs(dir: &Path) -> Vec<u8> {
    let root = dir.join("root");
    for d in ["etc", "bin", "proc", "sys", "dev", "run", "tmp", "var"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nsvc:x:1001:1002::/:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nsvc:x:1002:\n").unwrap();
    let busybox = std::fs::canonicalize("/bin/busybox").unwrap();
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "ls", "sleep", "id"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let ldd = run(Command::new("ldd").arg(&busybox));
    for l in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
        let Some(path) = l.split_whitespace().find(|w| w.starts_with('/')) else { continue };
        let dest = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(path, &dest).unwrap_or_else(|e| panic!("copying {path}: {e}"));
    }
    std::os::unix::fs::symlink("/tmp", root.join("escape")).unwrap();
    let fsimg = dir.join("root.ext4");
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "root", "-b", "4096", "-d"])
        .arg(&root)
        .arg(&fsimg)
        .arg("48M"));
    std::fs::read(&fsimg).unwrap()
}

struct Case {
    raw: Vec<u8>,
    z: Vec<u8>,
}

fn serve(c: &Case, steps: serde_json::Value) -> Server {
    let srv = Server::start();
    srv.put("/images/root.ext4.zst", File::new(c.z.clone(), "root-1"));
    let md = json!({
        "instance_id": "i-steps",
        "hostname": "steps-1",
        "mac": MAC,
        "install": {
            "image": {
                "url": srv.url("/images/root.ext4.zst"),
                "sha256": sha256_hex(&c.z),
                "raw_size": c.raw.len(),
            },
            "gpt": {"layout": [
                {"name": "EFI", "type": "esp", "size": "8MiB"},
                {"name": "root", "type": "linux-root-x86-64", "size": "rest", "image": true},
            ]},
            "steps": steps,
        },
    });
    srv.set_metadata(&md.to_string());
    srv
}

fn install(srv: &Server, dev: &Path) -> (bool, String) {
    let url = srv.url("");
    installer(&["install", "--metadata-url", &url, "--mac", MAC, "--disk", dev.to_str().unwrap()])
}

fn step_messages(srv: &Server) -> Vec<String> {
    srv.events().into_iter().filter(|e| e.phase == Phase::Step).map(|e| e.message).collect()
}

/// The root partition (number 2 of the fresh layout) as a read-only loop device.
fn root_part(dev: &osie_testkit::LoopDev) -> PartLoop {
    let p = sgdisk_parts(&dev.path);
    let r = p.iter().find(|p| p.0 == 2).expect("partition 2");
    PartLoop::new(&dev.backing, r.1 * 512, (r.2 + 1 - r.1) * 512)
}

/// No mount of the target disk (or its partitions) is left behind.
fn nothing_mounted(dev: &Path) {
    let name = dev.file_name().unwrap().to_string_lossy().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&name) || l.contains("/osie-mnt-")).collect();
    assert!(left.is_empty(), "left mounted: {left:#?}");
}

#[test]
fn steps_write_files_and_run_commands_in_the_installed_system() {
    let test = "steps_write_files_and_run_commands_in_the_installed_system";
    if !disk_prereqs(test) || !osie_testkit::require_tools(test, &["ldd", "busybox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = root_fs(dir.path());
    let c = Case { z: zstd(&raw), raw };
    let dev = loopdev(dir.path(), 96 * MIB, 512);

    let srv = serve(
        &c,
        json!([
            {"write_file": {"path": "/etc/osie/marker", "content": "written by a step\n", "mode": "0640",
                            "owner": "svc:svc", "dir_mode": "0750"}},
            {"name": "look around", "run": {"command": ["/bin/sh", "-c",
                "echo hello from $GREETING; cat /etc/osie/marker > /var/step-ran; ls /proc/self/ >/dev/null && test -c /dev/null && test -d /sys/block && echo proc-sys-dev-ok; id -u"],
                "env": {"GREETING": "the chroot"}}},
            {"write_file": {"path": "/var/b64", "content_base64": "AAEC/w=="}},
            {"run": {"command": ["sh", "-c", "echo failing on purpose; exit 3"]}, "continue_on_error": true},
            {"run": {"command": ["sleep", "30"], "timeout_secs": 1}, "continue_on_error": true},
        ]),
    );
    let (ok, log) = install(&srv, &dev.path);
    assert!(ok, "{log}");
    nothing_mounted(&dev.path);
    let m = step_messages(&srv);
    assert_eq!(m.len(), 5, "{m:#?}");
    assert!(m[0].starts_with("step 1/5 (write_file /etc/osie/marker): wrote /etc/osie/marker (18 bytes, mode 0640, owner 1001:1002) on partition 2 (ext4); made /etc/osie"), "{}", m[0]);
    assert!(m[1].starts_with("step 2/5 (look around): exit 0 in "), "{}", m[1]);
    assert!(m[1].contains("hello from the chroot") && m[1].contains("proc-sys-dev-ok\n0"), "{}", m[1]);
    assert!(m[3].contains("failed, continuing (continue_on_error)") && m[3].contains("exit 3"), "{}", m[3]);
    assert!(m[3].contains("failing on purpose"), "{}", m[3]);
    assert!(m[4].contains("timed out after 1 s (killed)"), "{}", m[4]);
    let phases: Vec<Phase> = srv.events().iter().map(|e| e.phase).collect();
    let (seeded, first_step, done) = (
        phases.iter().position(|p| *p == Phase::CloudInitSeeded).unwrap(),
        phases.iter().position(|p| *p == Phase::Step).unwrap(),
        phases.iter().position(|p| *p == Phase::Installed).unwrap(),
    );
    assert!(seeded < first_step && first_step < done, "{phases:?}");

    let p = root_part(&dev);
    assert_eq!(p.debugfs_cat("/etc/osie/marker"), "written by a step\n");
    assert_eq!(p.debugfs_cat("/var/step-ran"), "written by a step\n", "the command saw the file the step before wrote");
    let stat = run(Command::new("debugfs").args(["-R", "stat /etc/osie/marker"]).arg(&p.0));
    let stat = String::from_utf8_lossy(&stat.stdout);
    assert!(stat.contains("User:  1001") && stat.contains("Group:  1002") && stat.contains("Mode:  0640"), "{stat}");
    let dstat = run(Command::new("debugfs").args(["-R", "stat /etc/osie"]).arg(&p.0));
    assert!(String::from_utf8_lossy(&dstat.stdout).contains("Mode:  0750"));
    let b = run(Command::new("debugfs").args(["-R", "dump /var/b64 /dev/stdout"]).arg(&p.0));
    assert_eq!(b.stdout, [0, 1, 2, 255]);
    run(Command::new("e2fsck").arg("-fn").arg(&p.0));
    drop(p);

    // A path through the image's absolute symlink is refused, and nothing is written there.
    let marker = format!("osie-steps-escape-{}", std::process::id());
    let srv = serve(&c, json!([{"write_file": {"path": format!("/escape/{marker}"), "content": "x"}}]));
    let (ok, log) = install(&srv, &dev.path);
    assert!(!ok, "{log}");
    assert!(!Path::new("/tmp").join(&marker).exists(), "written outside the installed root");
    let failed = srv.events().into_iter().find(|e| e.phase == Phase::Failed).expect("failed");
    let chain = failed.error.join(" | ");
    assert!(chain.contains("step 1/1") && chain.contains("leaves the installed root"), "{chain}");
    nothing_mounted(&dev.path);

    // A command that exits 1 fails the install with its output; later steps do not run.
    let srv = serve(
        &c,
        json!([
            {"run": {"command": ["/bin/sh", "-c", "echo about to fail >&2; exit 1"]}},
            {"write_file": {"path": "/never", "content": "x"}},
        ]),
    );
    let (ok, log) = install(&srv, &dev.path);
    assert!(!ok, "{log}");
    let evs = srv.events();
    assert!(!evs.iter().any(|e| e.phase == Phase::Installed || e.phase == Phase::Step), "{evs:?}");
    let failed = evs.iter().find(|e| e.phase == Phase::Failed).expect("failed");
    let chain = failed.error.join(" | ");
    assert!(chain.contains("running the record's steps"), "{chain}");
    assert!(chain.contains("exit 1") && chain.contains("output: about to fail"), "{chain}");
    nothing_mounted(&dev.path);
    let p = root_part(&dev);
    let o = Command::new("debugfs").args(["-R", "stat /never"]).arg(&p.0).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("File not found"), "the step after the failure ran");

    // A step the rules refuse fails before any disk is touched.
    let srv = serve(&c, json!([{"write_file": {"path": "/etc/../x", "content": "x"}}]));
    let (ok, log) = install(&srv, &dev.path);
    assert!(!ok && log.contains("install.steps[0].write_file.path"), "{log}");
    assert!(!srv.events().iter().any(|e| e.phase == Phase::DiskSelected));
}

//! `bootsvc check` (the real binary) on broken configurations and inventories: every problem
//! is printed as `<file>: <field>: <what>`, all of them, and the exit status says so.

mod common;

use std::path::Path;
use std::process::Command;

use common::{write_tree, Options};
use osie_testkit::site::config::HttpCaps;

fn check(config: &Path) -> (i32, String, String) {
    let out =
        Command::new(common::bin()).args(["check", "--config"]).arg(config).env_remove("RUST_LOG").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lines of `out` that are problems in `file` at `field`.
fn has(out: &str, file: &Path, field: &str) -> bool {
    let prefix = format!("{}: {field}: ", file.display());
    out.lines().any(|l| l.starts_with(&prefix))
}

fn edit(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(s.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, s.replacen(from, to, 1)).unwrap();
}

#[test]
fn a_good_site_passes_with_a_summary() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_tree(d.path(), &Options::default());
    std::fs::write(
        d.path().join("machines/n1.json"),
        r#"{"hostname":"n1","macs":["52:54:00:00:00:01"],"ip":{"address":"192.0.2.11","prefix":24},"netboot":{"allow":true},"install":{"image":{"name":"debian-12"}}}"#,
    )
    .unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tinkerbell/hardware.json"),
        d.path().join("machines/tink.json"),
    )
    .unwrap();
    let (code, out, err) = check(&cfg);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("ok: ") && out.contains("2 machines (2 may netboot), 1 image"), "{out}");
}

#[test]
fn syntax_and_type_errors_name_the_place() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_tree(d.path(), &Options::default());
    let good = std::fs::read_to_string(&cfg).unwrap();

    std::fs::write(&cfg, good.replace("[tftp]", "[tftp")).unwrap();
    let (code, out, _) = check(&cfg);
    assert_eq!(code, 1);
    assert!(out.starts_with(&format!("{}: line ", cfg.display())), "{out}");

    std::fs::write(&cfg, good.replace("max_body_bytes = 65536", "max_body_bytes = \"lots\"")).unwrap();
    let (code, out, _) = check(&cfg);
    assert_eq!(code, 1);
    assert!(has(&out, &cfg, "http.max_body_bytes"), "{out}");

    std::fs::write(&cfg, good.replace("[state]", "[state]\ncolour = \"blue\"")).unwrap();
    let (_, out, _) = check(&cfg);
    assert!(has(&out, &cfg, "state.colour"), "{out}");

    let (code, out, _) = check(&d.path().join("missing.toml"));
    assert_eq!(code, 1);
    assert!(out.contains("missing.toml: cannot read"), "{out}");
}

#[test]
fn every_problem_in_config_inventory_and_images_is_listed() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_tree(d.path(), &Options { pool: true, ..Default::default() });
    // Config problems.
    edit(&cfg, "public_url = \"http://192.0.2.1:8080/\"", "public_url = \"192.0.2.1:8080\"");
    edit(&cfg, "kernel_args = \"console=ttyS0,115200n8\"", "kernel_args = \"console=ttyS0 ${evil}\"");
    edit(&cfg, "end = \"192.0.2.199\"", "end = \"198.51.100.9\"");
    std::fs::remove_file(d.path().join("artifacts/initramfs.img")).unwrap();
    // Inventory problems, in several files.
    let m = |name: &str, json: &str| {
        let p = d.path().join("machines").join(name);
        std::fs::write(&p, json).unwrap();
        p
    };
    let a = m(
        "a.json",
        r#"{"hostname":"a","macs":["52:54:00:00:00:01"],"ip":{"address":"192.0.2.11","prefix":24},
            "netboot":{"allow":true,"kernel_args":"quiet\nchain http://evil/"},"install":{"image":{"name":"ubuntu"}}}"#,
    );
    let b = m("b.json", r#"{"hostname":"b_b","macs":["52:54:00:00:00:01"],"ip":{"address":"192.0.2.11","prefix":24}}"#);
    let c = m("c.json", r#"{"hostname":"c","macs":["52:54:00:00:00:03"],"ip":{"address":"192.0.2.13","prefix":"24"}}"#);
    let t = m(
        "tink.json",
        r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"tinkerbell.org/v1alpha1","kind":"Hardware",
            "metadata":{"name":"t1"},"spec":{"interfaces":[{"dhcp":{"mac":"52:54:00:00:00:04",
            "ip":{"address":"192.0.2.14","netmask":"255.0.255.0"}},"netboot":{"allowPXE":true}}]}}]}"#,
    );
    let broken = m("broken.json", "{\"hostname\": ");
    // Image manifest problem.
    let manifest = d.path().join("images/debian-12.json");
    edit(&manifest, "\"sha256\":\"", "\"sha256\":\"zz");

    let (code, out, err) = check(&cfg);
    assert_eq!(code, 1, "{out}");
    let expected = [
        (&cfg, "http.public_url"),
        (&cfg, "artifacts.kernel_args"),
        (&cfg, "artifacts.initrd"),
        (&cfg, "dhcp.pool.end"),
        (&a, "netboot.kernel_args"),
        (&a, "install.image.name"),
        (&b, "hostname"),
        (&b, "macs[0]"),
        (&b, "ip.address"),
        (&c, "ip.prefix"),
        (&t, "items[0].spec.interfaces[0].dhcp.ip.netmask"),
        (&manifest, "sha256"),
    ];
    for (file, field) in expected {
        assert!(has(&out, file, field), "missing {}: {field}:\n{out}", file.display());
    }
    assert!(out.lines().any(|l| l.starts_with(&format!("{}: not valid JSON", broken.display()))), "{out}");
    assert!(out.contains("already used by a"), "{out}");
    assert!(err.contains(&format!("bootsvc check: {} problems", out.lines().count())), "{err}");
    // Every line has the file: field: what shape (or file: what for whole-file problems).
    for l in out.lines() {
        assert!(l.starts_with(d.path().to_str().unwrap()) && l.matches(": ").count() >= 1, "{l}");
    }
}

/// An admin token file its group or every user may read: `check` names the file, its mode
/// and the fix, and `serve` refuses to start with the same words; 0600 passes both.
#[test]
fn a_token_file_others_can_read_is_refused_by_check_and_serve() {
    use std::os::unix::fs::PermissionsExt;
    if !common::prerequisites("a_token_file_others_can_read_is_refused_by_check_and_serve") {
        return;
    }
    let mut site = common::Site::new(Options::default());
    let token = site.path("admin.token");
    assert_eq!(std::fs::metadata(&token).unwrap().permissions().mode() & 0o777, 0o600, "the test kit writes 0600");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let want = format!(
        "admin.token_file: {} has mode 0644: its group and every user may read or change the admin token; run chmod 600 {}",
        token.display(),
        token.display()
    );
    let (code, out, _) = check(&site.config);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.trim(), format!("{}: {want}", site.config.display()));
    let (status, logs) = site.start_fails();
    assert!(!status.success());
    assert!(logs.contains(&want), "{logs}");

    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, _) = check(&site.config);
    assert_eq!(code, 0, "{out}");
    site.start();
}

/// A record naming an image of another architecture (an x86_64 machine, `arch` absent, given
/// the arm64 image; an aarch64 machine given the x86_64 image, whose manifest has no `arch`):
/// `check` names each record's `install.image.name`, the machine and the image, and `serve`
/// refuses to start with the same words; with the images swapped both pass.
#[test]
fn an_image_of_another_architecture_is_refused_by_check_and_serve() {
    if !common::prerequisites("an_image_of_another_architecture_is_refused_by_check_and_serve") {
        return;
    }
    let mut site = common::Site::new(Options::default());
    common::write_arm64_image(site.dir());
    let machines = site.path("machines");
    let record = |name: &str, n: u8, arch: &str, image: &str| {
        std::fs::write(
            machines.join(format!("{name}.json")),
            format!(
                r#"{{"hostname":"{name}","macs":["52:54:00:00:00:0{n}"],"ip":{{"address":"192.0.2.2{n}","prefix":24}},{arch}
                    "netboot":{{"allow":true}},"install":{{"image":{{"name":"{image}"}}}}}}"#
            ),
        )
        .unwrap();
    };
    record("x86", 1, "", "debian-12-arm64");
    record("arm", 2, r#""arch":"aarch64","#, "debian-12");
    let x86_problem = "install.image.name: machine x86 is x86_64 (its record's \"arch\", absent meaning x86_64) but \
                       image \"debian-12-arm64\" is aarch64 (\"arch\" in debian-12-arm64.json in artifacts.images_dir): \
                       an image of another architecture is never served (its x86_64 images: debian-12)";
    let arm_problem = "install.image.name: machine arm is aarch64 (its record's \"arch\", absent meaning x86_64) but \
                       image \"debian-12\" is x86_64 (\"arch\" in debian-12.json in artifacts.images_dir): \
                       an image of another architecture is never served (its aarch64 images: debian-12-arm64)";
    let (code, out, _) = check(&site.config);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{}: {arm_problem}", site.path("machines/arm.json").display()),
            format!("{}: {x86_problem}", site.path("machines/x86.json").display()),
        ],
        "{out}"
    );
    let (status, logs) = site.start_fails();
    assert!(!status.success());
    assert!(logs.contains(x86_problem) && logs.contains(arm_problem), "{logs}");

    record("x86", 1, r#""arch":"x86_64","#, "debian-12");
    record("arm", 2, r#""arch":"aarch64","#, "debian-12-arm64");
    let (code, out, _) = check(&site.config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 machines (2 may netboot), 2 images"), "{out}");
    site.start();
}

#[test]
fn a_connection_cap_beyond_the_open_files_limit_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let caps = HttpCaps { max_connections: Some(5000), ..Default::default() };
    let cfg = write_tree(d.path(), &Options { http: caps, ..Default::default() });
    // Under a hard limit of 4096 open files (5000 connections need about 10 000).
    let run = |cmd: &str| {
        Command::new("bash")
            .args(["-c", &format!("ulimit -n 4096 && exec \"$0\" {cmd} --config \"$1\""), common::bin()])
            .arg(&cfg)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let out = run("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(has(&text, &cfg, "http.max_connections"), "{text}");
    assert!(text.contains("at most 4096") && text.contains("LimitNOFILE"), "{text}");
    let out = run("serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("http.max_connections"), "serve refuses it too: {err}");
    // The default cap fits.
    edit(&cfg, "max_connections = 5000", "");
    let out = run("check");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A Tinkerbell Template/Workflow beside its Hardware is the machine's plan; an action osie
/// cannot run is refused with its name and image, and the machine is not served at all.
#[test]
fn tinkerbell_templates_pass_and_unknown_actions_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_tree(d.path(), &Options::default());
    let file = d.path().join("machines/tink.json");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tinkerbell/workflow-list.json"), &file)
        .unwrap();
    let (code, out, err) = check(&cfg);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 machines (1 may netboot)") || out.contains("1 machine (1 may netboot)"), "{out}");
    // A reboot action of the kind Tinkerbell's examples end with, before the kexec.
    edit(
        &file,
        r#"      - name: \"kexec-debian\""#,
        r#"      - name: \"reboot\"\n        image: ghcr.io/jacobweinstock/waitdaemon:latest\n        environment:\n          IMAGE: alpine\n      - name: \"kexec-debian\""#,
    );
    let (code, out, err) = check(&cfg);
    assert_ne!(code, 0, "{out}{err}");
    assert!(has(&out, &file, "items[1].spec.data"), "{out}");
    assert!(
        out.contains(
            r#"tasks[0].actions[3] "reboot" (ghcr.io/jacobweinstock/waitdaemon:latest): osie cannot run this action"#
        ),
        "{out}"
    );
}

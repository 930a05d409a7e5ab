//! The rules on hand-made traces (`steps!` below) and on traces recorded from real runs
//! (`bootsvc/tests/fixtures/trace/*.json`: the QEMU scenarios (a) and (i), kept by
//! `Lab::keep_trace` as `bootsvc machine <mac> trace --json` prints them, and cuts of (a)).

use super::*;
use crate::trace::{DhcpStep, DownloadStep, EventStep, MetadataStep, ScriptStep, TftpStep, TraceStep, TraceView};

const S: u64 = 1000;

fn at(n: u64, at_ms: u64, step: Step) -> StoredStep {
    StoredStep {
        n,
        step: TraceStep { at_ms, mac: "52:54:00:00:00:01".parse().unwrap(), source: None, run_id: None, step },
    }
}

fn dhcp(message: &str, answer: Option<&str>, reason: &str) -> Step {
    Step::Dhcp(DhcpStep {
        message: message.into(),
        via: "dhcp".into(),
        arch: Some(0),
        class: "bios-pxe".into(),
        vendor_class: Some("PXEClient:Arch:00000:UNDI:002001".into()),
        answer: answer.map(Into::into),
        address: None,
        boot_file: None,
        reason: reason.into(),
    })
}

fn tftp(outcome: Outcome, block: u64, reason: &str) -> Step {
    Step::Tftp(TftpStep {
        file: "undionly.kpxe".into(),
        options: vec!["blksize=1432".into(), "tsize=0".into()],
        bytes: block * 1432,
        size: Some(70_000),
        block,
        outcome,
        reason: reason.into(),
    })
}

fn script(kind: &str) -> Step {
    Step::Script(ScriptStep { script: kind.into(), status: 200 })
}

fn download(artifact: Artifact, status: u16, bytes: u64, outcome: Outcome) -> Step {
    Step::Download(DownloadStep {
        artifact,
        path: format!("/artifacts/{}", if artifact == Artifact::Kernel { "vmlinuz" } else { "initramfs.img" }),
        status,
        bytes,
        size: Some(10_000_000),
        outcome,
        reason: if outcome == Outcome::Complete { String::new() } else { "connection closed by the client".into() },
    })
}

fn event(phase: &str, percent: Option<f64>) -> Step {
    Step::Event(EventStep { phase: phase.into(), percent, message: format!("{phase} message") })
}

/// Steps at 0 s, 1 s, 2 s…
fn trace(steps: Vec<Step>) -> Vec<StoredStep> {
    steps.into_iter().enumerate().map(|(i, s)| at(i as u64, i as u64 * S, s)).collect()
}

fn chain_until_initramfs() -> Vec<Step> {
    vec![
        dhcp("discover", Some("offer"), ""),
        dhcp("request", Some("ack"), ""),
        tftp(Outcome::Complete, 49, ""),
        dhcp("discover", Some("offer"), ""),
        dhcp("request", Some("ack"), ""),
        script("installer"),
        download(Artifact::Kernel, 200, 10_000_000, Outcome::Complete),
        download(Artifact::Initramfs, 200, 10_000_000, Outcome::Complete),
    ]
}

const T: Thresholds = Thresholds {
    offers_without_request: 4,
    next_step_secs: 60,
    installer_secs: 300,
    event_silence_secs: 900,
    first_boot_secs: 1800,
};

#[test]
fn nothing_seen_is_idle() {
    assert_eq!(diagnose(&[], 0, &T).health, Health::Idle);
}

#[test]
fn offers_never_followed_by_a_request_point_at_another_server() {
    let t = trace(vec![dhcp("discover", Some("offer"), ""); 4]);
    let d = diagnose(&t, 10 * S, &T);
    assert_eq!(d.health, Health::Stuck);
    assert!(d.cause.as_deref().unwrap().contains("4 offers never followed by a request: another DHCP server"), "{d:?}");
    let three = trace(vec![dhcp("discover", Some("offer"), ""); 3]);
    assert_eq!(diagnose(&three, 10 * S, &T).health, Health::Progressing, "under the threshold");
    let mut answered = trace(vec![dhcp("discover", Some("offer"), ""); 4]);
    answered.push(at(4, 4 * S, dhcp("request", Some("ack"), "")));
    assert_eq!(diagnose(&answered, 10 * S, &T).health, Health::Progressing);
}

#[test]
fn an_abandoned_tftp_transfer_names_the_block() {
    let t = trace(vec![
        dhcp("discover", Some("offer"), ""),
        tftp(Outcome::Abandoned, 17, "no ack for block 18 after 5 tries"),
    ]);
    let d = diagnose(&t, 10 * S, &T);
    assert_eq!(d.health, Health::Stuck);
    assert_eq!(
        d.cause.unwrap(),
        "TFTP transfer of undionly.kpxe abandoned at block 17 (24344 of 70000 bytes): no ack for block 18 after 5 tries"
    );
}

#[test]
fn a_script_fetched_and_no_kernel_requested() {
    let mut steps = chain_until_initramfs();
    steps.truncate(6);
    let t = trace(steps);
    assert_eq!(diagnose(&t, 30 * S, &T).health, Health::Progressing, "within next_step_secs");
    let d = diagnose(&t, 200 * S, &T);
    assert_eq!(d.health, Health::Stuck);
    assert!(d.cause.unwrap().starts_with("script fetched 195 s ago but no kernel requested"));
}

#[test]
fn a_kernel_cut_says_how_far_it_got() {
    let mut steps = chain_until_initramfs();
    steps.truncate(6);
    steps.push(download(Artifact::Kernel, 200, 4_200_000, Outcome::Abandoned));
    let d = diagnose(&trace(steps), 10 * S, &T);
    assert_eq!(d.health, Health::Stuck);
    assert_eq!(d.at, "kernel /artifacts/vmlinuz cut");
    assert_eq!(d.cause.unwrap(), "kernel cut at 42 % (4200000 of 10000000 bytes): connection closed by the client");
}

#[test]
fn a_missing_kernel_is_named() {
    let mut steps = chain_until_initramfs();
    steps.truncate(6);
    steps.push(download(Artifact::Kernel, 404, 0, Outcome::Refused));
    let d = diagnose(&trace(steps), 10 * S, &T);
    assert_eq!(d.health, Health::Stuck);
    assert!(d.cause.unwrap().starts_with("kernel /artifacts/vmlinuz answered HTTP 404"));
}

#[test]
fn no_installer_event_after_the_initramfs() {
    let t = trace(chain_until_initramfs());
    assert_eq!(diagnose(&t, 100 * S, &T).health, Health::Progressing);
    let d = diagnose(&t, 400 * S, &T);
    assert_eq!(d.health, Health::Stuck);
    assert!(d.cause.unwrap().starts_with("initramfs served 393 s ago and no installer event since"));
}

#[test]
fn installer_silence_and_failure() {
    let mut steps = chain_until_initramfs();
    steps.push(Step::Metadata(MetadataStep { path: "/metadata".into(), status: 200 }));
    steps.push(event("image", Some(45.0)));
    let t = trace(steps.clone());
    let d = diagnose(&t, 100 * S, &T);
    assert_eq!((d.health, d.at.as_str()), (Health::Progressing, "installer: image 45 %"));
    let d = diagnose(&t, 2000 * S, &T);
    assert_eq!(d.health, Health::Stuck);
    assert!(d.cause.unwrap().starts_with("no installer event for 1991 s since image 45 %"));
    steps.push(event("failed", None));
    let d = diagnose(&trace(steps), 11 * S, &T);
    assert_eq!((d.health, d.cause.as_deref()), (Health::Stuck, Some("the installer failed: failed message")));
}

#[test]
fn no_phone_home_after_installed() {
    let mut steps = chain_until_initramfs();
    steps.push(event("installed", None));
    steps.push(dhcp("discover", None, "netboot not allowed"));
    let t = trace(steps.clone());
    assert_eq!(diagnose(&t, 100 * S, &T).health, Health::Progressing);
    let d = diagnose(&t, 5000 * S, &T);
    assert_eq!(d.health, Health::Stuck);
    assert!(d.cause.unwrap().starts_with("no phone-home 4992 s after installed: its DHCP was seen"));
    steps.push(event("first-boot", None));
    assert_eq!(diagnose(&trace(steps), 5000 * S, &T).health, Health::Done);
}

#[test]
fn a_new_netboot_after_a_failure_is_read_afresh() {
    let mut steps = chain_until_initramfs();
    steps.push(event("failed", None));
    steps.extend(chain_until_initramfs().into_iter().take(6));
    let d = diagnose(&trace(steps), 20 * S, &T);
    assert_eq!((d.health, d.at.as_str()), (Health::Progressing, "iPXE script served (installer)"));
}

#[test]
fn uefi_refusing_the_no_netboot_file_after_install_is_not_a_new_attempt() {
    let mut steps = chain_until_initramfs();
    steps.push(event("installed", None));
    steps.push(tftp(Outcome::Refused, 0, "file not found"));
    let d = diagnose(&trace(steps), 20 * S, &T);
    assert_eq!((d.health, d.at.as_str()), (Health::Progressing, "installer: installed"));
}

/// Traces recorded from real runs, each with the diagnosis it must give (the fixture file's
/// `expect`), at the fixture's own `now_ms`.
#[test]
fn recorded_traces() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trace");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let view: TraceView = serde_json::from_value(v["trace"].clone()).unwrap();
        let expect: Diagnosis = serde_json::from_value(v["expect"].clone()).unwrap();
        let now = v["at_ms"].as_u64().unwrap_or(view.now_ms);
        let got = diagnose(&view.steps, now, &T);
        assert_eq!(got, expect, "{}", p.display());
        n += 1;
    }
    assert!(n >= 4, "no recorded trace in {}", dir.display());
}

#[test]
fn a_deprovisioned_machine_is_done_long_after() {
    let mut steps = chain_until_initramfs();
    steps.push(event("disk-erased", None));
    steps.push(event("deprovisioned", None));
    let d = diagnose(&trace(steps), 50_000 * S, &T);
    assert_eq!((d.health, d.at.as_str()), (Health::Done, "installer: deprovisioned"));
}

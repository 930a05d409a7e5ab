//! The rules of the boot trace, the installer log and deprovisioning that every [`Storage`]
//! keeps, as test functions run on each implementation (the embedded store, PostgreSQL).

use osie_api::MacAddr;

use super::{LogOutcome, Storage};
use crate::trace::log::{LogBounds, StoredChunk};
use crate::trace::{MetadataStep, Step, TraceStep};

fn step(i: u64) -> TraceStep {
    TraceStep {
        at_ms: i,
        mac: "52:54:00:00:00:01".parse().unwrap(),
        source: None,
        run_id: None,
        step: Step::Metadata(MetadataStep { path: format!("/m/{i}"), status: 200 }),
    }
}

/// Steps are numbered per machine; each machine keeps its last `keep`.
pub fn the_trace_is_a_ring_per_machine(s: &dyn Storage) {
    let a: MacAddr = "52:54:00:00:00:01".parse().unwrap();
    let b: MacAddr = "52:54:00:00:00:02".parse().unwrap();
    let batch: Vec<_> = (0..25).map(|i| (if i % 5 == 0 { b } else { a }, step(i))).collect();
    s.record_steps(&batch[..12], 10).unwrap();
    s.record_steps(&batch[12..], 10).unwrap();
    let got = s.steps(&a, 100).unwrap();
    assert_eq!(got.len(), 10, "the last 10 of a's 20");
    assert_eq!((got[0].n, got[9].n), (10, 19));
    assert_eq!(got[9].step.at_ms, 24);
    assert_eq!(s.steps(&b, 100).unwrap().len(), 5);
    assert_eq!(s.steps(&a, 3).unwrap().iter().map(|x| x.n).collect::<Vec<_>>(), [17, 18, 19]);
    assert!(s.steps(&"52:54:00:00:00:09".parse().unwrap(), 10).unwrap().is_empty());
}

/// Chunks are stored once, a full run refuses more, the oldest run goes first.
pub fn log_chunks_are_bounded_deduplicated_and_evicted(s: &dyn Storage) {
    let k: MacAddr = "52:54:00:00:00:01".parse().unwrap();
    let b = LogBounds { run_bytes: 20, runs: 2 };
    let ch = |run: &str, seq| StoredChunk {
        run_id: run.into(),
        seq,
        at_ms: seq,
        lines: vec!["123456789".into()],
        dropped: 0,
    };
    assert_eq!(s.record_log(k, &ch("r1", 0), &b).unwrap(), LogOutcome::Stored);
    assert_eq!(s.record_log(k, &ch("r1", 0), &b).unwrap(), LogOutcome::Duplicate);
    assert_eq!(s.record_log(k, &ch("r1", 1), &b).unwrap(), LogOutcome::Stored);
    assert_eq!(s.record_log(k, &ch("r1", 2), &b).unwrap(), LogOutcome::Full);
    assert_eq!(s.record_log(k, &ch("r2", 0), &b).unwrap(), LogOutcome::Stored);
    let v = s.log(&k).unwrap();
    let runs: Vec<_> = v.runs.iter().map(|r| (r.run_id.as_str(), r.lines.len(), r.refused)).collect();
    assert_eq!(runs, [("r1", 2, 1), ("r2", 1, 0)]);
    assert_eq!(s.record_log(k, &ch("r3", 0), &b).unwrap(), LogOutcome::Stored);
    let v = s.log(&k).unwrap();
    assert_eq!(v.runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), ["r2", "r3"], "r1 evicted");
    assert!(s.log(&"52:54:00:00:00:09".parse().unwrap()).unwrap().runs.is_empty());
}

/// A deprovisioning asked for is kept (with its `removable`) and allows netboot; the
/// `deprovisioned` event clears netboot until a reinstall. `key` names a machine of `s`
/// whose netboot its record allows.
pub fn deprovisioning_until_reinstall(s: &dyn Storage, key: MacAddr) {
    use osie_api::{Event, Phase};

    use crate::inventory::Backend;
    use crate::state::Status;
    let st = s.deprovision(key, "t10", true).unwrap();
    assert_eq!((st.status, st.netboot_cleared), (Status::DeprovisionPending, false));
    assert_eq!(s.state(&key).deprovision.map(|d| d.removable), Some(true), "seen by reads at once");
    assert!(s.netboot_allowed(&key));
    let ev = |phase, seq| Event {
        machine: key,
        phase,
        progress: None,
        message: String::new(),
        time: "t".into(),
        run_id: Some("erase-run".into()),
        seq: Some(seq),
        error: vec![],
        hardware: None,
        erase: None,
    };
    assert_eq!(s.record_event(key, &ev(Phase::BootedInstaller, 0), None, "t11").unwrap().state.status, Status::Erasing);
    let done = s.record_event(key, &ev(Phase::Deprovisioned, 1), None, "t12").unwrap().state;
    assert_eq!((done.status, done.netboot_cleared, done.deprovision), (Status::Deprovisioned, true, None));
    assert!(!s.netboot_allowed(&key), "no boot file until a reinstall");
    s.reinstall(key, "t13").unwrap();
    assert!(s.netboot_allowed(&key));
    assert_eq!(s.state(&key).status, Status::ReinstallPending);
}

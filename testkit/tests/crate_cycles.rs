//! No dependency loop between the workspace's crates, dev-dependencies included: each crate's
//! tests import downward only (ARCHITECTURE.md), and the test kit imports nothing of the
//! project, so every crate's tests may use it.

use osie_testkit::crates::{self, Dep, Kind};

#[test]
fn no_dependency_loops_between_the_workspace_crates() {
    let root = osie_testkit::workspace_root();
    crates::assert_no_cycles(&root);
    // The check reads the real manifests, so it could fail: these edges are there.
    let deps = crates::deps(&root).unwrap();
    let has = |from: &str, to: &str, kind: Kind| deps.contains(&Dep { from: from.into(), to: to.into(), kind });
    assert!(
        has("osie-qemu-tests", "bootsvc", Kind::Normal)
            && has("osie-bench", "osie-qemu-tests", Kind::Normal)
            && has("bootsvc", "osie-testkit", Kind::Dev)
            && has("installer", "osie-api", Kind::Normal),
        "{deps:#?}"
    );
}

#[test]
fn bootsvc_tests_need_only_the_kit_and_the_kit_nothing() {
    let deps = crates::deps(&osie_testkit::workspace_root()).unwrap();
    let of = |krate: &str, kind: Option<Kind>| -> Vec<String> {
        deps.iter().filter(|d| d.from == krate && kind.is_none_or(|k| d.kind == k)).map(|d| d.to.clone()).collect()
    };
    assert_eq!(of("bootsvc", Some(Kind::Dev)), ["osie-testkit"]);
    assert!(of("osie-testkit", None).is_empty(), "the kit depends on {:?}", of("osie-testkit", None));
}

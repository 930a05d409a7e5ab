//! The installer's modules import each other in one direction only: each can be read
//! knowing the modules below it (`osie_testkit::modgraph` says how edges are found).

use std::path::Path;

#[test]
fn no_import_cycles_between_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    osie_testkit::modgraph::assert_no_cycles(&src);
    // The check sees the real structure, so it could fail: the flow uses the image stream,
    // the pipeline uses the decoder.
    let edges = osie_testkit::modgraph::edges(&src).unwrap();
    let has =
        |level: &str, from: &str, to: &str| edges.iter().any(|e| e.level == level && e.from == from && e.to == to);
    assert!(has("crate", "install", "image") && has("image", "pipeline", "decode"), "{edges:#?}");
}

//! The shipped examples stay valid: `examples/bootsvc.toml` parses, and the machine records
//! in `examples/machines/` pass validation against it (with the image they name).

use std::path::Path;

use bootsvc::config::Config;
use bootsvc::inventory::images::{ImageManifest, ManifestFormat};
use bootsvc::inventory::{load, validate, Images};
use bootsvc::problem::Problems;

#[test]
fn examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let text = std::fs::read_to_string(dir.join("bootsvc.toml")).unwrap();
    let cfg = Config::parse(&text, &dir.join("bootsvc.toml")).unwrap_or_else(|p| panic!("{p}"));
    assert!(cfg.admin.token_file.is_some() && cfg.dhcp.pool.is_some());
    let image = ImageManifest {
        name: "debian-12".into(),
        file: "debian-12.raw.zst".into(),
        format: ManifestFormat::Zstd,
        arch: Default::default(),
        size: 1,
        raw_size: None,
        sha256: "0".repeat(64),
        checksum_of: Default::default(),
    };
    let images: Images = [("debian-12".to_string(), image)].into();
    let mut p = Problems::default();
    let entries = load::read_dir(&dir.join("machines"), &mut p);
    assert_eq!(entries.len(), 2);
    for e in &entries {
        validate::machine(e, &cfg, &images, &mut p);
    }
    validate::across(&entries, &mut p);
    assert!(p.is_empty(), "{p}");
}

//! The OS images in `artifacts.images_dir`, each described by a manifest `<name>.json`:
//!
//! ```json
//! {"name": "debian-12", "file": "debian-12.raw.zst", "format": "zstd", "size": 160123456,
//!  "raw_size": 2147483648, "sha256": "…", "checksum_of": "compressed"}
//! ```
//!
//! `sha256` covers the file as served unless `checksum_of` is `raw`. A machine's
//! `install.image.name` picks a manifest; the installer gets `{public_url}/images/{file}` with
//! its checksum and sizes.

use std::collections::BTreeMap;
use std::path::Path;

use osie_api::metadata::{ChecksumOf, ImageFormat};
use serde::{Deserialize, Serialize};

use crate::checks;
use crate::problem::{Problem, Problems};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    pub name: String,
    /// The image file, beside the manifest.
    pub file: String,
    pub format: ManifestFormat,
    /// Bytes of `file`.
    pub size: u64,
    /// Bytes once decompressed.
    #[serde(default)]
    pub raw_size: Option<u64>,
    pub sha256: String,
    #[serde(default)]
    pub checksum_of: ChecksumOf,
}

/// Manifests name the format; unlike a machine record they never say "auto".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestFormat {
    Zstd,
    Gzip,
    Xz,
    Raw,
}

impl From<ManifestFormat> for ImageFormat {
    fn from(f: ManifestFormat) -> ImageFormat {
        match f {
            ManifestFormat::Zstd => ImageFormat::Zstd,
            ManifestFormat::Gzip => ImageFormat::Gzip,
            ManifestFormat::Xz => ImageFormat::Xz,
            ManifestFormat::Raw => ImageFormat::Raw,
        }
    }
}

/// Images by name.
pub type Images = BTreeMap<String, ImageManifest>;

impl ImageManifest {
    /// The image as the installer is told about it.
    pub fn to_api(&self, public_url: &str) -> osie_api::Image {
        osie_api::Image {
            url: format!("{public_url}/images/{}", self.file),
            sha256: self.sha256.to_ascii_lowercase(),
            size: Some(self.size),
            raw_size: self.raw_size,
            format: self.format.into(),
            checksum_of: self.checksum_of,
        }
    }
}

/// Read every `*.json` manifest in `dir`; problems (with the manifest file and field) go to
/// `problems`, good manifests into the result.
pub fn load(dir: &Path, problems: &mut Problems) -> Images {
    let mut out = Images::new();
    let files = match json_files(dir) {
        Ok(f) => f,
        Err(e) => {
            problems.0.push(Problem::new(dir, "", format!("cannot list the images directory: {e}")));
            return out;
        }
    };
    for path in files {
        if let Some(m) = load_one(dir, &path, problems) {
            out.insert(m.name.clone(), m);
        }
    }
    out
}

fn load_one(dir: &Path, path: &Path, problems: &mut Problems) -> Option<ImageManifest> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.0.push(Problem::new(path, "", format!("cannot read: {e}")));
            return None;
        }
    };
    let m: ImageManifest = match serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text)) {
        Ok(m) => m,
        Err(e) => {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            problems.0.push(Problem::new(path, field, format!("not an image manifest: {}", e.inner())));
            return None;
        }
    };
    let before = problems.len();
    let mut c = problems.collector(path, "");
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    if m.name != stem {
        c.add("name", format!("{:?} differs from the manifest's file name {stem:?}.json", m.name));
    }
    c.check("sha256", checks::sha256_hex(&m.sha256));
    match checks::file_name(&m.file) {
        Err(e) => c.add("file", e),
        // Opened as a request for it would be: what passes here is served.
        Ok(()) => match crate::jail::servable(dir, &m.file) {
            Err(e) => c.add("file", e),
            Ok(meta) if meta.len() != m.size => {
                c.add("size", format!("{} but {} has {} bytes", m.size, m.file, meta.len()));
            }
            Ok(_) => {}
        },
    }
    if let Some(raw) = m.raw_size {
        if m.format == ManifestFormat::Raw && raw != m.size {
            c.add("raw_size", format!("{raw} differs from size {} for a raw image", m.size));
        }
    }
    (problems.len() == before).then_some(m)
}

/// `*.json` files directly in `dir`, sorted; hidden files are skipped (editors' temp files).
pub fn json_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".json") && !name.starts_with('.') && p.is_file() {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// One zstd image `<name>` (file `<name>.raw.zst`, 10 bytes, sha256 `ABAB…`), for unit tests.
#[cfg(test)]
pub(crate) fn test_images(name: &str) -> Images {
    let m = ImageManifest {
        name: name.into(),
        file: format!("{name}.raw.zst"),
        format: ManifestFormat::Zstd,
        size: 10,
        raw_size: Some(100),
        sha256: "AB".repeat(32),
        checksum_of: Default::default(),
    };
    [(name.to_string(), m)].into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(format!("{name}.json")), body).unwrap();
    }

    #[test]
    fn loads_good_manifests_and_reports_bad_ones() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("deb.raw.zst"), b"0123456789").unwrap();
        let sha = "ab".repeat(32);
        manifest(
            d.path(),
            "deb",
            &format!(
                r#"{{"name":"deb","file":"deb.raw.zst","format":"zstd","size":10,"raw_size":4096,"sha256":"{sha}"}}"#
            ),
        );
        manifest(
            d.path(),
            "wrong",
            r#"{"name":"other","file":"deb.raw.zst","format":"zstd","size":11,"sha256":"xyz"}"#,
        );
        manifest(d.path(), "typo", r#"{"name":"typo","file":"t","format":"lz4","size":1,"sha256":""}"#);
        manifest(
            d.path(),
            "gone",
            &format!(r#"{{"name":"gone","file":"gone.raw","format":"raw","size":1,"sha256":"{sha}"}}"#),
        );
        let mut p = Problems::default();
        let images = load(d.path(), &mut p);
        assert_eq!(images.keys().collect::<Vec<_>>(), ["deb"]);
        let got: Vec<String> =
            p.iter().map(|x| format!("{}:{}", x.file.file_name().unwrap().to_str().unwrap(), x.field)).collect();
        assert_eq!(
            got,
            ["gone.json:file", "typo.json:format", "wrong.json:name", "wrong.json:sha256", "wrong.json:size"]
        );
        let img = images["deb"].to_api("http://192.0.2.1:8080");
        // The file is opened as a request would be: a link out of the directory is refused.
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("far.raw"), b"0123456789").unwrap();
        std::os::unix::fs::symlink(out.path().join("far.raw"), d.path().join("far.raw")).unwrap();
        manifest(
            d.path(),
            "far",
            &format!(r#"{{"name":"far","file":"far.raw","format":"raw","size":10,"sha256":"{sha}"}}"#),
        );
        let mut p = Problems::default();
        assert!(!load(d.path(), &mut p).contains_key("far"));
        let far = p.iter().find(|x| x.file.ends_with("far.json")).unwrap();
        assert_eq!(far.field, "file");
        assert!(far.what.contains("far.raw is an absolute symlink"), "{}", far.what);
        assert_eq!(img.url, "http://192.0.2.1:8080/images/deb.raw.zst");
        assert_eq!(img.format, ImageFormat::Zstd);
        assert_eq!((img.size, img.raw_size), (Some(10), Some(4096)));
    }
}

//! The OS images in `artifacts.images_dir`, each described by a manifest `<name>.json`:
//!
//! ```json
//! {"name": "debian-12", "file": "debian-12.raw.zst", "format": "zstd", "arch": "x86_64",
//!  "size": 160123456, "raw_size": 2147483648, "sha256": "…", "checksum_of": "compressed"}
//! ```
//!
//! `sha256` covers the file as served unless `checksum_of` is `raw`. Instead of `sha256`, a
//! manifest may name the vendor's checksums file kept beside it, and its detached OpenPGP
//! signature, as published (`"checksums_url": "SHA512SUMS", "signature_url": "SHA512SUMS.sign"`,
//! names in the same directory, like the image): the digest is taken for `file` from it, once
//! the signature is checked against `[images] keyring` — by `check` and `serve` alike. `arch`
//! is the architecture the image boots on (absent: `x86_64`). A machine's
//! `install.image.name` picks a manifest of the machine's own architecture
//! (`super::validate`); the installer gets
//! `{public_url}/images/{file}` with its checksum and sizes.

use std::collections::BTreeMap;
use std::path::Path;

use osie_api::metadata::{ChecksumOf, ImageFormat};
use serde::{Deserialize, Serialize};

use super::model::Arch;
use crate::checks;
use crate::inventory::checksums::{digest_for, Algo, Digest};
use crate::problem::{Problem, Problems};
use crate::signature::Keyring;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    pub name: String,
    /// The image file, beside the manifest.
    pub file: String,
    pub format: ManifestFormat,
    /// What the image boots on. Absent: x86_64, as every manifest was before arm64 images.
    #[serde(default)]
    pub arch: Arch,
    /// Bytes of `file`.
    pub size: u64,
    /// Bytes once decompressed.
    #[serde(default)]
    pub raw_size: Option<u64>,
    /// The file's SHA-256 (or the disk's, with `checksum_of: raw`); or `checksums_url`.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The vendor's `SHA256SUMS`/`SHA512SUMS`, a file beside the manifest.
    #[serde(default)]
    pub checksums_url: Option<String>,
    /// The detached OpenPGP signature of `checksums_url`, a file beside the manifest.
    #[serde(default)]
    pub signature_url: Option<String>,
    #[serde(default)]
    pub checksum_of: ChecksumOf,
    /// The digest the installer checks: `sha256`, or the one the checksums file gives.
    #[serde(skip)]
    pub digest: Option<Digest>,
}

/// Manifests name the format; unlike a machine record they never say "auto".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestFormat {
    Zstd,
    Gzip,
    Xz,
    Raw,
    /// Read with `osie_api::qcow2`: `check` reads its header and tables.
    Qcow2,
}

impl From<ManifestFormat> for ImageFormat {
    fn from(f: ManifestFormat) -> ImageFormat {
        match f {
            ManifestFormat::Zstd => ImageFormat::Zstd,
            ManifestFormat::Gzip => ImageFormat::Gzip,
            ManifestFormat::Xz => ImageFormat::Xz,
            ManifestFormat::Raw => ImageFormat::Raw,
            ManifestFormat::Qcow2 => ImageFormat::Qcow2,
        }
    }
}

/// Images by name.
pub type Images = BTreeMap<String, ImageManifest>;

impl ImageManifest {
    /// The image as the installer is told about it.
    pub fn to_api(&self, public_url: &str) -> osie_api::Image {
        let (hex, algo) = match &self.digest {
            Some(d) => (d.hex.clone(), d.algo.into()),
            None => (self.sha256.clone().unwrap_or_default().to_ascii_lowercase(), Default::default()),
        };
        osie_api::Image {
            url: format!("{public_url}/images/{}", self.file),
            sha256: hex,
            size: Some(self.size),
            raw_size: self.raw_size,
            format: self.format.into(),
            checksum_of: self.checksum_of,
            digest_algo: algo,
        }
    }
}

/// The manifest of the file an image URL names (its last path segment), for a record that
/// gives an image by URL without a digest (a Tinkerbell template's `IMG_URL`): the digest
/// is the manifest's, and the installer still checks it, so a different file under the
/// same name elsewhere fails its install rather than being trusted.
pub fn by_file<'a>(images: &'a Images, url: &str) -> Option<&'a ImageManifest> {
    let name = super::checksums::file_name(url)?;
    images.values().find(|m| m.file == name)
}

/// Read every `*.json` manifest in `dir`; problems (with the manifest file and field) go to
/// `problems`, good manifests into the result. `keyring` checks the signatures of vendor
/// checksums files (`None`: a manifest with `signature_url` is refused).
pub fn load(dir: &Path, keyring: Option<&Keyring>, problems: &mut Problems) -> Images {
    let mut out = Images::new();
    let files = match json_files(dir) {
        Ok(f) => f,
        Err(e) => {
            problems.0.push(Problem::new(dir, "", format!("cannot list the images directory: {e}")));
            return out;
        }
    };
    for path in files {
        if let Some(m) = load_one(dir, &path, keyring, problems) {
            out.insert(m.name.clone(), m);
        }
    }
    out
}

/// [`load`] of `cfg`'s `artifacts.images_dir` with its keyring (a keyring that cannot be
/// read is the config's problem, reported by its validation: here it is none).
pub fn load_configured(cfg: &crate::config::Config, problems: &mut Problems) -> Images {
    load(&cfg.artifacts.images_dir, cfg.keyring().ok().flatten().as_deref(), problems)
}

fn load_one(dir: &Path, path: &Path, keyring: Option<&Keyring>, problems: &mut Problems) -> Option<ImageManifest> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.0.push(Problem::new(path, "", format!("cannot read: {e}")));
            return None;
        }
    };
    let mut m: ImageManifest = match serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text)) {
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
    match (&m.sha256, &m.checksums_url) {
        (Some(sha), None) => match checks::sha256_hex(sha) {
            Ok(()) => m.digest = Some(Digest { algo: Algo::Sha256, hex: sha.to_ascii_lowercase() }),
            Err(e) => c.add("sha256", e),
        },
        (None, None) => c.add("sha256", "missing: give the image's sha256, or checksums_url"),
        (Some(_), Some(_)) => c.add("checksums_url", "give sha256 or checksums_url, not both"),
        (None, Some(sums)) => match vendor_digest(dir, &m, sums, keyring) {
            Ok(d) => m.digest = Some(d),
            Err((field, e)) => c.add(field, e),
        },
    }
    if m.signature_url.is_some() && m.checksums_url.is_none() {
        c.add("signature_url", "signs a checksums_url: give that too");
    }
    match checks::file_name(&m.file) {
        Err(e) => c.add("file", e),
        // Opened as a request for it would be: what passes here is served.
        Ok(()) => match crate::jail::open_servable(dir, &m.file) {
            Err(e) => c.add("file", e),
            Ok(f) => match f.metadata() {
                Err(e) => c.add("file", format!("{}: {e}", m.file)),
                Ok(meta) if meta.len() != m.size => {
                    c.add("size", format!("{} but {} has {} bytes", m.size, m.file, meta.len()));
                }
                Ok(meta) => match qcow2_problem(&f, meta.len(), &m) {
                    Ok(()) => {}
                    Err((field, e)) => c.add(field, e),
                },
            },
        },
    }
    if let Some(raw) = m.raw_size {
        if m.format == ManifestFormat::Raw && raw != m.size {
            c.add("raw_size", format!("{raw} differs from size {} for a raw image", m.size));
        }
    }
    (problems.len() == before).then_some(m)
}

/// The digest for `m.file` in the checksums file `sums` beside the manifest, its signature
/// checked when the manifest names one.
fn vendor_digest(
    dir: &Path,
    m: &ImageManifest,
    sums: &str,
    keyring: Option<&Keyring>,
) -> Result<Digest, (&'static str, String)> {
    // Read as the image is: plain names in the directory, no link out of it; bounded as a
    // record's checksums file fetched over HTTP is.
    const MAX: u64 = super::checksums::MAX_BYTES as u64;
    let read = |field: &'static str, name: &str| -> Result<Vec<u8>, (&'static str, String)> {
        checks::file_name(name).map_err(|e| (field, format!("{e} (a file beside the manifest, as published)")))?;
        let f = crate::jail::open_servable(dir, name).map_err(|e| (field, e))?;
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX + 1), &mut b)
            .map_err(|e| (field, format!("reading {name}: {e}")))?;
        if b.len() as u64 > MAX {
            return Err((field, format!("{name} is larger than {MAX} bytes: not a checksums file")));
        }
        Ok(b)
    };
    let text = read("checksums_url", sums)?;
    if let Some(sig_name) = &m.signature_url {
        let sig = read("signature_url", sig_name)?;
        let keyring = keyring.ok_or_else(|| {
            ("signature_url", format!("{sig_name}: no keyring to check it against ([images] keyring is not set)"))
        })?;
        keyring.verify(&text, &sig).map_err(|e| ("signature_url", format!("{sig_name} over {sums}: {e}")))?;
    }
    let text = String::from_utf8_lossy(&text);
    digest_for(&text, &m.file).map_err(|e| ("checksums_url", format!("{sums}: {e}")))
}

/// A qcow2 file read as the installer will read it (header, L1, every L2 table): what it
/// would refuse is refused here. Any other format must not be qcow2 in disguise.
fn qcow2_problem(f: &std::fs::File, len: u64, m: &ImageManifest) -> Result<(), (&'static str, String)> {
    use osie_api::qcow2::{Header, Mapper, HEADER_READ};
    use std::os::unix::fs::FileExt;
    let read = |at: u64, n: u64| -> Result<Vec<u8>, (&'static str, String)> {
        let mut b = vec![0u8; n.min(len.saturating_sub(at)) as usize];
        f.read_exact_at(&mut b, at).map_err(|e| ("file", format!("reading {} at byte {at}: {e}", m.file)))?;
        Ok(b)
    };
    let head = read(0, HEADER_READ)?;
    if m.format != ManifestFormat::Qcow2 {
        return match osie_api::qcow2::is_qcow2(&head) {
            true => Err(("format", format!("{} is a qcow2 image: say \"qcow2\"", m.file))),
            false => Ok(()),
        };
    }
    if m.checksum_of == ChecksumOf::Raw {
        return Err(("checksum_of", "a qcow2 image's sha256 covers the file (\"compressed\"), not the disk".into()));
    }
    let bad = |e: osie_api::qcow2::Refused| ("file", format!("{}: {e}", m.file));
    let h = Header::parse(&head, len).map_err(bad)?;
    let (l1_at, l1_len) = h.l1_range();
    let l1 = read(l1_at, l1_len)?;
    let mut mapper = Mapper::new(&h);
    for t in h.l2_tables(&l1).map_err(bad)? {
        mapper.add(t, &read(t.offset, h.cluster_size())?).map_err(bad)?;
    }
    match m.raw_size {
        Some(raw) if raw != h.size => Err(("raw_size", format!("{raw} but {}'s virtual size is {}", m.file, h.size))),
        _ => Ok(()),
    }
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
        arch: Arch::X86_64,
        size: 10,
        raw_size: Some(100),
        sha256: Some("AB".repeat(32)),
        checksums_url: None,
        signature_url: None,
        checksum_of: Default::default(),
        digest: Some(Digest { algo: Algo::Sha256, hex: "ab".repeat(32) }),
    };
    [(name.to_string(), m)].into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(format!("{name}.json")), body).unwrap();
    }

    /// A qcow2 v3 file: 64 KiB clusters, 1 MiB virtual, L1 at cluster 1, its L2 table at 2,
    /// disk cluster 0 at file cluster 3.
    fn qcow2_file(backing: bool) -> Vec<u8> {
        let mut f = vec![0u8; 4 << 16];
        f[..4].copy_from_slice(osie_api::qcow2::MAGIC);
        f[7] = 3;
        f[23] = 16;
        f[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        f[39] = 1;
        f[40..48].copy_from_slice(&(1u64 << 16).to_be_bytes());
        f[99] = 4;
        f[103] = 112;
        if backing {
            f[15] = 200;
            f[19] = 4;
        }
        f[1 << 16..(1 << 16) + 8].copy_from_slice(&(2u64 << 16).to_be_bytes());
        f[2 << 16..(2 << 16) + 8].copy_from_slice(&(3u64 << 16).to_be_bytes());
        f
    }

    #[test]
    fn qcow2_files_are_read_as_the_installer_reads_them() {
        let d = tempfile::tempdir().unwrap();
        let sha = "ab".repeat(32);
        let size = 4 << 16;
        std::fs::write(d.path().join("good.qcow2"), qcow2_file(false)).unwrap();
        std::fs::write(d.path().join("layer.qcow2"), qcow2_file(true)).unwrap();
        for (name, file, format, extra) in [
            ("good", "good.qcow2", "qcow2", r#","raw_size":1048576"#),
            ("wrongsize", "good.qcow2", "qcow2", r#","raw_size":4096"#),
            ("disguised", "good.qcow2", "raw", ""),
            ("ofraw", "good.qcow2", "qcow2", r#","checksum_of":"raw""#),
            ("layer", "layer.qcow2", "qcow2", ""),
        ] {
            let body = format!(
                r#"{{"name":"{name}","file":"{file}","format":"{format}","size":{size},"sha256":"{sha}"{extra}}}"#
            );
            manifest(d.path(), name, &body);
        }
        let mut p = Problems::default();
        let images = load(d.path(), None, &mut p);
        assert_eq!(images.keys().collect::<Vec<_>>(), ["good"]);
        assert_eq!(images["good"].to_api("http://192.0.2.1").format, ImageFormat::Qcow2);
        let got: Vec<String> = p
            .iter()
            .map(|x| format!("{}:{}: {}", x.file.file_name().unwrap().to_str().unwrap(), x.field, x.what))
            .collect();
        let want = [
            "disguised.json:format: good.qcow2 is a qcow2 image",
            "layer.json:file: layer.qcow2: qcow2: the image has a backing file",
            "ofraw.json:checksum_of: a qcow2 image's sha256 covers the file",
            "wrongsize.json:raw_size: 4096 but good.qcow2's virtual size is 1048576",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{g} does not start with {w}");
        }
    }

    /// `arch` absent is x86_64 (manifests from before arm64 images); an architecture
    /// bootsvc does not know, or Debian's name for one, is a problem of the field.
    #[test]
    fn manifests_say_their_architecture() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("img.raw.zst"), b"0123456789").unwrap();
        let sha = "ab".repeat(32);
        for (name, arch) in [("old", ""), ("x86", r#""arch":"x86_64","#), ("arm", r#""arch":"aarch64","#)]
            .into_iter()
            .chain([("deb", r#""arch":"arm64","#), ("riscv", r#""arch":"riscv64","#)])
        {
            manifest(
                d.path(),
                name,
                &format!(
                    r#"{{"name":"{name}","file":"img.raw.zst","format":"zstd",{arch}"size":10,"sha256":"{sha}"}}"#
                ),
            );
        }
        let mut p = Problems::default();
        let images = load(d.path(), None, &mut p);
        let arches: Vec<(&str, Arch)> = images.values().map(|m| (m.name.as_str(), m.arch)).collect();
        assert_eq!(arches, [("arm", Arch::Aarch64), ("old", Arch::X86_64), ("x86", Arch::X86_64)]);
        let got: Vec<String> =
            p.iter().map(|x| format!("{}:{}", x.file.file_name().unwrap().to_str().unwrap(), x.field)).collect();
        assert_eq!(got, ["deb.json:arch", "riscv.json:arch"], "{p}");
        assert!(p.0[0].what.contains("unknown variant `arm64`, expected `x86_64` or `aarch64`"), "{p}");
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
        let images = load(d.path(), None, &mut p);
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
        assert!(!load(d.path(), None, &mut p).contains_key("far"));
        let far = p.iter().find(|x| x.file.ends_with("far.json")).unwrap();
        assert_eq!(far.field, "file");
        assert!(far.what.contains("far.raw is an absolute symlink"), "{}", far.what);
        assert_eq!(img.url, "http://192.0.2.1:8080/images/deb.raw.zst");
        assert_eq!(img.format, ImageFormat::Zstd);
        assert_eq!((img.size, img.raw_size), (Some(10), Some(4096)));
    }

    /// A vendor's checksums file and signature kept beside the manifest, as published:
    /// good (both file forms, SHA-256 and SHA-512), bad, unknown key, name missing, no keyring.
    #[test]
    fn vendor_checksums_files_beside_the_manifest() {
        use osie_testkit::gpg::Gpg;
        let g = Gpg::new();
        g.run(&["--quick-gen-key", "Vendor <vendor@example.org>", "ed25519", "sign", "never"]);
        g.run(&["--quick-gen-key", "Stranger <other@example.org>", "ed25519", "sign", "never"]);
        let keyring = Keyring::from_bytes(&g.export("vendor@example.org")).unwrap();
        let d = tempfile::tempdir().unwrap();
        let put = |name: &str, b: &[u8]| std::fs::write(d.path().join(name), b).unwrap();
        put("deb.raw.zst", b"0123456789");
        let (a, b) = ("a1".repeat(32), "b2".repeat(64));
        let gnu = format!("{a}  deb.raw.zst\n{}  other.img\n", "00".repeat(32));
        let bsd = format!("SHA512 (deb.raw.zst) = {b}\n");
        put("SHA256SUMS", gnu.as_bytes());
        put("SHA256SUMS.gpg", &g.sign(gnu.as_bytes(), "vendor@example.org", false, &[]));
        put("SHA512SUMS", bsd.as_bytes());
        put("SHA512SUMS.sign", &g.sign(bsd.as_bytes(), "vendor@example.org", true, &[]));
        put("SHA256SUMS.other", &g.sign(gnu.as_bytes(), "other@example.org", false, &[]));
        put("CHANGED", gnu.replacen("a1", "a2", 1).as_bytes());
        put("NOTHERE", format!("{a}  else.raw.zst\n").as_bytes());
        for (name, sums) in [
            ("gnu", r#""checksums_url":"SHA256SUMS","signature_url":"SHA256SUMS.gpg""#),
            ("bsd", r#""checksums_url":"SHA512SUMS","signature_url":"SHA512SUMS.sign""#),
            ("unsigned", r#""checksums_url":"SHA256SUMS""#),
            ("stranger", r#""checksums_url":"SHA256SUMS","signature_url":"SHA256SUMS.other""#),
            ("changed", r#""checksums_url":"CHANGED","signature_url":"SHA256SUMS.gpg""#),
            ("missing", r#""checksums_url":"NOTHERE""#),
            ("far", r#""checksums_url":"../SHA256SUMS""#),
            ("both", &format!(r#""checksums_url":"SHA256SUMS","sha256":"{a}""#)),
            ("neither", ""),
        ] {
            let comma = if sums.is_empty() { "" } else { "," };
            let body = format!(r#"{{"name":"{name}","file":"deb.raw.zst","format":"zstd","size":10{comma}{sums}}}"#);
            manifest(d.path(), name, &body);
        }
        let mut p = Problems::default();
        let images = load(d.path(), Some(&keyring), &mut p);
        assert_eq!(images.keys().collect::<Vec<_>>(), ["bsd", "gnu", "unsigned"]);
        let api = |n: &str| images[n].to_api("http://192.0.2.1");
        assert_eq!((api("gnu").sha256, api("gnu").digest_algo), (a.clone(), osie_api::metadata::DigestAlgo::Sha256));
        assert_eq!((api("bsd").sha256, api("bsd").digest_algo), (b.clone(), osie_api::metadata::DigestAlgo::Sha512));
        let got: Vec<String> = p
            .iter()
            .map(|x| format!("{}:{}: {}", x.file.file_name().unwrap().to_str().unwrap(), x.field, x.what))
            .collect();
        let want = [
            "both.json:checksums_url: give sha256 or checksums_url, not both",
            "changed.json:signature_url: SHA256SUMS.gpg over CHANGED: bad signature",
            "far.json:checksums_url: ",
            "missing.json:checksums_url: NOTHERE: deb.raw.zst is not among the 1 file(s)",
            "neither.json:sha256: missing",
            "stranger.json:signature_url: SHA256SUMS.other over SHA256SUMS: signed by a key not in the keyring",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{g} does not start with {w}");
        }
        // No keyring: a signed manifest is refused, an unsigned one is the operator's choice.
        let mut p = Problems::default();
        let images = load(d.path(), None, &mut p);
        assert!(!images.contains_key("gnu") && images.contains_key("unsigned"));
        assert!(p.iter().any(|x| x.file.ends_with("gnu.json") && x.what.contains("no keyring")), "{p}");
    }
}

//! Vendor checksum files (`SHA256SUMS`, `SHA512SUMS`, Fedora's `CHECKSUM`): the digest one
//! file name has in them. A pure function of the file's text.
//!
//! Both forms vendors publish are read, mixed in one file if need be:
//!
//! ```text
//! 5f0c…e3  debian-12-genericcloud-amd64.qcow2        (GNU: hash, two spaces or " *", name)
//! SHA256 (Fedora-Cloud-Base-41.qcow2) = 5f0c…e3      (BSD tag form)
//! ```
//! The algorithm is the digest's length (64 hex digits: SHA-256, 128: SHA-512); a BSD tag
//! must agree with it. Comments, blank lines and the lines of a cleartext OpenPGP wrapper are
//! skipped; a name listed twice with different digests is refused rather than guessed.
//!
//! Used by `crate::vendor_sums` (which fetches the file and checks its signature) for a
//! record's `install.image.checksums_url`; [`file_name`] is the name looked up, also checked by
//! the record's validation.

use std::fmt;

/// A checksums file or signature larger than this is refused, fetched by URL or read beside a
/// manifest (Debian's SHA512SUMS for a whole release is a few KiB).
pub(crate) const MAX_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Sha256,
    Sha512,
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algo::Sha256 => "SHA-256",
            Algo::Sha512 => "SHA-512",
        })
    }
}

impl From<Algo> for osie_api::metadata::DigestAlgo {
    fn from(a: Algo) -> Self {
        match a {
            Algo::Sha256 => osie_api::metadata::DigestAlgo::Sha256,
            Algo::Sha512 => osie_api::metadata::DigestAlgo::Sha512,
        }
    }
}

/// A digest from the file: its algorithm and lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub algo: Algo,
    pub hex: String,
}

fn algo_of(hex: &str) -> Option<Algo> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        64 => Some(Algo::Sha256),
        128 => Some(Algo::Sha512),
        _ => None,
    }
}

/// One line as (name, digest), if it is a checksum line.
fn parse_line(line: &str) -> Option<(String, Digest)> {
    let line = line.trim_end_matches('\r');
    // BSD: `SHA256 (name) = hex`.
    for (tag, algo) in [("SHA256 (", Algo::Sha256), ("SHA512 (", Algo::Sha512)] {
        if let Some(rest) = line.strip_prefix(tag) {
            let (name, hex) = rest.rsplit_once(") = ")?;
            let hex = hex.trim();
            return (algo_of(hex) == Some(algo))
                .then(|| (name.to_string(), Digest { algo, hex: hex.to_ascii_lowercase() }));
        }
    }
    // GNU: `hex  name` (text mode) or `hex *name` (binary); a leading `\` marks an escaped name.
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(l) => (true, l),
        None => (false, line),
    };
    let (hex, rest) = line.split_once(' ')?;
    let algo = algo_of(hex)?;
    let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'))?;
    let name = if escaped { name.replace("\\n", "\n").replace("\\\\", "\\") } else { name.to_string() };
    Some((name, Digest { algo, hex: hex.to_ascii_lowercase() }))
}

/// The digest `text` gives for the file `name` (a bare file name; entries written as
/// `./name` match too).
pub fn digest_for(text: &str, name: &str) -> Result<Digest, String> {
    let mut found: Option<Digest> = None;
    let mut names = 0usize;
    for (n, d) in text.lines().filter_map(parse_line) {
        names += 1;
        if n.strip_prefix("./").unwrap_or(&n) != name {
            continue;
        }
        match &found {
            Some(f) if *f != d => {
                return Err(format!("{name} is listed twice with different digests ({} and {})", f.hex, d.hex))
            }
            _ => found = Some(d),
        }
    }
    found.ok_or_else(|| match names {
        0 => "no checksum lines (neither `HASH  NAME` nor `SHA256 (NAME) = HASH`)".to_string(),
        n => format!("{name} is not among the {n} file(s) it lists"),
    })
}

/// The last path segment of `url` (no query or fragment), percent-escapes kept as written.
pub fn file_name(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next()?;
    let name = path.rsplit('/').next()?;
    (!name.is_empty() && path.contains("://") && path.matches('/').count() >= 3).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "5f0c1b6b2a0b0e6d3c1f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b";

    #[test]
    fn gnu_and_bsd_forms_sha256_and_sha512() {
        let b512 = "ab".repeat(64);
        let text = format!(
            "# comment\n\n{A}  debian-12-genericcloud-amd64.qcow2\n{A} *noble-server-cloudimg-amd64.img\r\n\
             SHA256 (Fedora-Cloud-Base-41.qcow2) = {}\nSHA512 (rocky.qcow2) = {b512}\n{b512}  ./alma.qcow2\n",
            A.to_uppercase()
        );
        let sha256 = |hex: &str| Digest { algo: Algo::Sha256, hex: hex.into() };
        let sha512 = Digest { algo: Algo::Sha512, hex: b512.clone() };
        assert_eq!(digest_for(&text, "debian-12-genericcloud-amd64.qcow2"), Ok(sha256(A)));
        assert_eq!(digest_for(&text, "noble-server-cloudimg-amd64.img"), Ok(sha256(A)));
        assert_eq!(digest_for(&text, "Fedora-Cloud-Base-41.qcow2"), Ok(sha256(A)));
        assert_eq!(digest_for(&text, "rocky.qcow2"), Ok(sha512.clone()));
        assert_eq!(digest_for(&text, "alma.qcow2"), Ok(sha512));
        let e = digest_for(&text, "other.qcow2").unwrap_err();
        assert_eq!(e, "other.qcow2 is not among the 5 file(s) it lists");
    }

    #[test]
    fn refusals() {
        assert!(digest_for("hello\n", "x").unwrap_err().starts_with("no checksum lines"));
        // A BSD tag that disagrees with the digest's length, a digest that is not hex.
        let bad = format!("SHA512 (x) = {A}\n{}  y\n", "zz".repeat(32));
        assert!(digest_for(&bad, "x").unwrap_err().starts_with("no checksum lines"));
        let twice = format!("{A}  x\n{}  x\n", "00".repeat(32));
        assert!(digest_for(&twice, "x").unwrap_err().contains("listed twice"));
        // The same line twice is not a conflict; an escaped name is unescaped.
        assert!(digest_for(&format!("{A}  x\n{A}  x\n"), "x").is_ok());
        assert!(digest_for(&format!("\\{A}  a\\\\b\n"), "a\\b").is_ok());
    }
}

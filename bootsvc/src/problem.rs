//! One thing wrong with an operator's file, said so it can be fixed without guessing:
//! `<file>: <field path>: <what is wrong>`.
//!
//! Validation collects every problem it finds (not just the first) so `bootsvc check`
//! and a rejected inventory reload can list them all at once.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// Dotted path to the field, e.g. `http.public_url` or `items[1].spec.interfaces[0].dhcp.mac`.
    /// Empty when the problem is the whole file (unreadable, not JSON…).
    pub field: String,
    pub what: String,
}

impl Problem {
    pub fn new(file: impl Into<PathBuf>, field: impl Into<String>, what: impl Into<String>) -> Problem {
        Problem { file: file.into(), field: field.into(), what: what.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.what)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.field, self.what)
        }
    }
}

/// Every problem found in one validation pass. An `Error`, so it travels through `anyhow`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    /// Collects problems about one file, with field paths under an optional prefix.
    pub fn collector<'a>(&'a mut self, file: &'a Path, prefix: &'a str) -> Collector<'a> {
        Collector { out: self, file, prefix }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl From<Vec<Problem>> for Problems {
    fn from(v: Vec<Problem>) -> Self {
        Problems(v)
    }
}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Adds problems for one file; keeps validators short (`c.add("hostname", "…")`).
pub struct Collector<'a> {
    out: &'a mut Problems,
    file: &'a Path,
    prefix: &'a str,
}

impl Collector<'_> {
    pub fn add(&mut self, field: &str, what: impl Into<String>) {
        let field = join_path(self.prefix, field);
        self.out.0.push(Problem::new(self.file, field, what));
    }

    /// `Err(why)` becomes a problem at `field`.
    pub fn check(&mut self, field: &str, r: Result<(), String>) {
        if let Err(why) = r {
            self.add(field, why);
        }
    }
}

/// `a` + `b` as a field path: `spec` + `interfaces[0]` → `spec.interfaces[0]`, `items[1]` + `[0]`
/// → `items[1][0]`.
pub fn join_path(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ if b.starts_with('[') => format!("{a}{b}"),
        _ => format!("{a}.{b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_file_field_what() {
        let p = Problem::new("/etc/osie/bootsvc.toml", "http.public_url", "must start with http://");
        assert_eq!(p.to_string(), "/etc/osie/bootsvc.toml: http.public_url: must start with http://");
        let p = Problem::new("m.json", "", "not valid JSON");
        assert_eq!(p.to_string(), "m.json: not valid JSON");
    }

    #[test]
    fn collector_prefixes_paths() {
        let mut ps = Problems::default();
        let f = PathBuf::from("hw.json");
        let mut c = ps.collector(&f, "items[2]");
        c.add("spec.interfaces[0].dhcp.mac", "duplicate");
        c.check("x", Ok(()));
        c.check("[1]", Err("bad".into()));
        assert_eq!(
            ps.to_string(),
            "hw.json: items[2].spec.interfaces[0].dhcp.mac: duplicate\nhw.json: items[2][1]: bad"
        );
    }
}

//! Reading the inventory directory: every `*.json` file holds one native machine record, or
//! Tinkerbell `Hardware` (one object, or a `List`/`HardwareList` with `items`).
//!
//! Nothing here decides whether a record is *valid* beyond its shape; [`super::validate`]
//! does that on the parsed records, with the same field paths.

use std::path::Path;
use std::sync::Arc;

use super::model::Machine;
use super::source::{Entry, Source};
use super::tinkerbell;
use crate::problem::{Problem, Problems};

/// Parse every record file in `dir`. Files that cannot be parsed become problems; the rest
/// are returned in file order.
pub fn read_dir(dir: &Path, problems: &mut Problems) -> Vec<Entry> {
    let files = match super::images::json_files(dir) {
        Ok(f) => f,
        Err(e) => {
            problems.0.push(Problem::new(dir, "", format!("cannot list the inventory directory: {e}")));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => out.extend(parse_file(&f, &text, problems)),
            Err(e) => problems.0.push(Problem::new(&f, "", format!("cannot read: {e}"))),
        }
    }
    out
}

/// The records in one file's text.
pub fn parse_file(file: &Path, text: &str, problems: &mut Problems) -> Vec<Entry> {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.0.push(Problem::new(file, "", format!("not valid JSON: {e}")));
            return Vec::new();
        }
    };
    if value.get("apiVersion").is_some() || value.get("kind").is_some() {
        return tinkerbell::parse(file, value, problems);
    }
    // Native: deserialize from the text again, for field paths and line numbers.
    match serde_path_to_error::deserialize::<_, Machine>(&mut serde_json::Deserializer::from_str(text)) {
        Ok(m) => vec![Entry { machine: Arc::new(m), source: Source::native(file) }],
        Err(e) => {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            problems.0.push(Problem::new(file, field, e.into_inner().to_string()));
            Vec::new()
        }
    }
}

/// The one record in `json` (as file `m.json`), for unit tests; panics on any problem.
#[cfg(test)]
pub(crate) fn test_entry(json: &str) -> Entry {
    let mut p = Problems::default();
    let mut e = parse_file(Path::new("m.json"), json, &mut p);
    assert!(p.is_empty() && e.len() == 1, "{p}");
    e.remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Entry>, Problems) {
        let mut p = Problems::default();
        let e = parse_file(Path::new("m.json"), text, &mut p);
        (e, p)
    }

    #[test]
    fn native_record_parses() {
        let (e, p) = parse(r#"{"hostname":"n1","macs":["52:54:00:00:00:01"],"netboot":{"allow":true}}"#);
        assert!(p.is_empty(), "{p}");
        assert_eq!(e[0].machine.hostname, "n1");
        assert!(e[0].machine.netboot.allow);
        assert_eq!(e[0].source.field("macs[0]"), "macs[0]");
    }

    #[test]
    fn native_errors_name_the_field() {
        let (_, p) = parse(r#"{"hostname":"n1","macs":["52:54:00:00:00:01","nope"]}"#);
        assert_eq!(p.0[0].field, "macs[1]", "{p}");
        let (_, p) = parse(r#"{"hostname":"n1","macs":[],"netboot":{"allow":true,"colour":1}}"#);
        assert_eq!(p.0[0].field, "netboot.colour", "{p}");
        assert!(p.0[0].what.contains("unknown field"), "{p}");
        let (_, p) = parse(r#"{"hostname":"n1","macs":[],"ip":{"address":"192.0.2.300","prefix":24}}"#);
        assert_eq!(p.0[0].field, "ip.address", "{p}");
        // `cloud_init` is the api type, read as strictly as the rest of the record.
        let (_, p) = parse(r#"{"hostname":"n1","macs":[],"cloud_init":{"user_data":"x","userdata":"y"}}"#);
        assert_eq!(p.0[0].field, "cloud_init.userdata", "{p}");
        assert!(
            p.0[0].what.contains(
                "unknown field `userdata`, expected one of `user_data`, `meta_data`, `network_config`, `vendor_data`"
            ),
            "{p}"
        );
        let (e, p) = parse(r#"{"hostname":"n1","macs":[],"cloud_init":{"user_data":"hi","vendor_data":null}}"#);
        assert!(p.is_empty(), "{p}");
        let ci = &e[0].machine.cloud_init;
        assert_eq!(
            (ci.user_data.as_deref(), ci.meta_data.as_deref(), ci.vendor_data.as_deref()),
            (Some("hi"), None, None)
        );
        let (_, p) = parse(r#"{"hostname":"n1","macs":[],"cloud_init":{"user_data":"a","user_data":"b"}}"#);
        assert!(p.0[0].what.contains("duplicate field `user_data`"), "{p}");
        let (_, p) = parse("{\"hostname\":\n");
        assert!(p.0[0].what.starts_with("not valid JSON") && p.0[0].what.contains("line 2"), "{p}");
    }
}

//! Where a machine record came from (file, list item, format, and for converted records
//! which source field each osie field came from), so that problems name the file and the
//! field as written; and [`Entry`], one record with its source, as both readers (native
//! and Tinkerbell) produce it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::model::Machine;
use crate::problem::join_path;

/// Where a machine record came from, so problems can name the file and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: PathBuf,
    /// `items[3]` for an entry of a list, else empty.
    pub item: String,
    pub format: Format,
    /// For converted records: which source field each osie field came from, as
    /// (osie field path, source field path), e.g. (`ip.prefix`, `spec.interfaces[0].dhcp.ip.netmask`);
    /// a source path that starts with `items[` is another item of the file (a Template).
    pub origins: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Native,
    Tinkerbell,
}

impl Source {
    pub fn native(file: &Path) -> Source {
        Source { file: file.to_path_buf(), item: String::new(), format: Format::Native, origins: Vec::new() }
    }

    /// The path, in the file as written, of the osie field `field` (`macs[1]`, `ip.prefix`).
    pub fn field(&self, field: &str) -> String {
        if self.format == Format::Native {
            return join_path(&self.item, field);
        }
        // The longest recorded osie prefix of `field`, with the rest of the path appended.
        let best = self
            .origins
            .iter()
            .filter(|(osie, _)| {
                field == osie || field.strip_prefix(osie.as_str()).is_some_and(|r| r.starts_with(['.', '[']))
            })
            .max_by_key(|(osie, _)| osie.len());
        match best {
            // From another item of the list (a Template): its path is the file's own.
            Some((osie, src)) if src.starts_with("items[") => format!("{src}{}", &field[osie.len()..]),
            Some((osie, src)) => join_path(&self.item, &format!("{src}{}", &field[osie.len()..])),
            None => join_path(&self.item, &format!("(osie field {field})")),
        }
    }

    /// `file` or `file items[2]`, for logs.
    pub fn describe(&self) -> String {
        if self.item.is_empty() {
            self.file.display().to_string()
        } else {
            format!("{} {}", self.file.display(), self.item)
        }
    }
}

/// One machine as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub machine: Arc<Machine>,
    pub source: Source,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converted_fields_map_back_to_their_source() {
        let s = Source {
            file: "hw.json".into(),
            item: "items[1]".into(),
            format: Format::Tinkerbell,
            origins: vec![
                ("ip".into(), "spec.interfaces[0].dhcp.ip".into()),
                ("ip.prefix".into(), "spec.interfaces[0].dhcp.ip.netmask".into()),
                ("ssh_keys".into(), "spec.metadata.instance.ssh_keys".into()),
            ],
        };
        assert_eq!(s.field("ip.prefix"), "items[1].spec.interfaces[0].dhcp.ip.netmask");
        assert_eq!(s.field("ip.gateway"), "items[1].spec.interfaces[0].dhcp.ip.gateway");
        assert_eq!(s.field("ssh_keys[2]"), "items[1].spec.metadata.instance.ssh_keys[2]");
        assert_eq!(s.field("hostname"), "items[1].(osie field hostname)");
        assert_eq!(s.field("ipx"), "items[1].(osie field ipx)");
    }
}

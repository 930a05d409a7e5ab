//! The Go-template expressions of Tinkerbell `Template`s, resolved from the machine's
//! `Hardware` and its `Workflow`'s `hardwareMap` (pure): what Tinkerbell's own examples use,
//! and nothing else. Anything more (`if`, `range`, other functions) is refused with the
//! expression quoted, never passed through or left empty.
//!
//! | expression | value |
//! |---|---|
//! | `{{.device_1}}` (any `hardwareMap` key) | the map's value |
//! | `{{ .Hardware.Disks }}` | the Hardware's `spec.disks[].device`, printed as Go does (`[/dev/sda /dev/sdb]`) |
//! | `{{ index .Hardware.Disks 0 }}` | one of them |
//! | `{{ formatPartition ( index .Hardware.Disks 0 ) 1 }}` | `/dev/sda1`, `/dev/nvme0n1p1` |
//! | `{{/* comment */}}`, `{{-` / `-}}` | removed; the markers trim the whitespace beside them |

use std::collections::BTreeMap;

/// What the expressions can name.
#[derive(Debug, Clone, Default)]
pub struct Data {
    pub disks: Vec<String>,
    /// The Workflow's `hardwareMap`.
    pub map: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Str(String),
    Int(i64),
    List(Vec<String>),
}

impl Value {
    fn print(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::List(v) => format!("[{}]", v.join(" ")),
        }
    }
}

/// `text` with every `{{ … }}` replaced by its value, or the first expression that cannot be
/// resolved, quoted, with the reason.
pub fn render(text: &str, data: &Data) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let mut before = &rest[..open];
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(format!("an unclosed {{{{ in {:?}", excerpt(&rest[open..])));
        };
        let mut inner = &after[..close];
        let mut next = &after[close + 2..];
        let quoted = format!("{{{{{inner}}}}}");
        if let Some(i) = inner.strip_prefix("- ").or_else(|| inner.strip_prefix("-\t").or(inner.strip_prefix("-\n"))) {
            before = before.trim_end();
            inner = i;
        }
        if let Some(i) = inner.strip_suffix(" -").or_else(|| inner.strip_suffix("\t-").or(inner.strip_suffix("\n-"))) {
            next = next.trim_start();
            inner = i;
        }
        out.push_str(before);
        let expr = inner.trim();
        if !(expr.starts_with("/*") && expr.ends_with("*/")) {
            let v = eval(expr, data).map_err(|e| format!("{quoted}: {e}"))?;
            out.push_str(&v.print());
        }
        rest = next;
    }
    out.push_str(rest);
    Ok(out)
}

fn excerpt(s: &str) -> String {
    s.chars().take(40).collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Field(String),
    Ident(String),
    Int(i64),
    Str(String),
}

fn tokens(expr: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let b: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let word_end = |mut j: usize| {
            while j < b.len() && !b[j].is_whitespace() && b[j] != '(' && b[j] != ')' {
                j += 1;
            }
            j
        };
        match c {
            _ if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("an unclosed string".into()),
                        Some('"') => break,
                        Some('\\') => {
                            match b.get(i + 1) {
                                Some('n') => s.push('\n'),
                                Some(c) => s.push(*c),
                                None => return Err("an unclosed string".into()),
                            }
                            i += 1;
                        }
                        Some(c) => s.push(*c),
                    }
                    i += 1;
                }
                out.push(Tok::Str(s));
                i += 1;
            }
            '.' => {
                let j = word_end(i);
                out.push(Tok::Field(b[i..j].iter().collect()));
                i = j;
            }
            _ if c.is_ascii_digit() || c == '-' => {
                let j = word_end(i);
                let w: String = b[i..j].iter().collect();
                out.push(Tok::Int(w.parse().map_err(|_| format!("{w:?} is not a number"))?));
                i = j;
            }
            _ if c.is_ascii_alphabetic() || c == '$' => {
                let j = word_end(i);
                out.push(Tok::Ident(b[i..j].iter().collect()));
                i = j;
            }
            _ => return Err(format!("{c:?} is not understood here")),
        }
    }
    Ok(out)
}

const KNOWN: &str = "it resolves .<hardwareMap key>, .Hardware.Disks, index and formatPartition";

fn eval(expr: &str, data: &Data) -> Result<Value, String> {
    let toks = tokens(expr)?;
    let mut pos = 0;
    let v = command(&toks, &mut pos, data)?;
    if pos != toks.len() {
        return Err(format!("unexpected {:?} ({KNOWN})", toks[pos]));
    }
    Ok(v)
}

/// A function call with its arguments, or one operand.
fn command(t: &[Tok], pos: &mut usize, data: &Data) -> Result<Value, String> {
    match t.get(*pos) {
        Some(Tok::Ident(name)) => {
            if !["index", "formatPartition"].contains(&name.as_str()) {
                return Err(format!("{name} is not a function osie resolves ({KNOWN})"));
            }
            *pos += 1;
            let mut args = Vec::new();
            while *pos < t.len() && t[*pos] != Tok::Close {
                args.push(operand(t, pos, data)?);
            }
            call(name, &args)
        }
        Some(_) => operand(t, pos, data),
        None => Err("an empty expression".into()),
    }
}

fn operand(t: &[Tok], pos: &mut usize, data: &Data) -> Result<Value, String> {
    let tok = t.get(*pos).cloned().ok_or("an argument is missing")?;
    *pos += 1;
    match tok {
        Tok::Int(i) => Ok(Value::Int(i)),
        Tok::Str(s) => Ok(Value::Str(s)),
        Tok::Field(f) => field(&f, data),
        Tok::Open => {
            let v = command(t, pos, data)?;
            if t.get(*pos) != Some(&Tok::Close) {
                return Err("an unclosed (".into());
            }
            *pos += 1;
            Ok(v)
        }
        Tok::Close => Err("an unexpected )".into()),
        Tok::Ident(name) => Err(format!("{name} is not an argument osie resolves ({KNOWN})")),
    }
}

fn field(f: &str, data: &Data) -> Result<Value, String> {
    if f == ".Hardware.Disks" {
        return Ok(Value::List(data.disks.clone()));
    }
    let key = f.trim_start_matches('.');
    if !key.contains('.') {
        if let Some(v) = data.map.get(key) {
            return Ok(Value::Str(v.clone()));
        }
        let keys: Vec<&str> = data.map.keys().map(String::as_str).collect();
        return Err(format!(
            "{f}: the Workflow's hardwareMap has no {key:?} (it has: {})",
            if keys.is_empty() { "nothing".into() } else { keys.join(", ") }
        ));
    }
    Err(format!("{f} is not a value osie resolves ({KNOWN})"))
}

fn call(name: &str, args: &[Value]) -> Result<Value, String> {
    match (name, args) {
        ("index", [Value::List(v), Value::Int(i)]) => {
            usize::try_from(*i).ok().and_then(|i| v.get(i)).map(|s| Value::Str(s.clone())).ok_or_else(|| {
                format!("index {i}: the list has {} entries ({})", v.len(), Value::List(v.clone()).print())
            })
        }
        ("index", _) => Err("index takes a list and a number".into()),
        ("formatPartition", [Value::Str(dev), Value::Int(n)]) => Ok(Value::Str(format_partition(dev, *n))),
        ("formatPartition", _) => Err("formatPartition takes a device and a number".into()),
        (other, _) => Err(format!("{other} is not a function osie resolves ({KNOWN})")),
    }
}

/// Tinkerbell's `formatPartition`: the device of partition `n` of disk `dev`.
pub fn format_partition(dev: &str, n: i64) -> String {
    if dev.starts_with("/dev/nvme") || dev.starts_with("/dev/mmcblk") || dev.starts_with("/dev/loop") {
        format!("{dev}p{n}")
    } else if ["/dev/sd", "/dev/vd", "/dev/xvd", "/dev/hd"].iter().any(|p| dev.starts_with(p)) {
        format!("{dev}{n}")
    } else {
        dev.to_string()
    }
}

/// The partition number of `part` on `disk` (`/dev/sda1` on `/dev/sda` → 1, `/dev/nvme0n1p2`
/// → 2), or `None` when it is not one of its partitions.
pub fn partition_of(disk: &str, part: &str) -> Option<u32> {
    let rest = part.strip_prefix(disk)?;
    // A disk whose name ends in a digit separates its partitions with `p` (`nvme0n1p2`):
    // `nvme0n12` is another namespace, not partition 2.
    let digits = if disk.ends_with(|c: char| c.is_ascii_digit()) { rest.strip_prefix('p')? } else { rest };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Data {
        Data {
            disks: vec!["/dev/sda".into(), "/dev/nvme0n1".into()],
            map: [("device_1".to_string(), "52:54:00:00:00:01".to_string())].into(),
        }
    }

    #[test]
    fn resolves_what_the_examples_use() {
        let t = "worker: \"{{.device_1}}\"\nDEST_DISK: {{ index .Hardware.Disks 0 }}\nB: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}\nN: {{formatPartition (index .Hardware.Disks 1) 15}}\nall: {{ .Hardware.Disks }}{{/* a comment */}}\n";
        assert_eq!(
            render(t, &data()).unwrap(),
            "worker: \"52:54:00:00:00:01\"\nDEST_DISK: /dev/sda\nB: /dev/sda1\nN: /dev/nvme0n1p15\nall: [/dev/sda /dev/nvme0n1]\n"
        );
        assert_eq!(render("a  {{- .device_1 -}}  b", &data()).unwrap(), "a52:54:00:00:00:01b");
        assert_eq!(render("no expressions", &data()).unwrap(), "no expressions");
    }

    #[test]
    fn anything_else_is_refused_quoted() {
        for (t, want) in [
            ("{{ index .Hardware.Disks 2 }}", "index 2: the list has 2 entries"),
            ("{{ .device_2 }}", "hardwareMap has no \"device_2\" (it has: device_1)"),
            ("{{- if regexMatch \"a(arch|rm)\" (lower .x) }}", "if is not a function osie resolves"),
            ("{{ .Hardware.Interfaces }}", ".Hardware.Interfaces is not a value osie resolves"),
            ("{{ index .Hardware.Disks }}", "index takes a list and a number"),
            ("x {{ .device_1 ", "an unclosed {{"),
            ("{{ ( index .Hardware.Disks 0 }}", "an unclosed ("),
        ] {
            let e = render(t, &data()).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
        assert!(render("{{ .Hardware.Interfaces }}", &data()).unwrap_err().starts_with("{{ .Hardware.Interfaces }}: "));
    }

    #[test]
    fn partitions_of_disks() {
        assert_eq!(partition_of("/dev/sda", "/dev/sda1"), Some(1));
        assert_eq!(partition_of("/dev/nvme0n1", "/dev/nvme0n1p12"), Some(12));
        assert_eq!(partition_of("/dev/vda", "/dev/vda"), None);
        assert_eq!(partition_of("/dev/sda", "/dev/sdb1"), None);
        assert_eq!(partition_of("/dev/sd", "/dev/sda1"), None);
        assert_eq!(partition_of("/dev/nvme0n1", "/dev/nvme0n12"), None);
        assert_eq!(format_partition("/dev/vda", 1), "/dev/vda1");
        assert_eq!(format_partition("/dev/disk/by-id/x", 1), "/dev/disk/by-id/x");
    }
}

//! `install.steps`: the operator's own steps, run by the installer in order once the image is
//! written and the cloud-init seed is in place: `write_file` (a file in the installed
//! system) and `run` (a command chrooted into it).
//!
//! The step types refuse unknown fields, unlike the rest of the metadata: an installer that
//! does not know a field of a step must not run the step without it (the install fails with
//! the field named instead). [`Step::check`] holds the rules bootsvc's `check` and the
//! installer both apply, each problem with its field.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One step: exactly one of `write_file` and `run`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Shown in the step's event; default: what the step does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_file: Option<WriteFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Run>,
    /// A failure is reported in the step's event and the install goes on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_error: bool,
    /// Work in the filesystem of this partition (its number on the target disk) instead of
    /// the root filesystem the installer finds itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
}

/// A file written into the installed system.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    /// Absolute path in the installed system; no `..`; resolved beneath its root (an
    /// absolute symlink met on the way is refused).
    pub path: String,
    /// The file's text; or `content_base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
    /// Default `0644`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// `uid:gid` numbers, or `user:group` names from the installed system's `/etc/passwd`
    /// and `/etc/group`; default `0:0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Mode of the directories created for the file; default `0755`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir_mode: Option<Mode>,
}

/// A command run chrooted into the installed system (`/proc`, `/sys`, `/dev`, `/run` bound).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// The program (a path in the installed system, or a name looked up in its `PATH`) and
    /// its arguments; no shell unless it names one (`["/bin/sh", "-c", "…"]`).
    pub command: Vec<String>,
    /// Killed (with everything it started) after this long; the step fails.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Environment, on top of `PATH`, `HOME=/root`, `LANG=C.UTF-8`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

fn default_timeout() -> u64 {
    Run::DEFAULT_TIMEOUT_SECS
}

impl Run {
    pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
    pub const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
}

/// A file mode, written as octal digits in a string (`"0644"`), as `chmod` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        let t = s.trim();
        let digits = t.strip_prefix("0o").unwrap_or(t);
        match u32::from_str_radix(digits, 8) {
            Ok(m) if !digits.is_empty() && m <= 0o7777 => Ok(Mode(m)),
            _ => Err(format!("{s:?} is not a file mode: octal digits up to 7777, e.g. \"0644\"")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        let s = String::deserialize(d)?;
        Mode::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    WriteFile(&'a WriteFile),
    Run(&'a Run),
}

impl Step {
    /// The step's action, or why it has not exactly one.
    pub fn action(&self) -> Result<Action<'_>, String> {
        match (&self.write_file, &self.run) {
            (Some(w), None) => Ok(Action::WriteFile(w)),
            (None, Some(r)) => Ok(Action::Run(r)),
            (Some(_), Some(_)) => Err("give write_file or run, not both".into()),
            (None, None) => Err("give write_file or run".into()),
        }
    }

    /// `name`, else what the step does (`write_file /etc/motd`, `run /bin/sh -c …`).
    pub fn describe(&self) -> String {
        if let Some(n) = self.name.as_deref().filter(|n| !n.trim().is_empty()) {
            return n.to_string();
        }
        match self.action() {
            Ok(Action::WriteFile(w)) => format!("write_file {}", w.path),
            Ok(Action::Run(r)) => {
                let mut s = format!("run {}", r.command.join(" "));
                if s.chars().count() > 80 {
                    s = s.chars().take(77).collect::<String>() + "…";
                }
                s
            }
            Err(_) => "an invalid step".into(),
        }
    }

    /// Every problem of the step, as (field relative to the step, what); empty when it is
    /// good. The same rules in bootsvc's `check` and in the installer.
    pub fn check(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut add = |f: &str, w: String| out.push((f.to_string(), w));
        if self.name.as_deref().is_some_and(|n| n.contains('\0') || n.chars().count() > 200) {
            add("name", "at most 200 characters, no NUL".into());
        }
        if let Some(p) = self.partition {
            if !(1..=128).contains(&p) {
                add("partition", format!("{p} is not a partition number (1 to 128)"));
            }
        }
        match self.action() {
            Err(e) => add("", e),
            Ok(Action::WriteFile(w)) => {
                if let Err(e) = check_path(&w.path) {
                    add("write_file.path", e);
                }
                match (&w.content, &w.content_base64) {
                    (Some(_), Some(_)) => {
                        add("write_file.content_base64", "give content or content_base64, not both".into())
                    }
                    (None, None) => add("write_file.content", "missing: give content or content_base64".into()),
                    (None, Some(_)) => {
                        if let Err(e) = w.bytes() {
                            add("write_file.content_base64", e);
                        }
                    }
                    (Some(_), None) => {}
                }
                if let Some(o) = &w.owner {
                    if let Err(e) = Owner::parse(o) {
                        add("write_file.owner", e);
                    }
                }
            }
            Ok(Action::Run(r)) => {
                match r.command.first() {
                    None => add("run.command", "is empty: give the program and its arguments".into()),
                    Some(p) if p.trim().is_empty() => add("run.command[0]", "the program is an empty string".into()),
                    Some(_) => {}
                }
                if let Some(i) = r.command.iter().position(|a| a.contains('\0')) {
                    add(&format!("run.command[{i}]"), "contains a NUL byte".into());
                }
                if !(1..=Run::MAX_TIMEOUT_SECS).contains(&r.timeout_secs) {
                    add("run.timeout_secs", format!("{}: 1 to {} seconds", r.timeout_secs, Run::MAX_TIMEOUT_SECS));
                }
                for (k, v) in &r.env {
                    let name_ok = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !name_ok {
                        add(&format!("run.env[{k:?}]"), format!("{k:?} is not a variable name (letters, digits, _)"));
                    } else if v.contains('\0') {
                        add(&format!("run.env[{k:?}]"), "contains a NUL byte".into());
                    }
                }
            }
        }
        out
    }
}

impl WriteFile {
    /// The file's bytes (`content`, or `content_base64` decoded).
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match (&self.content, &self.content_base64) {
            (Some(c), _) => Ok(c.as_bytes().to_vec()),
            (None, Some(b)) => {
                let compact: String = b.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact.as_bytes())
                    .map_err(|e| format!("is not base64: {e}"))
            }
            (None, None) => Ok(Vec::new()),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or(Mode(0o644))
    }

    pub fn dir_mode(&self) -> Mode {
        self.dir_mode.unwrap_or(Mode(0o755))
    }
}

/// The path's components beneath the root (`/etc/motd` → `["etc", "motd"]`), or why it is
/// refused: not absolute, `..`, NUL, or the root itself.
pub fn check_path(path: &str) -> Result<Vec<&str>, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(format!("{path:?} has a `..` component: paths stay beneath the installed root"));
    }
    if parts.is_empty() {
        return Err(format!("{path:?} names the root directory, not a file"));
    }
    Ok(parts)
}

/// A file's owner as given: numbers, or names to look up in the installed system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Num(u32),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub user: Id,
    pub group: Id,
}

impl Owner {
    /// `uid:gid`, `user:group`, or `user` alone (group 0 for a number, the user's own group
    /// for a name is not guessed: give it).
    pub fn parse(s: &str) -> Result<Owner, String> {
        let id = |p: &str| -> Result<Id, String> {
            if p.is_empty() {
                return Err(format!("{s:?}: an empty user or group"));
            }
            if let Ok(n) = p.parse::<u32>() {
                return Ok(Id::Num(n));
            }
            let ok = p.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                && !p.starts_with('-')
                && p.len() <= 32;
            if ok {
                Ok(Id::Name(p.to_string()))
            } else {
                Err(format!("{s:?} is not user:group (numbers, or names of letters, digits, ._-)"))
            }
        };
        match s.split_once(':') {
            Some((u, g)) => Ok(Owner { user: id(u)?, group: id(g)? }),
            None => Err(format!("{s:?}: give user:group (\"0:0\", \"root:root\")")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(json: &str) -> Step {
        serde_json::from_str(json).unwrap()
    }

    fn fields(json: &str) -> Vec<String> {
        step(json).check().into_iter().map(|(f, w)| format!("{f}: {w}")).collect()
    }

    #[test]
    fn good_steps_parse_and_pass() {
        let s = step(
            r#"{"write_file":{"path":"/etc/motd","content":"hi\n","mode":"0600","owner":"root:adm","dir_mode":"0700"}}"#,
        );
        assert!(s.check().is_empty(), "{:?}", s.check());
        let w = s.write_file.as_ref().unwrap();
        assert_eq!((w.mode(), w.dir_mode()), (Mode(0o600), Mode(0o700)));
        assert_eq!(s.describe(), "write_file /etc/motd");
        let r = step(
            r#"{"name":"hello","run":{"command":["/bin/sh","-c","echo hi"],"env":{"A_1":"x"}},"continue_on_error":true}"#,
        );
        assert!(r.check().is_empty(), "{:?}", r.check());
        assert_eq!(r.run.as_ref().unwrap().timeout_secs, Run::DEFAULT_TIMEOUT_SECS);
        assert_eq!(r.describe(), "hello");
        let b = step(r#"{"write_file":{"path":"/x","content_base64":"aGVs\nbG8="}}"#);
        assert_eq!(b.write_file.unwrap().bytes().unwrap(), b"hello");
        // Round trip: what bootsvc sends is what the installer reads.
        let again: Step = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
        assert!(serde_json::to_string(&s).unwrap().contains(r#""mode":"0600""#));
    }

    #[test]
    fn unknown_fields_and_bad_modes_are_refused_when_parsed() {
        let e = serde_json::from_str::<Step>(r#"{"run":{"command":["x"],"chroot":false}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `chroot`"), "{e}");
        let e = serde_json::from_str::<Step>(r#"{"write_file":{"path":"/x","content":"","mode":"0999"}}"#).unwrap_err();
        assert!(e.to_string().contains("is not a file mode"), "{e}");
        let e = serde_json::from_str::<Step>(r#"{"write_file":{"path":"/x","content":"","mode":420}}"#).unwrap_err();
        assert!(e.to_string().contains("expected a string"), "{e}");
        assert_eq!(Mode::parse("755"), Ok(Mode(0o755)));
        assert_eq!(Mode::parse("0o4755"), Ok(Mode(0o4755)));
        assert!(Mode::parse("").is_err() && Mode::parse("17777").is_err());
    }

    #[test]
    fn every_problem_names_its_field() {
        assert_eq!(fields(r#"{}"#), [": give write_file or run"]);
        assert_eq!(
            fields(r#"{"write_file":{"path":"/a","content":""},"run":{"command":["x"]}}"#),
            [": give write_file or run, not both"]
        );
        assert_eq!(
            fields(
                r#"{"partition":0,"write_file":{"path":"etc/x","content":"a","content_base64":"YQ==","owner":"root"}}"#
            ),
            [
                "partition: 0 is not a partition number (1 to 128)",
                "write_file.path: \"etc/x\" is not an absolute path",
                "write_file.content_base64: give content or content_base64, not both",
                "write_file.owner: \"root\": give user:group (\"0:0\", \"root:root\")",
            ]
        );
        assert_eq!(
            fields(r#"{"write_file":{"path":"/x"}}"#),
            ["write_file.content: missing: give content or content_base64"]
        );
        assert_eq!(
            fields(r#"{"write_file":{"path":"/x","content_base64":"!!"}}"#)[0].split(':').next(),
            Some("write_file.content_base64")
        );
        assert_eq!(
            fields(r#"{"run":{"command":[],"timeout_secs":0,"env":{"1A":"x","B":"a\u0000"}}}"#),
            [
                "run.command: is empty: give the program and its arguments",
                "run.timeout_secs: 0: 1 to 86400 seconds",
                "run.env[\"1A\"]: \"1A\" is not a variable name (letters, digits, _)",
                "run.env[\"B\"]: contains a NUL byte",
            ]
        );
    }

    #[test]
    fn paths_stay_beneath_the_root() {
        assert_eq!(check_path("/etc//./motd"), Ok(vec!["etc", "motd"]));
        for bad in ["/etc/../../x", "/..", "etc/motd", "/", "/./", "", "/a\0b"] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_path("/etc/..d/x").is_ok(), "only a whole `..` component is refused");
    }

    #[test]
    fn owners() {
        assert_eq!(Owner::parse("0:0"), Ok(Owner { user: Id::Num(0), group: Id::Num(0) }));
        assert_eq!(
            Owner::parse("www-data:adm"),
            Ok(Owner { user: Id::Name("www-data".into()), group: Id::Name("adm".into()) })
        );
        for bad in [":0", "0:", "a b:c", "-x:y", "root"] {
            assert!(Owner::parse(bad).is_err(), "{bad:?}");
        }
    }
}

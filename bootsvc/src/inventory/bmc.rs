//! A machine's BMC as its record names it (`bmc`: protocol, address, credentials file, TLS
//! and boot options), the credentials file, and the checks on both. The reference is
//! `bootsvc/docs/power.md`; `crate::power` drives the BMC with them.
//!
//! The credentials live in a file of their own, never in the record: records are listed by
//! the admin API and copied around, a password must not be. Nothing here puts a username or
//! password into an error, a log line or a `Debug` output.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Default per-request timeout of BMC calls, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// IPMI's RMCP+ port.
pub const IPMI_PORT: u16 = 623;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bmc {
    pub protocol: Protocol,
    /// Redfish: `https://host[:port]`; IPMI: `host[:port]`.
    pub address: String,
    /// Redfish: the ComputerSystem's path (`/redfish/v1/Systems/1`). Absent: the BMC's only
    /// system (an error naming them when it has several).
    #[serde(default)]
    pub system: Option<String>,
    /// Absolute path of a JSON file `{"username": …, "password": …}`, readable by bootsvc's
    /// user and by no one else (see [`Credentials::read`]).
    pub credentials: PathBuf,
    /// Redfish: a PEM file of the CA(s) the BMC's certificate must chain to. Absent: the
    /// system's public roots (a BMC's self-signed certificate then fails, as it should).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Redfish: skip certificate verification (and allow `http://`). Only on a network where
    /// no one can sit between bootsvc and the BMC.
    #[serde(default)]
    pub insecure: bool,
    /// Firmware mode of the one-time network boot.
    #[serde(default)]
    pub boot_mode: BootMode,
    /// What the one-time network boot boots: PXE, or (UEFI only, Redfish only) HTTP boot.
    #[serde(default)]
    pub boot_target: BootTarget,
    /// Per-request timeout (1 to 120 s).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Redfish,
    Ipmi,
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Redfish => "redfish",
            Protocol::Ipmi => "ipmi",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    #[default]
    Uefi,
    Legacy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootTarget {
    #[default]
    Pxe,
    UefiHttp,
}

/// A Redfish address taken apart: `https://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedfishUrl {
    pub tls: bool,
    /// As written (`[2001:db8::1]` keeps its brackets).
    pub host: String,
    pub port: u16,
}

impl RedfishUrl {
    /// The base URL, without a trailing slash: `https://192.0.2.5:8443`.
    pub fn base(&self) -> String {
        format!("{}://{}:{}", if self.tls { "https" } else { "http" }, self.host, self.port)
    }
}

/// Parse a Redfish address. No path (that is `system`), no `user@` (that is the credentials
/// file: a password in a URL ends up in logs).
pub fn redfish_url(a: &str) -> Result<RedfishUrl, String> {
    let (tls, rest) = if let Some(r) = a.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = a.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("{a:?}: a Redfish address is https://host[:port]"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(format!(
            "{}: no user in the address: the credentials go in the credentials file",
            a.split('@').next_back().unwrap_or_default()
        ));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!("{a:?}: no path in the address (the system's path goes in bmc.system)"));
    }
    let (host, port) = host_port(rest, if tls { 443 } else { 80 }).map_err(|e| format!("{a:?}: {e}"))?;
    Ok(RedfishUrl { tls, host, port })
}

/// Parse `host[:port]` (IPv6 in brackets), with `default` when no port is given.
pub fn host_port(s: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or("unclosed '[' around an IPv6 address")?;
        h.parse::<std::net::Ipv6Addr>().map_err(|_| format!("{h:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("after ']' only :port")?),
        };
        (format!("[{h}]"), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    let plain = host.trim_start_matches('[').trim_end_matches(']');
    let host_ok = plain.parse::<std::net::IpAddr>().is_ok() || crate::checks::hostname(plain).is_ok();
    if !host_ok {
        return Err(format!("{host:?} is not an IP address or host name"));
    }
    let port = match port {
        None => default,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("{p:?} is not a port (1 to 65535)")),
        },
    };
    Ok((host, port))
}

/// The BMC's login. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<hidden>").finish()
    }
}

impl Credentials {
    /// Read and check a credentials file: a regular file, not readable by others (mode
    /// `0600` or `0640`), a JSON object with a non-empty `username` and `password`. The
    /// error never quotes the file's contents (a parser's message would: "invalid type:
    /// string \"hunter2\"").
    pub fn read(path: &Path) -> Result<Credentials, String> {
        if !path.is_absolute() {
            return Err(format!("{}: must be an absolute path", path.display()));
        }
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: not a regular file", path.display()));
        }
        if meta.mode() & 0o007 != 0 {
            return Err(format!(
                "{}: readable or writable by others (mode {:04o}): chmod o-rwx, owned by bootsvc's user",
                path.display(),
                meta.mode() & 0o7777
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Credentials::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The file's text. Errors say where and what kind of mistake, never what was there.
    pub fn parse(text: &str) -> Result<Credentials, String> {
        const SHAPE: &str = r#"a JSON object {"username": "…", "password": "…"} (nothing else)"#;
        let c: Credentials = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => format!("must be {SHAPE}"),
            _ => format!("not valid JSON (line {}, column {}): must be {SHAPE}", e.line(), e.column()),
        })?;
        if c.username.is_empty() || c.password.is_empty() {
            return Err("username and password must not be empty".into());
        }
        if c.username.contains(['\0', '\n', '\r']) || c.password.contains(['\0', '\n', '\r']) {
            return Err("username and password must not contain NUL or line breaks".into());
        }
        Ok(c)
    }
}

/// Problems of a record's `bmc`, as (field under `bmc`, what). `served` are the directories
/// bootsvc serves to anyone on the provisioning network: credentials there would be a
/// download away.
pub fn check(b: &Bmc, cfg: &Config) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match b.protocol {
        Protocol::Redfish => match redfish_url(&b.address) {
            Ok(u) if !u.tls && !b.insecure => out.push((
                "address",
                format!("{}: plain http sends the password in the clear: use https (or set insecure: true)", b.address),
            )),
            Ok(_) => {}
            Err(e) => out.push(("address", e)),
        },
        Protocol::Ipmi => {
            if let Err(e) = host_port(&b.address, IPMI_PORT) {
                out.push(("address", format!("{:?}: {e} (an IPMI address is host[:port])", b.address)));
            }
            for (set, field) in
                [(b.system.is_some(), "system"), (b.ca_file.is_some(), "ca_file"), (b.insecure, "insecure")]
            {
                if set {
                    out.push((field, "only for redfish".into()));
                }
            }
            if b.boot_target == BootTarget::UefiHttp {
                out.push(("boot_target", "uefi_http is Redfish only (IPMI boots the network with PXE)".into()));
            }
        }
    }
    if let Some(s) = &b.system {
        let ok = s.starts_with("/redfish/v1/Systems/")
            && s.len() > "/redfish/v1/Systems/".len()
            && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"/._-~".contains(&c))
            && !s.contains("..");
        if !ok {
            out.push(("system", format!("{s:?} is not a system path: /redfish/v1/Systems/<id>")));
        }
    }
    if b.boot_target == BootTarget::UefiHttp && b.boot_mode == BootMode::Legacy {
        out.push(("boot_target", "uefi_http needs boot_mode uefi".into()));
    }
    if !(1..=120).contains(&b.timeout_secs) {
        out.push(("timeout_secs", format!("{} is out of range: 1 to 120", b.timeout_secs)));
    }
    if let Some(served) = served_by(&b.credentials, cfg) {
        out.push(("credentials", format!("{} is inside {served}, which bootsvc serves or reads as records: keep it elsewhere (e.g. /etc/osie/bmc/)", b.credentials.display())));
    } else if let Err(e) = Credentials::read(&b.credentials) {
        out.push(("credentials", e));
    }
    if let Some(ca) = &b.ca_file {
        if b.insecure {
            out.push(("ca_file", "give ca_file or insecure, not both".into()));
        }
        match std::fs::read_to_string(ca) {
            Ok(t) if t.contains("-----BEGIN CERTIFICATE-----") => {}
            Ok(_) => out.push(("ca_file", format!("{}: no PEM certificate in it", ca.display()))),
            Err(e) => out.push(("ca_file", format!("{}: {e}", ca.display()))),
        }
    }
    out
}

/// The served or record directory `p` is inside, if any (named by its config field).
fn served_by(p: &Path, cfg: &Config) -> Option<&'static str> {
    let canon = |d: &Path| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf());
    let file = p.parent().map(canon).unwrap_or_default();
    let inventory = cfg.inventory.as_ref().map(|i| (&i.dir, "inventory.dir"));
    [
        (&cfg.artifacts.dir, "artifacts.dir"),
        (&cfg.artifacts.images_dir, "artifacts.images_dir"),
        (&cfg.tftp.root, "tftp.root"),
    ]
    .into_iter()
    .chain(inventory)
    .find(|(d, _)| file.starts_with(canon(d)))
    .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn redfish_addresses() {
        let u = redfish_url("https://192.0.2.5").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.base()),
            (true, "192.0.2.5", 443, "https://192.0.2.5:443".into())
        );
        let u = redfish_url("https://bmc-7.example:8443/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("bmc-7.example", 8443));
        let u = redfish_url("http://[2001:db8::5]:8000").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "[2001:db8::5]", 8000));
        for bad in [
            "192.0.2.5",
            "ftp://192.0.2.5",
            "https://192.0.2.5/redfish/v1",
            "https://192.0.2.5:0",
            "https://192.0.2.5:99999",
            "https://bad_host",
            "https://[zz]:1",
        ] {
            assert!(redfish_url(bad).is_err(), "{bad}");
        }
        let e = redfish_url("https://admin:hunter2@192.0.2.5").unwrap_err();
        assert!(!e.contains("hunter2") && e.contains("credentials file"), "{e}");
    }

    #[test]
    fn ipmi_addresses() {
        assert_eq!(host_port("192.0.2.7", IPMI_PORT).unwrap(), ("192.0.2.7".into(), 623));
        assert_eq!(host_port("192.0.2.7:6230", IPMI_PORT).unwrap(), ("192.0.2.7".into(), 6230));
        assert!(host_port("192.0.2.7:x", IPMI_PORT).is_err());
        assert!(host_port("", IPMI_PORT).is_err());
    }

    #[test]
    fn credentials_errors_never_show_the_secret() {
        let c = Credentials::parse(r#"{"username":"admin","password":"hunter2"}"#).unwrap();
        assert_eq!(c.username, "admin");
        assert!(!format!("{c:?}").contains("hunter2"));
        for bad in [
            r#""hunter2""#,
            r#"{"username":"admin","password":["hunter2"]}"#,
            r#"{"username":"admin","passwd":"hunter2"}"#,
            r#"{"username":"admin","password":"hunter2""#,
            r#"{"username":"admin","password":"hunter2\n"}"#,
            "admin:hunter2",
        ] {
            let e = Credentials::parse(bad).unwrap_err();
            assert!(!e.contains("hunter2") && !e.contains("admin"), "{bad} -> {e}");
        }
        assert!(Credentials::parse(r#"{"username":"","password":"x"}"#).is_err());
    }

    #[test]
    fn credentials_file_rules() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("bmc.json");
        std::fs::write(&f, r#"{"username":"admin","password":"hunter2"}"#).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credentials::read(&f).unwrap_err();
        assert!(e.contains("mode 0644") && !e.contains("hunter2"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(Credentials::read(&f).unwrap().password, "hunter2");
        assert!(Credentials::read(Path::new("bmc.json")).unwrap_err().contains("absolute"));
        assert!(Credentials::read(d.path()).unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn record_checks() {
        let d = tempfile::tempdir().unwrap();
        let creds = d.path().join("c.json");
        std::fs::write(&creds, r#"{"username":"admin","password":"hunter2"}"#).unwrap();
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut cfg = crate::config::sample();
        let ok = Bmc {
            protocol: Protocol::Redfish,
            address: "https://192.0.2.5".into(),
            system: Some("/redfish/v1/Systems/1".into()),
            credentials: creds.clone(),
            ca_file: None,
            insecure: false,
            boot_mode: BootMode::Uefi,
            boot_target: BootTarget::UefiHttp,
            timeout_secs: 10,
        };
        assert!(check(&ok, &cfg).is_empty(), "{:?}", check(&ok, &cfg));
        let fields = |b: &Bmc, cfg: &Config| check(b, cfg).into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        let bad = Bmc {
            protocol: Protocol::Ipmi,
            address: "192.0.2.5:99999".into(),
            system: Some("/redfish/v1/../x".into()),
            insecure: true,
            boot_mode: BootMode::Legacy,
            timeout_secs: 0,
            ca_file: Some(d.path().join("none.pem")),
            ..ok.clone()
        };
        assert_eq!(
            fields(&bad, &cfg),
            [
                "address",
                "system",
                "ca_file",
                "insecure",
                "boot_target",
                "system",
                "boot_target",
                "timeout_secs",
                "ca_file",
                "ca_file"
            ]
        );
        let plain = Bmc { address: "http://192.0.2.5".into(), ..ok.clone() };
        assert_eq!(fields(&plain, &cfg), ["address"]);
        assert!(fields(&Bmc { insecure: true, ..plain }, &cfg).is_empty());
        // Credentials inside a served directory are refused whatever their mode.
        cfg.artifacts.dir = d.path().to_path_buf();
        let p = check(&ok, &cfg);
        assert!(p[0].0 == "credentials" && p[0].1.contains("artifacts.dir"), "{p:?}");
    }
}

//! The CLI's side of the admin API: a small HTTP/1 client (hyper) and the table output of
//! `bootsvc machines`. It finds the admin listener in the service's config (`admin.listen`:
//! an address or a Unix socket), or is told with `--url` (`http://host:port` or
//! `unix:/path`).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::http::admin::MachineView;
use crate::http::power::PowerAnswer;
use crate::state::StoredEvent;
use crate::storage::SiteCount;
use crate::trace::render::table;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// `host:port` (also the `Host` header), or `localhost` for a Unix socket.
    authority: String,
    /// The Unix socket, when the admin API listens on one.
    socket: Option<std::path::PathBuf>,
    /// Path prefix of the service (`""` or `/osie`).
    prefix: String,
    token: String,
}

impl Client {
    /// From `--url` + `--token-file`, or from the service's own config file.
    pub fn new(config: Option<&Path>, url: Option<&str>, token_file: Option<&Path>) -> Result<Client> {
        let (url, token) = match (url, config) {
            (Some(url), _) => {
                let tf = token_file.ok_or_else(|| anyhow!("--url needs --token-file (the admin bearer token)"))?;
                (url.to_string(), read_token(tf)?)
            }
            (None, Some(cfg_path)) => {
                let cfg = Config::load_unchecked(cfg_path).map_err(|p| anyhow!("{p}"))?;
                let token = match (token_file, cfg.admin_token()?) {
                    (Some(tf), _) => read_token(tf)?,
                    (None, Some(t)) => t,
                    (None, None) => bail!("{}: admin.token_file is not set: the admin API is off", cfg_path.display()),
                };
                (cfg.admin_url(), token)
            }
            (None, None) => {
                bail!("say where bootsvc runs: --config <bootsvc.toml>, or --url <URL> --token-file <file>")
            }
        };
        if let Some(path) = url.strip_prefix("unix:") {
            return Ok(Client {
                authority: "localhost".into(),
                socket: Some(path.into()),
                prefix: String::new(),
                token,
            });
        }
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            anyhow!("{url}: only http:// URLs or unix:/path (run the CLI on the bootsvc host, or through a tunnel)")
        })?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            bail!("{url}: no host");
        }
        let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
        Ok(Client { authority, socket: None, prefix: prefix.to_string(), token })
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T> {
        let (what, status, body) = self.exchange(method, path).await?;
        if !status.is_success() {
            bail!("{what}: {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        serde_json::from_slice(&body).with_context(|| format!("{what}: undecodable answer"))
    }

    /// One request: what it was (for errors), the status and the body.
    async fn exchange(&self, method: Method, path: &str) -> Result<(String, hyper::StatusCode, Bytes)> {
        let what = match &self.socket {
            Some(s) => format!("{method} {path} on {}", s.display()),
            None => format!("{method} http://{}{}{path}", self.authority, self.prefix),
        };
        let mut sender = match &self.socket {
            Some(s) => {
                let stream = tokio::net::UnixStream::connect(s).await.with_context(|| format!("{what}: connecting"))?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.with_context(|| what.clone())?;
                tokio::spawn(conn);
                sender
            }
            None => {
                let stream = tokio::net::TcpStream::connect(&self.authority)
                    .await
                    .with_context(|| format!("{what}: connecting (is bootsvc running, with admin.token_file set?)"))?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.with_context(|| what.clone())?;
                tokio::spawn(conn);
                sender
            }
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, &self.authority)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .body(Empty::<Bytes>::new())
            .with_context(|| what.clone())?;
        let resp = sender.send_request(req).await.with_context(|| what.clone())?;
        let status = resp.status();
        let body = resp.into_body().collect().await.with_context(|| format!("{what}: reading the answer"))?.to_bytes();
        Ok((what, status, body))
    }

    /// A power route: its [`PowerAnswer`] whether the BMC action worked or not (the
    /// report says), an error when there is no report (no such machine, no `bmc`, busy).
    async fn power_call(&self, method: Method, path: &str) -> Result<PowerAnswer> {
        let (what, status, body) = self.exchange(method, path).await?;
        match serde_json::from_slice::<PowerAnswer>(&body) {
            Ok(a) => Ok(a),
            Err(_) => bail!("{what}: {status}: {}", String::from_utf8_lossy(&body).trim()),
        }
    }

    pub async fn power_status(&self, mac: &str) -> Result<PowerAnswer> {
        self.power_call(Method::GET, &format!("/admin/machines/{mac}/power")).await
    }

    /// `action`: on, off, shutdown, cycle, netboot. `by`: who asks, for the timeline.
    pub async fn power(&self, mac: &str, action: &str, by: &str) -> Result<PowerAnswer> {
        self.power_call(Method::POST, &format!("/admin/machines/{mac}/power/{action}?by={}", query_value(by))).await
    }

    /// Allow netboot, boot from the network once, power-cycle (or on).
    pub async fn reinstall_power(&self, mac: &str, by: &str) -> Result<PowerAnswer> {
        self.power_call(Method::POST, &format!("/admin/machines/{mac}/reinstall/power?by={}", query_value(by))).await
    }

    /// Ask for the erase, boot from the network once, power-cycle (or on).
    pub async fn deprovision_power(&self, mac: &str, by: &str, removable: bool) -> Result<PowerAnswer> {
        let q = format!("by={}&removable={removable}", query_value(by));
        self.power_call(Method::POST, &format!("/admin/machines/{mac}/deprovision/power?{q}")).await
    }

    pub async fn machines(&self) -> Result<Vec<MachineView>> {
        self.call(Method::GET, "/admin/machines").await
    }

    pub async fn machine(&self, mac: &str) -> Result<MachineView> {
        self.call(Method::GET, &format!("/admin/machines/{mac}")).await
    }

    pub async fn events(&self, mac: &str, limit: usize) -> Result<Vec<StoredEvent>> {
        self.call(Method::GET, &format!("/admin/machines/{mac}/events?limit={limit}")).await
    }

    pub async fn trace(&self, mac: &str, limit: usize) -> Result<crate::trace::TraceView> {
        self.call(Method::GET, &format!("/admin/machines/{mac}/trace?limit={limit}")).await
    }

    pub async fn log(&self, mac: &str) -> Result<crate::trace::LogView> {
        self.call(Method::GET, &format!("/admin/machines/{mac}/log")).await
    }

    pub async fn sites(&self) -> Result<Vec<SiteCount>> {
        self.call(Method::GET, "/admin/sites").await
    }

    pub async fn reinstall(&self, mac: &str) -> Result<MachineView> {
        self.call(Method::POST, &format!("/admin/machines/{mac}/reinstall")).await
    }

    /// The next netboot erases the disks (removable ones too with `removable`).
    pub async fn deprovision(&self, mac: &str, removable: bool) -> Result<MachineView> {
        self.call(Method::POST, &format!("/admin/machines/{mac}/deprovision?removable={removable}")).await
    }
}

/// `s` percent-encoded for a query string.
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn read_token(f: &Path) -> Result<String> {
    let t = std::fs::read_to_string(f).with_context(|| format!("reading token file {}", f.display()))?;
    Ok(t.trim().to_string())
}

/// `bootsvc machines` as a table: one line per machine.
/// `bootsvc sites`: one line per site.
pub fn sites_table(v: &[SiteCount]) -> String {
    let mut out = format!("{:<2}{:<24}{:>9}\n", "", "SITE", "MACHINES");
    for s in v {
        let name = if s.site.is_empty() { "(none: every site)" } else { s.site.as_str() };
        out.push_str(&format!("{:<2}{:<24}{:>9}\n", if s.this { "*" } else { "" }, name, s.machines));
    }
    out
}

pub fn machines_table(v: &[MachineView]) -> String {
    let rows: Vec<[String; 9]> = v
        .iter()
        .map(|m| {
            let s = &m.state;
            let netboot = match (m.netboot.allow, m.netboot.allowed) {
                (_, true) => "allowed",
                (true, false) => "cleared",
                (false, false) => "off",
            };
            let progress = match &s.progress {
                Some(p) => match p.percent() {
                    Some(pc) => format!("{pc:.0}%"),
                    None => format!("{} B", p.bytes_done),
                },
                None => "-".into(),
            };
            let last = match &s.last_event {
                Some(e) if e.message.is_empty() => format!("{} {}", e.received, e.phase),
                Some(e) => format!("{} {}: {}", e.received, e.phase, e.message),
                None => "-".into(),
            };
            [
                m.hostname.clone(),
                m.macs.first().map(|m| m.to_string()).unwrap_or_default(),
                m.ip.clone().unwrap_or_else(|| "-".into()),
                netboot.into(),
                s.status.as_str().into(),
                s.phase.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                progress,
                last.chars().take(80).collect(),
                crate::trace::render::cell(m.diagnosis.as_ref()),
            ]
        })
        .collect();
    table(&["HOSTNAME", "MAC", "IP", "NETBOOT", "STATUS", "PHASE", "PROGRESS", "LAST EVENT", "DIAGNOSIS"], &rows)
}

/// What `bootsvc machines` prints under its table: the claims refused on any machine (an
/// address that asked as a machine without being bound to it: an intruder, or a machine that
/// needs a fixed address). Empty when there are none.
pub fn refused_claims(v: &[MachineView]) -> String {
    let rows = claim_rows(v, false);
    if rows.is_empty() {
        return String::new();
    }
    let head = ["HOSTNAME", "MAC", "REFUSED FROM", "ROUTE", "TIMES", "LAST", ""];
    format!("\nRefused claims (bootsvc machine <mac> show says why):\n{}", table(&head, &rows))
}

/// `bootsvc machine <mac> show`: its row, the addresses bootsvc knows for it, and the claims
/// refused on it with the reason.
pub fn machine_detail(m: &MachineView) -> String {
    let mut out = machines_table(std::slice::from_ref(m));
    let addrs: Vec<[String; 3]> = m
        .identity
        .addresses
        .iter()
        .map(|a| [a.address.to_string(), a.source.clone(), a.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into())])
        .collect();
    if addrs.is_empty() {
        out += "\nAddresses: none known (no fixed address, lease, DHCP request or neighbour entry)\n";
    } else {
        out += &format!("\nAddresses:\n{}", table(&["ADDRESS", "SOURCE", "MAC"], &addrs));
    }
    let rows = claim_rows(std::slice::from_ref(m), true);
    if !rows.is_empty() {
        let head = ["HOSTNAME", "MAC", "REFUSED FROM", "ROUTE", "TIMES", "LAST", "WHY"];
        out += &format!("\nRefused claims:\n{}", table(&head, &rows));
    }
    out
}

fn claim_rows(v: &[MachineView], why: bool) -> Vec<[String; 7]> {
    v.iter()
        .flat_map(|m| {
            m.identity.refused.iter().map(move |c| {
                [
                    m.hostname.clone(),
                    m.macs.first().map(|m| m.to_string()).unwrap_or_default(),
                    c.address.to_string(),
                    c.route.clone(),
                    c.count.to_string(),
                    c.last.clone(),
                    if why { c.why.clone() } else { String::new() },
                ]
            })
        })
        .collect()
}

/// `bootsvc machine <mac> events` as a table.
pub fn events_table(v: &[StoredEvent]) -> String {
    let rows: Vec<[String; 4]> = v
        .iter()
        .map(|e| {
            let detail = match (&e.event.progress, e.event.error.is_empty()) {
                (_, false) => e.event.error.join(": "),
                (Some(p), true) => match p.percent() {
                    Some(pc) => format!("{pc:.0}% {}", e.event.message),
                    None => e.event.message.clone(),
                },
                (None, true) => e.event.message.clone(),
            };
            [e.received.clone(), e.event.phase.to_string(), e.source.map(|s| s.to_string()).unwrap_or_default(), detail]
        })
        .collect();
    table(&["RECEIVED", "PHASE", "FROM", "MESSAGE"], &rows)
}

#[cfg(test)]
mod tests {
    use osie_api::{Phase, Progress};

    use super::*;
    use crate::http::admin::NetbootView;
    use crate::identity::{IdentityView, KnownAddress, RefusedClaim};
    use crate::state::{EventSummary, MachineState, Status};

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value("alice"), "alice");
        assert_eq!(query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn url_forms() {
        let d = tempfile::tempdir().unwrap();
        let tf = d.path().join("t");
        std::fs::write(&tf, "0123456789abcdef\n").unwrap();
        let c = Client::new(None, Some("http://192.0.2.1:8080/"), Some(&tf)).unwrap();
        assert_eq!(
            (c.authority.as_str(), c.prefix.as_str(), c.token.as_str()),
            ("192.0.2.1:8080", "", "0123456789abcdef")
        );
        let c = Client::new(None, Some("http://boot.example/osie"), Some(&tf)).unwrap();
        assert_eq!((c.authority.as_str(), c.prefix.as_str()), ("boot.example:80", "/osie"));
        let c = Client::new(None, Some("unix:/run/osie/admin.sock"), Some(&tf)).unwrap();
        assert_eq!(c.socket.as_deref(), Some(Path::new("/run/osie/admin.sock")));
        assert!(Client::new(None, Some("https://x"), Some(&tf)).is_err());
        assert!(Client::new(None, Some("http://x"), None).is_err());
        assert!(Client::new(None, None, None).unwrap_err().to_string().contains("--config"));
    }

    #[test]
    fn table_output() {
        let mut m = MachineView {
            hostname: "node1".into(),
            instance_id: "i-1".into(),
            macs: vec!["52:54:00:00:00:01".parse().unwrap()],
            ip: Some("192.0.2.10/24".into()),
            source: "node1.json".into(),
            site: None,
            labels: Default::default(),
            netboot: NetbootView { allow: true, cleared: false, allowed: true, uefi_chain: Default::default() },
            state: MachineState {
                status: Status::Installing,
                phase: Some(Phase::ImageStreaming),
                progress: Some(Progress { bytes_done: 1, bytes_total: Some(4), ..Default::default() }),
                last_event: Some(EventSummary {
                    phase: Phase::ImageStreaming,
                    message: "writing".into(),
                    time: "t".into(),
                    received: "2026-01-01T00:00:00.000Z".into(),
                }),
                ..Default::default()
            },
            identity: Default::default(),
            diagnosis: None,
        };
        let t = machines_table(std::slice::from_ref(&m));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("HOSTNAME  MAC"), "{t}");
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "node1",
                "52:54:00:00:00:01",
                "192.0.2.10/24",
                "allowed",
                "installing",
                "image-streaming",
                "25%",
                "2026-01-01T00:00:00.000Z",
                "image-streaming:",
                "writing",
                "-"
            ]
        );

        // Refused claims: nothing printed when there are none; a line per claim otherwise.
        assert_eq!(refused_claims(std::slice::from_ref(&m)), "");
        m.identity = IdentityView {
            addresses: vec![KnownAddress {
                address: "192.0.2.10".parse().unwrap(),
                source: "fixed-address".into(),
                mac: None,
            }],
            refused: vec![RefusedClaim {
                address: "192.0.2.66".parse().unwrap(),
                route: "/metadata".into(),
                why: "the machine's fixed address is 192.0.2.10".into(),
                first: "2026-01-01T00:00:00.000Z".into(),
                last: "2026-01-01T00:01:00.000Z".into(),
                count: 3,
            }],
        };
        let r = refused_claims(std::slice::from_ref(&m));
        let line = r.lines().find(|l| l.starts_with("node1")).unwrap_or_else(|| panic!("{r}"));
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            ["node1", "52:54:00:00:00:01", "192.0.2.66", "/metadata", "3", "2026-01-01T00:01:00.000Z"]
        );
        let d = machine_detail(&m);
        assert!(d.contains("192.0.2.10  fixed-address  -"), "{d}");
        assert!(d.contains("/metadata") && d.contains("the machine's fixed address is 192.0.2.10"), "{d}");
    }
}

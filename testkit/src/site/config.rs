//! `bootsvc.toml` for tests: the one place that knows the configuration's shape. Every test
//! site (bootsvc's tests, the QEMU lab, the soak, the benchmarks) describes what it wants in a
//! [`Config`] and gets the same file layout; a field left `None` is not written, so bootsvc's
//! own default applies. The admin token file is written beside the config, mode 0600 (bootsvc
//! refuses a token file others may read).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Everything a test site says in `bootsvc.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[listen]`: the interface DHCP (and TFTP) serve on, and bootsvc's address there.
    pub interface: String,
    pub address: Ipv4Addr,
    pub dhcp: Dhcp,
    pub tftp: Tftp,
    pub http: Http,
    pub artifacts: Artifacts,
    /// `[state] dir` (relative paths are the config file's directory's).
    pub state_dir: PathBuf,
    /// `[inventory] dir`; not written when `database` is given.
    pub inventory_dir: PathBuf,
    /// `[database]`: machines, state, leases and events in PostgreSQL.
    pub database: Option<Database>,
    /// `[admin]`; `None`: no section, the admin API is off.
    pub admin: Option<Admin>,
    pub log: Log,
    /// `[security] user`: the user bootsvc drops to after binding.
    pub user: Option<String>,
    /// `[images] keyring`: OpenPGP keys for vendor checksums files.
    pub images_keyring: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct Dhcp {
    pub enabled: Option<bool>,
    pub mode: Option<DhcpMode>,
    pub lease_secs: Option<u32>,
    pub pool: Option<Pool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMode {
    Reservation,
    Proxy,
}

/// `dhcp.pool`.
#[derive(Debug, Clone)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

#[derive(Debug, Clone)]
pub struct Tftp {
    pub enabled: Option<bool>,
    pub root: PathBuf,
    pub max_transfers_per_client: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Http {
    pub listen: SocketAddrV4,
    pub public_url: String,
    /// `[http] peers`: the base URLs of the site's other instances (rendered into the iPXE
    /// script's `osie.url` after this one's); empty: not written.
    pub peers: Vec<String>,
    pub caps: HttpCaps,
}

/// The `[http]` limits and timeouts; `None` keeps bootsvc's default.
#[derive(Debug, Clone, Default)]
pub struct HttpCaps {
    pub max_body_bytes: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub request_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_source: Option<usize>,
    pub write_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Artifacts {
    pub dir: PathBuf,
    pub images_dir: PathBuf,
    pub kernel_args: Option<String>,
}

/// Where [`Admin::read_only_token`] is written, beside the config.
pub const READ_ONLY_TOKEN_FILE: &str = "read-only.token";

#[derive(Debug, Clone)]
pub struct Admin {
    /// What the token file holds.
    pub token: String,
    /// Where it is written (relative: beside the config) and what `token_file` says.
    pub token_file: PathBuf,
    /// `admin.listen` (an address or a Unix socket path); `None`: bootsvc's default.
    pub listen: Option<String>,
    /// The status page's read-only token, written to `read-only.token` beside the config
    /// (`admin.read_only_token_file`).
    pub read_only_token: Option<String>,
}

impl Admin {
    pub fn with_token(token: &str) -> Admin {
        Admin { token: token.to_string(), token_file: "admin.token".into(), listen: None, read_only_token: None }
    }
}

/// `[database]`: the URL (password included) goes into a file beside the config, mode 0600,
/// as an operator keeps it (`url_file`); bootsvc refuses a password in the config itself.
#[derive(Debug, Clone)]
pub struct Database {
    pub url: String,
    /// The file's name beside the config.
    pub url_file: PathBuf,
    /// `[database] site`: the site this instance serves.
    pub site: Option<String>,
}

impl Database {
    pub fn new(url: &str) -> Database {
        Database { url: url.to_string(), url_file: "db.url".into(), site: None }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Log {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// A site on `interface` with bootsvc at `address`: HTTP on `address:8080`, the tree's
    /// usual directories beside the config (`tftp`, `artifacts`, `images`, `state`,
    /// `machines`), everything else bootsvc's default.
    pub fn new(interface: &str, address: Ipv4Addr) -> Config {
        Config {
            interface: interface.to_string(),
            address,
            dhcp: Dhcp::default(),
            tftp: Tftp { enabled: None, root: "tftp".into(), max_transfers_per_client: None },
            http: Http {
                listen: SocketAddrV4::new(address, 8080),
                public_url: format!("http://{address}:8080"),
                peers: Vec::new(),
                caps: HttpCaps::default(),
            },
            artifacts: Artifacts { dir: "artifacts".into(), images_dir: "images".into(), kernel_args: None },
            state_dir: "state".into(),
            inventory_dir: "machines".into(),
            database: None,
            admin: None,
            log: Log::default(),
            user: None,
            images_keyring: None,
        }
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let mut t = Toml::default();
        t.table("listen");
        t.str("interface", &self.interface);
        t.str("address", &self.address.to_string());

        t.table("dhcp");
        t.opt_bool("enabled", self.dhcp.enabled);
        if let Some(mode) = self.dhcp.mode {
            t.str("mode", if mode == DhcpMode::Proxy { "proxy" } else { "reservation" });
        }
        t.opt_num("lease_secs", self.dhcp.lease_secs);
        if let Some(p) = &self.dhcp.pool {
            let gateway = p.gateway.map(|g| format!(", gateway = {}", quote(&g.to_string()))).unwrap_or_default();
            let (start, end) = (quote(&p.start.to_string()), quote(&p.end.to_string()));
            t.raw(&format!("pool = {{ start = {start}, end = {end}, prefix = {}{gateway} }}", p.prefix));
        }

        t.table("tftp");
        t.opt_bool("enabled", self.tftp.enabled);
        t.path("root", &self.tftp.root);
        t.opt_num("max_transfers_per_client", self.tftp.max_transfers_per_client);

        t.table("http");
        t.str("listen", &self.http.listen.to_string());
        t.str("public_url", &self.http.public_url);
        if !self.http.peers.is_empty() {
            let peers: Vec<String> = self.http.peers.iter().map(|p| quote(p)).collect();
            t.raw(&format!("peers = [{}]", peers.join(", ")));
        }
        let c = &self.http.caps;
        t.opt_num("max_body_bytes", c.max_body_bytes);
        t.opt_num("max_header_bytes", c.max_header_bytes);
        t.opt_num("request_timeout_secs", c.request_timeout_secs);
        t.opt_num("max_connections", c.max_connections);
        t.opt_num("max_connections_per_source", c.max_connections_per_source);
        t.opt_num("write_timeout_secs", c.write_timeout_secs);
        t.opt_num("idle_timeout_secs", c.idle_timeout_secs);

        t.table("artifacts");
        t.path("dir", &self.artifacts.dir);
        t.path("images_dir", &self.artifacts.images_dir);
        if let Some(a) = &self.artifacts.kernel_args {
            t.str("kernel_args", a);
        }

        t.table("state");
        t.path("dir", &self.state_dir);
        if let Some(db) = &self.database {
            t.table("database");
            t.path("url_file", &db.url_file);
            if let Some(site) = &db.site {
                t.str("site", site);
            }
        } else {
            t.table("inventory");
            t.path("dir", &self.inventory_dir);
        }

        if let Some(a) = &self.admin {
            t.table("admin");
            t.path("token_file", &a.token_file);
            if let Some(l) = &a.listen {
                t.str("listen", l);
            }
            if a.read_only_token.is_some() {
                t.path("read_only_token_file", Path::new(READ_ONLY_TOKEN_FILE));
            }
        }
        if self.log.format.is_some() || self.log.level.is_some() {
            t.table("log");
            if let Some(f) = self.log.format {
                t.str("format", if f == LogFormat::Json { "json" } else { "text" });
            }
            if let Some(l) = &self.log.level {
                t.str("level", l);
            }
        }
        if let Some(k) = &self.images_keyring {
            t.table("images");
            t.path("keyring", k);
        }
        if let Some(u) = &self.user {
            t.table("security");
            t.str("user", u);
        }
        t.0
    }

    /// Write `bootsvc.toml` into `dir` (and the admin token file and the database URL file,
    /// 0600); the config's path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        if let Some(a) = &self.admin {
            write_secret(&dir.join(&a.token_file), &a.token)?;
            if let Some(ro) = &a.read_only_token {
                write_secret(&dir.join(READ_ONLY_TOKEN_FILE), ro)?;
            }
        }
        if let Some(db) = &self.database {
            write_secret(&dir.join(&db.url_file), &db.url)?;
        }
        let path = dir.join("bootsvc.toml");
        std::fs::write(&path, self.render()).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// A one-line secret, readable by its owner only (bootsvc refuses one others may read).
fn write_secret(path: &Path, value: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{value}\n")).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))
}

/// A TOML document written a table at a time, a blank line between tables.
#[derive(Default)]
struct Toml(String);

impl Toml {
    fn table(&mut self, name: &str) {
        if !self.0.is_empty() {
            self.0.push('\n');
        }
        let _ = writeln!(self.0, "[{name}]");
    }

    fn raw(&mut self, line: &str) {
        let _ = writeln!(self.0, "{line}");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.raw(&format!("{key} = {}", quote(value)));
    }

    fn path(&mut self, key: &str, value: &Path) {
        self.str(key, &value.to_string_lossy());
    }

    fn opt_bool(&mut self, key: &str, value: Option<bool>) {
        if let Some(v) = value {
            self.raw(&format!("{key} = {v}"));
        }
    }

    fn opt_num(&mut self, key: &str, value: Option<impl std::fmt::Display>) {
        if let Some(v) = value {
            self.raw(&format!("{key} = {v}"));
        }
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_name_every_table_bootsvc_needs() {
        let c = Config::new("br0", Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(
            c.render(),
            "[listen]\ninterface = \"br0\"\naddress = \"192.0.2.1\"\n\n[dhcp]\n\n[tftp]\nroot = \"tftp\"\n\n\
             [http]\nlisten = \"192.0.2.1:8080\"\npublic_url = \"http://192.0.2.1:8080\"\n\n\
             [artifacts]\ndir = \"artifacts\"\nimages_dir = \"images\"\n\n[state]\ndir = \"state\"\n\n\
             [inventory]\ndir = \"machines\"\n"
        );
    }

    #[test]
    fn every_option_is_written_where_bootsvc_reads_it() {
        let mut c = Config::new("lo", Ipv4Addr::new(192, 0, 2, 1));
        c.dhcp = Dhcp {
            enabled: Some(false),
            mode: Some(DhcpMode::Proxy),
            lease_secs: Some(600),
            pool: Some(Pool {
                start: Ipv4Addr::new(192, 0, 2, 100),
                end: Ipv4Addr::new(192, 0, 2, 199),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
            }),
        };
        c.tftp.max_transfers_per_client = Some(64);
        c.http.peers = vec!["http://192.0.2.2:8080".into(), "http://192.0.2.3:8080".into()];
        c.http.caps = HttpCaps { max_connections: Some(12), idle_timeout_secs: Some(2), ..HttpCaps::default() };
        c.artifacts.kernel_args = Some("console=ttyS0,115200n8".into());
        c.admin = Some(Admin { listen: Some("/run/a \"b\".sock".into()), ..Admin::with_token("t") });
        c.log = Log { format: Some(LogFormat::Json), level: Some("info".into()) };
        c.user = Some("nobody".into());
        let text = c.render();
        for line in [
            "[dhcp]\nenabled = false\nmode = \"proxy\"\nlease_secs = 600\n\
             pool = { start = \"192.0.2.100\", end = \"192.0.2.199\", prefix = 24, gateway = \"192.0.2.1\" }\n",
            "root = \"tftp\"\nmax_transfers_per_client = 64\n",
            "public_url = \"http://192.0.2.1:8080\"\npeers = [\"http://192.0.2.2:8080\", \"http://192.0.2.3:8080\"]\n",
            "max_connections = 12\nidle_timeout_secs = 2\n",
            "kernel_args = \"console=ttyS0,115200n8\"\n",
            "[admin]\ntoken_file = \"admin.token\"\nlisten = \"/run/a \\\"b\\\".sock\"\n",
            "[log]\nformat = \"json\"\nlevel = \"info\"\n",
            "[security]\nuser = \"nobody\"\n",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
        assert!(!text.contains("max_body_bytes"), "unset caps are left to bootsvc:\n{text}");
    }

    #[test]
    fn the_token_file_is_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let mut c = Config::new("lo", Ipv4Addr::LOCALHOST);
        c.admin = Some(Admin::with_token("secret-token"));
        let path = c.write(d.path()).unwrap();
        assert_eq!(path, d.path().join("bootsvc.toml"));
        let token = d.path().join("admin.token");
        assert_eq!(std::fs::read_to_string(&token).unwrap(), "secret-token\n");
        assert_eq!(std::fs::metadata(&token).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

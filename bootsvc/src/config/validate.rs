//! Every check on a parsed `bootsvc.toml`, each reported with its field path. Paths must be
//! resolved first ([`Config::load`] does both).

use std::net::{IpAddr, Ipv4Addr};

use super::{Config, DhcpMode};
use crate::checks;
use crate::problem::{Collector, Problems};

/// Most `http.peers`: each is about 30 bytes of a kernel command line of at most 2048.
pub const MAX_PEERS: usize = 8;

/// An IPv6 address HTTP may listen on: `[::]` (every address, IPv4 too) when `any` may be,
/// else a global or unique local address of this host.
fn listen6_address(a: std::net::Ipv6Addr, any: bool) -> Result<(), String> {
    if a.is_unspecified() && any {
        return Ok(());
    }
    if a.to_ipv4_mapped().is_some() {
        return Err(format!("{a} is an IPv4-mapped address: give the IPv4 address itself"));
    }
    checks::host_address6(a)
}

impl Config {
    /// All problems with this configuration; empty when it is usable.
    pub fn validate(&self) -> Problems {
        let mut out = Problems::default();
        let mut c = out.collector(&self.source, "");
        self.check_listen(&mut c);
        self.check_dhcp(&mut c);
        self.check_ipv6(&mut c);
        self.check_tftp(&mut c);
        self.check_http(&mut c);
        self.check_http_connections(&mut c);
        self.check_artifacts(&mut c);
        if self.boot.uefi_chain == super::UefiChain::ShimGrub {
            c.check("boot.uefi_chain", self.check_shim_grub());
        }
        if self.images.keyring.is_some() {
            c.check("images.keyring", self.keyring().map(|_| ()).map_err(|e| format!("{e:#}")));
        }
        self.check_dirs(&mut c);
        self.check_storage(&mut c);
        self.check_admin(&mut c);
        self.check_admin_listen(&mut c);
        self.check_security(&mut c);
        self.check_trace(&mut c);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            c.add("log.level", format!("{:?} is not a tracing filter: {e}", self.log.level));
        }
        out
    }

    fn check_trace(&self, c: &mut Collector) {
        let t = &self.trace;
        let ranges: [(&str, u64, u64, u64, &str); 8] = [
            ("trace.steps_per_machine", t.steps_per_machine as u64, 10, 100_000, ""),
            ("trace.queue", t.queue as u64, 64, 1_000_000, ""),
            ("trace.log_run_bytes", t.log_run_bytes, 64 * 1024, 256 << 20, " bytes"),
            ("trace.log_runs", t.log_runs as u64, 1, 100, ""),
            ("trace.offers_without_request", u64::from(t.offers_without_request), 1, 1000, ""),
            ("trace.next_step_secs", t.next_step_secs, 5, 86_400, " s"),
            ("trace.installer_secs", t.installer_secs, 10, 86_400, " s"),
            ("trace.event_silence_secs", t.event_silence_secs, 30, 7 * 86_400, " s"),
        ];
        for (field, v, lo, hi, unit) in ranges {
            if !(lo..=hi).contains(&v) {
                c.add(field, format!("{v}{unit} is out of range: {lo} to {hi}{unit}"));
            }
        }
        if !(60..=30 * 86_400).contains(&t.first_boot_secs) {
            c.add("trace.first_boot_secs", format!("{} s is out of range: 60 to {} s", t.first_boot_secs, 30 * 86_400));
        }
    }

    /// What a site needs before any machine gets the shim/GRUB chain: TFTP on (the only
    /// protocol of Debian's signed GRUB), shim and GRUB in `tftp.root` (`scripts/build` puts
    /// them there), opened the way a request for them would be, and kernel file names and
    /// arguments that can go into a GRUB configuration.
    pub fn check_shim_grub(&self) -> Result<(), String> {
        use crate::grub::{self, GRUB_EFI, SHIM_EFI};
        if !self.tftp.enabled {
            return Err("the shim/GRUB chain needs tftp.enabled: Debian's signed GRUB reads its configuration, \
                        kernel and initramfs over TFTP only"
                .into());
        }
        for f in [SHIM_EFI, GRUB_EFI] {
            crate::jail::servable(&self.tftp.root, f).map_err(|e| {
                format!(
                    "the shim/GRUB chain needs {f} in tftp.root (scripts/build puts Debian's signed one there): {e}"
                )
            })?;
        }
        for f in [&self.artifacts.kernel, &self.artifacts.initrd] {
            grub::quote(f).map_err(|e| format!("artifacts file name {f:?} {e}"))?;
        }
        grub::check_args(&self.artifacts.kernel_args).map_err(|e| format!("artifacts.kernel_args: {e}"))
    }

    fn check_listen(&self, c: &mut Collector) {
        let i = &self.listen.interface;
        let needs_if = self.dhcp.enabled || self.tftp.enabled;
        if i.is_empty() && needs_if {
            c.add("listen.interface", "is empty; DHCP and TFTP bind to this interface");
        } else if i.len() > 15 || i.contains(['/', ' ', ':', '\0']) || i == "." || i == ".." {
            c.add("listen.interface", format!("{i:?} is not a Linux interface name (at most 15 characters, no '/')"));
        }
        let a = self.listen.address;
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
            c.add("listen.address", format!("{a} cannot be this server's address on the machines' network"));
        }
    }

    fn check_ipv6(&self, c: &mut Collector) {
        let d = &self.dhcp6;
        if !(30..=31_536_000).contains(&d.lease_secs) {
            c.add("dhcp6.lease_secs", format!("{} is out of range: 30 s to one year", d.lease_secs));
        }
        match d.address {
            None if d.enabled => c.add("dhcp6.address", "required with dhcp6.enabled: bootsvc's IPv6 address"),
            Some(a) => {
                if let Err(e) = checks::host_address6(a) {
                    c.add("dhcp6.address", e);
                }
            }
            None => {}
        }
        if d.enabled && self.listen.interface.is_empty() {
            c.add("listen.interface", "is empty; DHCPv6 binds to this interface");
        }
        let ra = &self.router_advertisements;
        if let Some(p) = ra.prefix() {
            match p {
                Err(e) => c.add("router_advertisements.prefix", e),
                Ok((a, l)) => {
                    if l != 64 {
                        c.add(
                            "router_advertisements.prefix",
                            format!("/{l}: SLAAC forms addresses in /64 prefixes only"),
                        );
                    } else if let Err(e) = checks::host_address6(a) {
                        c.add("router_advertisements.prefix", e);
                    }
                }
            }
        }
        if ra.mode == super::RaMode::Off && (ra.managed || ra.prefix.is_some()) {
            c.add(
                "router_advertisements.mode",
                "\"off\" sends nothing: remove managed/prefix, or use \"on\" or \"auto\"",
            );
        }
        if ra.managed && !d.enabled {
            c.add("router_advertisements.managed", "hosts are sent to DHCPv6, but dhcp6.enabled is false");
        }
    }

    fn check_dhcp(&self, c: &mut Collector) {
        let d = &self.dhcp;
        if !(30..=31_536_000).contains(&d.lease_secs) {
            c.add("dhcp.lease_secs", format!("{} is out of range: 30 s to one year", d.lease_secs));
        }
        let Some(p) = &d.pool else { return };
        if d.mode == DhcpMode::Proxy {
            c.add("dhcp.pool", "proxy mode hands out no addresses; remove the pool or use mode = \"reservation\"");
        }
        if !(8..=30).contains(&p.prefix) {
            c.add("dhcp.pool.prefix", format!("/{} is not a sane pool network: 8 to 30", p.prefix));
            return;
        }
        let (net, bcast) = checks::subnet(self.listen.address, p.prefix);
        for (field, a) in [("dhcp.pool.start", p.start), ("dhcp.pool.end", p.end)] {
            if checks::subnet(a, p.prefix).0 != net {
                c.add(
                    field,
                    format!("{a} is outside {net}/{}, the network of listen.address {}", p.prefix, self.listen.address),
                );
            } else if a == net || a == bcast {
                c.add(field, format!("{a} is the network or broadcast address of {net}/{}", p.prefix));
            }
        }
        if u32::from(p.start) > u32::from(p.end) {
            c.add("dhcp.pool.end", format!("{} comes before start {}", p.end, p.start));
        } else if u32::from(p.end) - u32::from(p.start) >= 65_536 {
            c.add("dhcp.pool.end", "the pool is larger than 65536 addresses");
        }
        let me = u32::from(self.listen.address);
        if (u32::from(p.start)..=u32::from(p.end)).contains(&me) {
            c.add("dhcp.pool", format!("the pool includes this server's own address {}", self.listen.address));
        }
        if let Some(g) = p.gateway {
            if checks::subnet(g, p.prefix).0 != net || g == net || g == bcast {
                c.add("dhcp.pool.gateway", format!("{g} is not a host of {net}/{}", p.prefix));
            }
        }
        for (i, d) in p.dns.iter().enumerate() {
            c.check(&format!("dhcp.pool.dns[{i}]"), checks::host_address(*d));
        }
    }

    fn check_tftp(&self, c: &mut Collector) {
        let t = &self.tftp;
        let root = checks::existing_dir(&t.root);
        if root.is_ok() {
            // Files there are asked for by name: every link must be one the jail follows.
            for why in crate::jail::refused_links(&t.root) {
                c.add("tftp.root", why);
            }
        }
        c.check("tftp.root", root);
        if !(1..=255).contains(&t.timeout_secs) {
            c.add("tftp.timeout_secs", format!("{} is out of range: 1 to 255 (RFC 2349)", t.timeout_secs));
        }
        if t.max_send_retries > 20 {
            c.add(
                "tftp.max_send_retries",
                format!("{} is too many: abandoned transfers would linger", t.max_send_retries),
            );
        }
        let most = super::Tftp::MAX_TRANSFERS;
        if !(1..=most).contains(&t.max_transfers_per_client) {
            c.add(
                "tftp.max_transfers_per_client",
                format!("{} is out of range: 1 to {most} (the cap on all transfers)", t.max_transfers_per_client),
            );
        }
    }

    /// `http.listen6`, `http.public_url6`, and that what DHCPv6 hands out is served: IPv6
    /// callers need a listener (`listen` IPv6, or `listen6`) and a base URL to be given.
    fn check_http6(&self, c: &mut Collector) {
        let h = &self.http;
        if let Some(l) = h.listen6 {
            let r = match (l, h.listen) {
                (std::net::SocketAddr::V4(_), _) => {
                    Err(format!("{l} is not an IPv6 address, e.g. \"[2001:db8::1]:8080\""))
                }
                (_, std::net::SocketAddr::V6(_)) => {
                    Err(format!("http.listen {} already accepts IPv6; remove listen6", h.listen))
                }
                (std::net::SocketAddr::V6(a), _) if a.port() == 0 => {
                    Err("port 0 is not a fixed port; machines need to know it".to_string())
                }
                (std::net::SocketAddr::V6(a), _) => listen6_address(*a.ip(), false),
            };
            c.check("http.listen6", r);
        }
        if let Some(u) = &h.public_url6 {
            c.check("http.public_url6", checks::base_url(u));
        }
        let listener = h.ipv6_listener();
        if listener.is_some() && self.public_url6().is_none() {
            c.add(
                "http.public_url6",
                "required when HTTP accepts IPv6 (or set dhcp6.address): the base URL given to callers over IPv6, \
                 e.g. \"http://[2001:db8::1]:8080\"",
            );
        }
        if listener.is_none() && (self.dhcp6.enabled || h.public_url6.is_some()) {
            let what = if self.dhcp6.enabled { "DHCPv6 hands out IPv6 boot URLs" } else { "http.public_url6 is set" };
            c.add(
                "http.listen",
                format!(
                    "{what}, but HTTP listens on IPv4 only ({}): use \"[::]:{}\" or set http.listen6",
                    h.listen,
                    h.listen.port()
                ),
            );
        }
    }

    /// `http.peers`: base URLs like `public_url`, none of them twice or this instance's own,
    /// no comma (the separator of `osie.url`), and few enough for the kernel command line.
    fn check_peers(&self, c: &mut Collector) {
        let h = &self.http;
        if h.peers.len() > MAX_PEERS {
            c.add(
                "http.peers",
                format!("{} peers: at most {MAX_PEERS} (they all go on the kernel command line)", h.peers.len()),
            );
        }
        let own = h.public_url.trim_end_matches('/');
        for (i, p) in h.peers.iter().enumerate() {
            let field = format!("http.peers[{i}]");
            let url = p.trim_end_matches('/');
            let r = checks::base_url(p).and_then(|()| {
                if p.contains(',') {
                    return Err(format!("{p:?} contains a comma, which separates the URLs of osie.url"));
                }
                if url == own {
                    return Err(format!("{p:?} is http.public_url, this instance itself"));
                }
                if h.peers[..i].iter().any(|q| q.trim_end_matches('/') == url) {
                    return Err(format!("{p:?} is listed twice"));
                }
                Ok(())
            });
            c.check(&field, r);
        }
    }

    fn check_http(&self, c: &mut Collector) {
        let h = &self.http;
        match h.listen.ip() {
            IpAddr::V4(a) if a.is_broadcast() || a.is_multicast() => {
                c.add("http.listen", format!("{a} cannot be listened on"));
            }
            IpAddr::V4(_) => {}
            IpAddr::V6(a) => c.check("http.listen", listen6_address(a, true)),
        }
        if h.listen.port() == 0 {
            c.add("http.listen", "port 0 is not a fixed port; machines need to know it through http.public_url");
        }
        c.check("http.public_url", checks::base_url(&h.public_url));
        self.check_http6(c);
        self.check_peers(c);
        if !(1024..=(64 << 20)).contains(&h.max_body_bytes) {
            c.add("http.max_body_bytes", format!("{} is out of range: 1 KiB to 64 MiB", h.max_body_bytes));
        }
        if !(1024..=(256 << 10)).contains(&h.max_header_bytes) {
            c.add("http.max_header_bytes", format!("{} is out of range: 1 KiB to 256 KiB", h.max_header_bytes));
        }
        if !(1..=3600).contains(&h.request_timeout_secs) {
            c.add("http.request_timeout_secs", format!("{} is out of range: 1 to 3600", h.request_timeout_secs));
        }
    }

    fn check_artifacts(&self, c: &mut Collector) {
        let a = &self.artifacts;
        let dir_ok = checks::existing_dir(&a.dir);
        let have_dir = dir_ok.is_ok();
        c.check("artifacts.dir", dir_ok);
        for (field, name) in [("artifacts.kernel", &a.kernel), ("artifacts.initrd", &a.initrd)] {
            if let Err(e) = checks::file_name(name) {
                c.add(field, e);
            } else if have_dir {
                // Opened as a request for it would be: what passes here is served.
                c.check(field, crate::jail::servable(&a.dir, name).map(|_| ()));
            }
        }
        c.check("artifacts.images_dir", checks::existing_dir(&a.images_dir));
        let any_mac = osie_api::MacAddr::new([2, 0, 0, 0, 0, 1]);
        c.check(
            "artifacts.kernel_args",
            crate::ipxe::installer_args("http://192.0.2.1", &a.kernel_args, None, any_mac).map(|_| ()),
        );
    }

    fn check_dirs(&self, c: &mut Collector) {
        if let Some(inv) = &self.inventory {
            c.check("inventory.dir", checks::existing_dir(&inv.dir));
        }
        let s = &self.state.dir;
        if s.exists() {
            c.check("state.dir", checks::existing_dir(s));
        } else if let Some(parent) = s.parent() {
            // Created on first start; its parent must be there.
            if let Err(e) = checks::existing_dir(parent) {
                c.add("state.dir", format!("does not exist and cannot be created: {e}"));
            }
        }
    }

    fn check_admin(&self, c: &mut Collector) {
        let a = &self.admin;
        if !crate::config::Admin::SESSION_SECS.contains(&a.session_secs) {
            c.add(
                "admin.session_secs",
                format!(
                    "{} is out of range: {}..={} (a minute to a week)",
                    a.session_secs,
                    crate::config::Admin::SESSION_SECS.start(),
                    crate::config::Admin::SESSION_SECS.end()
                ),
            );
        }
        let admin = match &a.token_file {
            Some(f) => match read_secret_file(f, MAX_TOKEN_FILE, "the admin token") {
                Err(e) => {
                    c.add("admin.token_file", e);
                    None
                }
                Ok(t) => {
                    let t = t.trim().to_string();
                    c.check("admin.token_file", check_token(&t).map_err(|e| format!("{}: {e}", f.display())));
                    Some(t)
                }
            },
            None => None,
        };
        let Some(f) = &a.read_only_token_file else { return };
        if a.token_file.is_none() {
            c.add(
                "admin.read_only_token_file",
                "needs admin.token_file: without it the admin listener (and the status page) is off",
            );
            return;
        }
        match read_secret_file(f, MAX_TOKEN_FILE, "the read-only token") {
            Err(e) => c.add("admin.read_only_token_file", e),
            Ok(t) => {
                let t = t.trim();
                let ok = check_token(t).map_err(|e| format!("{}: {e}", f.display())).and_then(|()| {
                    match admin.as_deref() == Some(t) {
                        true => Err(format!(
                            "{}: the same token as admin.token_file: a read-only token must differ",
                            f.display()
                        )),
                        false => Ok(()),
                    }
                });
                c.check("admin.read_only_token_file", ok);
            }
        }
    }

    fn check_security(&self, c: &mut Collector) {
        let s = &self.security;
        let mut names_ok = true;
        for (field, v) in [("security.user", &s.user), ("security.group", &s.group)] {
            if let Some(name) = v {
                if let Err(e) = super::security::check_name(name) {
                    c.add(field, e);
                    names_ok = false;
                }
            }
        }
        if names_ok {
            if let Err(e) = s.resolve() {
                // The errors start with the field they are about.
                let msg = format!("{e:#}");
                let (field, what) = match msg.split_once(": ") {
                    Some((f, w)) if f.starts_with("security.") => (f.to_string(), w.to_string()),
                    _ => ("security.user".to_string(), msg.clone()),
                };
                c.add(&field, what);
            }
        }
    }

    /// The keyring of `images.keyring`; `None` when unset. Read once per process (as root at
    /// start, like the tokens) and kept: image manifests are read again after privileges are
    /// dropped, with the same keys. A changed keyring takes a restart.
    pub fn keyring(&self) -> anyhow::Result<Option<std::sync::Arc<crate::signature::Keyring>>> {
        use std::collections::BTreeMap;
        use std::sync::{Arc, Mutex};
        static READ: Mutex<BTreeMap<std::path::PathBuf, Arc<crate::signature::Keyring>>> = Mutex::new(BTreeMap::new());
        let Some(f) = &self.images.keyring else { return Ok(None) };
        if let Some(k) = READ.lock().unwrap_or_else(|p| p.into_inner()).get(f) {
            return Ok(Some(Arc::clone(k)));
        }
        // A device or a huge file is refused, not read forever (a distribution's keyring is
        // a few hundred KiB).
        const MAX: u64 = 16 << 20;
        let b = std::fs::File::open(f)
            .and_then(|file| {
                let meta = file.metadata()?;
                if !meta.is_file() {
                    return Err(std::io::Error::other("not a regular file"));
                }
                if meta.len() > MAX {
                    return Err(std::io::Error::other(format!("larger than {MAX} bytes")));
                }
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX), &mut b)?;
                Ok(b)
            })
            .map_err(|e| anyhow::anyhow!("keyring {}: {e}", f.display()))?;
        let k = Arc::new(
            crate::signature::Keyring::from_bytes(&b).map_err(|e| anyhow::anyhow!("keyring {}: {e}", f.display()))?,
        );
        READ.lock().unwrap_or_else(|p| p.into_inner()).insert(f.clone(), Arc::clone(&k));
        Ok(Some(k))
    }

    /// The admin token, read from `admin.token_file`; `None` when the admin API is off.
    pub fn admin_token(&self) -> anyhow::Result<Option<String>> {
        self.admin.token_file.as_deref().map(|f| token_in(f, "admin token")).transpose()
    }

    /// The status page's read-only token, from `admin.read_only_token_file` (checked as the
    /// admin token is; it may not equal it).
    pub fn read_only_token(&self) -> anyhow::Result<Option<String>> {
        let Some(f) = &self.admin.read_only_token_file else { return Ok(None) };
        let t = token_in(f, "read-only token")?;
        if self.admin_token()?.as_deref() == Some(t.as_str()) {
            anyhow::bail!("read-only token file {}: the same token as admin.token_file", f.display());
        }
        Ok(Some(t))
    }

    /// This server as machines see it, for DHCP/TFTP.
    pub fn server_address(&self) -> Ipv4Addr {
        self.listen.address
    }
}

/// The token in `f` (`what`: "admin token"…), trimmed and checked.
fn token_in(f: &std::path::Path, what: &str) -> anyhow::Result<String> {
    let t =
        read_secret_file(f, MAX_TOKEN_FILE, &format!("the {what}")).map_err(|e| anyhow::anyhow!("{what} file: {e}"))?;
    let t = t.trim().to_string();
    check_token(&t).map_err(|e| anyhow::anyhow!("{what} file {}: {e}", f.display()))?;
    Ok(t)
}

/// Largest token file read: a token is one short word; anything bigger is a mistake.
const MAX_TOKEN_FILE: u64 = 4096;

/// A secret file's text (`what` it holds: the admin token, the database URL), or what is
/// wrong (naming the file): a regular file of at most `max` bytes, so a path like
/// `/dev/zero` or a FIFO is refused instead of reading (or waiting) forever, that only its
/// owner may read or change (`check` and `serve` refuse a secret its group or everyone can
/// read: anyone on the host could act as the operator or the service).
pub(super) fn read_secret_file(f: &std::path::Path, max: u64, what: &str) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let cannot = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", f.display());
    let file = std::fs::File::open(f).map_err(|e| cannot(&e))?;
    let meta = file.metadata().map_err(|e| cannot(&e))?;
    if !meta.is_file() {
        return Err(cannot(&"not a regular file"));
    }
    secret_mode(f, meta.permissions().mode(), what)?;
    let mut t = String::new();
    file.take(max + 1).read_to_string(&mut t).map_err(|e| cannot(&e))?;
    if t.len() as u64 > max {
        return Err(cannot(&format!("larger than {max} bytes")));
    }
    Ok(t)
}

/// A secret file's permission bits allow its owner alone.
fn secret_mode(f: &std::path::Path, mode: u32, what: &str) -> Result<(), String> {
    let mode = mode & 0o7777;
    let who = match (mode & 0o070 != 0, mode & 0o007 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "its group",
        (false, true) => "every user",
        (true, true) => "its group and every user",
    };
    let f = f.display();
    Err(format!("{f} has mode {mode:04o}: {who} may read or change {what}; run chmod 600 {f}"))
}

/// A bearer token: one word of at least 16 printable characters.
pub fn check_token(t: &str) -> Result<(), String> {
    if t.len() < 16 {
        return Err("the token is shorter than 16 characters".into());
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be one word of printable ASCII".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;

    /// A config whose directories exist, in a temp dir.
    fn fixture() -> (tempfile::TempDir, Config) {
        let d = tempfile::tempdir().unwrap();
        for sub in ["tftp", "artifacts", "images", "machines"] {
            std::fs::create_dir(d.path().join(sub)).unwrap();
        }
        std::fs::write(d.path().join("artifacts/vmlinuz"), b"k").unwrap();
        std::fs::write(d.path().join("artifacts/initramfs.img"), b"i").unwrap();
        let text = r#"
[listen]
interface = "br0"
address = "192.0.2.1"
[dhcp]
pool = { start = "192.0.2.100", end = "192.0.2.199", prefix = 24, gateway = "192.0.2.1" }
[tftp]
root = "tftp"
[http]
listen = "0.0.0.0:8080"
public_url = "http://192.0.2.1:8080"
[artifacts]
dir = "artifacts"
images_dir = "images"
[state]
dir = "state"
[inventory]
dir = "machines"
"#;
        let f = d.path().join("bootsvc.toml");
        std::fs::write(&f, text).unwrap();
        let c = Config::load(&f).unwrap();
        (d, c)
    }

    fn fields(p: &Problems) -> Vec<&str> {
        p.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn a_good_config_has_no_problems() {
        let (_d, c) = fixture();
        assert!(c.validate().is_empty());
        assert!(c.tftp.root.is_absolute());
    }

    #[test]
    fn every_problem_is_reported() {
        let (d, mut c) = fixture();
        c.listen.address = Ipv4Addr::UNSPECIFIED;
        c.http.public_url = "192.0.2.1:8080".into();
        c.http.listen = "[fe80::1]:8080".parse().unwrap();
        c.artifacts.kernel = "../vmlinuz".into();
        c.artifacts.initrd = "missing.img".into();
        c.artifacts.kernel_args = "console=ttyS0\nchain http://evil/".into();
        c.inventory.as_mut().unwrap().dir = d.path().join("nope");
        c.tftp.timeout_secs = 0;
        c.tftp.max_transfers_per_client = 0;
        c.log.level = "info,,=x[".into();
        let p = c.validate();
        let f = fields(&p);
        for want in [
            "listen.address",
            "http.public_url",
            "http.listen",
            "artifacts.kernel",
            "artifacts.initrd",
            "artifacts.kernel_args",
            "inventory.dir",
            "tftp.timeout_secs",
            "tftp.max_transfers_per_client",
            "log.level",
        ] {
            assert!(f.contains(&want), "{want} missing from {p}");
        }
        assert!(p.iter().all(|x| x.file == c.source), "{p}");
    }

    #[test]
    fn peers_are_base_urls_of_other_instances() {
        let (_d, mut c) = fixture();
        c.http.peers = vec!["http://192.0.2.2:8080".into(), "https://boot-b.example/".into()];
        assert!(c.validate().is_empty(), "{}", c.validate());
        c.http.peers = vec![
            "192.0.2.2:8080".into(),
            "http://192.0.2.1:8080/".into(),
            "http://192.0.2.3:8080".into(),
            "http://192.0.2.3:8080/".into(),
            "http://192.0.2.4/a,b".into(),
            "http://192.0.2.5/?x".into(),
        ];
        let p = c.validate();
        let f = fields(&p);
        assert_eq!(f, ["http.peers[0]", "http.peers[1]", "http.peers[3]", "http.peers[4]", "http.peers[5]"], "{p}");
        let text = p.to_string();
        for want in ["this instance itself", "listed twice", "contains a comma", "query"] {
            assert!(text.contains(want), "{want}: {text}");
        }
        c.http.peers = (2..=10).map(|n| format!("http://192.0.2.{n}:8080")).collect();
        assert!(fields(&c.validate()).contains(&"http.peers"));
    }

    #[test]
    fn pool_must_be_sane() {
        let (_d, mut c) = fixture();
        let pool = c.dhcp.pool.as_mut().unwrap();
        pool.start = "198.51.100.10".parse().unwrap();
        pool.end = "192.0.2.255".parse().unwrap();
        pool.gateway = Some("198.51.100.1".parse().unwrap());
        let p = c.validate();
        assert_eq!(fields(&p), ["dhcp.pool.start", "dhcp.pool.end", "dhcp.pool.end", "dhcp.pool.gateway"], "{p}");

        let (_d, mut c) = fixture();
        let pool = c.dhcp.pool.as_mut().unwrap();
        pool.start = "192.0.2.1".parse().unwrap();
        pool.prefix = 24;
        c.dhcp.mode = DhcpMode::Proxy;
        let p = c.validate();
        assert_eq!(fields(&p), ["dhcp.pool", "dhcp.pool"], "{p}");

        let (_d, mut c) = fixture();
        c.dhcp.pool.as_mut().unwrap().prefix = 31;
        assert_eq!(fields(&c.validate()), ["dhcp.pool.prefix"]);
    }

    #[test]
    fn http_over_ipv6_is_checked() {
        let (_d, mut c) = fixture();
        // DHCPv6 hands out IPv6 URLs: HTTP must accept IPv6.
        c.dhcp6.enabled = true;
        c.dhcp6.address = Some("2001:db8::1".parse().unwrap());
        assert_eq!(fields(&c.validate()), ["http.listen"]);
        c.http.listen = "[::]:8080".parse().unwrap();
        assert!(c.validate().is_empty(), "{}", c.validate());
        assert_eq!(c.public_url6().as_deref(), Some("http://[2001:db8::1]:8080"));
        // Or a second listener beside an IPv4 one; its port goes into the URLs.
        c.http.listen = "192.0.2.1:8080".parse().unwrap();
        c.http.listen6 = Some("[2001:db8::1]:8081".parse().unwrap());
        assert!(c.validate().is_empty(), "{}", c.validate());
        assert_eq!(c.public_url6().as_deref(), Some("http://[2001:db8::1]:8081"));
        for bad in ["192.0.2.1:8082", "[fe80::1]:8080", "[::ffff:192.0.2.1]:8080", "[2001:db8::1]:0", "[::]:8081"] {
            c.http.listen6 = Some(bad.parse().unwrap());
            assert_eq!(fields(&c.validate()), ["http.listen6"], "{bad}");
        }
        c.http.listen = "[::]:8080".parse().unwrap();
        c.http.listen6 = Some("[2001:db8::1]:8081".parse().unwrap());
        assert_eq!(fields(&c.validate()), ["http.listen6"], "listen already takes IPv6");
        c.http.listen6 = None;
        // An IPv6 listener without DHCPv6 needs the base URL given to IPv6 callers.
        c.dhcp6.enabled = false;
        c.dhcp6.address = None;
        assert_eq!(fields(&c.validate()), ["http.public_url6"]);
        c.http.public_url6 = Some("http://[2001:db8::1]:8080/".into());
        assert!(c.validate().is_empty(), "{}", c.validate());
        c.http.public_url6 = Some("[2001:db8::1]:8080".into());
        assert_eq!(fields(&c.validate()), ["http.public_url6"]);
        // A base URL for IPv6 with no listener for it.
        c.http.listen = "192.0.2.1:8080".parse().unwrap();
        c.http.public_url6 = Some("http://[2001:db8::1]:8080".into());
        assert_eq!(fields(&c.validate()), ["http.listen"]);
        for bad in ["[fe80::1]:8080", "[ff02::1]:8080", "[::1]:8080"] {
            c.http.listen = bad.parse().unwrap();
            assert_eq!(fields(&c.validate()), ["http.listen"], "{bad}");
        }
    }

    #[test]
    fn ipv6_settings_are_checked() {
        let (_d, mut c) = fixture();
        c.dhcp6.enabled = true;
        c.http.listen = "[::]:8080".parse().unwrap();
        assert_eq!(
            fields(&c.validate()),
            ["dhcp6.address", "http.public_url6"],
            "enabled needs an address (and IPv6 callers a base URL)"
        );
        c.http.public_url6 = Some("http://[2001:db8::1]:8080".into());
        for bad in ["fe80::1", "ff02::1", "::", "::1", "::ffff:192.0.2.1"] {
            c.dhcp6.address = Some(bad.parse().unwrap());
            assert_eq!(fields(&c.validate()), ["dhcp6.address"], "{bad}");
        }
        c.http.public_url6 = None;
        c.dhcp6.address = Some("2001:db8::1".parse().unwrap());
        c.router_advertisements.managed = true;
        c.router_advertisements.prefix = Some("2001:db8:1::/64".into());
        assert!(c.validate().is_empty(), "{}", c.validate());
        for bad in ["2001:db8:1::/48", "2001:db8:1::1/64", "fe80::/64", "2001:db8::", "2001:db8::/x"] {
            c.router_advertisements.prefix = Some(bad.into());
            assert_eq!(fields(&c.validate()), ["router_advertisements.prefix"], "{bad}");
        }
        c.router_advertisements.prefix = None;
        c.dhcp6.enabled = false;
        assert_eq!(fields(&c.validate()), ["router_advertisements.managed"]);
        c.router_advertisements.mode = crate::config::RaMode::Off;
        assert_eq!(fields(&c.validate()), ["router_advertisements.mode", "router_advertisements.managed"]);
    }

    /// What check accepts is what the server serves: files are opened through the jail.
    #[test]
    fn files_are_checked_through_the_jail() {
        use std::os::unix::fs::symlink;
        let (d, c) = fixture();
        let outside = d.path().join("vmlinuz-6.1");
        std::fs::write(&outside, b"k").unwrap();
        std::fs::remove_file(d.path().join("artifacts/vmlinuz")).unwrap();
        symlink(&outside, d.path().join("artifacts/vmlinuz")).unwrap();
        std::fs::remove_file(d.path().join("artifacts/initramfs.img")).unwrap();
        symlink("../vmlinuz-6.1", d.path().join("artifacts/initramfs.img")).unwrap();
        symlink("/etc/hostname", d.path().join("tftp/ipxe.efi")).unwrap();
        let p = c.validate();
        assert_eq!(fields(&p), ["tftp.root", "artifacts.kernel", "artifacts.initrd"], "{p}");
        let text = p.to_string();
        assert!(text.contains("artifacts/vmlinuz is an absolute symlink"), "{text}");
        assert!(text.contains("initramfs.img is a symlink pointing outside"), "{text}");
        assert!(text.contains("tftp/ipxe.efi is an absolute symlink (to /etc/hostname)"), "{text}");
        // Relative links inside the root pass, and are served.
        for f in ["vmlinuz", "initramfs.img"] {
            std::fs::remove_file(d.path().join("artifacts").join(f)).unwrap();
        }
        std::fs::write(d.path().join("artifacts/vmlinuz-6.1"), b"k").unwrap();
        symlink("vmlinuz-6.1", d.path().join("artifacts/vmlinuz")).unwrap();
        symlink("vmlinuz-6.1", d.path().join("artifacts/initramfs.img")).unwrap();
        std::fs::remove_file(d.path().join("tftp/ipxe.efi")).unwrap();
        assert!(c.validate().is_empty(), "{}", c.validate());
    }

    #[test]
    fn admin_token_file_is_checked() {
        let (d, mut c) = fixture();
        let f = d.path().join("token");
        c.admin.token_file = Some(f.clone());
        assert_eq!(fields(&c.validate()), ["admin.token_file"]);
        std::fs::write(&f, "short\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(c.validate().to_string().contains("shorter than 16"));
        std::fs::write(&f, "0123456789abcdef0123\n").unwrap();
        assert!(c.validate().is_empty());
        assert_eq!(c.admin_token().unwrap().as_deref(), Some("0123456789abcdef0123"));
        // Devices and oversized files are refused, not read forever.
        for dev in ["/dev/zero", "/dev/urandom"] {
            c.admin.token_file = Some(dev.into());
            assert!(c.validate().to_string().contains("not a regular file"), "{dev}");
            assert!(c.admin_token().is_err(), "{dev}");
        }
        std::fs::write(&f, "x".repeat(5000)).unwrap();
        c.admin.token_file = Some(f.clone());
        assert!(c.validate().to_string().contains("larger than 4096"));
        assert!(Path::new(&c.source).is_absolute());
    }

    #[test]
    fn keyring_is_checked() {
        let (d, mut c) = fixture();
        let f = d.path().join("vendor-keys.asc");
        c.images.keyring = Some(f.clone());
        assert_eq!(fields(&c.validate()), ["images.keyring"]);
        std::fs::write(&f, "not a key\n").unwrap();
        assert_eq!(fields(&c.validate()), ["images.keyring"]);
        c.images.keyring = Some("/dev/zero".into());
        assert!(c.validate().to_string().contains("not a regular file"));
        c.images.keyring = None;
        assert!(c.validate().is_empty());
        assert!(c.keyring().unwrap().is_none());
    }

    #[test]
    fn read_only_token_and_session_length_are_checked() {
        let (d, mut c) = fixture();
        let (admin, ro) = (d.path().join("token"), d.path().join("ro"));
        for (f, t) in [(&admin, "0123456789abcdef0123\n"), (&ro, "0123456789abcdef0123\n")] {
            std::fs::write(f, t).unwrap();
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        c.admin.read_only_token_file = Some(ro.clone());
        assert_eq!(fields(&c.validate()), ["admin.read_only_token_file"], "needs the admin token file");
        c.admin.token_file = Some(admin.clone());
        assert!(c.validate().to_string().contains("must differ"), "the same token twice");
        assert!(c.read_only_token().is_err());
        std::fs::write(&ro, "another-read-only-token\n").unwrap();
        assert!(c.validate().is_empty(), "{}", c.validate());
        assert_eq!(c.read_only_token().unwrap().as_deref(), Some("another-read-only-token"));
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(fields(&c.validate()), ["admin.read_only_token_file"], "others may read it");
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o600)).unwrap();
        for (secs, ok) in [(59, false), (60, true), (28_800, true), (604_800, true), (604_801, false)] {
            c.admin.session_secs = secs;
            assert_eq!(c.validate().is_empty(), ok, "{secs}: {}", c.validate());
        }
    }

    #[test]
    fn machines_in_files_or_in_the_database() {
        let (d, mut c) = fixture();
        let db = |url: Option<&str>, file: Option<std::path::PathBuf>| crate::config::Database {
            url: url.map(str::to_string),
            url_file: file,
            max_connections: 8,
            timeout_secs: 5,
            site: None,
        };
        c.database = Some(db(Some("postgresql://osie@%2Frun%2Fpostgresql/osie"), None));
        assert_eq!(fields(&c.validate()), ["inventory.dir"], "both");
        c.inventory = None;
        assert!(c.validate().is_empty(), "{}", c.validate());
        c.database = None;
        assert_eq!(fields(&c.validate()), ["inventory"], "neither");
        c.database = Some(db(Some("postgresql://osie:pw@db/osie"), None));
        let p = c.validate();
        assert_eq!(fields(&p), ["database.url"]);
        assert!(!p.to_string().contains("pw"), "{p}");
        let f = d.path().join("db.url");
        std::fs::write(&f, "postgresql://osie:pw@db/osie\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        c.database = Some(db(None, Some(f.clone())));
        let p = c.validate();
        assert_eq!(fields(&p), ["database.url_file"]);
        assert!(p.to_string().contains("its group may read or change the database URL"), "{p}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(c.validate().is_empty(), "{}", c.validate());
        assert_eq!(c.database_url().unwrap().as_deref(), Some("postgresql://osie:pw@db/osie"));
        c.database = Some(db(Some("postgresql://osie@db/osie"), Some(f)));
        assert_eq!(fields(&c.validate()), ["database.url_file"], "not both");
        c.database = Some(db(None, None));
        assert_eq!(fields(&c.validate()), ["database.url"]);
        let mut bad_site = db(Some("postgresql://osie@db/osie"), None);
        bad_site.site = Some("Fra 1".into());
        c.database = Some(bad_site);
        let p = c.validate();
        assert_eq!(fields(&p), ["database.site"]);
        assert!(p.to_string().contains("\"Fra 1\" is not a site name"), "{p}");
    }

    #[test]
    fn admin_token_file_only_its_owner_may_read() {
        let (d, mut c) = fixture();
        let f = d.path().join("token");
        std::fs::write(&f, "0123456789abcdef0123\n").unwrap();
        c.admin.token_file = Some(f.clone());
        for (mode, who) in
            [(0o644, "its group and every user"), (0o640, "its group"), (0o604, "every user"), (0o620, "its group")]
        {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let p = c.validate();
            assert_eq!(fields(&p), ["admin.token_file"], "{mode:o}");
            let want = format!(
                "{} has mode {mode:04o}: {who} may read or change the admin token; run chmod 600 {}",
                f.display(),
                f.display()
            );
            assert_eq!(p.iter().next().unwrap().what, want);
            let e = c.admin_token().unwrap_err().to_string();
            assert!(e.contains(&want), "serve refuses it too: {e}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(c.validate().is_empty(), "{mode:o}");
            assert!(c.admin_token().unwrap().is_some());
        }
    }
}

//! The HTTP listeners' settings beyond the basics: connection caps and timeouts
//! (`http.max_connections`, `…_per_source`, `write_timeout_secs`, `idle_timeout_secs`) and
//! where the admin API listens (`admin.listen`), with their checks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Config;
use crate::problem::Collector;

/// Where the admin API listens: an address, or a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AdminListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Default for AdminListen {
    fn default() -> Self {
        AdminListen::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 8081)))
    }
}

impl TryFrom<String> for AdminListen {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if s.starts_with('/') {
            return Ok(AdminListen::Unix(PathBuf::from(s)));
        }
        s.parse().map(AdminListen::Tcp).map_err(|_| {
            format!("{s:?} is neither ip:port (e.g. \"127.0.0.1:8081\") nor the absolute path of a Unix socket")
        })
    }
}

impl From<AdminListen> for String {
    fn from(l: AdminListen) -> String {
        l.to_string()
    }
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminListen::Tcp(a) => write!(f, "{a}"),
            AdminListen::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

impl super::Http {
    /// The listener IPv6 callers reach: `listen` when it is an IPv6 address (`[::]` takes
    /// IPv4 too), else `listen6`.
    pub fn ipv6_listener(&self) -> Option<SocketAddr> {
        match self.listen {
            SocketAddr::V6(_) => Some(self.listen),
            SocketAddr::V4(_) => self.listen6,
        }
    }
}

/// File descriptors kept for everything but HTTP connections (listeners, the state store,
/// TFTP transfers, inventory reads, the blocking pool's open files).
pub const FD_RESERVE: u64 = 256;

/// Descriptors `max_connections` machine connections (and the admin listener's) can hold: a
/// socket each and, while a file is sent, the file.
pub fn fds_needed(max_connections: usize) -> u64 {
    2 * (max_connections as u64 + super::Admin::MAX_CONNECTIONS as u64) + FD_RESERVE
}

/// The hard limit of open files of this process (what `serve` raises its soft limit to).
fn fd_hard_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit for the kernel to fill in.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_max)
}

impl Config {
    pub(super) fn check_http_connections(&self, c: &mut Collector) {
        let h = &self.http;
        if !(1..=1_000_000).contains(&h.max_connections) {
            c.add("http.max_connections", format!("{} is out of range: 1 to 1000000", h.max_connections));
        } else if let Some(hard) = fd_hard_limit() {
            c.check("http.max_connections", fits_fd_limit(h.max_connections, hard));
        }
        if h.max_connections_per_source == 0 || h.max_connections_per_source > h.max_connections {
            c.add(
                "http.max_connections_per_source",
                format!(
                    "{} is out of range: 1 to http.max_connections ({})",
                    h.max_connections_per_source, h.max_connections
                ),
            );
        }
        for (field, v) in
            [("http.write_timeout_secs", h.write_timeout_secs), ("http.idle_timeout_secs", h.idle_timeout_secs)]
        {
            if !(1..=3600).contains(&v) {
                c.add(field, format!("{v} is out of range: 1 to 3600"));
            }
        }
    }

    /// `admin.listen`, when the admin API is on: off the machines' network, not the machines'
    /// listener, a fixed port, a Unix socket path that can be created.
    pub(super) fn check_admin_listen(&self, c: &mut Collector) {
        if self.admin.token_file.is_none() {
            return;
        }
        match &self.admin.listen {
            AdminListen::Tcp(a) => {
                if let Err(e) = admin_address(*a, self.http.listen, self.listen.address) {
                    c.add("admin.listen", e);
                }
            }
            AdminListen::Unix(p) => {
                if let Err(e) = socket_path(p) {
                    c.add("admin.listen", e);
                }
            }
        }
    }
}

/// `max_connections` against the hard limit of open files.
pub fn fits_fd_limit(max_connections: usize, hard: u64) -> Result<(), String> {
    let need = fds_needed(max_connections);
    if need > hard {
        return Err(format!(
            "{max_connections} connections need about {need} open files (a socket and a file each, the admin \
             listener's, and {FD_RESERVE} for the rest), but this process may open at most {hard} (the hard \
             RLIMIT_NOFILE): lower http.max_connections or raise the limit (LimitNOFILE= in the systemd unit, \
             ulimit -Hn)"
        ));
    }
    Ok(())
}

fn admin_address(a: SocketAddr, http: SocketAddr, machines: Ipv4Addr) -> Result<(), String> {
    if a.port() == 0 {
        return Err("port 0 is not a fixed port; the CLI finds the admin API through this field".into());
    }
    if a.ip().is_unspecified() {
        return Err(format!(
            "{a} listens on every address, the machines' network included: give the loopback or a management \
             address (or a Unix socket path)"
        ));
    }
    if a.ip() == IpAddr::V4(machines) {
        return Err(format!(
            "{a} is on listen.address, the machines' network: give the loopback or a management address"
        ));
    }
    if a.port() == http.port() && (a.ip() == http.ip() || http.ip().is_unspecified()) {
        return Err(format!("{a} is also http.listen ({http}): the admin API needs a listener of its own"));
    }
    Ok(())
}

fn socket_path(p: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    // sun_path holds 108 bytes with the terminating NUL.
    if p.as_os_str().as_bytes().len() > 107 {
        return Err(format!("{}: longer than a Unix socket path may be (107 bytes)", p.display()));
    }
    match p.parent() {
        Some(dir) if dir.is_dir() => {}
        _ => return Err(format!("{}: its directory does not exist", p.display())),
    }
    match std::fs::symlink_metadata(p) {
        Ok(m) if !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            Err(format!("{}: exists and is not a socket", p.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_listen_forms() {
        assert_eq!(AdminListen::default().to_string(), "127.0.0.1:8081");
        assert_eq!(
            AdminListen::try_from("/run/osie/admin.sock".to_string()),
            Ok(AdminListen::Unix("/run/osie/admin.sock".into()))
        );
        assert_eq!(AdminListen::try_from("[::1]:9".to_string()).unwrap().to_string(), "[::1]:9");
        assert!(AdminListen::try_from("127.0.0.1:80811".to_string()).unwrap_err().contains("neither"));
        assert!(AdminListen::try_from("admin.sock".to_string()).is_err(), "a relative path is refused");
    }

    #[test]
    fn admin_addresses() {
        let http: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let me = Ipv4Addr::new(192, 0, 2, 1);
        let check = |a: &str, http: SocketAddr| admin_address(a.parse().unwrap(), http, me);
        assert!(check("127.0.0.1:8081", http).is_ok());
        assert!(check("198.51.100.1:8081", http).is_ok(), "a management address");
        assert!(check("0.0.0.0:8081", http).unwrap_err().contains("every address"));
        assert!(check("192.0.2.1:8081", http).unwrap_err().contains("machines' network"));
        assert!(check("127.0.0.1:8080", http).unwrap_err().contains("http.listen"));
        assert!(check("127.0.0.1:8080", "192.0.2.1:8080".parse().unwrap()).is_ok(), "another address, same port");
        assert!(check("127.0.0.1:0", http).is_err());
        assert!(socket_path(Path::new("/nonexistent-dir/admin.sock")).is_err());
        assert!(socket_path(Path::new("/tmp/admin.sock")).is_ok());
        assert!(socket_path(Path::new("/etc/passwd")).unwrap_err().contains("not a socket"));
    }

    #[test]
    fn new_fields_are_checked_by_name() {
        let mut c = crate::config::sample();
        c.http.max_connections_per_source = 2000;
        c.http.write_timeout_secs = 0;
        c.http.idle_timeout_secs = 4000;
        c.admin.token_file = Some("/etc/osie/admin.token".into());
        c.admin.listen = AdminListen::Tcp("0.0.0.0:8081".parse().unwrap());
        let p = c.validate();
        let fields: Vec<&str> =
            p.iter().map(|p| p.field.as_str()).filter(|f| f.starts_with("http.") || f == &"admin.listen").collect();
        assert_eq!(
            fields,
            ["http.max_connections_per_source", "http.write_timeout_secs", "http.idle_timeout_secs", "admin.listen"],
            "{p}"
        );
        c.http.max_connections = 0;
        assert!(c.validate().iter().any(|p| p.field == "http.max_connections"));
        // Without a token file the admin API is off and its listener is not checked.
        c.admin.token_file = None;
        assert!(!c.validate().iter().any(|p| p.field == "admin.listen"));
    }

    #[test]
    fn connection_cap_against_the_fd_limit() {
        assert!(fits_fd_limit(1024, 1 << 20).is_ok());
        assert_eq!(fds_needed(1024), 2 * (1024 + 64) + FD_RESERVE);
        let e = fits_fd_limit(1024, 1024).unwrap_err();
        assert!(e.contains("at most 1024") && e.contains("LimitNOFILE"), "{e}");
    }
}

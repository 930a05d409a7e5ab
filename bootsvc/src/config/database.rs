//! `[database]`: where the machines, their state, events and leases live when several
//! instances share them (PostgreSQL, `crate::storage::pg`), and the rule that either it or
//! `[inventory]` is given. The URL is checked here (parsed as the client will, no password in
//! the config, no TLS asked for), so `bootsvc check` and `serve` refuse the same mistakes.

use std::path::Path;
use std::str::FromStr;

use super::Config;
use crate::problem::Collector;

/// Largest URL file read.
const MAX_URL_FILE: u64 = 4096;

impl Config {
    /// Machines come from `[inventory]` or from `[database]`, never both.
    pub(super) fn check_storage(&self, c: &mut Collector) {
        match (&self.inventory, &self.database) {
            (None, None) => c.add(
                "inventory",
                "missing: give [inventory] dir = \"…\" (machines in files) or [database] (machines in PostgreSQL)",
            ),
            (Some(_), Some(_)) => c.add(
                "inventory.dir",
                "not used with [database]: the machines live in the database (bootsvc db import DIR loads a \
                 directory into it); remove [inventory]",
            ),
            _ => {}
        }
        let Some(db) = &self.database else { return };
        match (&db.url, &db.url_file) {
            (None, None) => c.add("database.url", "missing: give url or url_file"),
            (Some(_), Some(_)) => c.add("database.url_file", "give url or url_file, not both"),
            (Some(u), None) => {
                if let Err(e) = check_url(u, false) {
                    c.add("database.url", e);
                }
            }
            (None, Some(f)) => match read_url_file(f) {
                Ok(u) => {
                    if let Err(e) = check_url(&u, true) {
                        c.add("database.url_file", format!("{}: {e}", f.display()));
                    }
                }
                Err(e) => c.add("database.url_file", e),
            },
        }
        if !(1..=256).contains(&db.max_connections) {
            c.add("database.max_connections", format!("{} is out of range: 1 to 256", db.max_connections));
        }
        if let Some(site) = &db.site {
            if let Err(e) = crate::checks::site_name(site) {
                c.add("database.site", e);
            }
        }
        if !(1..=300).contains(&db.timeout_secs) {
            c.add("database.timeout_secs", format!("{} is out of range: 1 to 300", db.timeout_secs));
        }
    }

    /// The database's URL (read from `url_file` when given), `None` without `[database]`.
    /// Read before privileges are dropped: the file may be root's alone.
    pub fn database_url(&self) -> anyhow::Result<Option<String>> {
        let Some(db) = &self.database else { return Ok(None) };
        let url = match (&db.url, &db.url_file) {
            (Some(u), _) => u.clone(),
            (None, Some(f)) => read_url_file(f).map_err(|e| anyhow::anyhow!("database.url_file: {e}"))?,
            (None, None) => anyhow::bail!("database.url: missing: give url or url_file"),
        };
        check_url(&url, db.url_file.is_some()).map_err(|e| anyhow::anyhow!("database URL: {e}"))?;
        Ok(Some(url))
    }
}

/// A URL the client accepts, without a password unless it came from a file, and without
/// asking for TLS (this bootsvc connects without it: a Unix socket or a trusted network).
pub fn check_url(url: &str, from_file: bool) -> Result<(), String> {
    if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
        return Err(format!(
            "{:?} is not a PostgreSQL URL: it starts with postgresql:// (postgresql://user@host/dbname)",
            redact(url)
        ));
    }
    let cfg = tokio_postgres::Config::from_str(url)
        .map_err(|e| format!("{:?} is not a usable PostgreSQL URL: {e}", redact(url)))?;
    if cfg.get_password().is_some() && !from_file {
        return Err("contains a password: anyone who can read the config could use it; put the URL in a file \
                    only bootsvc's owner may read and name it in database.url_file"
            .into());
    }
    if cfg.get_hosts().is_empty() {
        return Err(format!(
            "{:?} names no host: postgresql://user@host/dbname, or ?host=/run/postgresql for a Unix socket",
            redact(url)
        ));
    }
    if cfg.get_user().is_none() {
        return Err(format!("{:?} names no user: postgresql://user@host/dbname", redact(url)));
    }
    if cfg.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err("sslmode=require: this bootsvc connects without TLS (use a Unix socket or a trusted \
                    network, and drop sslmode)"
            .into());
    }
    Ok(())
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else { return url.to_string() };
    let scheme_len = url.len() - rest.len();
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut out = match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_len], &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    };
    // `password=` in the query too.
    if let Some(i) = out.find("password=") {
        let end = out[i..].find('&').map_or(out.len(), |e| i + e);
        out.replace_range(i + "password=".len()..end, "***");
    }
    out
}

/// The one URL in `f`, which only its owner may read (it may hold the password).
fn read_url_file(f: &Path) -> Result<String, String> {
    let text = super::validate::read_secret_file(f, MAX_URL_FILE, "the database URL")?;
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    match lines.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(format!("{} is empty: it holds one postgresql:// URL", f.display())),
        _ => Err(format!("{} has {} lines: it holds one postgresql:// URL", f.display(), lines.len())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("postgresql://osie@db.example/osie", false).is_ok());
        assert!(check_url("postgresql://osie@%2Frun%2Fpostgresql/osie", false).is_ok());
        assert!(check_url("postgres://osie@localhost:5433/osie?host=/run/postgresql", false).is_ok());
        let e = check_url("postgresql://osie:secret@db/osie", false).unwrap_err();
        assert!(e.contains("contains a password") && e.contains("url_file"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        assert!(check_url("postgresql://osie:secret@db/osie", true).is_ok());
        let e = check_url("postgresql://osie@db/osie?password=secret", false).unwrap_err();
        assert!(e.contains("contains a password"), "{e}");
        let e = check_url("mysql://osie@db/osie", false).unwrap_err();
        assert!(e.contains("not a PostgreSQL URL"), "{e}");
        let e = check_url("postgresql://osie:pw@db:notaport/osie", true).unwrap_err();
        assert!(e.contains("not a usable PostgreSQL URL") && !e.contains("pw@"), "{e}");
        let e = check_url("postgresql:///osie", false).unwrap_err();
        assert!(e.contains("names no host"), "{e}");
        let e = check_url("postgresql://db/osie", false).unwrap_err();
        assert!(e.contains("names no user"), "{e}");
        let e = check_url("postgresql://osie@db/osie?sslmode=require", false).unwrap_err();
        assert!(e.contains("without TLS"), "{e}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgresql://osie:s3cr@t@db:5432/osie"), "postgresql://osie:***@db:5432/osie");
        assert_eq!(redact("postgresql://osie@db/osie"), "postgresql://osie@db/osie");
        assert_eq!(redact("postgresql://osie@db/osie?password=x&a=b"), "postgresql://osie@db/osie?password=***&a=b");
    }

    #[test]
    fn url_files() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("db.url");
        std::fs::write(&f, "postgresql://osie:pw@db/osie\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_url_file(&f).unwrap(), "postgresql://osie:pw@db/osie");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_url_file(&f).unwrap_err();
        assert!(e.contains("mode 0644") && e.contains("the database URL") && e.contains("chmod 600"), "{e}");
        std::fs::write(&f, "a\nb\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_url_file(&f).unwrap_err().contains("2 lines"));
        let e = read_url_file(&d.path().join("nope")).unwrap_err();
        assert!(e.contains("cannot read") && e.contains("nope"), "{e}");
    }
}

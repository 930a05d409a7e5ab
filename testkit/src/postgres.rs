//! A throwaway PostgreSQL cluster for one test: `initdb` into a new directory under the
//! temporary directory, started with `pg_ctl` listening on a Unix socket only (in that
//! directory, reachable from every network namespace), password authentication
//! (scram-sha-256) for its one role, as an unprivileged user (`postgres` when the test runs
//! as root, else the test's own user). Stopped and removed on `Drop`, also when the test
//! panics.
//!
//! The server programs come from Debian's `postgresql` package
//! (`/usr/lib/postgresql/<version>/bin`, the newest there; `OSIE_PG_BIN` overrides), which
//! `scripts/setup` installs. fsync is off by default (a test kills bootsvc, not the
//! machine); [`Options::durable`] turns it on for figures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How the cluster is started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// fsync and full-page writes on, as a production server runs.
    pub durable: bool,
}

pub struct Postgres {
    root: PathBuf,
    bin: PathBuf,
    /// (uid, gid) the server runs as; `None`: the test's own user.
    run_as: Option<(u32, u32)>,
    options: Options,
    pub user: String,
    pub password: String,
    running: bool,
}

/// The directory of the newest installed server programs.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("OSIE_PG_BIN") {
        return Some(PathBuf::from(b));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, b): &(u32, PathBuf)| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// uid and gid of `name`.
fn account(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null, as checked.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

impl Postgres {
    /// A running cluster, or `None` when PostgreSQL is not installed (the test is skipped
    /// with a message; with `OSIE_REQUIRE_ALL=1` it fails instead).
    pub fn start(test: &str) -> Option<Postgres> {
        Postgres::start_with(test, Options::default())
    }

    pub fn start_with(test: &str, options: Options) -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            crate::skip_or_fail(test, "PostgreSQL's server programs (initdb, pg_ctl) are missing (scripts/setup installs the postgresql package)");
            return None;
        };
        if crate::which("psql").is_none() {
            crate::skip_or_fail(test, "psql is missing (scripts/setup installs the postgresql package)");
            return None;
        }
        Some(Postgres::create(bin, options).unwrap_or_else(|e| panic!("{test}: starting PostgreSQL: {e:#}")))
    }

    fn create(bin: PathBuf, options: Options) -> Result<Postgres> {
        let run_as = if crate::nix_is_root() {
            Some(account("postgres").or_else(|| account("nobody")).context("no user postgres or nobody to run as")?)
        } else {
            None
        };
        let root = std::env::temp_dir().join(crate::unique("osie-pg-"));
        std::fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        let mut pg = Postgres {
            root,
            bin,
            run_as,
            options,
            user: "osie".into(),
            password: crate::unique("pw-"),
            running: false,
        };
        pg.init()?;
        pg.start_server()?;
        Ok(pg)
    }

    fn init(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        // Others traverse it to reach the socket (bootsvc may run as another user).
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o755))?;
        let sock = self.socket_dir();
        std::fs::create_dir(&sock)?;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o755))?;
        let pwfile = self.root.join("pwfile");
        std::fs::write(&pwfile, format!("{}\n", self.password))?;
        if let Some((uid, gid)) = self.run_as {
            for p in [&self.root, &sock, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).with_context(|| format!("chown {}", p.display()))?;
            }
        }
        let out = self
            .server_cmd("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                &self.user,
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .context("running initdb")?;
        let _ = std::fs::remove_file(&pwfile);
        check(&out, "initdb")
    }

    fn server_cmd(&self, prog: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(self.bin.join(prog));
        c.current_dir(&self.root).env("HOME", &self.root).env("LC_ALL", "C");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                c.env_remove(k);
            }
        }
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn start_server(&mut self) -> Result<()> {
        let fsync = if self.options.durable { "on" } else { "off" };
        let opts = format!(
            "-k {} -c listen_addresses='' -c fsync={fsync} -c full_page_writes={fsync} -c max_connections=200",
            self.socket_dir().display()
        );
        let out = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .output()
            .context("running pg_ctl start")?;
        check(&out, "pg_ctl start").map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.log()))?;
        self.running = true;
        Ok(())
    }

    /// Stop the server (fast shutdown: sessions are cut, as when a database host goes away
    /// cleanly). [`Postgres::restart`] starts it again with the same data.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let out = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "60", "-m", "fast", "stop"])
            .output()
            .context("running pg_ctl stop")?;
        self.running = false;
        check(&out, "pg_ctl stop")
    }

    pub fn restart(&mut self) -> Result<()> {
        self.start_server()
    }

    /// The directory holding the server's socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// `postgresql://user@<socket dir>/db`, without the password.
    pub fn url_without_password(&self, db: &str) -> String {
        format!("postgresql://{}@{}/{db}", self.user, encode(&self.socket_dir()))
    }

    /// `postgresql://user:password@<socket dir>/db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://{}:{}@{}/{db}", self.user, self.password, encode(&self.socket_dir()))
    }

    /// A new, empty database.
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\"")).map(drop)
    }

    /// Run `sql` in `db` with psql; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new("psql")
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-U", &self.user, "-d", db, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", &self.password)
            .env_remove("PGHOST")
            .env_remove("PGDATABASE")
            .output()
            .context("running psql")?;
        check(&out, &format!("psql {sql:?}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// The server's process id (from its pid file), while it runs.
    pub fn pid(&self) -> Option<i32> {
        let s = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        s.lines().next()?.trim().parse().ok()
    }
}

/// A path as a URL host: percent-encoded, as the client expects a socket directory.
fn encode(p: &Path) -> String {
    p.to_string_lossy().replace('%', "%25").replace('/', "%2F")
}

fn check(out: &Output, what: &str) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let stopped = self
                .server_cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "30", "-m", "immediate", "stop"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !stopped {
                if let Some(pid) = self.pid() {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

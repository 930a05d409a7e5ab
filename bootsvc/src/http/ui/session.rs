//! The status page's sessions: who logged in with which token, for how long, and the CSRF
//! token of each session.
//!
//! A login with the admin token (`admin.token_file`) opens an [`Role::Admin`] session, one
//! with the read-only token (`admin.read_only_token_file`) a [`Role::ReadOnly`] one. The
//! browser holds only the session id (32 random bytes, hex, in an `HttpOnly; SameSite=Strict`
//! cookie); bootsvc keeps its SHA-256, so the sessions file gives nobody a session. The CSRF
//! token is derived from the id (a hash of it), so it needs no storage and dies with the
//! session.
//!
//! Bounded and expiring: at most [`MAX_SESSIONS`] (a new login pushes out the oldest), each
//! ending `admin.session_secs` after its login, or at logout. Sessions are kept in
//! `state.dir/ui-sessions.json` (written at each login and logout, owner-only), so an open
//! page carries on after a restart of bootsvc; a session is only honoured while the token
//! that opened it is still the configured one (a fingerprint of that token is kept with it):
//! changing a token ends the sessions it opened.
//!
//! Time is passed in (seconds since the epoch), so the rules are tested without waiting.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Sessions kept at most; a login past that ends the oldest.
pub const MAX_SESSIONS: usize = 64;
/// The cookie's name.
pub const COOKIE: &str = "osie_session";
/// The file under `state.dir`.
pub const FILE: &str = "ui-sessions.json";

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Look and act (reinstall, power).
    Admin,
    /// Look only.
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }
}

/// One session as kept (in memory and in the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Kept {
    role: Role,
    /// Seconds since the epoch.
    created: u64,
    expires: u64,
    /// Fingerprint of the token that opened it.
    grant: String,
}

/// A session found for a cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub role: Role,
    pub expires: u64,
    /// The CSRF token every action of this session must carry.
    pub csrf: String,
    /// The stored key (the id's hash), to end it.
    key: String,
}

/// The tokens that open sessions, by role.
pub struct Tokens {
    pub admin: Option<String>,
    pub read_only: Option<String>,
}

impl Tokens {
    /// The role `given` opens, compared in constant time with both tokens.
    pub fn role_of(&self, given: &str) -> Option<Role> {
        let given = given.trim();
        // Both compared, whatever the first gives, so timing does not say which matched.
        let admin = self.admin.as_deref().is_some_and(|t| same(given, t));
        let ro = self.read_only.as_deref().is_some_and(|t| same(given, t));
        match (admin, ro) {
            (true, _) => Some(Role::Admin),
            (false, true) => Some(Role::ReadOnly),
            _ => None,
        }
    }

    fn grant(&self, role: Role) -> Option<String> {
        let t = match role {
            Role::Admin => self.admin.as_deref(),
            Role::ReadOnly => self.read_only.as_deref(),
        }?;
        Some(hex(&Sha256::digest(format!("osie-ui-grant\0{}\0{t}", role.as_str()).as_bytes()))[..32].to_string())
    }
}

/// Constant-time equality: both sides hashed to a fixed length, compared without an early exit.
pub fn same(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key_of(id: &str) -> String {
    hex(&Sha256::digest(format!("osie-ui-session\0{id}").as_bytes()))
}

fn csrf_of(id: &str) -> String {
    hex(&Sha256::digest(format!("osie-ui-csrf\0{id}").as_bytes()))[..32].to_string()
}

/// A session id: 32 bytes from the kernel's random source, hex.
fn new_id() -> Result<String> {
    let mut b = [0u8; 32];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: writing into the rest of `b`, whose length is passed.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("reading random bytes for a session id");
        }
        got += n as usize;
    }
    Ok(hex(&b))
}

/// Whether a cookie value has the shape of a session id (64 lowercase hex digits): anything
/// else is refused before it is looked up.
fn well_formed(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The session id in a `Cookie:` header value, if any.
pub fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == COOKIE).map(|(_, v)| v.trim())
}

/// The sessions of this bootsvc.
pub struct Sessions {
    tokens: Tokens,
    lifetime: u64,
    /// `None`: kept in memory only (tests).
    file: Option<PathBuf>,
    kept: Mutex<HashMap<String, Kept>>,
    /// Held from taking a snapshot to writing it, so the file gets the snapshots in order.
    writer: Mutex<()>,
}

impl Sessions {
    /// The sessions kept in `file` (missing: none) that the current tokens still grant.
    pub fn open(tokens: Tokens, lifetime_secs: u64, file: Option<PathBuf>, now: u64) -> Sessions {
        let mut kept = HashMap::new();
        if let Some(f) = &file {
            match load(f) {
                Ok(k) => kept = k,
                Err(e) => {
                    tracing::warn!(file = %f.display(), error = %format!("{e:#}"), "status page sessions not read: everyone logs in again")
                }
            }
        }
        let s = Sessions {
            tokens,
            lifetime: lifetime_secs,
            file,
            kept: Mutex::new(HashMap::new()),
            writer: Mutex::new(()),
        };
        kept.retain(|_, k: &mut Kept| s.valid(k, now));
        *s.lock() = kept;
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    fn valid(&self, k: &Kept, now: u64) -> bool {
        now < k.expires && self.tokens.grant(k.role).is_some_and(|g| same(&g, &k.grant))
    }

    /// Open a session for `role`: its id (the cookie's value) and the session. The file is
    /// written before it is answered, so the session survives a restart.
    pub fn login(&self, role: Role, now: u64) -> Result<(String, Session)> {
        let id = new_id()?;
        let grant = self.tokens.grant(role).context("no token configured for that role")?;
        let kept = Kept { role, created: now, expires: now + self.lifetime, grant };
        let key = key_of(&id);
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = {
            let mut m = self.lock();
            m.retain(|_, k| self.valid(k, now));
            while m.len() >= MAX_SESSIONS {
                let oldest = m.iter().min_by_key(|(_, k)| k.created).map(|(key, _)| key.clone());
                match oldest {
                    Some(o) => m.remove(&o),
                    None => break,
                };
            }
            m.insert(key.clone(), kept.clone());
            m.clone()
        };
        self.save(&snapshot)?;
        Ok((id.clone(), Session { role, expires: kept.expires, csrf: csrf_of(&id), key }))
    }

    /// The live session of a cookie value (`None`: none, expired, forged, or its token changed).
    pub fn find(&self, id: &str, now: u64) -> Option<Session> {
        if !well_formed(id) {
            return None;
        }
        let key = key_of(id);
        let m = self.lock();
        let k = m.get(&key)?;
        self.valid(k, now).then(|| Session { role: k.role, expires: k.expires, csrf: csrf_of(id), key })
    }

    /// Whether `s` is still live (not ended by a logout or pushed out).
    pub fn still(&self, s: &Session, now: u64) -> bool {
        self.lock().get(&s.key).is_some_and(|k| self.valid(k, now))
    }

    /// End a session (logout).
    pub fn end(&self, s: &Session) -> Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = {
            let mut m = self.lock();
            m.remove(&s.key);
            m.clone()
        };
        self.save(&snapshot)
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn save(&self, m: &HashMap<String, Kept>) -> Result<()> {
        let Some(f) = &self.file else { return Ok(()) };
        save(f, m)
    }
}

fn load(f: &Path) -> Result<HashMap<String, Kept>> {
    match std::fs::read(f) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("{}: not a sessions file", f.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", f.display())),
    }
}

/// Write through a temporary file and a rename, owner-only, synced.
fn save(f: &Path, m: &HashMap<String, Kept>) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = f.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut o = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        o.write_all(&serde_json::to_vec(m).unwrap_or_default())?;
        o.sync_all()?;
        std::fs::rename(&tmp, f)
    };
    write().with_context(|| format!("writing the status page's sessions to {}", f.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-token-0123456789";
    const RO: &str = "read-only-token-0123456789";

    fn tokens() -> Tokens {
        Tokens { admin: Some(ADMIN.into()), read_only: Some(RO.into()) }
    }

    #[test]
    fn tokens_open_their_role() {
        let t = tokens();
        assert_eq!(t.role_of(ADMIN), Some(Role::Admin));
        assert_eq!(t.role_of(&format!(" {RO}\n")), Some(Role::ReadOnly));
        assert_eq!(t.role_of("admin-token-012345678"), None);
        assert_eq!(t.role_of(""), None);
        let only_admin = Tokens { admin: Some(ADMIN.into()), read_only: None };
        assert_eq!(only_admin.role_of(RO), None);
    }

    #[test]
    fn a_session_lives_until_it_expires_or_ends() {
        let s = Sessions::open(tokens(), 100, None, 1000);
        let (id, sess) = s.login(Role::ReadOnly, 1000).unwrap();
        assert!(well_formed(&id));
        assert_eq!(s.find(&id, 1050), Some(sess.clone()));
        assert_eq!(s.find(&id, 1050).unwrap().csrf, csrf_of(&id));
        assert_eq!(s.find(&id, 1100), None, "expired");
        let (id2, sess2) = s.login(Role::Admin, 1000).unwrap();
        assert_ne!(id, id2);
        assert_ne!(sess.csrf, sess2.csrf);
        s.end(&sess2).unwrap();
        assert_eq!(s.find(&id2, 1001), None, "logged out");
        assert!(!s.still(&sess2, 1001));
    }

    #[test]
    fn forged_ids_are_refused() {
        let s = Sessions::open(tokens(), 100, None, 0);
        let (id, _) = s.login(Role::Admin, 0).unwrap();
        let mut other = id.clone().into_bytes();
        other[0] = if other[0] == b'0' { b'1' } else { b'0' };
        let other = String::from_utf8(other).unwrap();
        for forged in [other.as_str(), "", "x", &id.to_uppercase(), &format!("{id}0"), &key_of(&id)] {
            assert_eq!(s.find(forged, 1), None, "{forged:?}");
        }
    }

    #[test]
    fn sessions_are_bounded_oldest_first() {
        let s = Sessions::open(tokens(), 10_000, None, 0);
        let first = s.login(Role::Admin, 0).unwrap().0;
        let second = s.login(Role::Admin, 1).unwrap().0;
        for i in 0..MAX_SESSIONS - 1 {
            s.login(Role::Admin, 2 + i as u64).unwrap();
        }
        assert_eq!(s.count(), MAX_SESSIONS);
        assert_eq!(s.find(&first, 100), None, "the oldest was pushed out");
        assert!(s.find(&second, 100).is_some());
    }

    #[test]
    fn sessions_survive_a_restart_while_their_token_stays() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join(FILE);
        let s = Sessions::open(tokens(), 100, Some(f.clone()), 0);
        let (admin, _) = s.login(Role::Admin, 0).unwrap();
        let (ro, _) = s.login(Role::ReadOnly, 0).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains(&admin) && !text.contains(ADMIN), "only hashes are kept: {text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        let again = Sessions::open(tokens(), 100, Some(f.clone()), 5);
        assert_eq!(again.find(&admin, 5).map(|s| s.role), Some(Role::Admin));
        assert_eq!(again.find(&ro, 5).map(|s| s.role), Some(Role::ReadOnly));
        // The read-only token changed: its sessions end, the admin's carry on.
        let changed = Tokens { admin: Some(ADMIN.into()), read_only: Some("another-read-only-token".into()) };
        let after = Sessions::open(changed, 100, Some(f.clone()), 5);
        assert!(after.find(&admin, 5).is_some());
        assert_eq!(after.find(&ro, 5), None);
        // A damaged file: nobody is logged in, nothing fails.
        std::fs::write(&f, "{not json").unwrap();
        assert_eq!(Sessions::open(tokens(), 100, Some(f), 5).count(), 0);
    }

    #[test]
    fn cookie_header() {
        assert_eq!(cookie_value("a=b; osie_session=abc; c=d"), Some("abc"));
        assert_eq!(cookie_value("osie_session=x"), Some("x"));
        assert_eq!(cookie_value("xosie_session=x"), None);
        assert_eq!(cookie_value(""), None);
    }
}
